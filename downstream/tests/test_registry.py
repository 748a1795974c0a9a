"""The esam modules built from mmdet's and mmseg's registries through configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("mmcv")
from esam_downstream.backbone import EsamViTBackbone  # noqa: E402
from esam_downstream.runtime import config_path, cpu_safe  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

SHIPPED = [
    "mask-rcnn_esam-vit-t_lsj-100e_coco",
    "mask-rcnn_esam-vit-s_lsj-100e_coco",
    "mask-rcnn_esam-vit-b_lsj-100e_coco",
    "mask2former_esam-vit-t_160k_ade20k-512x512",
    "mask2former_esam-vit-s_160k_ade20k-512x512",
    "mask2former_esam-vit-b_160k_ade20k-512x512",
]


def _backbone_cfg(tmp_path: Path, ckpt: Path, scope: str) -> Config:
    text = (
        'custom_imports = dict(imports=["esam_downstream.registry"], allow_failed_imports=False)\n'
        f"default_scope = {scope!r}\n"
        f"backbone = dict(type='EsamViT', checkpoint={str(ckpt)!r}, img_size=128, "
        "window_size=4, global_blocks=[1])\n"
    )
    path = tmp_path / f"{scope}_backbone.py"
    path.write_text(text)
    return Config.fromfile(str(path))  # fromfile runs custom_imports


@pytest.mark.parametrize("scope", ["mmdet", "mmseg"])
def test_backbone_builds_from_registry_with_checkpoint(
    tiny_backbone_ckpt: tuple[Path, torch.nn.Module], tmp_path: Path, scope: str
) -> None:
    path, vit = tiny_backbone_ckpt
    cfg = _backbone_cfg(tmp_path, path, scope)
    registry = __import__(f"{scope}.registry", fromlist=["MODELS"]).MODELS
    assert "EsamViT" in registry.module_dict  # registered in mmdet's / mmseg's own registry
    init_default_scope(scope)
    backbone = registry.build(cfg.backbone)
    assert isinstance(backbone, EsamViTBackbone)
    assert torch.equal(backbone.vit.blocks[1].attn.qkv.weight, vit.blocks[1].attn.qkv.weight)
    (feat,) = backbone(torch.randn(1, 3, 64, 96))
    assert feat.shape == (1, 32, 4, 6)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_parse(name: str) -> None:
    cfg = Config.fromfile(str(config_path(name)))
    assert cfg.model.backbone.type == "EsamViT"
    arch = name.split("esam-vit-")[1][0]
    assert cfg.model.backbone.arch == {"t": "tiny", "s": "small", "b": "base"}[arch]
    width = {"t": 192, "s": 384, "b": 768}[arch]
    assert cfg.model.neck.in_channels == width


def test_recipe_settings() -> None:
    """The recipe settings the configs state for both tasks."""
    det = Config.fromfile(str(config_path("mask-rcnn_esam-vit-b_lsj-100e_coco")))
    opt = det.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ("AdamW", 2e-4, 0.1)
    assert det.train_cfg.max_iters * 64 / 118_000 == pytest.approx(100, rel=1e-3)
    assert det.param_scheduler[-1].type == "CosineAnnealingLR"
    assert det.model.backbone.window_size == 14 and det.model.neck.extra_levels == 1
    assert det.model.backbone.rel_pos is True  # ViTDet's, zero-initialised for esam weights
    seg = Config.fromfile(str(config_path("mask2former_esam-vit-b_160k_ade20k-512x512")))
    opt = seg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ("AdamW", 2e-4, 0.05)
    assert seg.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult == 0.1
    assert seg.param_scheduler[0].type == "PolyLR" and seg.train_cfg.max_iters == 160_000
    assert seg.train_dataloader.batch_size * 8 == 16
    assert seg.crop_size == (512, 512) and seg.model.backbone.rel_pos is True


def test_cpu_safe_replaces_amp_wrapper() -> None:
    cfg = Config.fromfile(str(config_path("mask-rcnn_esam-vit-b_lsj-100e_coco")))
    changes = cpu_safe(cfg)
    if torch.cuda.is_available():
        assert changes == []
    else:
        assert cfg.optim_wrapper.type == "OptimWrapper"
        assert any("AmpOptimWrapper" in c for c in changes)


def test_layer_decay_constructor_from_registry() -> None:
    import esam_downstream.registry  # noqa: F401
    from mmengine.optim import build_optim_wrapper

    model = torch.nn.ModuleDict(
        {
            "backbone": EsamViTBackbone(
                arch=None, embed_dim=32, depth=2, num_heads=2, img_size=64, window_size=0
            ),
            "head": torch.nn.Linear(32, 2),
        }
    )
    wrapper = build_optim_wrapper(
        model,
        dict(
            type="OptimWrapper",
            constructor="EsamLayerDecayOptimizerConstructor",
            paramwise_cfg=dict(decay_rate=0.5),
            optimizer=dict(type="AdamW", lr=1.0, weight_decay=0.1),
        ),
    )
    lrs = sorted({g["lr"] for g in wrapper.optimizer.param_groups})
    assert lrs == [0.125, 0.25, 0.5, 1.0]  # layers 0, 1, 2 (depth 2) and the head
