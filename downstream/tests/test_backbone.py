"""The esam ViT backbone, its windowed attention, the pyramid and layer decay (no mm* needed)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from conftest import TINY_ARCH, tiny_vit
from esam_downstream.backbone import (
    BackboneConfigError,
    EsamViTBackbone,
    InputSizeError,
    default_global_blocks,
    window_partition,
    window_unpartition,
)
from esam_downstream.layer_decay import layer_decay_param_groups
from esam_downstream.pyramid import SimpleFeaturePyramid

import esam
from esam.build import build_backbone
from esam.checkpoint import CheckpointError, save_backbone


def test_import_esam_pulls_in_no_mm_package() -> None:
    """In a fresh interpreter: esam (with its whole command line, `esam downstream` included)
    and the plain-PyTorch parts load no mm* package, though mm* is installed here."""
    code = (
        "import sys, esam, esam_downstream.backbone, esam_downstream.pyramid, "
        "esam_downstream.layer_decay, esam_downstream.synth\n"
        "from esam.cli.main import build_parser\n"
        "from esam.cli.suite import task_options\n"
        "build_parser(); task_options()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('mmcv', 'mmdet', 'mmseg', 'mmengine')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_all_global_equals_esam_vit_exactly(
    tiny_backbone_ckpt: tuple[Path, torch.nn.Module],
) -> None:
    """window_size=0: the backbone is esam's ViT, same weights, bit-identical features."""
    path, _ = tiny_backbone_ckpt
    reference = build_backbone(path, img_size=128).eval()
    backbone = EsamViTBackbone(checkpoint=path, img_size=128, window_size=0).eval()
    x = torch.randn(2, 3, 128, 96)  # non-square: the position embedding is resized to 8x6
    with torch.no_grad():
        (ours,) = backbone(x)
        theirs = reference.forward_features(x)
    assert ours.shape == (2, 32, 8, 6)
    assert torch.equal(ours, theirs)
    assert backbone.backbone_info["format"] == "esam-backbone"


def test_efficientsam_checkpoint_is_a_backbone(tmp_path: Path) -> None:
    """An EfficientSAM checkpoint's image-encoder trunk loads; features equal the encoder's."""
    model = esam.build_model("efficientsam_vitt", img_size=128, encoder_depth=2)
    path = tmp_path / "esam_vitt.pt"
    esam.save_checkpoint(model, path, model_name="efficientsam_vitt", config=model.config.to_dict())
    backbone = EsamViTBackbone(checkpoint=path, img_size=128, window_size=0).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(backbone(x)[0], model.image_encoder.forward_features(x))
    assert backbone.backbone_info["backbone_of"] == "image_encoder"


