"""Stand-in weights are recognised when loaded, and results computed with them are flagged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import esam
from esam.checkpoint import read_checkpoint, save_checkpoint
from esam.standin import (
    FIXTURE_SEED,
    detect_standin,
    identify_standin,
    load_standin_weights,
    standin_state_dict,
    torch_standin_tensor,
)
from tests.conftest import require_shared

TINY = {"img_size": 64, "encoder_depth": 1}


@pytest.fixture(scope="module")
def tiny() -> esam.EfficientSam:
    return esam.build_model("efficientsam_vitt", **TINY)


@pytest.mark.parametrize("seed", [0, 7, 255])
def test_standin_state_dicts_are_recognised_with_their_seed(tiny, seed):
    state = standin_state_dict(tiny, seed)
    assert detect_standin(state) == seed
    match = identify_standin(state)
    assert match is not None and match.generator == "numpy"
    assert match.label == f"standin (seed {seed})"


def test_other_weights_are_not_standins(tiny):
    state = standin_state_dict(tiny, 0)
    assert detect_standin({k: v + 1e-3 for k, v in state.items()}) is None  # e.g. fine-tuned
    assert detect_standin({k: torch.randn_like(v) for k, v in state.items()}) is None
    assert detect_standin({}) is None
    assert detect_standin(standin_state_dict(tiny, 300)) is None  # outside the seeds tried
    assert detect_standin(standin_state_dict(tiny, 300), seeds=[300]) == 300
    # one tensor changed among the smallest: no longer the stand-in
    smallest = min(state, key=lambda k: (state[k].numel(), k))
    assert detect_standin({**state, smallest: torch.zeros_like(state[smallest])}) is None


def test_official_layout_file_written_by_the_project(tiny, tmp_path):
    path = tmp_path / "efficient_sam_vitt.pt"
    torch.save({"model": standin_state_dict(tiny, 3)}, path)
    _, info = read_checkpoint(path)
    assert info["format"] == "official"
    assert info["weights"] == "standin (seed 3)" and info["standin_seed"] == 3


def test_esam_files_carry_the_detection_unless_they_say_otherwise(tiny, tmp_path):
    model = load_standin_weights(esam.build_model("efficientsam_vitt", **TINY))
    plain = save_checkpoint(
        model, tmp_path / "w.safetensors", "efficientsam_vitt", model.config.to_dict()
    )
    assert read_checkpoint(plain)[1]["weights"] == "standin (seed 0)"
    noted = save_checkpoint(
        model, tmp_path / "n.safetensors", "efficientsam_vitt", weights="standin"
    )
    _, info = read_checkpoint(noted)
    assert info["weights"] == "standin" and info["standin_seed"] == 0  # the file's note wins
    built = esam.build_model("efficientsam_vitt", plain)
    assert built.weights_info["weights"] == "standin (seed 0)"


def test_parity_fixture_weights_are_recognised(tmp_path):
    make_weights = require_shared("golden", "efficientsam", "make_weights.py")
    path = tmp_path / "efficient_sam_vitt.pt"
    subprocess.run(
        [sys.executable, str(make_weights), "vitt", str(path)], check=True, capture_output=True
    )
    state, info = read_checkpoint(path)
    assert info["standin_seed"] == FIXTURE_SEED and info["standin_generator"] == "torch"
    assert info["weights"] == f"standin (seed {FIXTURE_SEED}, torch generator)"
    for key in ("mask_decoder.iou_prediction_head.fc.bias", "image_encoder.pos_embed"):
        assert torch.equal(state[key], torch_standin_tensor(key, tuple(state[key].shape)))


def test_results_of_standin_weights_are_flagged_in_the_report(tmp_path):
    """esam eval zeroshot with a stand-in checkpoint: the results and the report say so."""
    pytest.importorskip("pycocotools")
    from esam.adapters import build_adapter
    from esam.data.synthetic import write_synthetic_coco
    from esam.eval.zeroshot import ZeroShotConfig, run_zeroshot
    from esam.report.load import load_results

    model = load_standin_weights(esam.build_model("efficientsam_vitt", **TINY))
    ckpt = save_checkpoint(model, tmp_path / "tiny.pt", "efficientsam_vitt", model.config.to_dict())
    assert build_adapter("efficientsam_vitt", str(ckpt)).weights_note == "standin (seed 0)"

    ann, images = write_synthetic_coco(tmp_path / "data", n_images=1)
    out = tmp_path / "results" / "tiny.json"
    cfg = ZeroShotConfig(
        model="efficientsam_vitt",
        checkpoint=str(ckpt),
        dataset="coco",
        annotations=str(ann),
        images=str(images),
        output=str(out),
        workers=0,
        progress=False,
    )
    run_zeroshot(cfg)
    assert json.loads(out.read_text())["model"]["weights"] == "standin (seed 0)"
    frame = load_results([out.parent], warn=False).frame
    miou = frame[(frame["task"] == "zeroshot") & (frame["metric"] == "miou")]
    assert list(miou["note"]) == ["standin (seed 0) weights: accuracy is not meaningful"]
    assert Path(str(miou["results_file"].iloc[0])).name == "tiny.json"
