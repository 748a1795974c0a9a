"""benchmarks/bench_finetune_scratch.py: the demo's fine-tuning stage alone, checked against
its targets (quick setting: the pipeline, not the learning)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_finetune_scratch.py"


def test_quick_run_writes_a_summary_whose_verdicts_follow_its_numbers(tmp_path: Path) -> None:
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--out", str(out),
         "--epochs", "2", "--json", str(summary)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads(summary.read_text())
    train, held = s["train"], s["heldout"]
    assert train["steps"] == 8  # 16 images, batch 4, 2 epochs (--epochs)
    assert train["config"]["train"]["epochs"] == 2
    assert train["config"]["model"]["img_size"] == 128
    assert s["meta"]["dtype"] == "fp32" and s["meta"]["versions"]["torch"] == version("torch")
    assert 0 < train["wall_s"] < 900
    for key in ("box_miou", "point1_miou", "box_fill_miou"):
        assert 0.0 <= held[key] <= 100.0
    assert s["met"] == {
        "time": train["wall_s"] <= 60 * s["targets"]["train_within_min"],
        "box_miou": held["box_miou"] >= 80.0,
        "margin": held["box_miou"] >= held["box_fill_miou"] + 10.0,
    }
    assert f"box mIoU {held['box_miou']:.1f}%" in proc.stdout
