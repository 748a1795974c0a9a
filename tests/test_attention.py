"""esam.modeling.attention: the fast implementations compute the official attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from esam.modeling import attention as attn_mod
from esam.modeling.attention import attention, blocked_attention, explicit_attention, use_blocked
from tests.numerics import attention_bound


def _qkv(*lead: int, nq: int = 50, nk: int = 70, d: int = 16, dv: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*lead, nq, d, generator=g) * 2
    k = torch.randn(*lead, nk, d, generator=g) * 2
    v = torch.randn(*lead, nk, dv, generator=g)
    return q, k, v


def test_explicit_attention_matches_a_hand_computed_case() -> None:
    # One query, two keys with d=4: scores (q.k)/2 = [1, 0] -> weights e/(e+1), 1/(e+1).
    q = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    k = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    v = torch.tensor([[1.0], [0.0]])
    e = torch.tensor(1.0).exp()
    assert torch.allclose(explicit_attention(q, k, v), (e / (e + 1)).reshape(1, 1))


@pytest.mark.parametrize("block_rows", [1, 7, 16, 50, 1000])
@pytest.mark.parametrize("lead", [(), (3,), (2, 3)])
def test_blocked_attention_equals_explicit(block_rows: int, lead: tuple[int, ...]) -> None:
    q, k, v = _qkv(*lead)
    out = blocked_attention(q, k, v, block_rows)
    assert out.shape == (*lead, 50, 8)
    exact = explicit_attention(q.double(), k.double(), v.double())
    bound = attention_bound(q, k, v)
    # each float32 computation lies within the rounding bound of the exact result
    for other in (out, explicit_attention(q, k, v), F.scaled_dot_product_attention(q, k, v)):
        assert ((other.double() - exact).abs() <= bound).all()


def test_blocked_attention_broadcasts_a_shared_key_batch() -> None:
    q, _, _ = _qkv(4, 2)
    _, k, v = _qkv(1, 2, seed=1)
    out = blocked_attention(q, k, v, 9)
    assert out.shape == (4, 2, 50, 8)
    ke, ve = k.expand(4, -1, -1, -1), v.expand(4, -1, -1, -1)
    exact = explicit_attention(q.double(), ke.double(), ve.double())
    assert ((out.double() - exact).abs() <= attention_bound(q, ke, ve)).all()


def test_blocked_attention_rejects_empty_blocks() -> None:
    q, k, v = _qkv(2)
    with pytest.raises(ValueError, match="block_rows"):
        blocked_attention(q, k, v, 0)


def test_fast_path_takes_blocked_kernel_only_for_long_cpu_bf16(monkeypatch) -> None:
    monkeypatch.setattr(attn_mod, "CPU_BLOCKED_MIN_ELEMENTS", 50 * 70)
    q, k, v = (t.bfloat16() for t in _qkv(1, 2))
    assert use_blocked(q, k, v)
    assert not use_blocked(q.float(), k.float(), v.float())
    assert not use_blocked(q[..., :10, :], k, v)
    # training keeps the fused kernel (the blocked path writes into preallocated outputs)
    assert not use_blocked(q, k, v.detach().requires_grad_())
    with torch.no_grad():
        assert use_blocked(q, k, v.detach().requires_grad_())
    compiled = torch.compile(lambda a, b, c: torch.tensor(use_blocked(a, b, c)), backend="eager")
    assert not compiled(q, k, v)
    with torch.no_grad():
        out = attention(q, k, v, fast=True)
    ref = explicit_attention(q.float(), k.float(), v.float())
    # bfloat16 scores and weights, as the official code computes them in bfloat16.
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, blocked_attention(q, k, v))
    bound = attention_bound(q.float(), k.float(), v.float(), storage=torch.bfloat16)
    assert ((out.double() - ref.double()).abs() <= bound).all()
    assert torch.equal(attention(q, k, v, fast=False), explicit_attention(q, k, v))


def test_blocked_bf16_over_several_blocks_matches_the_official_computation() -> None:
    # 300 query rows: two full blocks of 128 and a last one of 44, written into strided slices.
    q, k, v = (t.bfloat16() for t in _qkv(2, 3, nq=300, nk=200, d=64, dv=32))
    out = blocked_attention(q, k, v)
    official = explicit_attention(q, k, v).double()
    exact = explicit_attention(q.double(), k.double(), v.double())
    # the official arithmetic in bfloat16, block by block: both within its rounding bound
    bound = attention_bound(q, k, v, storage=torch.bfloat16)
    assert ((official - exact).abs() <= bound).all()
    assert ((out.double() - exact).abs() <= bound).all()


@pytest.mark.parametrize(("nq", "nk", "heads"), [(0, 5, 2), (4, 5, 0)])
def test_blocked_attention_of_empty_inputs(nq: int, nk: int, heads: int) -> None:
    q = torch.zeros(2, heads, nq, 8)
    k = torch.zeros(2, heads, nk, 8)
    v = torch.zeros(2, heads, nk, 4)
    assert blocked_attention(q, k, v).shape == (2, heads, nq, 4)
