"""Running suites end to end on the shipped sample: resume, reruns on changed data, failures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from esam.cli.main import main
from esam.data.synthetic import SAMPLE_DIR, sample_paths

SUITE = """
name: t
datasets:
  a: {format: coco, annotations: "${ann}", images: "${sample_root}/images",
      detections: "${sample_root}/detections.json"}
  b: {format: coco, annotations: "${sample_root}/annotations/instances.json",
      images: "${sample_root}/images"}
defaults: {workers: 0, progress: false, limit_images: 2}
runs:
  - {task: zeroshot, model: box_fill, dataset: [a, b], protocol: efficientsam}
  - {task: instseg, model: box_fill, dataset: a}
"""


def _ledger(out: Path, name: str = "t") -> dict:
    return json.loads((out / f"{name}.ledger.json").read_text())


def _statuses(out: Path) -> dict[str, str]:
    return {rid: e["status"] for rid, e in _ledger(out)["runs"].items()}


def test_suite_runs_resumes_and_reruns_exactly_the_changed_runs(tmp_path: Path) -> None:
    ann = tmp_path / "a.json"
    shutil.copy(sample_paths()[0], ann)
    suite = tmp_path / "t.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "results"
    argv = ["suite", "run", str(suite), "--out", str(out), "--var", f"ann={ann}"]

    assert main(argv) == 0
    first = _ledger(out)["runs"]
    assert set(_statuses(out).values()) == {"ok"}
    assert len(first) == 3
    for entry in first.values():
        assert Path(entry["output"]).is_file()
        assert json.loads(Path(entry["output"]).read_text())["task"] in ("zeroshot", "instseg")

    assert main(argv) == 0  # nothing changed: every run is skipped
    assert set(_statuses(out).values()) == {"done"}

    data = json.loads(ann.read_text())
    ann.write_text(json.dumps(data, indent=1))  # same content, new bytes: a new sha256
    assert main(argv) == 0
    statuses = _statuses(out)
    assert statuses == {
        "zeroshot/box_fill/a/efficientsam": "ok",
        "zeroshot/box_fill/b/efficientsam": "done",
        "instseg/box_fill/a": "ok",
    }
    again = _ledger(out)["runs"]
    for rid, entry in again.items():
        if statuses[rid] == "ok":  # a new results file; the superseded one is gone
            assert entry["output"] != first[rid]["output"]
            assert not Path(first[rid]["output"]).exists()
        else:
            assert entry["output"] == first[rid]["output"]
    assert len(list((out / "zeroshot").glob("*.json"))) == 2


def test_missing_inputs_and_failures_are_recorded_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "bad.yaml"
    suite.write_text(
        "name: bad\n"
        "datasets:\n"
        "  s: {format: coco, annotations: '${sample_root}/annotations/instances.json',\n"
        "      images: '${sample_root}/images'}\n"
        "  gone: {format: coco, annotations: '${data_root}/nothing.json', images: '${data_root}'}\n"
        "defaults: {workers: 0, progress: false}\n"
        "runs:\n"
        "  - {task: zeroshot, model: efficientsam_vitt, checkpoint: '${data_root}/no.pt',\n"
        "     dataset: s}\n"
        "  - {task: zeroshot, model: box_fill, dataset: gone}\n"
        "  - {task: zeroshot, model: no_such_model, dataset: s}\n"
        "  - {task: coco-maskrcnn, model: sami_vit_tiny}\n"
    )
    out = tmp_path / "results"
    rc = main(
        ["suite", "run", str(suite), "--out", str(out), "--data-root", str(tmp_path / "d"),
         "--jobs", "2"]
    )  # fmt: skip
    assert rc == 1
    runs = _ledger(out, "bad")["runs"]
    by_model = {e["model"]: e for e in runs.values()}
    assert by_model["efficientsam_vitt"]["reason"] == (
        f"not run: missing checkpoint {tmp_path / 'd' / 'no.pt'}"
    )
    assert by_model["box_fill"]["reason"].startswith("not run: missing annotations")
    failed = by_model["no_such_model"]
    assert failed["status"] == "failed"
    assert "no_such_model" in failed["reason"] and "\n" not in failed["reason"]
    assert Path(failed["log"]).is_file()
    assert by_model["sami_vit_tiny"]["reason"].startswith("not run: esam has no Mask R-CNN")
    assert len(_ledger(out, "bad")["not_run"]) == 4

    pytest.importorskip("pandas")
    from esam.report.build import build_report

    report = build_report([out], tmp_path / "report", published=None, warn=False)
    assert not report.skipped  # the ledger is not taken for a results file
    md = report.report_md.read_text()
    assert "## Not run" in md and "not run: missing checkpoint" in md
    assert "| failed |" in md
    assert 'id="not-run"' in report.index_html.read_text()


def test_smoke_suite_is_weightless_and_uses_the_shipped_sample() -> None:
    from esam.cli.suite import task_options
    from esam.suite import load_suite

    suite = load_suite("smoke", task_options(), environ={})
    assert {r.task for r in suite.runs} == {"zeroshot", "instseg", "proposals", "throughput"}
    for run in suite.runs:
        assert run.checkpoint is None
        assert all(Path(p).exists() and str(SAMPLE_DIR) in p for p in run.inputs.values())
