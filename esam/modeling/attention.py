"""Scaled dot-product attention with a switchable implementation.

esam computes attention with :func:`torch.nn.functional.scaled_dot_product_attention`
(fused kernels where the backend has them). The *reference* implementation materialises the
full attention matrix exactly as the official EfficientSAM code does; benchmarks compare the
two, and it serves as a readable statement of what the fused kernel computes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, use_sdpa: bool = True
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v.

    Args:
        q: ...xNqxD queries.
        k: ...xNkxD keys.
        v: ...xNkxDv values.
        use_sdpa: fused ``scaled_dot_product_attention`` when True; explicit matmuls otherwise.

    Returns:
        ...xNqxDv.
    """
    if use_sdpa:
        return F.scaled_dot_product_attention(q, k, v)
    scale = q.shape[-1] ** -0.5
    attn = (q @ k.transpose(-2, -1)) * scale
    return attn.softmax(dim=-1) @ v
