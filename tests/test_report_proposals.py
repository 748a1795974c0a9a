"""Object proposals in the report: declared metrics, tables per protocol, the published SAM row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from esam.eval.config import PROPOSALS_PROTOCOL, ProposalsConfig
from esam.report.load import load_results
from esam.report.published import load_published
from esam.report.tables import build_leaderboards, to_markdown
from esam.report.tasks import PROTOCOL_CONFIG_KEYS, TASKS
from esam.utils.results import PROTOCOL_NAMES, make_results

PUBLISHED = Path(__file__).resolve().parents[1] / "reports" / "published.json"
META = {
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "versions": {},
    "hardware": {"cpu_model": "Test CPU"},
    "device": "cpu",
    "dtype": "fp32",
    "start_time": "2024-01-01T00:00:00+00:00",
    "end_time": "2024-01-01T00:01:00+00:00",
}
COMMON = {"model": "m", "dataset": "coco", "annotations": "a.json", "images": "i"}


def _write(folder: Path, name: str, model: str, config: dict[str, Any], **metrics: float) -> None:
    obj = make_results(
        "proposals",
        {"name": model},
        config,
        {"n_instances": 10, **metrics},
        META,
        dataset={"name": config.pop("_dataset", "lvis"), "n_images": 5, "n_images_skipped": 0},
    )
    (folder / f"{name}.json").write_text(json.dumps(obj))


def _boards(folder: Path, published: bool = True) -> dict[str, Any]:
    frames = [load_results([folder], warn=False).frame]
    if published:
        frames.append(load_published(PUBLISHED).frame)
    return {
        b.title: b for b in build_leaderboards(pd.concat(frames, ignore_index=True))["proposals"]
    }


def test_every_metric_the_harness_writes_is_declared_and_ar_1000_ranks():
    from esam.eval.proposals import BUDGETS, FREQUENCIES, SIZES

    spec = TASKS["proposals"]
    written = [f"ar_{b}" for b in BUDGETS]
    written += [f"ar_{s}_{b}" for b in BUDGETS for s in SIZES]
    written += [f"ar_{g}_{b}" for g in FREQUENCIES.values() for b in BUDGETS]
    undeclared = [m for m in written if not spec.is_declared(m)]
    assert undeclared == []
    assert spec.primary == "ar_1000" and spec.metric("ar_1000").direction == "higher"
    assert spec.metric("ar_rare_1000").unit == "%"
    assert spec.metric("n_proposals").direction is None  # a count: shown, never ranked
    assert spec.protocol and "protocol" in spec.group_by


def test_the_sam_paper_proposal_number_is_published_under_its_protocol():
    pub = load_published(PUBLISHED)
    rows = pub.frame[pub.frame["task"] == "proposals"]
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row["model"], row["published_as"]) == ("sam_vit_h", "SAM ViT-H")
    assert (row["dataset"], row["metric"], row["value"]) == ("lvis", "ar_1000", 59.3)
    assert row["protocol"] == PROPOSALS_PROTOCOL and PROPOSALS_PROTOCOL in PROTOCOL_NAMES
    assert "LVIS v1" in row["reference"] and row["source"] == "published"
    assert pub.skipped == []


def test_harness_records_its_protocol_and_every_setting_is_part_of_a_row_identity():
    config = ProposalsConfig(**COMMON).results_config(1)
    assert config["protocol"] == PROPOSALS_PROTOCOL and config["protocol_overrides"] == {}
    spec = TASKS["proposals"]
    identity = set(spec.variant_keys) | set(PROTOCOL_CONFIG_KEYS)
    # descriptions of the fixed method and settings that never change the numbers
    combinable = {"prompt", "iou_type", "evaluator", "ranking", "device", "world_size"}
    combinable |= {"workers", "workers_auto", "skip_bad_images", "extra"}
    unknown = set(config) - identity - combinable
    assert not unknown, f"config keys {sorted(unknown)} are not part of a proposals row identity"


def test_measured_lvis_runs_sit_beside_the_published_row_and_are_ranked_apart(tmp_path):
    base = ProposalsConfig(**{**COMMON, "dataset": "lvis"}).results_config(1)
    _write(tmp_path, "a", "sam_vit_h", dict(base), ar_1000=50.0, ar_100=30.0, ar_rare_1000=40.0)
    _write(tmp_path, "b", "efficientsam_vitt", dict(base), ar_1000=45.0, ar_100=35.0)
    loose = {**base, "generator": {**base["generator"], "pred_iou_thresh": 0.5}}
    _write(tmp_path, "c", "efficientsam_vitt", loose, ar_1000=48.0, ar_100=20.0)
    boards = _boards(tmp_path)
    assert list(boards) == ["lvis · protocol sam"]
    board = boards["lvis · protocol sam"]
    rows = board.rows.to_dict("records")
    got = [(r["model"], r["source"], r["rank"], r["ar_1000"]) for r in rows]
    # ranked by AR@1000; the published row sits under the measured run of the same model,
    # unranked; runs with other generator settings are separate rows
    assert [g[:2] for g in got] == [
        ("sam_vit_h", "measured"),
        ("sam_vit_h", "published"),
        ("efficientsam_vitt", "measured"),
        ("efficientsam_vitt", "measured"),
    ]
    assert [g[3] for g in got] == [50.0, 59.3, 48.0, 45.0]
    assert rows[0]["rank"] == 1 and pd.isna(rows[1]["rank"]) and rows[3]["rank"] == 3
    assert board.best["ar_1000"] == [0]  # the published 59.3 is never marked best
    assert board.best["ar_100"] == [3]
    assert "variant" in board.keys and "pred_iou_thresh" in rows[2]["variant"]
    names = [m.name for m in board.metrics]
    assert names[:3] == ["ar_1000", "ar_100", "ar_rare_1000"]
    assert "| AR@1000 rare ↑ |" in to_markdown(board)


def test_runs_without_a_protocol_never_share_the_published_table(tmp_path):
    old = ProposalsConfig(**{**COMMON, "dataset": "lvis"}).results_config(1)
    del old["protocol"], old["protocol_overrides"]
    _write(tmp_path, "old", "sam_vit_h", old, ar_1000=70.0)
    boards = _boards(tmp_path)
    assert sorted(boards) == ["lvis · protocol sam", "lvis · protocol unspecified"]
    assert set(boards["lvis · protocol sam"].rows["source"]) == {"published"}
    assert list(boards["lvis · protocol unspecified"].rows["source"]) == ["measured"]


def _lvis_sample(tmp_path: Path) -> tuple[Path, Path]:
    """The shipped COCO-format sample in LVIS form: crowd regions dropped, categories given
    LVIS frequencies (rare, common, frequent in turn)."""
    from esam.data.synthetic import sample_paths

    annotations, images = sample_paths()
    data = json.loads(annotations.read_text())
    for i, cat in enumerate(data["categories"]):
        cat["frequency"] = "rcf"[i % 3]
    for img in data["images"]:
        img.update(neg_category_ids=[], not_exhaustive_category_ids=[])
    data["annotations"] = [a for a in data["annotations"] if not a.get("iscrowd")]
    path = tmp_path / "lvis_sample.json"
    path.write_text(json.dumps(data))
    return path, images


def test_an_lvis_run_of_the_harness_reaches_the_report_with_frequency_groups(tmp_path):
    pytest.importorskip("pycocotools")
    pytest.importorskip("lvis")
    from esam.eval.proposals import run_proposals
    from esam.report.build import build_report

    annotations, images = _lvis_sample(tmp_path)
    results = tmp_path / "results"
    for model in ("oracle", "box_grid"):
        cfg = ProposalsConfig(
            model=model,
            dataset="lvis",
            annotations=str(annotations),
            images=str(images),
            workers=0,
            progress=False,
            limit_images=2,
            output=str(results / f"{model}.json"),
        )
        run_proposals(cfg)
    written = json.loads((results / "oracle.json").read_text())
    assert written["config"]["protocol"] == "sam"
    assert written["config"]["generator"] is None  # the references do not run the generator
    out = build_report([results], tmp_path / "report", warn=False)
    board = next(b for b in out.boards["proposals"] if b.group["dataset"] == "lvis")
    assert board.title == "lvis · protocol sam"
    rows = {(r["model"], r["source"]): r for r in board.rows.to_dict("records")}
    oracle = rows[("oracle", "measured")]
    for metric in ("ar_1000", "ar_100", "ar_rare_1000", "ar_common_1000", "ar_frequent_1000"):
        assert oracle[metric] == pytest.approx(100.0), metric
    assert rows[("box_grid", "measured")]["ar_1000"] < 100.0
    assert rows[("sam_vit_h", "published")]["ar_1000"] == 59.3
    # weightless references are not split by generator settings they do not read
    assert oracle["variant"] == "max_proposals=1000, limit_images=2"
    html = out.index_html.read_text()
    assert "Zero-shot object proposals (segment everything)" in html
    assert "lvis · protocol sam" in html and "59.3" in html
