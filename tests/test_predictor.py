"""EfficientSamPredictor behaviour, bad input, and the ``esam predict`` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import esam
from esam.cli.main import main
from tests.numerics import efficientsam_tolerance


@pytest.fixture
def predictor(tiny_model, rgb_image):
    p = esam.EfficientSamPredictor(tiny_model)
    p.set_image(rgb_image)
    return p


def test_predict_matches_model_forward(tiny_model, rgb_image, predictor) -> None:
    box = np.array([15.0, 20.0, 55.0, 60.0])
    masks, iou, low = predictor.predict(box=box)
    images = torch.from_numpy(rgb_image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        logits, ref_iou = tiny_model(
            images, torch.tensor([[[[15.0, 20.0], [55.0, 60.0]]]]), torch.tensor([[[2, 3]]])
        )
    order = np.argsort(-ref_iou[0, 0].numpy(), kind="stable")
    assert masks.shape == (3, 90, 120) and masks.dtype == bool
    assert np.all(np.diff(iou) <= 0), "multimask outputs are sorted by predicted IoU"
    tol = efficientsam_tolerance(encoder_depth=2) * float(ref_iou.abs().max())
    assert np.allclose(iou, ref_iou[0, 0].numpy()[order], atol=tol, rtol=0)
    assert (masks == (logits[0, 0].numpy() > 0)[order]).mean() > 0.999
    assert low.shape == (3, 32, 32)  # 4x the 8x8 grid of the 128 px test model


def test_batch_equals_single_calls_and_chunking_is_invisible(tiny_model, predictor) -> None:
    rng = np.random.default_rng(0)
    x0 = rng.uniform(0, 60, 9)
    y0 = rng.uniform(0, 45, 9)
    boxes = np.stack([x0, y0, x0 + rng.uniform(5, 50, 9), y0 + rng.uniform(5, 40, 9)], axis=1)
    tiny_model.mask_decoder.max_queries_per_pass = 4
    predictor.upsample_chunk = 2
    masks, iou, _ = predictor.predict_batch(boxes=boxes)
    assert masks.shape == (9, 3, 90, 120)
    for i in (0, 4, 8):
        m1, iou1, _ = predictor.predict(box=boxes[i])
        tol = efficientsam_tolerance(encoder_depth=2) * float(np.abs(iou).max())
        assert np.allclose(iou1, iou[i], atol=tol, rtol=0)
        assert (m1 == masks[i]).mean() > 0.999


def test_points_with_box_and_single_mask(predictor) -> None:
    masks, iou, low = predictor.predict(
        point_coords=np.array([[30.0, 40.0]]),
        point_labels=np.array([1]),
        box=np.array([15, 20, 55, 60]),
        multimask_output=False,
    )
    assert masks.shape == (1, 90, 120) and iou.shape == (1,) and low.shape == (1, 32, 32)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "no prompt given"),
        ({"box": [10, 10, 5, 20]}, "x1 >= x0"),
        ({"box": [1, 2, 3]}, "box must be 4 values"),
        ({"point_coords": [[1.0, 2.0]]}, "must be given together"),
        ({"point_coords": [1.0, 2.0], "point_labels": [1]}, "point_coords must have shape Nx2"),
        ({"point_coords": [[1.0, 2.0]], "point_labels": [1, 1]}, "point_labels must have shape"),
        ({"point_coords": [[1.0, 2.0]], "point_labels": [5]}, r"\{-1, 0, 1, 2, 3\}"),
        ({"point_coords": [[1.0, 2.0]], "point_labels": [-1]}, "not padding"),
        ({"point_coords": [[float("nan"), 2.0]], "point_labels": [1]}, "finite"),
        ({"point_coords": np.zeros((7, 2)), "point_labels": np.ones(7)}, "at most 6 prompt points"),
        # outside the 120x90 image: a negative coordinate would be read as padding
        ({"point_coords": [[121.0, 10.0]], "point_labels": [1]}, r"\(121, 10\) lies outside"),
        ({"box": [-0.5, 10, 50, 60]}, r"box: \(-0.5, 10\) lies outside the 120x90 image"),
        ({"box": [10, 10, 50, 90.5]}, r"\(50, 90.5\) lies outside"),
    ],
)
def test_bad_prompts_raise_clear_errors(predictor, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        predictor.predict(**kwargs)


def test_prompts_on_the_image_border_are_inside(predictor) -> None:
    masks, _, _ = predictor.predict(box=np.array([0.0, 0.0, 120.0, 90.0]))
    assert masks.shape == (3, 90, 120)
    masks, _, _ = predictor.predict(point_coords=[[120.0, 90.0]], point_labels=[1])
    assert masks.shape == (3, 90, 120)


def test_bad_batch_prompts(predictor) -> None:
    with pytest.raises(ValueError, match="boxes must be an array of shape Qx4"):
        predictor.predict_batch(boxes=np.zeros((3, 5)))
    with pytest.raises(ValueError, match="boxes has 2 queries but point_coords has 3"):
        predictor.predict_batch(
            point_coords=np.zeros((3, 1, 2)),
            point_labels=np.ones((3, 1)),
            boxes=np.tile([0, 0, 5, 5], (2, 1)),
        )


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((10, 10, 3), dtype=np.float32), "dtype uint8"),
        (np.zeros((10, 10), dtype=np.uint8), r"shape HxWx3"),
        (np.zeros((10, 10, 4), dtype=np.uint8), r"shape HxWx3"),
        ([[0, 1]], "numpy array"),
    ],
)
def test_bad_images(tiny_model, image, match) -> None:
    with pytest.raises(ValueError, match=match):
        esam.EfficientSamPredictor(tiny_model).set_image(image)


def test_predict_before_set_image(tiny_model) -> None:
    with pytest.raises(RuntimeError, match="set_image"):
        esam.EfficientSamPredictor(tiny_model).predict(box=[0, 0, 5, 5])


def test_model_level_bad_input(tiny_model) -> None:
    img = torch.rand(1, 3, 32, 32)
    pts, lab = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2)
    # value checks synchronise with the device: they live in validate_inputs, not in forward
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        tiny_model.validate_inputs(img * 255, pts, lab)
    with pytest.raises(ValueError, match=r"\{-1, 0, 1, 2, 3\}"):
        tiny_model.validate_inputs(img, pts, torch.full((1, 1, 2), 4))
    with pytest.raises(ValueError, match="labels must be a tensor of shape BxQxN"):
        tiny_model.validate_inputs(batched_points=pts)
    tiny_model.validate_inputs(img, pts, lab)  # valid inputs pass
    # shape and dtype checks need no synchronisation and stay in the forward path
    with pytest.raises(ValueError, match="floating point"):
        tiny_model((img * 255).to(torch.uint8), pts, lab)
    with pytest.raises(ValueError, match="Bx3xHxW"):
        tiny_model(torch.rand(3, 32, 32), pts, lab)
    with pytest.raises(ValueError, match="points must be a tensor of shape BxQxNx2"):
        tiny_model(img, torch.zeros(1, 2, 2), lab)
    with pytest.raises(ValueError, match="labels must be a tensor of shape BxQxN"):
        tiny_model(img, pts, torch.ones(1, 2))


def _small_cli_models(monkeypatch: pytest.MonkeyPatch, encoder_depth: int) -> None:
    """Make the CLI build its model at 128 px with ``encoder_depth`` blocks (fast)."""
    import esam.build as build

    real = build.build_model
    monkeypatch.setattr(
        build,
        "build_model",
        lambda name, ckpt=None: real(name, ckpt, img_size=128, encoder_depth=encoder_depth),
    )
    monkeypatch.setattr(esam, "build_model", build.build_model)


def test_cli_predict_writes_mask_and_overlay(tmp_path: Path, rgb_image, monkeypatch) -> None:
    _small_cli_models(monkeypatch, encoder_depth=2)
    img_path = tmp_path / "img.png"
    Image.fromarray(rgb_image).save(img_path)
    out, ov = tmp_path / "mask.png", tmp_path / "overlay.png"
    rc = main(
        [
            "predict",
            "--standin-weights",
            "--image",
            str(img_path),
            "--box",
            "15,20,55,60",
            "--out",
            str(out),
            "--overlay",
            str(ov),
        ]
    )
    assert rc == 0
    mask = np.asarray(Image.open(out))
    assert mask.shape == (90, 120) and set(np.unique(mask)) <= {0, 255}
    overlay = np.asarray(Image.open(ov))
    assert overlay.shape == (90, 120, 3)
    assert (overlay != rgb_image).any()
    rc = main(
        [
            "predict",
            "--standin-weights",
            "--image",
            str(img_path),
            "--points",
            "30,40;80,45",
            "--labels",
            "1,0",
            "--out",
            str(out),
        ]
    )
    assert rc == 0


def test_cli_predict_errors(tmp_path: Path, capsys) -> None:
    assert (
        main(
            [
                "predict",
                "--image",
                str(tmp_path / "x.png"),
                "--box",
                "1,2,3,4",
                "--out",
                str(tmp_path / "m.png"),
            ]
        )
        == 2
    )
    assert "--checkpoint" in capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                "--standin-weights",
                "--image",
                str(tmp_path / "x.png"),
                "--box",
                "1,2,3,4",
                "--out",
                str(tmp_path / "m.png"),
            ]
        )
        == 2
    )
    assert "image not found" in capsys.readouterr().err
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(image)
    base = ["predict", "--image", str(image), "--out", str(tmp_path / "m.png")]
    assert main([*base, "--standin-weights", "--box", "1,2"]) == 2
    assert "--box must have 4 values, got 2" in capsys.readouterr().err
    both = [*base, "--standin-weights", "--checkpoint", str(tmp_path / "w.pt"), "--box", "1,2,3,4"]
    assert main(both) == 2
    assert "either --checkpoint or --standin-weights, not both" in capsys.readouterr().err


def test_cli_predict_keeps_16_bit_grey_values(tmp_path: Path, monkeypatch) -> None:
    _small_cli_models(monkeypatch, encoder_depth=1)
    seen = []
    real_set = esam.EfficientSamPredictor.set_image
    monkeypatch.setattr(
        esam.EfficientSamPredictor,
        "set_image",
        lambda self, image: (seen.append(image.copy()), real_set(self, image))[1],
    )
    grey = np.linspace(0, 65535, 40 * 30).reshape(30, 40).astype(np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(grey).save(path)
    argv = ["predict", "--standin-weights", "--image", str(path), "--box", "5,5,30,25",
            "--out", str(tmp_path / "m.png")]  # fmt: skip
    assert main(argv) == 0
    (image,) = seen
    assert image.shape == (30, 40, 3) and image.dtype == np.uint8
    # 0..65535 scaled to 0..255, not clipped at 255 as PIL's RGB conversion does
    want = np.round(grey.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert np.array_equal(image[:, :, 0], want) and (image == 255).mean() < 0.01


def test_best_only_returns_the_top_candidate(predictor) -> None:
    boxes = np.array([[15.0, 20.0, 55.0, 60.0], [70.0, 25.0, 110.0, 70.0]])
    all_masks, all_iou, all_low = predictor.predict_batch(boxes=boxes)
    best, best_iou, best_low = predictor.predict_batch(boxes=boxes, best_only=True)
    assert best.shape == (2, 1, 90, 120) and best_iou.shape == (2, 1)
    assert np.array_equal(best[:, 0], all_masks[:, 0])
    assert np.allclose(best_iou[:, 0], all_iou.max(axis=1))
    assert np.allclose(best_low[:, 0], all_low[:, 0])
    single, _, _ = predictor.predict(box=boxes[0], best_only=True)
    assert single.shape == (1, 90, 120)


def test_a_bfloat16_model_takes_the_same_inputs(tiny_model, rgb_image, predictor) -> None:
    import copy

    boxes = np.array([[15.0, 20.0, 55.0, 60.0], [70.0, 25.0, 110.0, 70.0]])
    ref, ref_iou, _ = predictor.predict_batch(boxes=boxes, best_only=True)
    half = esam.EfficientSamPredictor(copy.deepcopy(tiny_model).to(torch.bfloat16))
    half.set_image(rgb_image)
    assert half.features is not None and half.features.dtype == torch.bfloat16
    masks, iou, low = half.predict_batch(boxes=boxes, best_only=True)
    assert masks.shape == ref.shape and iou.dtype == low.dtype == np.float32
    inter = (masks & ref).sum(axis=(1, 2, 3))
    union = (masks | ref).sum(axis=(1, 2, 3))
    assert (inter / union).min() > 0.9
    assert np.abs(iou - ref_iou).max() < 0.05


def test_exif_orientation_is_warned_about_or_applied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from esam.data.images import EXIF_ORIENTATION, read_image_file

    stored = np.zeros((20, 30, 3), np.uint8)
    stored[:5, :10] = 255  # a white block at the stored top-left
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # viewers rotate it 90 degrees clockwise
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=100)
    with caplog.at_level("WARNING"):
        as_stored = read_image_file(path)
    assert as_stored.shape == (20, 30, 3) and as_stored[:5, :10].mean() > 240
    assert "EXIF orientation 6" in caplog.text and "--exif-transpose" in caplog.text
    shown = read_image_file(path, exif_transpose=True)
    assert shown.shape == (30, 20, 3)
    assert np.abs(shown.astype(int) - np.rot90(as_stored, k=-1)).max() < 8
    caplog.clear()
    plain = tmp_path / "plain.png"
    Image.fromarray(stored).save(plain)
    with caplog.at_level("WARNING"):
        read_image_file(plain)
    assert "EXIF" not in caplog.text


def test_32_bit_grey_images_keep_their_values_or_are_refused(tmp_path: Path) -> None:
    from esam.data.images import read_image_file
    from esam.errors import InputError

    values = (np.arange(30 * 40).reshape(30, 40) * 50).astype(np.int32)  # up to 59950
    Image.fromarray(values, mode="I").save(tmp_path / "i32.tif")
    got = read_image_file(tmp_path / "i32.tif")
    assert got.dtype == np.uint16 and np.array_equal(got, values)  # not clipped at 255
    Image.fromarray(values * 10, mode="I").save(tmp_path / "wide.tif")
    with pytest.raises(InputError, match="32-bit integer grey image with values from 0 to"):
        read_image_file(tmp_path / "wide.tif")
    Image.fromarray(values.astype(np.float32) / 7, mode="F").save(tmp_path / "f.tif")
    with pytest.raises(InputError, match="floating-point grey image"):
        read_image_file(tmp_path / "f.tif")
