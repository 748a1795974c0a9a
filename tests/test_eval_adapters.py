"""The adapter interface, the reference baselines and the adapter registry."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import esam.adapters as adapters
from esam.adapters import (
    Prediction,
    Prompts,
    SegmentationAdapter,
    available_adapters,
    build_adapter,
)
from esam.adapters.baselines import BoxFillAdapter, OracleAdapter, fill_boxes


def test_fill_boxes_uses_pixel_centres() -> None:
    m = fill_boxes(np.array([[2.0, 3.0, 7.0, 9.0], [0.4, 0.4, 0.6, 0.6]]), 12, 10)
    assert m.shape == (2, 12, 10)
    assert m[0].sum() == 5 * 6 and m[0, 3:9, 2:7].all()
    assert m[1].sum() == 1 and m[1, 0, 0]


def test_box_fill_and_oracle_predictions() -> None:
    img = np.zeros((12, 10, 3), np.uint8)
    bf = BoxFillAdapter()
    bf.set_image(img)
    pred = bf.predict(Prompts(boxes=np.array([[0, 0, 5, 5]], np.float32)))
    assert pred.masks.shape == (1, 1, 12, 10) and pred.masks.sum() == 25
    with pytest.raises(ValueError, match="does not accept point prompts"):
        bf.predict(
            Prompts(points=np.zeros((1, 1, 2), np.float32), labels=np.ones((1, 1), np.int64))
        )
    gt = np.zeros((2, 12, 10), dtype=bool)
    gt[0, 1:3, 1:3] = True
    gt[1, 5:, 5:] = True
    oracle = OracleAdapter()
    oracle.set_image(img)
    out = oracle.predict(Prompts(boxes=np.zeros((2, 4), np.float32), gt_masks=gt))
    assert np.array_equal(out.masks[:, 0], gt)
    with pytest.raises(ValueError, match="needs ground-truth"):
        oracle.predict(Prompts(boxes=np.zeros((2, 4), np.float32)))


def test_prompts_validation() -> None:
    with pytest.raises(ValueError, match="needs boxes or points"):
        Prompts()
    with pytest.raises(ValueError, match="Qx4"):
        Prompts(boxes=np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="disagree on Q"):
        Prompts(boxes=np.zeros((2, 4)), gt_masks=np.zeros((3, 4, 4), bool))
    with pytest.raises(ValueError, match="labels must be QxN"):
        Prompts(points=np.zeros((2, 3, 2)), labels=np.zeros((2, 2)))
    p = Prompts(points=np.zeros((4, 1, 2)), labels=np.ones((4, 1)))
    assert len(p) == 4 and len(p.select(slice(1, 3))) == 2
    with pytest.raises(ValueError, match="QxMxHxW bool"):
        Prediction(np.zeros((1, 4, 4)), np.zeros((1, 1)))


def test_registry_lists_builtins_and_rejects_unknown_names() -> None:
    names = available_adapters()
    for expected in (
        "box_fill",
        "oracle",
        "efficientsam_vitt",
        "sam_vit_h",
        "mobilesam",
        "efficientvit_sam_l0",
    ):
        assert expected in names
    with pytest.raises(
        ValueError, match=r"unknown model 'nope'; available: .*box_fill.*esam\.adapters"
    ):
        build_adapter("nope")
    with pytest.raises(ValueError, match="takes no --checkpoint"):
        build_adapter("box_fill", checkpoint="x.pt")


class _PluginAdapter(SegmentationAdapter):
    name = "plugin"

    def set_image(self, image: np.ndarray) -> None:
        self.hw = image.shape[:2]

    def predict(self, prompts: Prompts, multimask_output: bool = True) -> Prediction:
        return Prediction(
            np.zeros((len(prompts), 1, *self.hw), bool), np.zeros((len(prompts), 1), np.float32)
        )


def build_plugin(
    name: str, checkpoint: str | None = None, device: str = "cpu"
) -> SegmentationAdapter:
    return _PluginAdapter()


def build_wrong(name: str, checkpoint: str | None = None, device: str = "cpu") -> Any:
    return object()


def test_entry_point_plugins_are_found(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = [
        metadata.EntryPoint("my_fastsam", f"{__name__}:build_plugin", adapters.ENTRY_POINT_GROUP),
        metadata.EntryPoint("broken", f"{__name__}:build_wrong", adapters.ENTRY_POINT_GROUP),
        metadata.EntryPoint("oracle", f"{__name__}:build_plugin", adapters.ENTRY_POINT_GROUP),
    ]

    def fake_entry_points(group: str) -> list[metadata.EntryPoint]:
        return eps if group == adapters.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(adapters.metadata, "entry_points", fake_entry_points)
    names = available_adapters()
    assert names["my_fastsam"] == f"{__name__}:build_plugin"
    assert names["oracle"] == "builtin"  # built-ins cannot be shadowed
    assert isinstance(build_adapter("my_fastsam"), _PluginAdapter)
    assert isinstance(build_adapter("oracle"), OracleAdapter)
    with pytest.raises(TypeError, match="not an esam.adapters.SegmentationAdapter"):
        build_adapter("broken")


def test_weights_are_required_and_never_downloaded(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs --checkpoint.*yformer/EfficientSAM"):
        build_adapter("efficientsam_vitt")
    with pytest.raises(FileNotFoundError, match="checkpoint file not found.*EfficientSAM"):
        build_adapter("efficientsam_vitt", checkpoint=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="needs --checkpoint.*segment-anything"):
        build_adapter("sam_vit_b")
    with pytest.raises(ValueError, match="needs --checkpoint.*MobileSAM"):
        build_adapter("mobilesam")
    with pytest.raises(ValueError, match="needs --checkpoint.*efficientvit-sam"):
        build_adapter("efficientvit_sam_l0")
