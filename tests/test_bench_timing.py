"""Timing statistics and peak-memory measurement on CPU."""

from __future__ import annotations

import numpy as np
import pytest

from esam.bench import timing as timing_mod
from esam.bench.memory import PeakMemory
from esam.bench.timing import Timing, dense_matmul_rate, percentile, time_callable, timer_name


def test_percentile_matches_numpy() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 10.0, 7.0]
    for q in (0, 10, 50, 90, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    with pytest.raises(ValueError):
        percentile([], 50)


def test_time_callable_counts_calls() -> None:
    calls = []
    t = time_callable(lambda: calls.append(1), "cpu", warmup=2, iters=5)
    assert len(calls) == 7
    assert len(t.latencies_ms) == 5 and t.timer == "perf_counter"
    assert timer_name("cuda:0") == "cuda_events"


def test_summary() -> None:
    s = Timing([10.0, 20.0, 30.0, 40.0], total_s=0.1, timer="perf_counter").summary(batch_size=8)
    assert s["images_per_s"] == pytest.approx(8 * 4 / 0.1)
    assert s["latency_p50_ms"] == 25.0
    assert s["latency_p90_ms"] == pytest.approx(37.0)
    assert s["latency_mean_ms"] == 25.0


def test_peak_memory_sees_a_large_allocation() -> None:
    with PeakMemory("cpu") as pm:
        a = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        del a
    assert pm.growth_mib > 50
    assert pm.peak_mib >= pm.growth_mib
    assert pm.method


def test_a_settled_measurement_collects_and_trims_before_its_baseline(monkeypatch) -> None:
    import gc

    import esam.utils.allocator as allocator

    calls: list[str] = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append("collect") or 0)
    monkeypatch.setattr(allocator, "trim_heap", lambda: calls.append("trim"))
    with PeakMemory("cpu"):
        pass
    assert calls == []
    with PeakMemory("cpu", settle=True) as pm:
        assert calls == ["collect", "trim"]
    assert pm.method


def test_dense_matmul_rate_counts_two_n_cubed_over_the_fastest_call(monkeypatch) -> None:
    seen = []

    def fake(fn, device, warmup, iters):
        seen.append(tuple(fn().shape))
        return Timing([4.0, 2.0, 3.0], 0.009, "perf_counter")

    monkeypatch.setattr(timing_mod, "time_callable", fake)
    assert dense_matmul_rate(n=100) == pytest.approx(2 * 100**3 / 2e-3)
    assert seen == [(100, 100)]


def test_dense_matmul_rate_runs_and_rejects_bad_arguments() -> None:
    rate = dense_matmul_rate(n=64, iters=2)
    assert 1e6 < rate < 1e15
    with pytest.raises(ValueError, match="dtype"):
        dense_matmul_rate(dtype="int8")
    with pytest.raises(ValueError, match="n must be"):
        dense_matmul_rate(n=0)


@pytest.mark.parametrize("retaining", [False, True])
def test_timed_calls_keep_retained_memory(monkeypatch, retaining: bool) -> None:
    # Trimming the heap before the timed calls would hand retained pages back to the OS.
    from esam.bench import worker
    from esam.utils import allocator

    trims = []

    class FakeLibc:
        def malloc_trim(self, pad: int) -> None:
            trims.append(1)

    monkeypatch.setattr(allocator, "_libc", lambda: FakeLibc())
    monkeypatch.setattr(allocator, "_retained", retaining)
    timing, mem = worker._timed(lambda: None, "cpu", warmup=1, iters=2)
    assert len(timing.latencies_ms) == 2 and mem["peak_mem_mib"] > 0
    assert trims == ([] if retaining else [1])
