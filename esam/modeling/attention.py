"""Scaled dot-product attention: esam's fast implementation and the official computation.

The fast implementation is :func:`torch.nn.functional.scaled_dot_product_attention` (fused
kernels where the backend has them), except for long bfloat16 sequences on the CPU: there the
fused kernel runs its bfloat16 products at about float32 speed, while oneDNN's bfloat16 matrix
multiplies are several times faster, so esam computes the official arithmetic (explicit
``q k^T``, softmax, ``@ v``) a block of query rows at a time, keeping each block's attention
matrix in cache. The *reference* implementation materialises the full attention matrix exactly
as the official EfficientSAM code does; benchmarks compare the two.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Query rows per block in the blocked CPU path (per leading index): a 3-head block of 128 rows
#: against 4096 keys is 3 MiB of bfloat16 scores, which stays in a core's cache.
CPU_BLOCK_ROWS = 128
#: Attention matrices smaller than this (Nq x Nk) go to the fused kernel even on the CPU.
CPU_BLOCKED_MIN_ELEMENTS = 1 << 20


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v with the full attention matrix (the official computation).

    Args:
        q: ...xNqxD queries.
        k: ...xNkxD keys.
        v: ...xNkxDv values.

    Returns:
        ...xNqxDv.
    """
    attn = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    return attn.softmax(dim=-1) @ v


def blocked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_rows: int = CPU_BLOCK_ROWS
) -> torch.Tensor:
    """:func:`explicit_attention`, computed ``block_rows`` query rows at a time.

    Each output row depends only on its own query row, so the result equals the explicit
    computation's; only the attention matrix of one block (``...x block_rows x Nk``) exists at
    a time.

    Args:
        q: BxHxNqxD queries (any leading dimensions that broadcast, or none).
        k: BxHxNkxD keys.
        v: BxHxNkxDv values.
        block_rows: query rows per block and leading index.

    Returns:
        BxHxNqxDv, contiguous.
    """
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    if q.dim() == 2:
        return blocked_attention(q[None], k[None], v[None], block_rows)[0]
    lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    q, k, v = (t.expand(*lead, *t.shape[-2:]) for t in (q, k, v))
    nq, d, nk, dv = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
    out = q.new_empty(*lead, nq, dv)
    # The first leading dimension (batch) is looped, so a block's size does not grow with the
    # batch; the others (heads) are batched in each product. Keys and values are made
    # contiguous once per batch element (inputs are usually strided views of a fused qkv
    # projection, which every product would otherwise copy again).
    if out.numel() == 0:
        return out
    inner = math.prod(lead[1:])
    for b in range(lead[0]):
        qb = q[b].reshape(inner, nq, d)
        kt = k[b].reshape(inner, nk, d).contiguous().transpose(-2, -1)
        vb = v[b].reshape(inner, nk, dv).contiguous()
        ob = out[b].view(inner, nq, dv)
        scores = q.new_empty(inner, min(block_rows, nq), nk)
        for i in range(0, nq, block_rows):
            rows = min(block_rows, nq - i)
            s = scores[:, :rows]
            # beta=0: the buffer's old contents are ignored; alpha applies the 1/sqrt(d) scale.
            torch.baddbmm(s, qb[:, i : i + rows], kt, beta=0, alpha=d**-0.5, out=s)
            torch.bmm(s.softmax(dim=-1), vb, out=ob[:, i : i + rows])
    return out


def _is_compiling() -> bool:
    """``torch.compiler.is_compiling()`` (torch >= 2.3), or dynamo's own flag before that."""
    check = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    if check is None:
        check = getattr(getattr(torch, "_dynamo", None), "is_compiling", None)
    return bool(check()) if check is not None else False


def use_blocked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether the fast path takes :func:`blocked_attention` for these inputs (see module doc)."""
    return (
        q.device.type == "cpu"
        and q.dtype == torch.bfloat16
        and q.shape[-2] * k.shape[-2] >= CPU_BLOCKED_MIN_ELEMENTS
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)))
        # A compiled graph keeps the fused op, which the compiler lowers with its own kernels.
        and not _is_compiling()
    )


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, fast: bool = True) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v.

    Args:
        q: ...xNqxD queries.
        k: ...xNkxD keys.
        v: ...xNkxDv values.
        fast: esam's fast implementation when True (see module doc); the official explicit
            computation otherwise.

    Returns:
        ...xNqxDv.
    """
    if not fast:
        return explicit_attention(q, k, v)
    if use_blocked(q, k, v):
        return blocked_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)
