"""Timing of a callable: CUDA events on GPU, ``time.perf_counter`` on CPU.

Warm-up calls run first and are not timed. On GPU each timed call is bracketed by two CUDA
events recorded on the current stream, with no synchronisation in between, so the latency of
a call is the GPU time from the moment the stream reaches the call to the moment it finishes
(host-side launch gaps included, since the stream waits for them); throughput is the number of
images over the span from the first start event to the last end event.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between order statistics."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class Timing:
    """Latencies of the timed calls and the wall span they covered."""

    latencies_ms: list[float]
    total_s: float
    timer: str

    def summary(self, batch_size: int) -> dict[str, float]:
        """images/s over the whole span, and latency statistics in ms."""
        n = len(self.latencies_ms)
        total = self.total_s if self.total_s > 0 else sum(self.latencies_ms) / 1e3
        return {
            "images_per_s": batch_size * n / total if total > 0 else float("inf"),
            "latency_p50_ms": percentile(self.latencies_ms, 50),
            "latency_p90_ms": percentile(self.latencies_ms, 90),
            "latency_mean_ms": sum(self.latencies_ms) / n,
            "latency_min_ms": min(self.latencies_ms),
        }


def timer_name(device: str) -> str:
    """How :func:`time_callable` times on ``device``."""
    return "cuda_events" if str(device).startswith("cuda") else "perf_counter"


def time_callable(fn: Callable[[], Any], device: str, warmup: int, iters: int) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``iters`` times timed.

    Args:
        fn: the work; its return value is dropped after each call.
        device: ``cpu`` or ``cuda[:N]``.
        warmup: untimed calls first.
        iters: timed calls (>= 1).
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if str(device).startswith("cuda"):
        return _time_cuda(fn, device, warmup, iters)
    for _ in range(warmup):
        fn()
    lat = []
    first = time.perf_counter()
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        lat.append((time.perf_counter() - t0) * 1e3)
    return Timing(lat, time.perf_counter() - first, "perf_counter")


def _time_cuda(fn: Callable[[], Any], device: str, warmup: int, iters: int) -> Timing:
    import torch

    with torch.cuda.device(torch.device(device)):
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        for i in range(iters):
            starts[i].record()
            fn()
            ends[i].record()
        torch.cuda.synchronize()
        lat = [float(s.elapsed_time(e)) for s, e in zip(starts, ends, strict=True)]
        total = float(starts[0].elapsed_time(ends[-1])) / 1e3
    return Timing(lat, total, "cuda_events")


def dense_matmul_rate(
    device: str = "cpu", dtype: str = "fp32", n: int = 2048, warmup: int = 1, iters: int = 5
) -> float:
    """Measured FLOP/s of one square ``n x n @ n x n`` matrix multiply (the fastest of ``iters``).

    The practical ceiling of dense compute on ``device`` at ``dtype`` with the current thread
    count: a model's FLOPs divided by this rate is the time no implementation of the same
    arithmetic beats by much.

    Args:
        device: ``cpu`` or ``cuda[:N]``.
        dtype: ``fp32``, ``bf16`` or ``fp16``.
        n: matrix side (2 n^3 FLOPs per call).
    """
    import torch

    from esam.runtime.precision import parse_precision

    if dtype not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"dtype must be one of fp32, bf16, fp16, got {dtype!r}")
    torch_dtype = parse_precision(dtype)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=torch_dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=torch_dtype)
    with torch.inference_mode():
        timing = time_callable(lambda: a @ b, device, warmup, iters)
    return 2.0 * n**3 / (min(timing.latencies_ms) / 1e3)
