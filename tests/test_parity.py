"""Parity with the official EfficientSAM implementation.

The golden cases in shared/golden/efficientsam are the official implementation's outputs for
seeded stand-in weights in the official checkpoint layout; ``make_weights.py`` there writes
those weights. The regression test below always runs, on data the project generates.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import esam
from esam.modeling import set_reference_mode
from esam.standin import load_standin_weights
from tests.conftest import require_shared
from tests.numerics import efficientsam_tolerance

FIXTURE = Path(__file__).parent / "fixtures" / "regression_vitt_standin.npz"
CASES = [("vitt", "dogs"), ("vitt", "truck"), ("vitt", "batch2"), ("vits", "dogs")]


@pytest.fixture(scope="module")
def golden_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    golden = require_shared("golden", "efficientsam")
    out = tmp_path_factory.mktemp("golden")
    paths = {}
    for variant in ("vitt", "vits"):
        path = out / f"efficient_sam_{variant}.pt"
        subprocess.run(
            [sys.executable, str(golden / "make_weights.py"), variant, str(path)],
            check=True,
            capture_output=True,
        )
        paths[variant] = path
    return paths


@pytest.fixture(scope="module")
def golden_models(golden_weights: dict[str, Path]) -> dict[str, esam.EfficientSam]:
    return {v: esam.build_model(f"efficientsam_{v}", p) for v, p in golden_weights.items()}


#: Two float32 computations of the full model (the official one and esam's) differ by at most
#: this much relative to the output's scale (derived from float32's unit roundoff and the
#: length of the model's reductions: tests/numerics.py).
PARITY_TOL = efficientsam_tolerance()


def _assert_close(actual: torch.Tensor, expected: np.ndarray, what: str) -> None:
    err = float(np.abs(actual.numpy() - expected).max())
    bound = PARITY_TOL * float(np.abs(expected).max())
    assert err <= bound, f"{what}: max|a-b| = {err:.3g} > {bound:.3g}"


@pytest.mark.parametrize(("variant", "case"), CASES)
def test_matches_official_outputs(golden_models, variant: str, case: str) -> None:
    data = np.load(require_shared("golden", "efficientsam", f"cases_{variant}.npz"))
    model = golden_models[variant]
    images = torch.from_numpy(data[f"{case}/image_uint8"]).float() / 255.0
    points = torch.from_numpy(data[f"{case}/points"])
    labels = torch.from_numpy(data[f"{case}/labels"])
    h, w = images.shape[-2:]
    with torch.no_grad():
        emb = model.get_image_embeddings(images)
        low, iou = model.predict_masks(emb, points, labels, True, h, w, -1, -1)
        full, _ = model(images, points, labels)
    _assert_close(emb, data[f"{case}/image_embeddings"], "image embeddings")
    _assert_close(low, data[f"{case}/low_res_logits"], "low-res logits")
    _assert_close(iou, data[f"{case}/iou_predictions"], "IoU predictions")
    shape = tuple(data[f"{case}/full_res_shape"])
    expected = np.unpackbits(data[f"{case}/full_res_mask_bits"], axis=-1)[..., : shape[-1]].astype(
        bool
    )
    assert full.shape == shape
    agreement = float(((full > 0).numpy() == expected).mean())
    assert agreement >= 0.999, f"full-resolution masks agree on {agreement:.5f} of pixels"


def test_predictor_matches_official_outputs(golden_models) -> None:
    """The SAM-style predictor reproduces the official forward for a box on the dogs image."""
    data = np.load(require_shared("golden", "efficientsam", "cases_vitt.npz"))
    image = np.ascontiguousarray(data["dogs/image_uint8"][0].transpose(1, 2, 0))
    predictor = esam.EfficientSamPredictor(golden_models["vitt"])
    predictor.set_image(image)
    box = data["dogs/points"][0, 2].reshape(4)  # query 2 is a box (labels 2, 3)
    masks, iou, low = predictor.predict(box=box)
    order = np.argsort(-data["dogs/iou_predictions"][0, 2])
    ref_iou = data["dogs/iou_predictions"][0, 2][order]
    assert np.allclose(iou, ref_iou, atol=PARITY_TOL * np.abs(ref_iou).max(), rtol=0)
    assert np.allclose(
        low, data["dogs/low_res_logits"][0, 2][order], atol=PARITY_TOL * np.abs(low).max(), rtol=0
    )
    expected = np.unpackbits(data["dogs/full_res_mask_bits"][0, 2], axis=-1)[
        ..., : image.shape[1]
    ].astype(bool)
    assert (masks == expected[order]).mean() >= 0.999


@pytest.mark.parametrize("reference", [False, True])
def test_regression_on_generated_data(reference: bool) -> None:
    """Always runs: stand-in weights on a generated image against stored outputs."""
    from tests.make_regression_fixture import inputs

    expected = np.load(FIXTURE)
    model = load_standin_weights(esam.build_model("efficientsam_vitt")).eval()
    set_reference_mode(model, reference)
    images, points, labels = inputs()
    with torch.no_grad():
        emb = model.get_image_embeddings(images)
        low, iou = model.predict_masks(emb, points, labels, True, 90, 120)
        full, _ = model(images, points, labels)
    _assert_close(emb[:, ::8, ::4, ::4], expected["embeddings_sub"], "embeddings")
    _assert_close(low[..., ::8, ::8], expected["low_res_sub"], "low-res logits")
    _assert_close(iou, expected["iou"], "IoU")
    assert ((full > 0).numpy() == expected["full_res_masks"]).mean() >= 0.999
