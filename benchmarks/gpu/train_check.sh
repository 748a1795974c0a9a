#!/usr/bin/env bash
# The training half on one CUDA GPU: the paper's recipes at their real sizes for a few steps,
# and the two training-step benchmarks. About 2 minutes on one H200.
#
#     bash benchmarks/gpu/train_check.sh OUT_DIR
#     ESAM_TRAIN_CHECK_DRY=1 bash benchmarks/gpu/train_check.sh OUT_DIR   # CPU rehearsal, tiny sizes
#
# 1. `esam finetune --config efficientsam_vitt` (1024 px, 64 masks per image, a box or click
#    and 4 corrective clicks, bf16, 2 images per step) for 12 steps on 16 generated 1024 px
#    SA-1B-format images, random weights; then the peak CUDA memory of the run.
# 2. `benchmarks/bench_sami_step.py`: the SAMI step (ViT-Ti student at 224 px, 8 x 512
#    decoder) with cached teacher features against an online ViT-H-sized teacher, and against
#    the measured matmul floor, fp32 and bf16.
# 3. `benchmarks/bench_finetune_step.py` at 1024 px, the full 12-block Ti encoder, 64 masks,
#    3 rounds: the batched step against a per-prompt loop (which re-encodes the image for every
#    prompt), step time and peak memory.
#
# Requirements on that machine: python with torch (CUDA), numpy, pyyaml, tqdm and pillow.
# Nothing is downloaded; no weights are needed.
# Also pycocotools (the SA-1B reader's RLE) and segment-anything (the ViT-H teacher):
# installed, or their wheels in the git-ignored dist/wheels/ (pycocotools' for that machine's
# Python, installed into a temporary folder; segment-anything's imported from the zip):
#
#     pip download segment-anything==1.0 --no-deps -d dist/wheels
#     pip download pycocotools --no-deps --only-binary=:all: --python-version 3.12 \
#         --platform manylinux2014_x86_64 -d dist/wheels
#
# A benchmark that misses its target says so and the script goes on.
# Output in OUT_DIR (flat, 4 files): finetune-vitt-recipe.json (the run's results: losses per
# step, images/s), finetune-step-vitt-1024.json, sami-step-vitt.json, train_check.txt (every
# command's output, the peak memory lines included). Environment: PYTHON (default python).
set -euo pipefail

if [ "$#" -ne 1 ]; then
    echo "usage: bash benchmarks/gpu/train_check.sh OUT_DIR" >&2
    exit 2
fi
OUT="$1"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/esam-train-check.XXXXXX")"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# SAM ViT-H (the SAMI teacher) and the SA-1B reader's RLE decoding, from dist/wheels/ when
# not installed.
# shellcheck source=benchmarks/gpu/wheels.sh
. "$ROOT/benchmarks/gpu/wheels.sh"
esam_use_wheel "$PY" "$ROOT" segment_anything "segment_anything-*.whl"
esam_use_wheel "$PY" "$ROOT" pycocotools "pycocotools-*.whl" "$WORK/site"

if [ -n "${ESAM_TRAIN_CHECK_DRY:-}" ]; then
    DEVICE=cpu SIZE=128 STEPS=2 K=4 DEPTH=1 SAMI_BATCH=2
    FT_EXTRA=(model.img_size=128 model.encoder_depth=1 data.max_masks=4 train.precision=fp32)
else
    DEVICE=cuda SIZE=1024 STEPS=12 K=64 DEPTH=12 SAMI_BATCH=64
    FT_EXTRA=()
fi

cd "$ROOT"
{
    echo "== esam training check, device $DEVICE, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
        torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"

    echo "== 1. esam finetune --config efficientsam_vitt, $STEPS steps"
    "$PY" -m esam.cli.main data synth-sa1b --out "$WORK/sa1b" --images 16 --seed 0 \
        --size "$SIZE" --no-progress
    "$PY" - "$WORK" "$DEVICE" "$STEPS" "${FT_EXTRA[@]}" <<'EOF'
import sys, time
import torch
from esam.cli.main import main

work, device, steps, extra = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
t0 = time.perf_counter()
rc = main([
    "finetune", "--config", "efficientsam_vitt", "--data", f"{work}/sa1b",
    "--output", f"{work}/ft", "--device", device, f"train.max_steps={steps}",
    "train.accum_steps=1", "train.num_workers=4", "train.log_every=1",
    "train.schedule.warmup_steps=2", "train.progress=false", *extra,
])
print(f"finetune exit code {rc}, {time.perf_counter() - t0:.1f} s with start-up")
if device == "cuda":
    print(f"finetune peak CUDA memory allocated: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
sys.exit(rc)
EOF
    cp "$WORK/ft/results.json" "$OUT/finetune-vitt-recipe.json"

    echo "== 2. bench_sami_step.py, batch $SAMI_BATCH"
    "$PY" benchmarks/bench_sami_step.py --device "$DEVICE" --student efficientsam_vitt \
        --batch "$SAMI_BATCH" --dtypes fp32,bf16 --iters 3 --output "$OUT/sami-step-vitt.json" \
        || echo "(exit code $?: a target missed)"
    echo "== 3. bench_finetune_step.py, $K masks at $SIZE px"
    "$PY" benchmarks/bench_finetune_step.py --device "$DEVICE" --k "$K" --rounds 3 \
        --img-size "$SIZE" --encoder-depth "$DEPTH" --repeats 2 --naive-backward each \
        --output "$OUT/finetune-step-vitt-$SIZE.json" || echo "(exit code $?: a target missed)"
} 2>&1 | tee "$OUT/train_check.txt"
rm -rf "$WORK"
