"""``esam data synth-classes``: a seeded classification set in ImageNet's folder layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from esam.classify.data import train_images, val_images
from esam.cli.main import main
from esam.data.synth_classes import MAX_CLASSES, make_class_image, write_synth_classes


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_command_writes_train_and_val_class_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "shapes"
    argv = ["data", "synth-classes", "--out", str(out), "--classes", "3", "--per-class", "5"]
    assert main([*argv, "--val-per-class", "2", "--size", "24", "--seed", "7"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["classes"] == ["class_0_disc", "class_1_square", "class_2_triangle"]
    assert summary["n_images"] == {"train": 15, "val": 6}
    assert summary["splits"] == {"train": str(out / "train"), "val": str(out / "val")}
    assert (summary["size"], summary["seed"]) == (24, 7)
    # the reader of esam eval imagenet takes both splits as they are
    train = train_images(out / "train")
    val = val_images(out / "val", train.classes)
    assert len(train) == 15 and list(train.classes) == summary["classes"]
    assert len(val) == 6 and list(val.targets) == [0, 0, 1, 1, 2, 2]
    first = Image.open(out / "val" / "class_1_square" / "1_0001.png")
    assert first.size == (24, 24) and first.mode == "RGB"
    assert np.array_equal(np.asarray(first), make_class_image(7, "val", 1, 1, 24))
    # every file was renamed into place: no temporary files left behind
    assert all(not p.name.startswith(".") for p in out.rglob("*"))


def test_same_seed_same_bytes_other_seed_other_images(tmp_path: Path) -> None:
    a = write_synth_classes(tmp_path / "a", 2, 3, size=16, seed=1)
    b = write_synth_classes(tmp_path / "b", 2, 3, size=16, seed=1)
    c = write_synth_classes(tmp_path / "c", 2, 3, size=16, seed=2)
    assert a.n_images == {"train": 6, "val": 2}  # default val: a quarter, at least 1
    fa, fb, fc = _files(a.out), _files(b.out), _files(c.out)
    assert fa == fb and len(fa) == 8
    assert fa.keys() == fc.keys() and all(fa[k] != fc[k] for k in fa)
    # train and val images are drawn apart
    assert not np.array_equal(make_class_image(1, "train", 0, 0), make_class_image(1, "val", 0, 0))


def test_refuses_a_full_folder_and_bad_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    argv = ["data", "synth-classes", "--per-class", "2"]
    assert main([*argv, "--out", str(full), "--classes", "2"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in full.iterdir()) == ["keep.txt"]
    too_many = str(MAX_CLASSES + 1)
    assert main([*argv, "--out", str(tmp_path / "new"), "--classes", too_many]) == 2
    assert f"classes <= {MAX_CLASSES}" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    with pytest.raises(SystemExit):
        main([*argv, "--out", str(tmp_path / "new"), "--classes", "0"])
    assert "positive integer" in capsys.readouterr().err
