"""Floating-point tolerances derived from the dtype and the length of the reductions.

Two computations of the same arithmetic (a blocked kernel and a fused one, a batched call and a
loop) round differently: different BLAS kernels sum in different orders, use FMA or not, and
differ between CPUs. Their difference is bounded by the standard rounding-error analysis
(Higham, *Accuracy and Stability of Numerical Algorithms*, Ch. 3): a sum or dot product of ``n``
terms computed in any order has a relative error of at most ``gamma_n = n u / (1 - n u)`` of the
sum of the absolute terms, with ``u`` the unit roundoff (half the machine epsilon). Tolerances
here are such bounds, never numbers read off one machine.
"""

from __future__ import annotations

import torch


def unit_roundoff(dtype: torch.dtype) -> float:
    """Half the machine epsilon of a floating dtype (2^-24 for float32)."""
    return torch.finfo(dtype).eps / 2


def gamma(n: int, dtype: torch.dtype) -> float:
    """Higham's gamma_n: the relative error bound of an ``n``-term sum in ``dtype``."""
    nu = n * unit_roundoff(dtype)
    if nu >= 1:
        raise ValueError(f"a {n}-term reduction in {dtype} has no meaningful error bound")
    return nu / (1 - nu)


def attention_bound(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    storage: torch.dtype | None = None,
    accumulate: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Elementwise bound on |computed - exact| of ``softmax(q k^T / sqrt(d)) v``.

    Args:
        q: ...xNqxD, k: ...xNkxD, v: ...xNkxDv.
        storage: dtype every intermediate (scores, weights, output) is rounded to; None when
            it is the accumulation dtype (a float32 computation).
        accumulate: dtype the reductions are carried out in (float32 for float32 and for
            oneDNN's / cuBLAS's bfloat16 matrix products).

    Returns:
        ...xNqxDv float64 bound, from three error sources, each with its worst-case factor:

        * the scores: each is a D-term dot product, off by at most
          ``(gamma_D + u_s) |q| . |k| / sqrt(d)`` (u_s: one rounding to ``storage``); a
          perturbation ``delta`` of the scores moves each softmax weight by at most
          ``2 max|delta|`` relative (softmax is shift invariant);
        * the softmax itself: exp (a few ulp) and an Nk-term normalising sum, then one rounding;
        * the weighted sum over Nk values, then one rounding of the output.
    """
    us = unit_roundoff(storage) if storage is not None else 0.0
    d, nk = q.shape[-1], k.shape[-2]
    q64, k64, v64 = q.double(), k.double(), v.double()
    scale = d**-0.5
    score_err = (gamma(d, accumulate) + us) * scale * (q64.abs() @ k64.abs().transpose(-1, -2))
    p = torch.softmax(q64 @ k64.transpose(-1, -2) * scale, dim=-1)
    weight_rel = 2 * score_err.amax(dim=-1, keepdim=True) + gamma(nk + 4, accumulate) + us
    weighted = p @ v64.abs()
    return (weight_rel + gamma(nk, accumulate) + us) * weighted


#: Higham & Mary's lambda for the probabilistic bound below: the bound holds for every one of
#: N = 10^8 elements with probability above 1 - 10^-6 (lambda = sqrt(2 ln(2 N / 10^-6)) < 8).
PROBABILISTIC_LAMBDA = 8.0


def network_tolerance(dtype: torch.dtype, reduction: int, depth: int) -> float:
    """Relative tolerance for comparing two computations of a whole network's outputs.

    Worst-case bounds (:func:`gamma`) grow like ``n u`` and are far too pessimistic for deep
    networks; with rounding errors modelled as independent, zero-mean random variables, an
    ``n``-term reduction errs by at most ``lambda sqrt(n) u`` relative with overwhelming
    probability (Higham & Mary, "A new approach to probabilistic rounding error analysis",
    SIAM J. Sci. Comput. 2019). A chain of ``depth`` such reductions accumulates at most
    ``depth`` times that, and two computations may err in opposite directions:
    ``2 * depth * lambda * sqrt(reduction) * u`` of the output's scale (assuming layers that
    are not ill-conditioned, true for normalised transformer blocks).
    """
    return 2 * depth * PROBABILISTIC_LAMBDA * reduction**0.5 * unit_roundoff(dtype)


def efficientsam_tolerance(encoder_depth: int = 12, tokens: int = 4096) -> float:
    """Relative tolerance between two float32 computations of an EfficientSAM's outputs.

    Encoder: ``encoder_depth`` blocks of 4 reductions plus the 2-conv neck, the longest being
    the attention over ``tokens`` or the neck's 3x3x256 = 2304-term convolution; decoder: 2
    two-way blocks of 6 reductions, the final attention, the upscaling and the heads (the
    longest its 2048-wide MLP or the attention over the image tokens).
    """
    longest = max(tokens, 2304)
    return network_tolerance(torch.float32, longest, encoder_depth * 4 + 2 + 2 * 6 + 6)


def iou_tolerance(n_pixels_union: int, n_flippable: int) -> float:
    """Largest change (percentage points) of a mask's IoU when ``n_flippable`` of its pixels,
    lying within rounding error of the threshold, go the other way: each moves the intersection
    or the union by one."""
    if n_pixels_union <= n_flippable:
        return 100.0
    return 100.0 * 2 * n_flippable / (n_pixels_union - n_flippable)
