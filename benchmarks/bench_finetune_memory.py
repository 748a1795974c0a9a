"""Activation memory of one ``esam finetune`` step: per image and per mask, at a config's size.

Runs the fine-tuning step module itself (:class:`esam.finetune.task.InteractiveTraining`, every
prompt round, the loss, backward) on one image with K1 and then K2 masks, for a config (default
the paper's ``efficientsam_vitt``: 1024 px, 4 corrective rounds), with and without
``memory.recompute_rounds``, and measures the growth of memory over each step (process RSS on
CPU, ``max_memory_allocated`` on CUDA; ``esam.bench.memory``). Memory grows linearly in the
masks, so two sizes give the cost of one mask (over every round) and of the image itself
(encoder, embeddings, optimizer-free step):

    per_mask = (peak(K2) - peak(K1)) / (K2 - K1),  per_image = peak(K1) - K1 * per_mask

and from them the step's memory at the config's ``batch_size`` images x ``max_masks`` masks
per process, printed side by side for the two settings. Weights are untrained (the arithmetic
does not depend on them), masks random rectangles. ``--freeze image_encoder`` measures the
step of ``model.freeze=[image_encoder]``: the encoder then keeps no activations. The
precision is the device's run precision (``--precision``; on a CPU without native bfloat16
use fp32, and expect bf16 autocast on a GPU to keep activations of roughly half the size).

Usage::

    python benchmarks/bench_finetune_memory.py [--config efficientsam_vitt] [--k1 2] [--k2 6]
        [--device cpu] [--precision fp32] [--threads N] [--freeze image_encoder]
        [--output FILE.json]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from esam.bench.memory import PeakMemory
from esam.config import load_config
from esam.errors import InputError
from esam.finetune.config import FinetuneConfig
from esam.finetune.model import build_finetune_model, freeze_parts
from esam.finetune.run import loss_size
from esam.finetune.task import InteractiveTraining
from esam.runtime.precision import autocast
from esam.utils.io import write_json_atomic
from esam.utils.meta import run_metadata, utc_now
from esam.utils.results import make_results

GIB = 1024.0


def _batch(k: int, img: int, t: int) -> dict[str, torch.Tensor]:
    """One image with K random rectangular masks at the loss side ``t``."""
    g = torch.Generator().manual_seed(k)
    masks = torch.zeros(1, k, t, t, dtype=torch.bool)
    for j in range(k):
        h, w = torch.randint(t // 16, t // 2, (2,), generator=g).tolist()
        r, c = torch.randint(0, t - max(h, w), (2,), generator=g).tolist()
        masks[0, j, r : r + h, c : c + w] = True
    return {
        "image": torch.rand(1, 3, img, img, generator=g),
        "masks": masks,
        "valid": torch.ones(1, k, dtype=torch.bool),
        "prompt_seed": torch.tensor([k]),
    }


def step_growth_mib(
    module: InteractiveTraining, batch: dict[str, torch.Tensor], device: str, precision: str
) -> tuple[float, float, str]:
    """(memory growth in MiB, seconds, method) of one forward + backward."""
    batch = {k: v.to(device) for k, v in batch.items()}
    module.zero_grad(set_to_none=False)
    with PeakMemory(device, settle=True) as mem:
        t0 = time.perf_counter()
        with autocast(device, precision):
            loss, _ = module(batch)
        loss.backward()
    return mem.growth_mib, time.perf_counter() - t0, mem.method


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="efficientsam_vitt", help="fine-tuning config")
    parser.add_argument("--k1", type=int, default=2, help="masks of the smaller step")
    parser.add_argument("--k2", type=int, default=6, help="masks of the larger step")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--freeze",
        default="",
        help="comma-separated parts kept frozen, as model.freeze (e.g. image_encoder)",
    )
    parser.add_argument("--output", help="write a results JSON here")
    parser.add_argument("overrides", nargs="*", help="config KEY=VALUE overrides")
    args = parser.parse_args(argv)
    if not 1 <= args.k1 < args.k2:
        raise SystemExit(f"need 1 <= k1 < k2, got {args.k1}, {args.k2}")
    if args.threads:
        torch.set_num_threads(args.threads)
    start = utc_now()
    cfg = load_config(FinetuneConfig, args.config, args.overrides)
    torch.manual_seed(0)
    model, _ = build_finetune_model(cfg)
    frozen = [p for p in args.freeze.split(",") if p]
    try:
        freeze_parts(model, frozen)  # untrained weights: what is frozen matters, not its values
    except InputError as e:
        raise SystemExit(f"--freeze: {e}") from None
    model = model.to(args.device).train()
    img, t = cfg.model.img_size, loss_size(cfg)
    b, k = cfg.train.batch_size, cfg.data.max_masks
    rows: dict[str, dict[str, Any]] = {}
    method = ""
    for recompute in (False, True):
        module = InteractiveTraining(model, cfg.prompts, cfg.loss, recompute_rounds=recompute)
        step_growth_mib(module, _batch(1, img, t), args.device, args.precision)  # warm-up
        peaks, secs = [], []
        for n in (args.k1, args.k2):
            peak, sec, method = step_growth_mib(
                module, _batch(n, img, t), args.device, args.precision
            )
            peaks.append(peak)
            secs.append(sec)
        per_mask = (peaks[1] - peaks[0]) / (args.k2 - args.k1)
        per_image = peaks[0] - args.k1 * per_mask
        rows["recompute" if recompute else "keep"] = {
            "peak_mib": dict(zip((args.k1, args.k2), peaks, strict=True)),
            "seconds": dict(zip((args.k1, args.k2), secs, strict=True)),
            "per_mask_mib": per_mask,
            "per_image_mib": per_image,
            "config_step_gib": b * (per_image + k * per_mask) / GIB,
        }
    rounds = 1 + cfg.prompts.corrective_rounds
    print(
        f"{args.config}: {img} px, loss at {t}x{t}, {rounds} prompt rounds, {args.precision} on "
        f"{args.device} ({method}); config: {b} images x {k} masks per process"
        + (f"; frozen: {', '.join(frozen)}" if frozen else "")
    )
    print(
        f"{'rounds':>10} | {'per mask':>10} | {'per image':>10} | {'config step':>12} | time K1/K2"
    )
    for name, r in rows.items():
        sec = "/".join(f"{s:.1f}s" for s in r["seconds"].values())
        print(
            f"{name:>10} | {r['per_mask_mib']:7.1f} MiB | {r['per_image_mib']:7.0f} MiB | "
            f"{r['config_step_gib']:8.1f} GiB | {sec}"
        )
    ratio = rows["recompute"]["per_mask_mib"] / rows["keep"]["per_mask_mib"]
    print(f"recomputed rounds keep {ratio:.2f}x the memory per mask")
    if args.output:
        results = make_results(
            "finetune_step_memory",
            model={"name": cfg.model.arch, "checkpoint": None, "weights": "untrained (seed 0)"},
            config={
                "config": args.config,
                "overrides": list(args.overrides),
                "img_size": img,
                "loss_size": t,
                "rounds": rounds,
                "k1": args.k1,
                "k2": args.k2,
                "batch_size": b,
                "max_masks": k,
                "threads": torch.get_num_threads(),
                "memory_method": method,
                "frozen": frozen,
            },
            metrics={**rows, "recompute_per_mask_ratio": ratio},
            meta=run_metadata(device=args.device, dtype=args.precision, start_time=start),
        )
        write_json_atomic(args.output, results)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
