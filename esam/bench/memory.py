"""Peak memory of a block of work: CUDA max allocated on GPU, process RSS on CPU.

CPU method: Linux keeps a per-process high-water mark of the resident set (``VmHWM`` in
``/proc/self/status``) and resets it when ``5`` is written to ``/proc/self/clear_refs``. The
peak of a block is therefore read exactly, without sampling: reset the mark, run the block,
read the mark. Where that file is not writable (other kernels, other systems) a background
thread samples the RSS every millisecond instead; torch kernels release the GIL, so the
sampler runs while they compute, but a spike shorter than the period can be missed. The
method used is reported with every number. ``tracemalloc`` is not used: it sees only Python
allocations, not torch's.

GPU method: ``torch.cuda.reset_peak_memory_stats`` before, ``torch.cuda.max_memory_allocated``
after (tensors allocated by PyTorch's caching allocator; the allocator's reserve and the CUDA
context are not included).
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

MIB = float(2**20)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss_bytes() -> int:
    """Resident set size of this process now."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
        return int(fields[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return peak_rss_bytes()


def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_bytes() -> int:
    """High-water mark of the resident set (since start or the last :func:`reset_peak_rss`)."""
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm * 1024
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(ru) if sys.platform == "darwin" else int(ru) * 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


class _RssSampler(threading.Thread):
    """Samples the RSS every ``period_s`` until stopped; keeps the maximum."""

    def __init__(self, period_s: float = 1e-3) -> None:
        super().__init__(daemon=True)
        self.period_s = period_s
        self.peak = current_rss_bytes()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, current_rss_bytes())
            time.sleep(self.period_s)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, current_rss_bytes())
        return self.peak


class PeakMemory:
    """Context manager measuring the peak memory of its block on ``device``.

    After the block, ``peak_bytes`` is the peak (CUDA: allocated tensors; CPU: whole-process
    RSS), ``baseline_bytes`` the same quantity when the block started, and ``method`` names
    how it was measured. With ``settle``, garbage is collected first and, on CPU, freed heap
    memory handed back to the OS, so the baseline does not carry an earlier step's leftovers.
    """

    def __init__(self, device: str = "cpu", *, settle: bool = False) -> None:
        self.device = str(device)
        self.settle = settle
        self.peak_bytes = 0
        self.baseline_bytes = 0
        self.method = ""
        self._sampler: _RssSampler | None = None

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def __enter__(self) -> PeakMemory:
        if self.settle:
            import gc

            from esam.utils.allocator import trim_heap

            gc.collect()
            if not self.is_cuda:
                trim_heap()
        if self.is_cuda:
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_bytes = int(torch.cuda.memory_allocated(self.device))
            self.method = "torch.cuda.max_memory_allocated"
            return self
        self.baseline_bytes = current_rss_bytes()
        if reset_peak_rss():
            self.method = "process RSS high-water mark (VmHWM, reset via /proc/self/clear_refs)"
        else:
            self._sampler = _RssSampler()
            self._sampler.start()
            self.method = "process RSS sampled every 1 ms"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.is_cuda:
            import torch

            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        elif self._sampler is not None:
            self.peak_bytes = self._sampler.stop()
        else:
            self.peak_bytes = peak_rss_bytes()

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / MIB

    @property
    def growth_mib(self) -> float:
        """Peak minus the value at the start of the block."""
        return max(0, self.peak_bytes - self.baseline_bytes) / MIB

    def as_dict(self) -> dict[str, Any]:
        return {"peak_mib": self.peak_mib, "growth_mib": self.growth_mib, "method": self.method}
