"""``esam everything``: COCO-RLE records and an overlay from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from esam.cli.main import main

pytest.importorskip("segment_anything")
mask_utils = pytest.importorskip("pycocotools.mask")

LOOSE = [
    "--points-per-side",
    "6",
    "--pred-iou-thresh",
    "0",
    "--stability-score-thresh",
    "0",
    "--box-nms-thresh",
    "1",
]


@pytest.fixture
def tiny_checkpoint(tiny_model: torch.nn.Module, tmp_path: Path) -> Path:
    """The tiny stand-in model as an esam checkpoint that stores its architecture."""
    from esam.checkpoint import save_checkpoint

    path = tmp_path / "tiny.pt"
    save_checkpoint(tiny_model, path, "efficientsam", tiny_model.config.to_dict(), "standin")
    return path


def test_everything_writes_records_and_overlay(
    tiny_model: torch.nn.Module, tiny_checkpoint: Path, rgb_image: np.ndarray, tmp_path: Path
) -> None:
    from esam.everything import EfficientSamAutomaticMaskGenerator

    img = tmp_path / "img.png"
    Image.fromarray(rgb_image).save(img)
    out, overlay = tmp_path / "out" / "masks.json", tmp_path / "overlay.png"
    args = ["everything", "--model", "efficientsam", "--checkpoint", str(tiny_checkpoint)]
    rc = main([*args, "--image", str(img), *LOOSE, "--out", str(out), "--overlay", str(overlay)])
    assert rc == 0
    records = json.loads(out.read_text())
    expected = EfficientSamAutomaticMaskGenerator(
        tiny_model,
        points_per_side=6,
        pred_iou_thresh=0,
        stability_score_thresh=0,
        box_nms_thresh=1,
        output_mode="coco_rle",
    ).generate(rgb_image)
    assert len(records) == len(expected) >= 3
    assert records == json.loads(json.dumps(expected))  # same records, keys in the same order
    assert [list(r) for r in records] == [list(r) for r in expected]
    assert [f.name for f in out.parent.iterdir()] == ["masks.json"]  # no temporary left behind
    shown = np.asarray(Image.open(overlay))
    assert shown.shape == rgb_image.shape
    covered = np.zeros(rgb_image.shape[:2], bool)
    for r in records:
        covered |= mask_utils.decode(r["segmentation"]).astype(bool)
    assert (shown[covered] != rgb_image[covered]).any(axis=-1).mean() > 0.5
    assert np.array_equal(shown[~covered], rgb_image[~covered])
    # drawn from RLEs decoded one at a time, ordered by the records' areas: the same picture
    # as from every mask decoded up front
    from esam.everything.overlay import RleMasks, overlay_masks

    decoded = [mask_utils.decode(r["segmentation"]).astype(bool) for r in records]
    assert np.array_equal(shown, np.asarray(overlay_masks(rgb_image, decoded)))
    lazy = RleMasks([r["segmentation"] for r in records])
    assert len(lazy) == len(records) and np.array_equal(lazy[-1], decoded[-1])
    assert [m.tolist() for m in lazy[1:3]] == [m.tolist() for m in decoded[1:3]]


def test_everything_reads_16_bit_grey_images(tiny_checkpoint: Path, tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:64, 0:80]
    grey8 = ((xx * 3 + yy) % 256).astype(np.uint8)
    Image.fromarray(grey8).save(tmp_path / "g8.png")
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    base = ["everything", "--model", "efficientsam", "--checkpoint", str(tiny_checkpoint), *LOOSE]
    for name in ("g8", "g16"):
        assert (
            main(
                [
                    *base,
                    "--image",
                    str(tmp_path / f"{name}.png"),
                    "--out",
                    str(tmp_path / f"{name}.json"),
                ]
            )
            == 0
        )
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("g8", "g16"))
    assert a == b and len(a) >= 1


def test_everything_errors_are_one_line(
    tiny_checkpoint: Path, rgb_image: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = tmp_path / "img.png"
    Image.fromarray(rgb_image).save(img)
    out = str(tmp_path / "m.json")
    weights = ["--model", "efficientsam", "--checkpoint", str(tiny_checkpoint)]
    assert main(["everything", "--image", str(img), "--out", out]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert (
        main(["everything", *weights, "--image", str(img), "--points-per-side", "0", "--out", out])
        == 2
    )
    assert "points_per_side must be an integer >= 1, got 0" in capsys.readouterr().err
    assert main(["everything", *weights, "--image", str(tmp_path / "no.png"), "--out", out]) == 2
    assert "image not found" in capsys.readouterr().err
    (tmp_path / "not_image.png").write_text("hello")
    assert (
        main(["everything", *weights, "--image", str(tmp_path / "not_image.png"), "--out", out])
        == 2
    )
    assert "cannot be read as an image" in capsys.readouterr().err
    assert main(["everything", *weights, "--image", str(img), "--out", str(tmp_path)]) == 2
    assert "existing folder" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()
