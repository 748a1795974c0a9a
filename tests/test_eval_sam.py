"""SAM-family adapters (segment-anything, MobileSAM, EfficientViT-SAM) without published weights.

The coordinate mapping and batching are checked against each package's own predictor on
small or randomly initialised models; checkpoint loading goes through files written here.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from esam.adapters import Prompts, build_adapter
from esam.adapters.sam import SamFamilyAdapter
from tests.numerics import efficientsam_tolerance


def tiny_sam(seed: int = 0) -> Any:
    """A SAM with a 128 px, one-block encoder and a one-layer decoder (random weights)."""
    sa = pytest.importorskip("segment_anything")
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        TwoWayTransformer,
    )

    torch.manual_seed(seed)
    model = sa.modeling.Sam(
        image_encoder=ImageEncoderViT(
            img_size=128, patch_size=16, embed_dim=32, depth=1, num_heads=2, out_chans=256
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=256,
            image_embedding_size=(8, 8),
            input_image_size=(128, 128),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=256, mlp_dim=64, num_heads=8),
            transformer_dim=256,
        ),
    )
    return model.eval()


def _check_against_predictor(adapter: SamFamilyAdapter, image: np.ndarray) -> None:
    """Batched adapter output == the package predictor's own one-prompt ``predict``.

    ``predict`` takes image pixels and maps them itself, so agreement checks the adapter's
    coordinate mapping, chunking and mask layout.
    """
    adapter.set_image(image)
    predictor = adapter.predictor
    h, w = image.shape[:2]
    boxes = np.array([[5, 6, 40, 50], [30, 10, 110, 80], [0, 0, w - 1, h - 1]], dtype=np.float32)
    pred = adapter.predict(Prompts(boxes=boxes))
    points = np.array(
        [[[20, 30], [0, 0]], [[60, 40], [70, 45]], [[100, 70], [10, 10]]], dtype=np.float32
    )
    labels = np.array([[1, -1], [1, 0], [1, 1]], dtype=np.int64)
    pred_pts = adapter.predict(Prompts(points=points, labels=labels), multimask_output=False)
    assert pred.masks.shape == (3, 3, h, w) and pred_pts.masks.shape == (3, 1, h, w)
    # the same decoder arithmetic batched differently (SAM's decoder: as EfficientSAM's)
    tol = efficientsam_tolerance(encoder_depth=0) * max(1.0, float(np.abs(pred.scores).max()))
    for q in range(3):
        m, s, _ = predictor.predict(box=boxes[q], multimask_output=True)
        np.testing.assert_allclose(pred.scores[q], s, atol=tol, rtol=0)
        assert (pred.masks[q] == m).mean() > 0.999
        m, s, _ = predictor.predict(
            point_coords=points[q], point_labels=labels[q], multimask_output=False
        )
        np.testing.assert_allclose(pred_pts.scores[q], s, atol=tol, rtol=0)
        assert (pred_pts.masks[q] == m).mean() > 0.999


@pytest.mark.sam
def test_sam_adapter_matches_sam_predictor(rgb_image: np.ndarray) -> None:
    model = tiny_sam()
    from segment_anything import SamPredictor

    adapter = SamFamilyAdapter(
        "sam_tiny", SamPredictor(model), None, "test", max_prompts_per_call=2
    )
    _check_against_predictor(adapter, rgb_image)


def test_build_sam_loads_weights_strictly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rgb_image: np.ndarray
) -> None:
    import segment_anything

    monkeypatch.setitem(
        segment_anything.sam_model_registry, "vit_b", lambda checkpoint=None: tiny_sam(1)
    )
    ckpt = tmp_path / "sam_vit_b_tiny.pth"
    reference = tiny_sam(2)
    torch.save(reference.state_dict(), ckpt)
    adapter = build_adapter("sam_vit_b", checkpoint=str(ckpt))
    assert adapter.checkpoint == str(ckpt)
    loaded = adapter.predictor.model  # type: ignore[attr-defined]
    for k, v in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    adapter.set_image(rgb_image)
    assert adapter.predict(Prompts(boxes=np.array([[5, 5, 50, 50]], np.float32))).masks.shape == (
        1,
        3,
        90,
        120,
    )

    state = reference.state_dict()
    state.pop("mask_decoder.iou_token.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, ckpt)
    with pytest.raises(
        ValueError,
        match=r"missing keys \(1\): mask_decoder.iou_token.weight[\s\S]*unexpected keys \(1\): extra.weight",
    ):
        build_adapter("sam_vit_b", checkpoint=str(ckpt))
    ckpt.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot be read as a PyTorch checkpoint"):
        build_adapter("sam_vit_b", checkpoint=str(ckpt))
    with pytest.raises(FileNotFoundError, match="Model Checkpoints"):
        build_adapter("sam_vit_b", checkpoint=str(tmp_path / "none.pth"))


def test_mobilesam_adapter(tmp_path: Path, rgb_image: np.ndarray) -> None:
    pytest.importorskip("timm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mobile_sam = pytest.importorskip("mobile_sam")
    torch.manual_seed(0)
    model = mobile_sam.sam_model_registry["vit_t"](checkpoint=None).eval()
    ckpt = tmp_path / "mobile_sam.pt"
    torch.save(model.state_dict(), ckpt)
    adapter = build_adapter("mobilesam", checkpoint=str(ckpt))
    assert isinstance(adapter, SamFamilyAdapter)
    _check_against_predictor(adapter, rgb_image)


def test_efficientvit_sam_adapter(tmp_path: Path, rgb_image: np.ndarray) -> None:
    zoo = pytest.importorskip("efficientsam.sam_model_zoo")

    torch.manual_seed(0)
    model = zoo.create_efficientvit_sam_model("efficientvit-sam-l0", pretrained=False).eval()
    ckpt = tmp_path / "efficientvit_sam_l0.pt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    adapter = build_adapter("efficientvit_sam_l0", checkpoint=str(ckpt))
    assert "512" in adapter.describe()["preprocessing"]
    _check_against_predictor(adapter, rgb_image)  # type: ignore[arg-type]