def _reference_windowed_block(blk: torch.nn.Module, x: torch.Tensor, window: int) -> torch.Tensor:
    """A windowed block as full attention over the zero-padded grid with a same-window mask.

    x: BxHxWxC. A different computation from partitioning: every token's scores against every
    padded token are formed, and pairs in different windows get -inf before the softmax.
    """
    b, h, w, c = x.shape
    heads = blk.attn.num_heads
    hp, wp = -(-h // window) * window, -(-w // window) * window
    n = torch.zeros(b, hp, wp, c, dtype=x.dtype)
    n[:, :h, :w] = blk.norm1(x)
    tokens = n.reshape(b, hp * wp, c)
    q, k, v = blk.attn.qkv(tokens).reshape(b, hp * wp, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    rows = torch.arange(hp).repeat_interleave(wp) // window
    cols = torch.arange(wp).repeat(hp) // window
    win = rows * (wp // window) + cols
    same = win[:, None] == win[None, :]
    scores = (q @ k.transpose(-2, -1)) / (c // heads) ** 0.5
    scores = scores.masked_fill(~same, float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, hp, wp, c)[:, :h, :w]
    y = x + blk.attn.proj(out)
    return y + blk.mlp(blk.norm2(y))


@pytest.mark.parametrize("grid", [(8, 8), (8, 6), (7, 5)])
def test_windowed_and_global_blocks_equal_reference(grid: tuple[int, int]) -> None:
    """Block 0 windowed (3x3 windows, padded), block 1 global, vs. a masked full attention."""
    window = 3
    backbone = EsamViTBackbone(
        arch=None, img_size=128, window_size=window, global_blocks=[1], **TINY_ARCH
    )
    backbone.vit.load_state_dict(tiny_vit(seed=1).state_dict())
    backbone = backbone.double().eval()
    x = torch.randn(2, 3, grid[0] * 16, grid[1] * 16, dtype=torch.float64)
    with torch.no_grad():
        (ours,) = backbone(x)
        tokens, (h, w) = backbone.vit.embed(x)
        ref = _reference_windowed_block(backbone.vit.blocks[0], tokens.view(2, h, w, -1), window)
        ref = backbone.vit.blocks[1](ref.reshape(2, h * w, -1))
        ref = ref.transpose(1, 2).reshape(2, -1, h, w)
    # float64 rounding: each output passes through 2 blocks whose longest reductions are the
    # MLP's hidden width and the padded token count; allow eps per summed term, times 2 blocks.
    eps = torch.finfo(torch.float64).eps
    hidden = int(TINY_ARCH["embed_dim"] * TINY_ARCH["mlp_ratio"])
    n_padded = -(-h // window) * window * (-(-w // window) * window)
    tol = eps * (hidden + n_padded) * 2 * float(ref.abs().max())
    assert (ours - ref).abs().max().item() <= tol
    # and the windows change the result (block 0 is not global)
    full = EsamViTBackbone(arch=None, img_size=128, window_size=0, **TINY_ARCH).double().eval()
    full.vit.load_state_dict(backbone.vit.state_dict())
    with torch.no_grad():
        assert (full(x)[0] - ours).abs().max() > 1e3 * tol


def test_window_partition_round_trip() -> None:
    x = torch.randn(2, 7, 5, 4)
    windows, padded = window_partition(x, 3)
    assert padded == (9, 6) and windows.shape == (2 * 3 * 2, 9, 4)
    assert torch.equal(window_unpartition(windows, 3, padded, (7, 5)), x)
    assert torch.equal(windows[0, :3], x[0, 0, :3])  # the first window's first row


def test_default_global_blocks_are_vitdets() -> None:
    assert default_global_blocks(12) == (2, 5, 8, 11)
    with pytest.raises(BackboneConfigError):
        default_global_blocks(10)


def test_pyramid_strides_and_shapes() -> None:
    """Strides 4/8/16/32 (plus an extra stride-64 level) from a stride-16 map."""
    pyramid = SimpleFeaturePyramid(in_channels=32, out_channels=24, extra_levels=1)
    feats = pyramid((torch.randn(2, 32, 8, 6),))
    sizes = [(128 // s, 96 // s) for s in (4, 8, 16, 32)] + [(2, 2)]
    assert [tuple(f.shape) for f in feats] == [(2, 24, *hw) for hw in sizes]
    with pytest.raises(esam.errors.InputError):
        SimpleFeaturePyramid(32, scales=(1.0, 2.0))


def _corrupt(path: Path, tmp_path: Path, edit: str) -> Path:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    state = obj["model"]
    if edit == "missing":
        del state["blocks.1.norm1.bias"]
    elif edit == "unexpected":
        state["blocks.1.extra_scale"] = torch.ones(32)
    else:
        state["blocks.0.mlp.fc1.weight"] = torch.zeros(64, 32)
    return save_backbone(tmp_path / f"{edit}.pt", state, obj["arch"])


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ("missing", "missing keys (1): blocks.1.norm1.bias"),
        ("unexpected", "unexpected keys (1): blocks.1.extra_scale"),
        ("shape", "blocks.0.mlp.fc1.weight: given (64, 32) vs model (128, 32)"),
    ],
)
def test_strict_loading_names_keys(
    tiny_backbone_ckpt: tuple[Path, torch.nn.Module], tmp_path: Path, edit: str, named: str
) -> None:
    bad = _corrupt(tiny_backbone_ckpt[0], tmp_path, edit)
    with pytest.raises(CheckpointError, match=named.replace("(", r"\(").replace(")", r"\)")):
        EsamViTBackbone(checkpoint=bad, img_size=128, window_size=4, global_blocks=[1])


def test_backbone_of_another_size_is_named(
    tiny_backbone_ckpt: tuple[Path, torch.nn.Module],
) -> None:
    with pytest.raises(BackboneConfigError, match="embed_dim: config 192 vs checkpoint 32"):
        EsamViTBackbone(checkpoint=tiny_backbone_ckpt[0], arch="tiny")


def test_image_not_divisible_by_patch_is_named() -> None:
    backbone = EsamViTBackbone(arch=None, img_size=128, window_size=0, **TINY_ARCH)
    with pytest.raises(InputSizeError, match="120x128 px is not a multiple of the patch size 16"):
        backbone(torch.randn(1, 3, 120, 128))


def test_loaded_trunk_survives_init_weights(
    tiny_backbone_ckpt: tuple[Path, torch.nn.Module],
) -> None:
    """mmengine runners call init_weights before training; loaded weights must stay."""
    path, vit = tiny_backbone_ckpt
    backbone = EsamViTBackbone(checkpoint=path, img_size=128, window_size=0)
    backbone.init_weights()
    for k, v in vit.state_dict().items():
        assert torch.equal(backbone.vit.state_dict()[k], v), k


def test_layer_decay_groups() -> None:
    """lr = base * rate^(depth + 1 - layer); no decay on 1-D params and pos_embed."""
    model = torch.nn.ModuleDict(
        {
            "backbone": EsamViTBackbone(arch=None, img_size=128, window_size=0, **TINY_ARCH),
            "head": torch.nn.Linear(32, 2),
        }
    )
    groups = layer_decay_param_groups(model, lr=1.0, weight_decay=0.1, decay_rate=0.5)
    by_name = {n: g for g in groups for n in g["param_names"]}
    assert len(by_name) == sum(1 for _ in model.parameters())
    depth = TINY_ARCH["depth"]
    assert by_name["backbone.vit.patch_embed.proj.weight"]["lr"] == 0.5 ** (depth + 1)
    assert by_name["backbone.vit.pos_embed"]["weight_decay"] == 0.0
    assert by_name["backbone.vit.blocks.0.attn.qkv.weight"]["lr"] == 0.5**depth
    assert by_name["backbone.vit.blocks.1.norm1.weight"]["weight_decay"] == 0.0
    assert by_name["backbone.vit.blocks.1.mlp.fc1.weight"]["lr"] == 0.5 ** (depth - 1)
    assert by_name["head.weight"]["lr"] == 1.0 and by_name["head.weight"]["weight_decay"] == 0.1


def _rel_tables(depth: int, lengths: Sequence[int], head_dim: int, seed: int = 2) -> dict:
    """Random tables ``blocks.<i>.attn.rel_pos_h|w`` of the given length per block."""
    g = torch.Generator().manual_seed(seed)
    return {
        f"blocks.{i}.attn.{name}": torch.randn(lengths[i], head_dim, generator=g)
        for i in range(depth)
        for name in ("rel_pos_h", "rel_pos_w")
    }


def _reference_rel_pos_block(blk: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One block with decomposed relative position, every logit formed one pair at a time.

    x: BxHxWxC whose H and W match the tables' 2*S-1 rows (no resizing). The logit between
    query (i, j) and key (k, l) is q.k/sqrt(d) + q.R_h[i - k + H - 1] + q.R_w[j - l + W - 1].
    """
    b, h, w, c = x.shape
    heads, d = blk.attn.num_heads, c // blk.attn.num_heads
    tokens = x.reshape(b, h * w, c)
    q, k, v = blk.attn.qkv(blk.norm1(tokens)).reshape(b, h * w, 3, heads, d).permute(2, 0, 3, 1, 4)
    logits = torch.empty(b, heads, h * w, h * w, dtype=x.dtype)
    for p in range(h * w):
        i, j = divmod(p, w)
        for r in range(h * w):
            kk, ll = divmod(r, w)
            rel = blk.attn.rel_pos_h[i - kk + h - 1] + blk.attn.rel_pos_w[j - ll + w - 1]
            logits[:, :, p, r] = (q[:, :, p] * k[:, :, r]).sum(-1) / d**0.5 + (
                q[:, :, p] * rel
            ).sum(-1)
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, h * w, c)
    y = tokens + blk.attn.proj(out)
    return (y + blk.mlp(blk.norm2(y))).view(b, h, w, c)


def test_rel_pos_from_checkpoint_equals_reference(tmp_path: Path) -> None:
    """Tables in the checkpoint switch relative position on ("auto"); a 4x4 grid, 2x2 windows.

    Block 0 is windowed (tables of 2*2-1 rows), block 1 global (2*4-1 rows), so no resizing:
    the backbone must equal the pair-by-pair reference in float64.
    """
    vit = tiny_vit(seed=3)
    head_dim = TINY_ARCH["embed_dim"] // TINY_ARCH["num_heads"]
    tables = _rel_tables(2, [3, 7], head_dim)
    path = save_backbone(tmp_path / "rel.pt", {**vit.state_dict(), **tables}, TINY_ARCH)
    backbone = EsamViTBackbone(checkpoint=path, img_size=64, window_size=2, global_blocks=[1])
    assert backbone.rel_pos
    state = backbone.vit.state_dict()
    for key, value in tables.items():
        assert torch.equal(state[key], value), key
    backbone = backbone.double().eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        (ours,) = backbone(x)
        tokens, (h, w) = backbone.vit.embed(x)
        grid = tokens.view(2, h, w, -1)
        windows, padded = window_partition(grid, 2)  # block 0: each 2x2 window on its own
        windows = windows.view(-1, 2, 2, grid.shape[-1])
        ref = _reference_rel_pos_block(backbone.vit.blocks[0], windows)
        ref = window_unpartition(ref.reshape(-1, 4, grid.shape[-1]), 2, padded, (h, w))
        ref = _reference_rel_pos_block(backbone.vit.blocks[1], ref).permute(0, 3, 1, 2)
    assert (ours - ref).abs().max().item() < 1e-10
    # and the tables matter: without them the output differs
    plain = EsamViTBackbone(arch=None, img_size=64, window_size=2, global_blocks=[1], **TINY_ARCH)
    plain.vit.load_state_dict(vit.state_dict())
    with torch.no_grad():
        assert (plain.double().eval()(x)[0] - ours).abs().max() > 1e-3


def test_rel_pos_zero_init_leaves_features_unchanged(
    tiny_backbone_ckpt: tuple[Path, torch.nn.Module],
) -> None:
    """rel_pos=True on a checkpoint without tables: zero tables sized to each block's extent."""
    path, _ = tiny_backbone_ckpt
    with_rel = EsamViTBackbone(checkpoint=path, img_size=128, window_size=4, global_blocks=[1],
                               rel_pos=True).eval()  # fmt: skip
    without = EsamViTBackbone(checkpoint=path, img_size=128, window_size=4, global_blocks=[1])
    assert with_rel.rel_pos and not without.rel_pos
    assert with_rel.vit.blocks[0].attn.rel_pos_h.shape == (2 * 4 - 1, 16)  # the 4x4 window
    assert with_rel.vit.blocks[1].attn.rel_pos_w.shape == (2 * 8 - 1, 16)  # the 8x8 grid
    x = torch.randn(1, 3, 128, 96)  # non-square: the global tables are resized to 8 and 6
    with torch.no_grad():
        torch.testing.assert_close(with_rel(x)[0], without.eval()(x)[0], rtol=1e-5, atol=1e-5)
    groups = layer_decay_param_groups(torch.nn.ModuleDict({"backbone": with_rel}), 1.0, 0.1, 0.5)
    by_name = {n: g for g in groups for n in g["param_names"]}
    assert by_name["backbone.vit.blocks.1.attn.rel_pos_h"]["lr"] == 0.5 ** (2 - 1)


def test_rel_pos_tables_are_resized_linearly() -> None:
    from esam_downstream.backbone import rel_pos_table

    table = torch.arange(7, dtype=torch.float64)[:, None]  # offsets -3..3 as values 0..6
    same = rel_pos_table(table, 4, 4)
    assert same[:, :, 0].tolist()[0] == [3.0, 2.0, 1.0, 0.0]  # query 0 vs keys 0..3
    bigger = rel_pos_table(table, 6, 6)  # 11 rows interpolated from 7: ends kept
    assert bigger.shape == (6, 6, 1)
    assert bigger[0, 0, 0] == pytest.approx(3.0, abs=0.35) and bigger[-1, 0, 0] == 6.0


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ("missing", "missing keys (1): blocks.1.attn.rel_pos_w"),
        ("width", "blocks.0.attn.rel_pos_h: given (3, 8) vs (L, 16)"),
        ("refused", "unexpected keys (4): blocks.0.attn.rel_pos_h"),
    ],
)
def test_rel_pos_tables_are_checked(tmp_path: Path, edit: str, named: str) -> None:
    tables = _rel_tables(2, [3, 7], 16)
    if edit == "missing":
        del tables["blocks.1.attn.rel_pos_w"]
    elif edit == "width":
        tables["blocks.0.attn.rel_pos_h"] = torch.zeros(3, 8)
    path = save_backbone(tmp_path / "t.pt", {**tiny_vit().state_dict(), **tables}, TINY_ARCH)
    with pytest.raises(CheckpointError, match=re.escape(named)):
        EsamViTBackbone(checkpoint=path, img_size=64, window_size=2, global_blocks=[1],
                        rel_pos=False if edit == "refused" else "auto")  # fmt: skip
