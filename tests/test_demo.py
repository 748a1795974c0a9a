"""Smoke test of the end-to-end demo in its reduced setting."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from esam.cli.suite import task_options
from esam.demo import IMAGENET_DATASET, DemoPlan, run_demo, stage_benchmarks, stage_weights
from esam.suite import load_suite
from esam.utils.results import validate_results


@pytest.mark.slow
def test_demo_quick_runs_every_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_demo(tmp_path / "demo", quick=True)
    out = capsys.readouterr().out
    assert "[8/8] report: done" in out
    # the closing summary states the fine-tuned model's held-out scores beside box_fill
    box = json.loads((tmp_path / "demo" / "results" / "finetune"
                      / "synth_box_efficientsam_synth.json").read_text())  # fmt: skip
    assert f"box mIoU {box['metrics']['miou']:.1f}% (box_fill" in out
    assert (tmp_path / "demo" / "predict" / "overlay.png").stat().st_size > 1000
    files = sorted((tmp_path / "demo" / "results").rglob("*.json"))
    results = [json.loads(p.read_text()) for p in files if not p.name.endswith(".segm.json")]
    valid = [validate_results(r, "demo") for r in results if "schema" in r]
    assert {r["task"] for r in valid} == {
        "zeroshot",
        "instseg",
        "throughput",
        "pretrain",
        "finetune",
        "proposals",
        "imagenet",
    }
    assert (tmp_path / "demo" / "pretrain" / "backbone.pt").is_file()
    assert (report / "plots" / "training_curves.png").is_file()
    oracle = [r for r in valid if r["task"] == "zeroshot" and r["model"]["name"] == "oracle"]
    assert oracle and oracle[0]["metrics"]["miou"] == pytest.approx(100.0)
    records = json.loads((tmp_path / "demo" / "everything" / "masks.json").read_text())
    assert all(list(r) == ["segmentation", "area", "bbox", "predicted_iou", "point_coords",
                           "stability_score", "crop_box"] for r in records)  # fmt: skip
    assert (tmp_path / "demo" / "everything" / "overlay.png").stat().st_size > 1000
    proposals = {r["model"]["name"]: r for r in valid if r["task"] == "proposals"}
    assert proposals["oracle"]["metrics"]["ar_1000"] == pytest.approx(100.0)
    assert set(proposals) == {"oracle", "box_grid", "efficientsam"}
    imagenet = {r["config"]["mode"]: r for r in valid if r["task"] == "imagenet"}
    assert set(imagenet) == {"finetune", "linear"}
    assert all(r["dataset"]["name"] == IMAGENET_DATASET for r in imagenet.values())
    assert all(r["metrics"]["n_images"] == 16 for r in imagenet.values())  # 4 classes x 4 val
    html = (report / "index.html").read_text()
    assert "ImageNet-1K classification" in html and IMAGENET_DATASET in html
    assert "oracle" in html and "box_fill" in html
    assert "Zero-shot object proposals" in html and "59.3" in html  # SAM ViT-H, published
    assert "<svg" in html or "<img" in html

    # the benchmarks ran as one suite, the smoke suite's runs first, into the results folder
    results = tmp_path / "demo" / "results"
    suite_file = tmp_path / "demo" / "demo_suite.yaml"
    assert "extends: smoke" in suite_file.read_text()
    ledger = json.loads((results / "demo.ledger.json").read_text())
    smoke = [r.id for r in load_suite("smoke", task_options(), environ={}).runs]
    assert list(ledger["runs"])[: len(smoke)] == smoke
    assert len(ledger["runs"]) == len(smoke) + 5  # stand-in: box, 1 click, AP, proposals, reference
    assert {e["status"] for e in ledger["runs"].values()} == {"ok"} and ledger["not_run"] == []
    outputs = {Path(e["output"]) for e in ledger["runs"].values()}
    assert all(p.parent.parent == results and p.is_file() for p in outputs)
    assert all(Path(e["log"]).is_file() for e in ledger["runs"].values())
    ran = [json.loads(p.read_text()) for p in outputs]
    standin = {
        (r["task"], r["config"].get("prompt")) for r in ran if r["model"]["weights"] == "standin"
    }
    assert standin == {("zeroshot", "box"), ("zeroshot", "point1"), ("instseg", "detector_box"),
                       ("proposals", "point_grid")}  # fmt: skip
    timed = {r["model"]["name"] for r in ran if r["task"] == "throughput"}
    assert timed == {"efficientsam_vitt", "efficientsam_vitt:reference"}
    # the report rendered every file the suite wrote
    with (report / "results.csv").open() as f:
        shown = {Path(row["results_file"]).resolve() for row in csv.DictReader(f)}
    assert {p.resolve() for p in outputs} <= shown

    # a second demo into the same folder keeps the stand-in weights and reruns no benchmark
    plan = DemoPlan(tmp_path / "demo", quick=True)
    stage_weights(plan)
    stage_benchmarks(plan)
    again = json.loads((results / "demo.ledger.json").read_text())["runs"]
    assert {e["status"] for e in again.values()} == {"done"}
    assert {Path(e["output"]) for e in again.values()} == outputs
