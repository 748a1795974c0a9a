"""A classification run's results.json joins the report's ImageNet leaderboard beside Table 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esam.cli.main import main
from esam.data.synth_classes import write_synthetic_classes


def test_a_run_sits_beside_the_papers_table_1(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    write_synthetic_classes(tmp_path, 2, 8, 32, seed=0, split="train")
    write_synthetic_classes(tmp_path, 2, 4, 32, seed=0, split="val")
    run = tmp_path / "results" / "run"
    args = [
        "eval", "imagenet", "--mode", "finetune", "--config", "tiny",
        "--train", str(tmp_path / "train"), "--val", str(tmp_path / "val"), "--output", str(run),
        "train.progress=false", "train.epochs=1", "train.batch_size=8",
        "data.name=imagenet-1k", "model.name=tiny test ViT",
    ]  # fmt: skip
    assert main(args) == 0
    out = tmp_path / "report"
    assert main(["report", "--results", str(tmp_path / "results"), "--out", str(out)]) == 0
    table = (out / "leaderboards" / "imagenet.md").read_text()
    section = table[table.index("imagenet-1k · finetune") :]
    assert "tiny test ViT" in section
    # trained from a random start: a measured row, not a placeholder-weights caveat
    assert "not meaningful" not in section
    model = json.loads((run / "results.json").read_text())["model"]
    assert model["weights"] == "fine-tuned from random (MAE initialisation)"
    rows = {line.split("|")[2].strip(): line for line in section.splitlines() if "|" in line}
    # published under the names a paper-suite run records (the backbone file's stem)
    assert "*76.8*" in rows["*sami_vit_tiny* (SAMI ViT-Ti, published)"]
    assert "*83.6*" in rows["*mae_vit_base* (MAE ViT-B, published)"]
