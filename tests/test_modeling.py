"""Model structure, shapes, gradients and the equivalence of fast and reference paths."""

from __future__ import annotations

import pytest
import torch

import esam
from esam.modeling import set_reference_mode
from esam.modeling.vit import ViT, resize_pos_embed
from esam.standin import load_standin_weights
from tests.numerics import gamma, network_tolerance

TINY = {"img_size": 64, "encoder_depth": 1}


@pytest.mark.parametrize("name", sorted(esam.model_registry))
def test_registry_builds_tiny_models(name: str) -> None:
    model = esam.build_model(name, **TINY)
    images = torch.rand(2, 3, 50, 70)
    points = torch.tensor([[[[10.0, 10.0], [40.0, 30.0]]], [[[5.0, 5.0], [-1.0, -1.0]]]])
    labels = torch.tensor([[[2, 3]], [[1, -1]]])
    logits, iou = model(images, points, labels)
    assert logits.shape == (2, 1, 3, 50, 70)
    assert iou.shape == (2, 1, 3)
    assert torch.isfinite(logits).all() and torch.isfinite(iou).all()


def test_every_parameter_receives_gradient() -> None:
    model = esam.build_model("efficientsam_vitt", **TINY).train()
    logits, iou = model(
        torch.rand(1, 3, 64, 64),
        torch.tensor([[[[3.0, 4.0], [50.0, 60.0]]]]),
        torch.tensor([[[2, 3]]]),
    )
    # single-mask token 0 is not used by the multimask outputs; cover it with the single-mask path
    low1, iou1 = model.predict_masks(
        model.get_image_embeddings(torch.rand(1, 3, 64, 64)),
        torch.tensor([[[[3.0, 4.0]]]]),
        torch.tensor([[[1]]]),
        False,
        64,
        64,
    )
    (logits.mean() + iou.mean() + low1.mean() + iou1.mean()).backward()
    no_grad = [
        n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)
    ]
    assert no_grad == []


def test_official_parameter_layout() -> None:
    model = esam.build_model("efficientsam_vitt")
    sd = model.state_dict()
    assert len(sd) == 278
    assert sd["image_encoder.pos_embed"].shape == (1, 197, 192)
    assert sd["mask_decoder.iou_prediction_head.fc.weight"].shape == (4, 256)
    assert sd["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"].shape == (2, 128)
    counts = {
        name: sum(p.numel() for p in esam.build_model(name).parameters())
        for name in ("efficientsam_vitt", "efficientsam_vits")
    }
    # Published sizes: EfficientSAM-Ti 10.22M and -S 26.41M parameters.
    assert abs(counts["efficientsam_vitt"] / 1e6 - 10.22) < 0.01
    assert abs(counts["efficientsam_vits"] / 1e6 - 26.41) < 0.01


def test_pos_embed_identity_at_pretraining_grid_and_resize() -> None:
    pe = torch.randn(1, 1 + 14 * 14, 8)
    same = resize_pos_embed(pe, (14, 14), has_cls_slot=True)
    assert torch.equal(same.reshape(1, 196, 8), pe[:, 1:])
    big = resize_pos_embed(pe, (64, 64), has_cls_slot=True)
    assert big.shape == (1, 64, 64, 8)
    const = torch.full((1, 197, 3), 0.7)
    # bicubic: two separable passes of 4 taps whose |weights| sum to at most 1.25
    tol = 0.7 * 1.25**2 * gamma(8, torch.float32)
    assert torch.allclose(
        resize_pos_embed(const, (5, 9), True), torch.full((1, 5, 9, 3), 0.7), atol=tol, rtol=0
    )
    with pytest.raises(ValueError, match="not a square"):
        resize_pos_embed(torch.randn(1, 1 + 10, 4), (3, 3), True)


def test_vit_backbone_api_consistency() -> None:
    vit = load_standin_weights(ViT(img_size=224, embed_dim=48, depth=3, num_heads=3)).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        feats = vit.forward_features(x)
        inter = vit.get_intermediate_layers(x, n=2)
        all_ids = torch.arange(196).expand(2, -1)
        masked_all = vit.forward_masked(x, all_ids)
        keep = torch.tensor([[0, 5, 100], [7, 8, 195]])
        masked = vit.forward_masked(x, keep)
    assert feats.shape == (2, 48, 14, 14)
    assert len(inter) == 2 and torch.allclose(inter[-1], feats)
    # same blocks on a gathered copy of the tokens: 3 blocks of 4 reductions of <= 196 terms
    tol = network_tolerance(torch.float32, reduction=196, depth=3 * 4) * feats.abs().max()
    assert torch.allclose(masked_all, feats.flatten(2).transpose(1, 2), atol=float(tol), rtol=0)
    assert masked.shape == (2, 3, 48)


