"""Exact parameter counts per component, and FLOPs / MACs from ``torch.utils.flop_counter``.

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode`, which counts 2 FLOPs
per multiply-accumulate of matrix products (mm, addmm, bmm, baddbmm), convolutions (transposed
ones included) and fused scaled-dot-product attention; element-wise ops, normalisations,
softmax and interpolation are not counted. ``macs = flops / 2``.

PyTorch registers no formula for the CPU fused attention kernel
(``aten._scaled_dot_product_flash_attention_for_cpu``); :data:`EXTRA_FORMULAS` adds the same
formula the counter uses for the CUDA kernels, so fused (SDPA) and explicit-matmul attention
count the same FLOPs on every device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

COUNTER_NAME = (
    "torch.utils.flop_counter.FlopCounterMode (matmul, conv, SDPA; 2 FLOPs per MAC; "
    "element-wise ops, norms, softmax and interpolation not counted)"
)


def attention_flops(
    query_shape: tuple[int, ...], key_shape: tuple[int, ...], value_shape: tuple[int, ...]
) -> int:
    """FLOPs of softmax(q k^T) v for BxHxSqxD queries and BxHxSkxD / BxHxSkxDv keys / values."""
    b, h, s_q, d_q = query_shape
    s_k = key_shape[-2]
    d_v = value_shape[-1]
    return 2 * b * h * s_q * s_k * d_q + 2 * b * h * s_q * s_k * d_v


def _cpu_flash_flop(
    query_shape: tuple[int, ...],
    key_shape: tuple[int, ...],
    value_shape: tuple[int, ...],
    *args: Any,
    **kwargs: Any,
) -> int:
    return attention_flops(query_shape, key_shape, value_shape)


def _extra_formulas() -> dict[Any, Callable[..., int]]:
    out: dict[Any, Callable[..., int]] = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        out[op] = _cpu_flash_flop
    return out


#: Formulas added to the counter's registry.
EXTRA_FORMULAS: dict[Any, Callable[..., int]] = _extra_formulas()


def count_flops(fn: Callable[[], Any], backward: bool = False) -> int:
    """FLOPs of one call of ``fn``.

    Args:
        fn: the work; run under ``torch.inference_mode`` unless ``backward``.
        backward: ``fn`` runs a backward pass too (its FLOPs are counted with the forward's).
    """
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
    with torch.inference_mode(not backward), counter:
        fn()
    return int(counter.get_total_flops())


def flops_and_macs(flops: int) -> dict[str, int]:
    """``{"flops": f, "macs": f // 2}``."""
    return {"flops": int(flops), "macs": int(flops) // 2}


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements of ``module`` (each shared tensor counted once)."""
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def parameter_counts(model: nn.Module, components: dict[str, nn.Module]) -> dict[str, int]:
    """``{"total": n, <component>: n, ...}``; components should partition the model."""
    out = {"total": count_parameters(model)}
    out.update({name: count_parameters(m) for name, m in components.items()})
    return out
