"""SAMI training-step speed: cached teacher against an online ViT-H teacher, and the compute floor.

Two ratios, each measured side by side in one run:

1. One SAMI training step (student forward + backward + AdamW) with the teacher's features read
   from a cache, against the same step with a SAM ViT-H-sized teacher run online on the batch
   (random weights: the arithmetic is what counts). Target: the cached step >= 5x faster.
2. The student step against its compute floor: the step's FLOPs (counted by torch's
   FlopCounterMode over forward and backward) divided by the dense matrix-multiply rate measured
   on the same machine, dtype and thread count. Target: within 2x of the floor. Optimizer and
   data time are part of the measured step; the floor counts only the matmul-like work.

Usage::

    python benchmarks/bench_sami_step.py [--student efficientsam_vitt] [--batch 16]
        [--dtypes fp32,bf16] [--iters 3] [--device cpu] [--output FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch

from esam.bench.flops import count_flops
from esam.bench.timing import dense_matmul_rate, time_callable
from esam.runtime.precision import autocast, cpu_has_native_bf16
from esam.sami.model import SamiModel, build_sami_encoder
from esam.sami.teacher import build_teacher
from esam.utils.io import write_json_atomic
from esam.utils.meta import run_metadata, utc_now
from esam.utils.results import make_results

TARGET_CACHE_SPEEDUP = 5.0
TARGET_FLOOR_RATIO = 2.0


def make_student(arch: str, device: str) -> SamiModel:
    """The paper's SAMI model: the student ViT at 224 px and an 8 x 512 decoder to 256 dims."""
    return SamiModel(build_sami_encoder(arch), teacher_dim=256).to(device).train()


def student_step(
    model: SamiModel, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor], precision: str
) -> Callable[[], None]:
    """One optimizer step on ``batch`` (images, cached targets, noise)."""
    device = batch["image"].device

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss, _, _ = model(batch["image"], batch["target"], noise=batch["noise"])
        loss.backward()
        opt.step()

    return step


def online_step(
    model: SamiModel,
    opt: torch.optim.Optimizer,
    teacher: Any,
    batch: dict[str, torch.Tensor],
    precision: str,
) -> Callable[[], None]:
    """The same step with the teacher computing the targets from the images first."""
    device = batch["image"].device

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision):
            with torch.no_grad():
                targets = teacher(batch["image"]).clone()
            loss, _, _ = model(batch["image"], targets, noise=batch["noise"])
        loss.backward()
        opt.step()

    return step


def step_flops(model: SamiModel, batch: dict[str, torch.Tensor]) -> int:
    """FLOPs of the student's forward and backward on ``batch`` (fp32 counting)."""

    def fwd_bwd() -> None:
        loss, _, _ = model(batch["image"], batch["target"], noise=batch["noise"])
        loss.backward()

    flops = count_flops(fwd_bwd, backward=True)
    model.zero_grad(set_to_none=True)
    return flops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="efficientsam_vitt")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--online-iters", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--output", help="write a results JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = utc_now()
    device = args.device
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randn(args.batch, 3, 224, 224, generator=g).to(device),
        "target": torch.randn(args.batch, 196, 256, generator=g).to(device),
        "noise": torch.rand(args.batch, 196, generator=g).to(device),
    }
    model = make_student(args.student, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    t0 = time.perf_counter()
    teacher = build_teacher("sam_vit_h", random_weights=True, input_size=224, device=device)
    print(f"ViT-H-sized teacher (random weights) built in {time.perf_counter() - t0:.1f} s")
    flops = step_flops(model, batch)
    print(
        f"student {args.student}, batch {args.batch}, device {device}, threads "
        f"{torch.get_num_threads()}: {flops / 1e9:.1f} GFLOP per step (forward + backward)"
    )
    metrics: dict[str, Any] = {"step_gflop": flops / 1e9}
    passed = True
    for precision in [d for d in args.dtypes.split(",") if d]:
        if precision == "bf16" and device == "cpu" and not cpu_has_native_bf16():
            fp32_rate = dense_matmul_rate(device, "fp32", n=1024)
            bf16_rate = dense_matmul_rate(device, "bf16", n=1024, iters=2)
            print(
                f"[bf16] not timed: this CPU has no native bfloat16 arithmetic (no AVX-512 BF16 "
                f"/ AMX); dense matmul {bf16_rate / 1e9:.1f} GFLOP/s in bf16 against "
                f"{fp32_rate / 1e9:.1f} in fp32"
            )
            metrics.update(
                bf16_skipped="no native bf16 on this CPU",
                bf16_matmul_gflops=bf16_rate / 1e9,
                fp32_matmul_gflops_n1024=fp32_rate / 1e9,
            )
            continue
        cached = time_callable(
            student_step(model, opt, batch, precision), device, warmup=1, iters=args.iters
        )
        online = time_callable(
            online_step(model, opt, teacher, batch, precision),
            device,
            warmup=0,
            iters=args.online_iters,
        )
        cached_s = min(cached.latencies_ms) / 1e3
        online_s = min(online.latencies_ms) / 1e3
        rate = dense_matmul_rate(device, precision)
        floor_s = flops / rate
        speedup = online_s / cached_s
        over_floor = cached_s / floor_s
        ok = speedup >= TARGET_CACHE_SPEEDUP and over_floor <= TARGET_FLOOR_RATIO
        passed &= ok
        print(
            f"[{precision}] cached-teacher step {cached_s:.3f} s, online ViT-H step {online_s:.2f} s"
            f" -> {speedup:.1f}x (target >= {TARGET_CACHE_SPEEDUP:.0f}x)"
        )
        print(
            f"[{precision}] dense matmul rate {rate / 1e9:.1f} GFLOP/s -> floor {floor_s:.3f} s; "
            f"the step takes {over_floor:.2f}x the floor (target <= {TARGET_FLOOR_RATIO:.0f}x)"
        )
        metrics.update(
            {
                f"{precision}_cached_step_s": cached_s,
                f"{precision}_online_step_s": online_s,
                f"{precision}_cache_speedup": speedup,
                f"{precision}_matmul_gflops": rate / 1e9,
                f"{precision}_floor_s": floor_s,
                f"{precision}_step_over_floor": over_floor,
            }
        )
    print("PASS" if passed else "FAIL")
    if args.output:
        results = make_results(
            "sami_step_speed",
            model={"name": f"sami_{args.student}", "checkpoint": None, "weights": "untrained"},
            config={
                "batch": args.batch,
                "img_size": 224,
                "decoder": "8 x 512",
                "teacher": "sam_vit_h (random weights) at 224 px",
                "iters": args.iters,
                "threads": torch.get_num_threads(),
            },
            metrics=metrics,
            meta=run_metadata(device=device, dtype=args.dtypes, start_time=start),
        )
        write_json_atomic(args.output, results)
    with contextlib.suppress(Exception):
        del teacher
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
