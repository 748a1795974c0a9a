"""Muon's Newton-Schulz iterations in bfloat16 against float32, on a fine-tuning config's model.

``train.optim.name=muon`` orthogonalises the update of every linear layer's weight and every
convolution kernel with five Newton-Schulz iterations. PyTorch runs them in bfloat16;
``train.optim.muon_ns_dtype`` chooses (``auto``: bfloat16 on CUDA, float32 elsewhere). On a CPU
without bfloat16 matrix units the small products run many times slower in bfloat16. This
script builds the config's model (default ``tiny``, untrained, seed 0), fills its gradients
with one training step of the config's batch (random rectangles as masks), and times,
interleaved so that load changes hit both alike:

* the optimizer step (Muon for the linear and convolution weights, AdamW for the rest) with the
  iterations in bfloat16 and in float32 (learning rate 0, so every repeat does the same work on
  the same weights);
* the forward and backward pass of the training step, which both share.

It prints the minimum of each and the training step (forward + backward + optimizer) with
either dtype, and their ratio.

Usage::

    python benchmarks/bench_muon.py [--config tiny] [--repeats 20] [--threads N]
        [--device cpu] [--output FILE.json] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import Any

import torch

from esam.config import load_config
from esam.finetune.config import FinetuneConfig
from esam.finetune.model import build_finetune_model
from esam.finetune.run import loss_size
from esam.finetune.task import InteractiveTraining
from esam.train import build_optimization
from esam.utils.io import write_json_atomic
from esam.utils.meta import run_metadata, utc_now
from esam.utils.results import make_results

DTYPES = ("bfloat16", "float32")


def rectangle_batch(b: int, k: int, img: int, t: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """B random images with K random rectangles each as masks (BxKxTxT at the loss side)."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(b, k, t, t, dtype=torch.bool)
    for i in range(b):
        for j in range(k):
            h, w = torch.randint(max(1, t // 16), t // 2, (2,), generator=g).tolist()
            r, c = torch.randint(0, t - max(h, w), (2,), generator=g).tolist()
            masks[i, j, r : r + h, c : c + w] = True
    return {
        "image": torch.rand(b, 3, img, img, generator=g),
        "masks": masks,
        "valid": torch.ones(b, k, dtype=torch.bool),
        "prompt_seed": torch.arange(b),
    }


def _ms(fn: Any, device: str) -> float:
    """Milliseconds of one call (CUDA synchronised before and after)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny", help="fine-tuning config")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls of each")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", help="write a results JSON here")
    parser.add_argument("overrides", nargs="*", help="config KEY=VALUE overrides")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads:
        torch.set_num_threads(args.threads)
    start = utc_now()
    cfg = load_config(FinetuneConfig, args.config, args.overrides)
    torch.manual_seed(0)
    model, _ = build_finetune_model(cfg)
    module = InteractiveTraining(model, cfg.prompts, cfg.loss).to(args.device).train()
    b, k = cfg.train.batch_size, cfg.data.max_masks
    batch = {
        key: v.to(args.device)
        for key, v in rectangle_batch(b, k, cfg.model.img_size, loss_size(cfg)).items()
    }

    def forward_backward() -> None:
        module.zero_grad(set_to_none=False)
        loss, _ = module(batch)
        loss.backward()

    optimizers = {}
    for dtype in DTYPES:
        optim = replace(cfg.train.optim, name="muon", muon_ns_dtype=dtype)
        # never stepped by a schedule: an epoch long enough for any warm-up
        opt, _ = build_optimization(module, replace(cfg.train, optim=optim), 10**6, b)
        for group in opt.param_groups:
            group["lr"] = 0.0  # the same work on the same weights at every repeat
        optimizers[dtype] = opt
    forward_backward()
    for opt in optimizers.values():
        opt.step()  # creates the optimizer state: untimed
    times: dict[str, list[float]] = {name: [] for name in ("forward_backward", *DTYPES)}
    for _ in range(args.repeats):
        times["forward_backward"].append(_ms(forward_backward, args.device))
        for dtype, opt in optimizers.items():
            times[dtype].append(_ms(opt.step, args.device))
    best = {name: min(ms) for name, ms in times.items()}
    step = {dtype: best["forward_backward"] + best[dtype] for dtype in DTYPES}
    ratio = step["bfloat16"] / step["float32"]
    n_matrices = sum(len(g["params"]) for g in optimizers["float32"].muon.param_groups)
    print(
        f"{args.config}: {b} images x {k} masks per step, {n_matrices} weight matrices on Muon, "
        f"{torch.get_num_threads()} threads on {args.device}; minimum of {args.repeats}"
    )
    print(f"forward + backward: {best['forward_backward']:.1f} ms")
    for dtype in DTYPES:
        print(
            f"Newton-Schulz in {dtype:>8}: optimizer step {best[dtype]:7.1f} ms, "
            f"training step {step[dtype]:7.1f} ms"
        )
    print(f"float32 iterations: training step {ratio:.2f}x faster than bfloat16")
    if args.output:
        results = make_results(
            "muon_step",
            model={"name": cfg.model.arch, "checkpoint": None, "weights": "untrained (seed 0)"},
            config={
                "config": args.config,
                "overrides": list(args.overrides),
                "batch_size": b,
                "max_masks": k,
                "muon_matrices": n_matrices,
                "repeats": args.repeats,
                "threads": torch.get_num_threads(),
            },
            metrics={
                "min_ms": best,
                "step_ms": step,
                "float32_speedup": ratio,
                "all_ms": times,
            },
            meta=run_metadata(device=args.device, dtype="fp32", start_time=start),
        )
        write_json_atomic(args.output, results)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
