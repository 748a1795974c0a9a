"""benchmarks/bench_finetune_by_size.py: a segmenter's box-prompt mIoU by mask area, beside
its best-of-three, low-resolution ceiling and ``box_fill`` references."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

import esam
from esam.cli.main import main
from esam.data.synth_sa1b import write_synthetic_sa1b
from esam.eval.metrics import mask_iou
from esam.finetune.model import save_finetuned
from esam.standin import load_standin_weights

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_finetune_by_size.py"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_finetune_by_size", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lowres_ceiling_of_known_masks(script: ModuleType) -> None:
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, 4:12, 2:10] = True  # on the 8x8 grid's 2 px cells: passes exactly
    masks[1, 5, 5] = True  # a quarter of one cell: below one half, lost
    out = script.lowres_exact(masks, (8, 8))
    assert mask_iou(out[0], masks[0].numpy()) == 100.0
    assert not out[1].any() and mask_iou(out[1], masks[1].numpy()) == 0.0


def test_summary_bins_and_means(script: ModuleType) -> None:
    rows = [
        {"area": a, "chosen": c, "best_of_3": b, "lowres_exact": 100.0, "box_fill": 50.0}
        for a, c, b in ((10, 20.0, 40.0), (40, 60.0, 60.0), (50, 80.0, 100.0))
    ]
    table = {e["area_px"]: e for e in script.summarise(rows, [32.0, 64.0])}
    assert list(table) == ["all", "0-32", "32-64", ">=64"]
    assert table["all"]["n_masks"] == 3 and table["all"]["chosen"] == pytest.approx(160 / 3)
    assert table["0-32"]["best_of_3"] == pytest.approx(40.0)
    assert table["32-64"]["n_masks"] == 2 and table["32-64"]["chosen"] == pytest.approx(70.0)
    assert table[">=64"]["n_masks"] == 0 and table[">=64"]["chosen"] is None


def test_chosen_and_box_fill_match_the_zero_shot_harness(tmp_path: Path) -> None:
    data = tmp_path / "heldout"
    write_synthetic_sa1b(data, 2, seed=1, height=64)
    model = esam.build_model("efficientsam_vitt", img_size=64, encoder_depth=1)
    checkpoint = save_finetuned(load_standin_weights(model).eval(), tmp_path / "model.pt")
    summary = tmp_path / "by_size.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--checkpoint", str(checkpoint), "--data", str(data),
         "--threads", "1", "--no-progress", "--json", str(summary)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(summary.read_text())
    overall = result["table"][0]
    assert result["meta"]["dtype"] == "fp32" and result["skips"] == {}
    assert sum(e["n_masks"] for e in result["table"][1:]) == overall["n_masks"]
    for entry in result["table"]:
        if entry["n_masks"]:
            assert entry["best_of_3"] >= entry["chosen"]
    harness = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the script ran: the same kernels, so the same logits
    try:
        for name, extra in (("box_fill", []), ("efficientsam", ["--checkpoint", str(checkpoint)])):
            out = tmp_path / f"{name}.json"
            argv = ["eval", "zeroshot", "--model", name, *extra, "--dataset", "sa1b",
                    "--annotations", str(data), "--images", str(data), "--prompt", "box",
                    "--workers", "0", "--no-progress", "--output", str(out)]  # fmt: skip
            assert main(argv) == 0
            harness[name] = json.loads(out.read_text())["metrics"]
    finally:
        torch.set_num_threads(threads)
    assert overall["n_masks"] == harness["efficientsam"]["n_instances"]
    tol = 1e-9 * overall["n_masks"]
    assert overall["box_fill"] == pytest.approx(harness["box_fill"]["miou"], abs=tol)
    assert overall["chosen"] == pytest.approx(harness["efficientsam"]["miou"], abs=tol)
    assert np.isfinite(overall["lowres_exact"]) and overall["lowres_exact"] > overall["box_fill"]