@pytest.mark.parametrize("chunk", [None, 1, 3])
@pytest.mark.parametrize("multimask", [True, False])
def test_fast_path_matches_reference_mode(tiny_model, chunk: int | None, multimask: bool) -> None:
    model = tiny_model
    images = torch.rand(2, 3, 96, 80)
    g = torch.Generator().manual_seed(1)
    points = torch.rand(2, 7, 3, 2, generator=g) * torch.tensor([80.0, 96.0])
    labels = torch.randint(0, 4, (2, 7, 3), generator=g)
    labels[:, :, 2] = -1
    with torch.no_grad():
        emb = model.get_image_embeddings(images)
        model.mask_decoder.max_queries_per_pass = chunk
        fast = model.predict_masks(emb, points, labels, multimask, 96, 80, 96, 80)
        set_reference_mode(model, True)
        ref_emb = model.get_image_embeddings(images)
        ref = model.predict_masks(ref_emb, points, labels, multimask, 96, 80, 96, 80)
        set_reference_mode(model, False)
    # encoder: 2 blocks of 4 reductions and the neck (longest: its 3x3x256 = 2304-term conv)
    enc_tol = network_tolerance(torch.float32, reduction=2304, depth=2 * 4 + 2)
    assert (emb - ref_emb).abs().max() <= enc_tol * ref_emb.abs().max()
    m = 3 if multimask else 1
    assert fast[0].shape == ref[0].shape == (2, 7, m, 96, 80)
    # decoder on top: 2 two-way blocks of 6 reductions, the final attention, the upscaling and
    # the heads (longest: the 2048-wide MLP), starting from the encoder's difference
    dec_tol = enc_tol + network_tolerance(torch.float32, reduction=2304, depth=2 * 6 + 6)
    assert (fast[0] - ref[0]).abs().max() <= dec_tol * ref[0].abs().max()
    assert (fast[1] - ref[1]).abs().max() <= dec_tol * ref[1].abs().max()


def test_reference_mode_toggles_every_attention(tiny_model) -> None:
    set_reference_mode(tiny_model, True)
    flags = [m.fast_attention for m in tiny_model.modules() if hasattr(m, "fast_attention")]
    assert flags and not any(flags)
    assert tiny_model.mask_decoder.reference_mode
    set_reference_mode(tiny_model, False)
    assert all(m.fast_attention for m in tiny_model.modules() if hasattr(m, "fast_attention"))


def test_points_beyond_six_are_truncated_like_the_official_model(tiny_model) -> None:
    emb = tiny_model.get_image_embeddings(torch.rand(1, 3, 64, 64))
    pts = torch.rand(1, 1, 8, 2) * 64
    lab = torch.ones(1, 1, 8, dtype=torch.long)
    with (
        torch.no_grad(),
        pytest.warns(
            UserWarning, match="8 prompt points per query given; the model reads the first 6"
        ),
    ):
        a = tiny_model.predict_masks(emb, pts, lab, True, 64, 64)
    with torch.no_grad():
        b = tiny_model.predict_masks(emb, pts[:, :, :6], lab[:, :, :6], True, 64, 64)
    assert torch.equal(a[0], b[0])


def test_padding_is_equivalent_to_explicit_minus_one(tiny_model) -> None:
    emb = tiny_model.get_image_embeddings(torch.rand(1, 3, 64, 64))
    pts = torch.tensor([[[[10.0, 12.0]]]])
    lab = torch.tensor([[[1]]])
    padded_pts = torch.cat([pts, torch.full((1, 1, 5, 2), -1.0)], dim=2)
    padded_lab = torch.cat([lab, torch.full((1, 1, 5), -1)], dim=2)
    with torch.no_grad():
        a = tiny_model.predict_masks(emb, pts, lab, True, 64, 64)
        b = tiny_model.predict_masks(emb, padded_pts, padded_lab, True, 64, 64)
    assert torch.equal(a[0], b[0])  # the model pads to its slots with exactly these values


def test_single_prompt_images_decode_together_with_equal_results(tiny_model) -> None:
    images = torch.rand(5, 3, 64, 80)
    points = (
        torch.tensor([[[[10.0, 12.0], [40.0, 50.0]]]]).repeat(5, 1, 1, 1)
        + torch.arange(5.0)[:, None, None, None]
    )
    labels = torch.tensor([[[2, 3]]]).repeat(5, 1, 1)
    dec = tiny_model.mask_decoder
    with torch.no_grad():
        emb = tiny_model.get_image_embeddings(images)
        dec.batch_single_prompt_images = "never"
        loop = tiny_model.predict_masks(emb, points, labels, True, 64, 80)
        dec.batch_single_prompt_images, dec.images_per_pass = "always", 2
        together = tiny_model.predict_masks(emb, points, labels, True, 64, 80)
    assert together[0].shape == loop[0].shape == (5, 1, 3, 32, 32)
    # the same decoder arithmetic batched differently (longest reduction: the 2048-wide MLP)
    tol = network_tolerance(torch.float32, reduction=2304, depth=2 * 6 + 6)
    assert (together[0] - loop[0]).abs().max() <= tol * loop[0].abs().max()
    assert (together[1] - loop[1]).abs().max() <= tol * loop[1].abs().max()
    dec.batch_single_prompt_images = "sometimes"
    with pytest.raises(ValueError, match="auto, always or never"):
        tiny_model.predict_masks(emb, points, labels, True, 64, 80)
