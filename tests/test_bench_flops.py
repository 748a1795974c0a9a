"""Parameter counts and FLOPs of a tiny EfficientSAM against values computed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from esam.bench.flops import count_flops, flops_and_macs, parameter_counts
from esam.bench.models import build_bench_model

TINY = {"img_size": 64, "encoder_depth": 1}
C = 192  # Ti token width
NECK = 256  # neck / decoder width
G = 64 // 16  # token grid side
N = G * G  # image tokens


def _linear(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def hand_params() -> dict[str, int]:
    """Parameter counts of the tiny Ti model, written out layer by layer."""
    block = (
        2 * C + _linear(C, 3 * C) + _linear(C, C) + 2 * C + _linear(C, 4 * C) + _linear(4 * C, C)
    )
    encoder = (
        3 * 16 * 16 * C
        + C  # patch embedding conv
        + (14 * 14 + 1) * C  # position embedding stored at 14x14 plus a class slot
        + TINY["encoder_depth"] * block
        + C * NECK
        + 2 * NECK
        + NECK * NECK * 9
        + 2 * NECK  # neck: 1x1 conv, LN, 3x3 conv, LN
    )
    prompt = 4 * NECK  # padding, positive point, box top-left, box bottom-right embeddings
    ci, mlp = NECK // 2, 2048
    cross = 3 * _linear(NECK, ci) + _linear(ci, NECK)
    layer = (
        4 * _linear(NECK, NECK)
        + cross
        + _linear(NECK, mlp)
        + _linear(mlp, NECK)
        + cross
        + 4 * 2 * NECK
    )
    transformer = 2 * layer + cross + 2 * NECK
    upscaling = (NECK * 64 * 4 + 64) + 2 * 64 + (64 * 32 * 4 + 32)
    hyper = 4 * (2 * _linear(NECK, NECK) + _linear(NECK, 32))
    iou_head = 2 * _linear(NECK, NECK) + _linear(NECK, 4)
    decoder = NECK + 4 * NECK + transformer + upscaling + hyper + iou_head
    return {
        "image_encoder": encoder,
        "prompt_encoder": prompt,
        "mask_decoder": decoder,
        "total": encoder + prompt + decoder,
    }


def hand_encoder_macs() -> int:
    patch = N * C * 3 * 16 * 16
    block = N * C * 3 * C + 2 * N * N * C + N * C * C + 2 * N * C * 4 * C
    neck = N * C * NECK + N * NECK * NECK * 9
    return patch + TINY["encoder_depth"] * block + neck


def hand_decoder_macs() -> int:
    """One box (padded to 6 prompt slots), 3 output masks."""
    t = 1 + 4 + 6  # IoU token, 4 mask tokens, 6 prompt slots
    ci, mlp = NECK // 2, 2048
    prompt = 6 * 2 * (NECK // 2) + N * 2 * (NECK // 2)  # Fourier features of prompts and grid
    self_attn = 3 * t * NECK * NECK + 2 * t * t * NECK + t * NECK * NECK
    t2i = t * NECK * ci + 2 * N * NECK * ci + 2 * t * N * ci + t * ci * NECK
    i2t = N * NECK * ci + 2 * t * NECK * ci + 2 * N * t * ci + N * ci * NECK
    layer = self_attn + t2i + 2 * t * NECK * mlp + i2t
    transformer = 2 * layer + t2i
    upscaling = N * 64 * NECK * 4 + (2 * G) ** 2 * 32 * 64 * 4
    hyper = 3 * (2 * NECK * NECK + NECK * 32) + 3 * 32 * (4 * G) ** 2
    iou = 2 * NECK * NECK + NECK * 4
    return prompt + transformer + upscaling + hyper + iou


@pytest.fixture(scope="module", params=[False, True], ids=["fast", "reference"])
def bench_model(request):
    name = "efficientsam_vitt" + (":reference" if request.param else "")
    return build_bench_model(name, overrides=TINY)


def test_parameter_counts_match_hand_computation(bench_model) -> None:
    counts = parameter_counts(bench_model.module(), bench_model.components())
    assert counts == hand_params()


def test_flops_match_hand_computation(bench_model) -> None:
    from esam.bench.accuracy import synthetic_set

    acc = synthetic_set(1, 64, 1, seed=0)
    inputs = bench_model.make_inputs(acc.images, acc.boxes)
    enc = count_flops(lambda: bench_model.encode(inputs))
    assert flops_and_macs(enc)["macs"] == hand_encoder_macs()
    with torch.inference_mode():
        emb = bench_model.encode(inputs)
    dec = count_flops(lambda: bench_model.decode(emb, inputs))
    assert dec == 2 * hand_decoder_macs()
    e2e = count_flops(lambda: bench_model.end_to_end(inputs))
    assert e2e == enc + dec  # upsampling and thresholding are not counted


def test_cpu_fused_attention_is_counted() -> None:
    q = torch.rand(2, 3, 10, 8)
    k = torch.rand(2, 3, 7, 8)
    v = torch.rand(2, 3, 7, 5)
    fused = count_flops(lambda: F.scaled_dot_product_attention(q, k, v))
    explicit = count_flops(lambda: (q @ k.transpose(-2, -1)).softmax(-1) @ v)
    assert fused == explicit == 2 * 2 * 3 * 10 * 7 * 8 + 2 * 2 * 3 * 10 * 7 * 5


def test_flops_and_macs() -> None:
    assert flops_and_macs(10) == {"flops": 10, "macs": 5}


def test_ti_encoder_macs_at_1024_is_about_102_g() -> None:
    n, c = 64 * 64, 192
    block = n * c * 3 * c + 2 * n * n * c + n * c * c + 2 * n * c * 4 * c
    macs = n * c * 768 + 12 * block + n * c * 256 + n * 256 * 256 * 9
    assert 101e9 < macs < 103e9
