"""Labels, bad input and foreign backbones of esam eval imagenet."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from esam.checkpoint import CheckpointError, save_backbone
from esam.classify.backbones import load_backbone
from esam.classify.config import ModelConfig
from esam.classify.data import train_images, val_images
from esam.classify.model import (
    ViTClassifier,
    build_classifier,
    build_trunk,
    load_classifier,
    save_classifier,
)
from esam.cli.main import main
from esam.data.synth_classes import write_synthetic_classes
from esam.errors import InputError
from tests.conftest import require_shared
from tests.numerics import network_tolerance


@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    write_synthetic_classes(tmp_path, 3, 8, 32, seed=1, split="train")
    write_synthetic_classes(tmp_path, 3, 4, 32, seed=1, split="val")
    return tmp_path


def _run(root: Path, out: Path, mode: str, *extra: str) -> dict:
    args = [
        "eval", "imagenet", "--mode", mode, "--config", "tiny", "--train", str(root / "train"),
        "--val", str(root / "val"), "--output", str(out), "train.progress=false",
        "linear.train.progress=false", "train.epochs=1", "linear.train.epochs=1",
        "train.batch_size=8", "linear.train.batch_size=8", *extra,
    ]  # fmt: skip
    assert main(args) == 0
    return json.loads((out / "results.json").read_text())


def test_an_empty_class_folder_is_a_named_error(shapes: Path) -> None:
    (shapes / "train" / "zz_empty").mkdir()
    with pytest.raises(InputError, match="empty class folder.*zz_empty"):
        train_images(shapes / "train")


def test_unreadable_images_are_counted(shapes: Path, tmp_path: Path) -> None:
    (shapes / "val" / "class_0_disc" / "broken.png").write_bytes(b"not an image")
    (shapes / "train" / "class_1_square" / "broken.png").write_bytes(b"not an image")
    r = _run(shapes, tmp_path / "run", "finetune")
    assert r["skips"] == {"image_corrupt": 1}
    assert r["dataset"]["n_images"] == 12 and r["dataset"]["n_images_skipped"] == 1
    assert r["training"]["unreadable_train_images"] == [
        str(shapes / "train" / "class_1_square" / "broken.png")
    ]


def _flat(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in sorted(src.rglob("*.png")):
        shutil.copy(f, dst / f.name)
    return dst


def test_labels_files_map_or_fail_by_name(shapes: Path, tmp_path: Path) -> None:
    classes = train_images(shapes / "train").classes
    flat = _flat(shapes / "val", tmp_path / "flat")
    files = sorted(p.name for p in flat.iterdir())
    good = tmp_path / "labels.txt"
    good.write_text("".join(f"{f} {classes[int(f[0])]}\n" for f in files))
    images = val_images(flat, classes, good)
    assert [classes[t][6] for t in images.targets] == [f[0] for f in images.files]
    # integer labels index a synset list
    synsets = tmp_path / "synsets.txt"
    synsets.write_text("".join(f"{c} words\n" for c in classes))
    ints = tmp_path / "ints.txt"
    ints.write_text("".join(f"./data/{f}, {f[0]}\n" for f in files))
    assert val_images(flat, classes, ints, synsets).targets == images.targets
    unknown = tmp_path / "unknown.txt"
    unknown.write_text(
        good.read_text().replace(f"{files[0]} {classes[0]}", f"{files[0]} n09999999")
    )
    with pytest.raises(InputError, match=r"unknown synsets \['n09999999'\]"):
        val_images(flat, classes, unknown)
    short = tmp_path / "short.txt"
    short.write_text("".join(good.read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(InputError, match="11 labels for 12 images; 1 image"):
        val_images(flat, classes, short)
    extra = tmp_path / "extra.txt"
    extra.write_text(good.read_text() + "missing.png class_0_disc\n")
    with pytest.raises(InputError, match="1 label.*not in the folder.*missing.png"):
        val_images(flat, classes, extra)
    with pytest.raises(InputError, match="--labels"):
        val_images(flat, classes, None)


def test_a_backbone_of_the_wrong_size_is_a_named_error(tmp_path: Path) -> None:
    small = build_trunk(ModelConfig(embed_dim=64, depth=2, num_heads=2, img_size=32, patch_size=8))
    arch = {
        "embed_dim": 64, "depth": 2, "num_heads": 2, "patch_size": 8, "mlp_ratio": 4.0,
        "pretrain_img_size": 32, "pos_embed_cls_slot": True,
    }  # fmt: skip
    path = save_backbone(tmp_path / "b.pt", small.state_dict(), arch)
    other = build_trunk(ModelConfig(embed_dim=96, depth=2, num_heads=2, img_size=32, patch_size=8))
    with pytest.raises(CheckpointError, match=r"shape mismatches.*blocks\.0\.attn\.proj\.weight"):
        load_backbone(other, path)
    # the right size loads, and its position grid is resized to the classifier's
    big = build_trunk(ModelConfig(embed_dim=64, depth=2, num_heads=2, img_size=64, patch_size=8))
    origin = load_backbone(big, path)
    assert origin["format"] == "esam-backbone" and len(origin["sha256"]) == 64
    assert big.pos_embed.shape == (1, 1 + 8 * 8, 64)
    assert torch.equal(big.blocks[1].mlp.fc2.weight, small.blocks[1].mlp.fc2.weight)


def test_timm_vit_checkpoints_map_onto_the_esam_vit(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10).eval()
    path = tmp_path / "deit_tiny.pth"
    torch.save({"model": ref.state_dict()}, path)  # MAE / DeiT release layout
    vit = build_trunk(ModelConfig(arch="vit_tiny", drop_path=0.0)).eval()
    origin = load_backbone(vit, path)
    assert origin["format"] == "timm"
    assert {"cls_token", "head.weight", "norm.weight"} <= set(origin["dropped"])
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        tokens, _ = vit.embed(x)
        ours = vit.forward_tokens(tokens)
        t = ref.patch_embed(x) + ref.pos_embed[:, 1:]  # the same patches, without the class token
        theirs = ref.blocks(t)
    # 12 blocks of 4 reductions each, the longest the 768-wide MLP
    tol = network_tolerance(torch.float32, 768, 12 * 4) * float(theirs.abs().max())
    torch.testing.assert_close(ours, theirs, rtol=0, atol=tol)
    # a 384 px checkpoint loads into a 224 px classifier (24x24 grid resized to 14x14)
    big = timm.create_model("vit_tiny_patch16_384", pretrained=False)
    torch.save(big.state_dict(), tmp_path / "t384.pth")
    load_backbone(build_trunk(ModelConfig(arch="vit_tiny")), tmp_path / "t384.pth")
    # a ViT-S does not fit a ViT-Ti: the mismatched keys are listed
    torch.save(timm.create_model("vit_small_patch16_224").state_dict(), tmp_path / "s.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatches \(\d+\): blocks\.0"):
        load_backbone(build_trunk(ModelConfig(arch="vit_tiny")), tmp_path / "s.pth")


def test_the_imagenet_sample_maps_labels_in_both_layouts(tmp_path: Path) -> None:
    """A probe trained and evaluated on the same 55 images must reach 100 %, in both the
    class-folder layout and the flat folder + ILSVRC labels file (integer indices into
    ImageNet-1K's sorted synsets): a wrong label mapping cannot."""
    sample = require_shared("data", "imagenet_val_sample")
    val = sample / "val"
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in sorted(val.rglob("*.JPEG")):
        (flat / f.name).symlink_to(f)
    head = ["eval", "imagenet", "--mode", "linear", "--config", "tiny", "--train", str(val)]
    common = [
        "linear.train.progress=false", "linear.train.epochs=60", "linear.train.batch_size=11",
        "model.embed_dim=128", "model.num_heads=2",
    ]  # fmt: skip
    tops = []
    for name, extra in (
        ("folders", ["--val", str(val)]),
        ("flat", ["--val", str(flat), "--labels", str(sample / "val_labels_subset.txt")]),
    ):
        out = tmp_path / name
        args = [*head, *extra, "--output", str(out), *common, f"linear.cache={tmp_path / 'f'}"]
        assert main(args) == 0
        r = json.loads((out / "results.json").read_text())
        assert r["metrics"]["n_images"] == 55 and r["dataset"]["layout"] == name
        tops.append(r["metrics"]["top1"])
    assert tops == [100.0, 100.0]


def test_token_pooling_reads_a_timm_class_token_as_timm_does(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=2, class_token=True
    ).eval()
    with torch.no_grad():  # a non-trivial class token, class position and final norm
        ref.cls_token.normal_()
        ref.norm.weight.uniform_(0.5, 1.5)
        ref.norm.bias.normal_()
    path = tmp_path / "deit.pth"
    torch.save({"model": ref.state_dict()}, path)
    cfg = ModelConfig(arch="vit_tiny", depth=2, drop_path=0.0, backbone=str(path), pool="token")
    model, origin = build_classifier(cfg, num_classes=3)
    model.eval()
    assert origin["class_token"] == "timm checkpoint: cls_token, norm"
    assert not {"cls_token", "norm.weight", "norm.bias"} & set(origin["dropped"])
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours = model.features(x)
        theirs = ref(x)  # num_classes=0: the pooled, normalised class token
    tol = network_tolerance(torch.float32, 768, 2 * 4 + 1) * float(theirs.abs().max())
    torch.testing.assert_close(ours, theirs, rtol=0, atol=tol)
    # average pooling gives another feature; a backbone without a class token starts a new one
    avg, _ = build_classifier(ModelConfig(**{**cfg.__dict__, "pool": "avg"}), num_classes=3)
    with torch.no_grad():
        assert not torch.allclose(avg.eval().features(x), ours)
    esam_file = tmp_path / "b.pt"
    trunk = build_trunk(ModelConfig(arch="vit_tiny", depth=2))
    arch = {
        "embed_dim": 192, "depth": 2, "num_heads": 3, "patch_size": 16, "mlp_ratio": 4.0,
        "pretrain_img_size": 224, "pos_embed_cls_slot": True,
    }  # fmt: skip
    save_backbone(esam_file, trunk.state_dict(), arch)
    fresh, info = build_classifier(ModelConfig(**{**cfg.__dict__, "backbone": str(esam_file)}), 3)
    assert info["class_token"] == "new: the backbone has no class token"
    assert fresh.layer_id("cls_token") == 0 and "cls_token" in fresh.no_weight_decay()


def test_a_token_pooling_classifier_file_round_trips(tmp_path: Path) -> None:
    cfg = ModelConfig(embed_dim=32, depth=1, num_heads=2, img_size=32, patch_size=8, pool="token")
    model, _ = build_classifier(cfg, num_classes=4)
    path = save_classifier(model.eval(), tmp_path / "c.pt", cfg, list("abcd"), {})
    loaded, classes, _ = load_classifier(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert loaded.pool == "token" and torch.equal(loaded.eval()(x), model(x))
    with pytest.raises(InputError, match="model.pool"):
        ViTClassifier(build_trunk(ModelConfig()), 2, pool="max")
