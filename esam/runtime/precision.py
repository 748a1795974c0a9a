"""Precision names, autocast and the fp16 gradient scaler, in one place.

Names (case-insensitive): ``fp32`` / ``float32``, ``bf16`` / ``bfloat16``, ``fp16`` /
``float16``. Weights stay float32 in every mode; bf16 and fp16 run the forward pass under
``torch.autocast``:

============  ===========================  ======================================
precision     CPU                          CUDA
============  ===========================  ======================================
fp32          no autocast                  no autocast
bf16          autocast to bfloat16         autocast to bfloat16
fp16          :class:`PrecisionError`      autocast to float16 + a ``GradScaler``
============  ===========================  ======================================
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator

import torch

from esam.errors import UserError
from esam.utils.meta import cpu_fields

#: Every accepted precision name and its dtype.
PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}

_SHORT = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


class PrecisionError(UserError, ValueError):
    """An unknown precision name, or a precision the device cannot run."""


def parse_precision(name: str | torch.dtype) -> torch.dtype:
    """The dtype of a precision name (or a dtype of the map, returned as it is).

    Raises:
        PrecisionError: the name is not one of :data:`PRECISIONS`.
    """
    if isinstance(name, torch.dtype):
        if name not in _SHORT:
            raise PrecisionError(f"unsupported precision dtype {name}; choose from {_choices()}")
        return name
    dtype = PRECISIONS.get(str(name).strip().lower())
    if dtype is None:
        raise PrecisionError(f"unknown precision {name!r}; choose from {_choices()}")
    return dtype


def precision_name(name: str | torch.dtype) -> str:
    """The short name (``fp32``, ``bf16``, ``fp16``) of any accepted name or dtype."""
    return _SHORT[parse_precision(name)]


def _choices() -> str:
    return ", ".join(PRECISIONS)


def _device_type(device: str | torch.device) -> str:
    return torch.device(device).type


def check_precision(device: str | torch.device, precision: str | torch.dtype) -> torch.dtype:
    """The dtype of ``precision`` after checking that ``device`` can train or run in it.

    Raises:
        PrecisionError: unknown name; fp16 off CUDA; bf16 or fp16 on a device type other than
            CPU and CUDA.
    """
    dtype = parse_precision(precision)
    dev = _device_type(device)
    if dtype == torch.float32:
        return dtype
    if dtype == torch.float16 and dev != "cuda":
        raise PrecisionError(
            f"precision fp16 needs a CUDA device (got {dev}); use bf16 or fp32 on {dev}"
        )
    if dev not in ("cpu", "cuda"):
        raise PrecisionError(f"precision {_SHORT[dtype]} is not supported on {dev}; use fp32")
    if dtype == torch.bfloat16 and dev == "cpu" and not cpu_has_native_bf16():
        _warn_slow_bf16()
    return dtype


@functools.cache
def _warn_slow_bf16() -> None:
    logging.getLogger(__name__).warning(
        "this CPU has no native bfloat16 arithmetic (no AVX-512 BF16 / AMX): bf16 runs are "
        "correct but much slower than fp32 here"
    )


@contextlib.contextmanager
def autocast(device: str | torch.device, precision: str | torch.dtype) -> Iterator[None]:
    """``torch.autocast`` to the precision's dtype on ``device``; nothing for fp32.

    Raises:
        PrecisionError: see :func:`check_precision`.
    """
    dtype = check_precision(device, precision)
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=_device_type(device), dtype=dtype):
        yield


def make_grad_scaler(
    device: str | torch.device, precision: str | torch.dtype
) -> torch.amp.GradScaler | None:
    """A ``GradScaler`` for fp16 on CUDA (small gradients would underflow); None otherwise."""
    dtype = check_precision(device, precision)
    if dtype == torch.float16 and _device_type(device) == "cuda":
        if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
            return torch.amp.GradScaler("cuda")
        return torch.cuda.amp.GradScaler()  # type: ignore[attr-defined,return-value]
    return None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 matrix products natively (AVX-512 BF16 or AMX).

    Without it, torch's CPU bfloat16 matmuls run emulated and far slower than float32, so a
    bf16 run on such a CPU is correct but slow. Read from ``/proc/cpuinfo`` (False elsewhere).
    """
    flags = set(cpu_fields().get("cpu_matrix_flags", []))
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def supports_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively (CPU: always; CUDA: Ampere or newer)."""
    dev = torch.device(device)
    if dev.type == "cpu":
        return True
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return False
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_capability(index)[0] >= 8
    return False
