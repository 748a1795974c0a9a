#!/usr/bin/env bash
# Full GPU throughput sweep of esam (EfficientSAM-Ti/S fast path and reference mode, SAM B/L/H).
#
# How to run, from anywhere, on a machine with one CUDA GPU (made for one H100; under 8 minutes):
#
#     bash benchmarks/gpu/run_all.sh OUT_DIR
#
# Requirements on that machine: python with torch (CUDA build) and numpy. Nothing is installed:
# esam is used from this checkout through PYTHONPATH. Weights: published checkpoints placed in
# weights/ under their published names (efficient_sam_vitt.pt, efficient_sam_vits.pt.zip,
# sam_vit_b_01ec64.pth, ...) are used when present (*.pt/*.pth are git-ignored: copy them along);
# other models run with untrained weights (nothing is downloaded).
# SAM ViT-B/L/H are timed only when `segment_anything` is importable. To include
# them on a machine without it, place the pure-Python wheel in the git-ignored folder
# dist/wheels/ before copying the tree, e.g. on a machine with PyPI access:
#
#     pip download segment-anything==1.0 --no-deps -d dist/wheels
#
# dist/ is git-ignored: make sure the copy of the tree to the GPU machine includes dist/wheels/.
# The wheel is then imported directly from the zip (put on PYTHONPATH, not installed); without it
# SAM is skipped and the summary says so.
#
# Environment: PYTHON (interpreter, default python), ESAM_GPU_BUDGET_S (sweep budget in
# seconds, default 420). Extra arguments go to benchmarks/gpu/sweep.py (e.g. --no-sam,
# --dry-run for a CPU rehearsal on tiny models).
#
# Output: OUT_DIR/<model>.json (esam.results/1, task "throughput", one file per model) and
# OUT_DIR/summary.txt (the summary printed at the end); at most 8 files, no sub-folders.
# Commit the files under results/<gpu>/throughput/ (e.g. results/h100/throughput/), where the
# report layer reads them.
set -euo pipefail

if [ "$#" -lt 1 ]; then
    echo "usage: bash benchmarks/gpu/run_all.sh OUT_DIR [sweep.py options]" >&2
    exit 2
fi
OUT="$1"
shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python}"

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# shellcheck source=benchmarks/gpu/wheels.sh
. "$ROOT/benchmarks/gpu/wheels.sh"
esam_use_wheel "$PY" "$ROOT" segment_anything "segment_anything-*.whl"
# Compiled kernels are cached per run, so repeated shapes across worker processes compile once.
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-${TMPDIR:-/tmp}/esam-inductor-cache}"

mkdir -p "$OUT"
cd "$ROOT"
exec "$PY" benchmarks/gpu/sweep.py --out "$OUT" --budget-s "${ESAM_GPU_BUDGET_S:-420}" "$@"
