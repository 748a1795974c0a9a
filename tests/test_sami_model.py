"""SAMI model: masked encoding, decoder order, losses, pixel targets, optimiser hooks, export."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import esam
from esam.checkpoint import CheckpointError, load_trunk_state
from esam.errors import InputError
from esam.modeling.vit import ViT, sincos_pos_embed_2d
from esam.sami.model import SamiModel, build_sami_encoder, patchify
from tests.numerics import network_tolerance


def tiny_encoder(dim: int = 48, depth: int = 2, img: int = 64, **kw) -> ViT:
    vit = ViT(img_size=img, embed_dim=dim, depth=depth, num_heads=3, pretrain_img_size=img, **kw)
    vit.init_weights()
    return vit


def tiny_sami(**kw) -> SamiModel:
    args = {"teacher_dim": 24, "decoder_depth": 2, "decoder_dim": 32, "decoder_heads": 4}
    args.update(kw)
    return SamiModel(tiny_encoder(), **args)


def test_encoder_sees_only_visible_tokens() -> None:
    model = tiny_sami()
    seen: list[tuple[int, ...]] = []
    for blk in model.encoder.blocks:
        blk.register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape)))
    images = torch.randn(3, 3, 64, 64)  # 4x4 grid: 16 tokens, 4 visible at 75 %
    latent, masking = model.forward_encoder(images, torch.Generator().manual_seed(0))
    assert seen == [(3, 4, 48), (3, 4, 48)]
    assert latent.shape == (3, 4, 48)
    # the latent is the trunk run on exactly the kept tokens, normalised
    expected = model.encoder_norm(model.encoder.forward_masked(images, masking.ids_keep))
    assert torch.allclose(latent, expected)


def test_decoder_restores_token_order() -> None:
    # depth-0 decoder with a zero projection and zero mask token: every merged token is its
    # position embedding, so the prediction must not depend on the mask at all
    model = tiny_sami(decoder_depth=0)
    with torch.no_grad():
        model.decoder.embed.weight.zero_()
        model.decoder.embed.bias.zero_()
        model.decoder.mask_token.zero_()
    images = torch.randn(4, 3, 64, 64)
    _, pred_a, mask_a = model(images, torch.zeros(4, 16, 24), torch.Generator().manual_seed(1))
    _, pred_b, mask_b = model(images, torch.zeros(4, 16, 24), torch.Generator().manual_seed(2))
    assert not torch.equal(mask_a, mask_b)
    pos = sincos_pos_embed_2d(32, (4, 4))
    expected = model.head(model.decoder_norm(pos)).expand(4, -1, -1)
    # the same norm and head on other tensor layouts: 2 reductions of <= 32 terms
    tol = network_tolerance(torch.float32, 32, 2) * float(expected.abs().max())
    assert torch.allclose(pred_a, expected, atol=tol, rtol=0)
    assert torch.allclose(pred_b, expected, atol=tol, rtol=0)


def test_visible_outputs_land_at_their_own_positions() -> None:
    model = SamiModel(tiny_encoder(dim=48), teacher_dim=8, decoder_depth=2, decoder_dim=48)
    with torch.no_grad():
        model.decoder.embed.weight.copy_(torch.eye(48))
        model.decoder.embed.bias.zero_()
    images = torch.randn(2, 3, 64, 64)
    latent, masking = model.forward_encoder(images, torch.Generator().manual_seed(3))
    pred = model.forward_decoder(latent, masking.ids_restore)
    pos = sincos_pos_embed_2d(48, (4, 4))
    for b in range(2):
        for j, token in enumerate(masking.ids_keep[b].tolist()):
            want = model.head(model.decoder_norm(latent[b, j] + pos[token]))
            # embed, norm and head: 3 reductions of <= 48 terms
            tol = network_tolerance(torch.float32, 48, 3) * float(want.abs().max())
            assert torch.allclose(pred[b, token], want, atol=tol, rtol=0)


def test_loss_on_all_and_masked_tokens_by_hand() -> None:
    pred = torch.zeros(1, 4, 2)
    target = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [1.0, 1.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, False, True, False]])
    # per-token MSE: [1, 9, 1, 0]
    assert tiny_sami(loss_on="all").forward_loss(pred, target, mask).item() == pytest.approx(2.75)
    assert tiny_sami(loss_on="masked").forward_loss(pred, target, mask).item() == pytest.approx(1.0)


def test_forward_uses_teacher_targets() -> None:
    model = tiny_sami()
    images, targets = torch.randn(2, 3, 64, 64), torch.randn(2, 16, 24)
    g = torch.Generator().manual_seed(5)
    loss, pred, mask = model(images, targets, g)
    assert pred.shape == (2, 16, 24) and mask.shape == (2, 16)
    assert torch.allclose(loss, ((pred - targets) ** 2).mean())
    with pytest.raises(InputError, match="needs targets"):
        model(images)
    with pytest.raises(InputError, match="targets must have shape"):
        model(images, torch.randn(2, 15, 24))
    normed = tiny_sami(norm_target=True)
    raw = targets * 5 + 3
    t = normed.prepare_targets(images, raw, pred)
    # 24-term means and variances; the variance is v / (v + 1e-6) before rounding
    tol = network_tolerance(torch.float32, 24, 3) * float(t.abs().max())
    eps_shift = float((1e-6 / (raw.var(-1) + 1e-6)).max())
    assert torch.allclose(t.mean(-1), torch.zeros(2, 16), atol=tol, rtol=0)
    assert torch.allclose(t.var(-1), torch.ones(2, 16), atol=tol + eps_shift, rtol=0)


def test_mae_pixel_targets() -> None:
    images = torch.randn(2, 3, 64, 64)
    patches = patchify(images, 16)
    assert patches.shape == (2, 16, 768)
    r, c = 2, 1  # token 2*4+1
    want = images[1, :, r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16].permute(1, 2, 0).flatten()
    assert torch.equal(patches[1, r * 4 + c], want)
    model = SamiModel(tiny_encoder(), target="pixels", decoder_depth=1, decoder_dim=32)
    assert model.loss_on == "masked" and model.norm_target and model.target_dim == 768
    loss, pred, mask = model(images, generator=torch.Generator().manual_seed(0))
    tgt = patches
    tgt = (tgt - tgt.mean(-1, keepdim=True)) / (tgt.var(-1, keepdim=True) + 1e-6).sqrt()
    per_token = ((pred - tgt) ** 2).mean(-1)
    assert torch.allclose(loss, per_token[mask].mean(), atol=1e-6)
    with pytest.raises(InputError, match="teacher_dim must be None or 768"):
        SamiModel(tiny_encoder(), teacher_dim=256, target="pixels")
    with pytest.raises(InputError, match="needs teacher_dim"):
        SamiModel(tiny_encoder())


def test_every_trainable_parameter_gets_a_gradient_and_pos_embed_is_frozen() -> None:
    model = tiny_sami(decoder_self_attn=True)
    loss, _, _ = model(torch.randn(2, 3, 64, 64), torch.randn(2, 16, 24))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert not model.encoder.pos_embed.requires_grad
    assert tiny_sami(freeze_pos_embed=False).encoder.pos_embed.requires_grad


def test_layer_ids_and_no_weight_decay() -> None:
    vit = tiny_encoder(depth=3)
    assert vit.num_layer_ids == 5
    assert vit.layer_id("patch_embed.proj.weight") == 0
    assert vit.layer_id("pos_embed") == 0
    assert vit.layer_id("blocks.0.attn.qkv.weight") == 1
    assert vit.layer_id("blocks.2.mlp.fc2.bias") == 3
    assert vit.no_weight_decay() == {"pos_embed"}
    enc = esam.build_model("efficientsam_vitt", img_size=64, encoder_depth=2).image_encoder
    assert enc.layer_id("neck.0.weight") == 3 and enc.num_layer_ids == 4
    model = SamiModel(vit, teacher_dim=8, decoder_depth=1, decoder_dim=32)
    ids = {n: model.layer_id(n) for n, _ in model.named_parameters()}
    assert ids["encoder.pos_embed"] == 0
    assert ids["encoder.blocks.1.norm1.weight"] == 2
    assert ids["decoder.blocks.0.cross_attn.q.weight"] == 4
    assert ids["head.weight"] == 4 and ids["encoder_norm.bias"] == 4
    assert set(ids.values()) == set(range(model.num_layer_ids))
    assert model.no_weight_decay() == {"encoder.pos_embed", "decoder.mask_token"}
    assert model.no_weight_decay() <= dict(model.named_parameters()).keys()


def test_drop_path_and_init_keep_the_official_layout() -> None:
    plain = ViT(img_size=64, embed_dim=48, depth=4, num_heads=3)
    dropping = ViT(img_size=64, embed_dim=48, depth=4, num_heads=3, drop_path_rate=0.3)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {
        k: v.shape for k, v in dropping.state_dict().items()
    }
    assert [b.drop_path.p for b in dropping.blocks] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    x = torch.randn(8, 3, 64, 64)
    dropping.init_weights()
    dropping.eval()
    assert torch.equal(dropping.forward_features(x), dropping.forward_features(x))
    dropping.train()
    assert not torch.equal(dropping.forward_features(x), dropping.forward_features(x))
    with pytest.raises(ValueError, match="drop_path_rate"):
        ViT(drop_path_rate=1.0)


def test_init_weights() -> None:
    vit = ViT(img_size=64, embed_dim=48, depth=2, num_heads=3, pretrain_img_size=64)
    vit.init_weights()
    pe = vit.pos_embed[0]
    assert torch.equal(pe[0], torch.zeros(48))  # unused class slot
    assert torch.allclose(pe[1:], sincos_pos_embed_2d(48, (4, 4)))
    for m in vit.modules():
        if isinstance(m, nn.LayerNorm):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
        if isinstance(m, nn.Linear):
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
            bound = (6 / sum(m.weight.shape)) ** 0.5
            assert m.weight.abs().max() <= bound
    w = vit.patch_embed.proj.weight
    assert w.abs().max() <= (6 / (48 + 3 * 16 * 16)) ** 0.5
    vit.init_weights(pos_embed="trunc_normal")
    assert vit.pos_embed.abs().max() <= 0.04 and 0.01 < float(vit.pos_embed.detach().std()) < 0.03
    with pytest.raises(ValueError, match="sincos"):
        vit.init_weights(pos_embed="zeros")  # type: ignore[arg-type]


def test_exported_trunk_loads_into_efficientsam_image_encoder() -> None:
    enc = build_sami_encoder("efficientsam_vitt")
    assert enc.pos_embed.shape == (1, 197, 192) and enc.img_size == 224
    model = SamiModel(enc, teacher_dim=256, decoder_depth=1, decoder_dim=64, decoder_heads=4)
    trunk = model.encoder_state_dict()
    sam = esam.build_model("efficientsam_vitt", img_size=128)
    # same names and shapes as the trunk part of the EfficientSAM image encoder
    full = model.encoder_state_dict(prefix="image_encoder.")
    own = sam.state_dict()
    assert all(own[k].shape == v.shape for k, v in full.items())
    load_trunk_state(sam.image_encoder, trunk)
    neck = {k: v for k, v in sam.image_encoder.state_dict().items() if k.startswith("neck.")}
    sam.image_encoder.load_state_dict({**trunk, **neck}, strict=True)
    for k, v in trunk.items():
        assert torch.equal(sam.image_encoder.state_dict()[k], v)
    # it serves as the backbone: 224 px weights run at 128 px with the embedding resized
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.allclose(
            sam.image_encoder.forward_features(x), model.encoder.forward_features(x), atol=1e-5
        )
        assert sam.image_encoder(x).shape == (1, 256, 8, 8)


def test_load_trunk_state_names_every_problem() -> None:
    target = esam.build_model("efficientsam_vitt", img_size=64).image_encoder
    wrong = build_sami_encoder("efficientsam_vits", init=False).state_dict()
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_trunk_state(target, wrong)
    good = build_sami_encoder("efficientsam_vitt", init=False).state_dict()
    extra = {**good, "head.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): head.weight"):
        load_trunk_state(target, extra)
    del good["blocks.3.attn.qkv.weight"]
    with pytest.raises(CheckpointError, match="missing keys"):
        load_trunk_state(target, good)


def test_it_learns_a_fixed_target() -> None:
    torch.manual_seed(0)
    model = tiny_sami()
    images, targets = torch.randn(4, 3, 64, 64), torch.randn(4, 16, 24)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        loss, _, _ = model(images, targets, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_the_loss_of_bf16_predictions_is_computed_in_float32() -> None:
    model = tiny_sami()
    pred = torch.randn(2, 16, 24).to(torch.bfloat16)
    target = torch.randn(2, 16, 24) * 3 + 1  # float32 teacher features
    mask = torch.zeros(2, 16, dtype=torch.bool)
    loss = model.forward_loss(
        pred, model.prepare_targets(torch.zeros(2, 3, 64, 64), target, pred), mask
    )
    assert loss.dtype == torch.float32
    # the same as in float64 from the same bf16 predictions, up to float32 rounding of a
    # mean of 768 squares (a bf16 loss would be off by about 2^-8 relative)
    prepared = model.prepare_targets(torch.zeros(2, 3, 64, 64), target, pred)
    exact = (pred.double() - prepared.double()).pow(2).mean()
    assert abs(float(loss) - float(exact)) <= 768 * torch.finfo(torch.float32).eps * float(exact)
