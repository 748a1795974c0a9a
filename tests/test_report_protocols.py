"""Protocol presets split the zero-shot tables; published numbers name their protocol."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from esam.report.load import load_results, protocol_label
from esam.report.published import load_published
from esam.report.tables import build_leaderboards, to_markdown
from esam.report.tasks import TASKS
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


def _write(folder: Path, name: str, config: dict[str, Any], miou: float) -> None:
    obj = make_results(
        "zeroshot",
        {"name": "efficientsam_vitt"},
        config,
        {"miou": miou},
        META,
        dataset={"name": "coco"},
    )
    (folder / f"{name}.json").write_text(json.dumps(obj))


def _published(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"schema": "esam.published/1", "entries": entries}))
    return path


def _entry(protocol: str | None, value: float, **kw: Any) -> dict[str, Any]:
    entry = {
        "model": "Paper-Net",
        "task": "zeroshot",
        "dataset": "coco",
        "setting": "point1",
        "metric": "miou",
        "value": value,
        "source": f"A paper, Table {protocol}",
        **kw,
    }
    if protocol is not None:
        entry["protocol"] = protocol
    return entry


def test_protocol_label():
    assert protocol_label({}) == "unspecified"
    assert protocol_label({"protocol": "sam", "protocol_overrides": {}}) == "sam"
    label = protocol_label(
        {
            "protocol": "efficientsam",
            "protocol_overrides": {"include_crowd": True, "click": "random"},
        }
    )
    assert label == "efficientsam + click=random + include_crowd=true"


def test_runs_and_published_numbers_of_different_protocols_never_share_a_table(tmp_path):
    point = {"prompt": "point1", "mask_choice": "score"}
    _write(tmp_path, "paper", {**point, "protocol": "efficientsam", "protocol_overrides": {}}, 50.0)
    _write(
        tmp_path, "evit", {**point, "protocol": "efficientvit-sam", "protocol_overrides": {}}, 60.0
    )
    _write(tmp_path, "old", point, 55.0)  # written before presets: protocol unspecified
    _write(
        tmp_path,
        "override",
        {**point, "protocol": "efficientsam", "protocol_overrides": {"click": "center"}},
        58.0,
    )
    pub = load_published(
        _published(
            tmp_path.parent / "pub.json",
            [_entry("efficientsam", 45.5), _entry("efficientvit-sam", 59.8), _entry(None, 40.0)],
        )
    )
    tidy = pd.concat([load_results([tmp_path], warn=False).frame, pub.frame], ignore_index=True)
    boards = {b.group["protocol"]: b for b in build_leaderboards(tidy)["zeroshot"]}
    assert set(boards) == {
        "efficientsam",
        "efficientvit-sam",
        "unspecified",
        "efficientsam + click=center",
    }
    values = {
        protocol: sorted(zip(b.rows["source"], b.rows["miou"], strict=True))
        for protocol, b in boards.items()
    }
    assert values == {
        "efficientsam": [("measured", 50.0), ("published", 45.5)],
        "efficientvit-sam": [("measured", 60.0), ("published", 59.8)],
        "unspecified": [("measured", 55.0), ("published", 40.0)],
        "efficientsam + click=center": [("measured", 58.0)],
    }
    board = boards["efficientsam + click=center"]
    assert board.title == "coco · point1 · protocol efficientsam + click=center"
    assert len({b.slug for b in boards.values()}) == 4  # one anchor per table


def test_every_published_zero_shot_number_names_its_protocol():
    entries = json.loads(PUBLISHED.read_text())["entries"]
    for i, e in enumerate(entries):
        assert "protocol" in e, f"entry {i} ({e['model']}, {e['task']}) has no protocol"
        if TASKS.get(e["task"]) is not None and TASKS[e["task"]].protocol:
            assert e["protocol"] in (*PROTOCOL_NAMES, "unspecified"), i
            if e["protocol"] == "unspecified":
                assert e.get("protocol_note", "").strip(), f"entry {i}: say what the source states"
        else:
            assert e["protocol"] is None, i
        if e["source"].startswith("EfficientViT-SAM README") and e["task"] == "zeroshot":
            assert e["protocol"] == "efficientvit-sam"
        if e["source"].startswith("EfficientSAM paper") and e["task"] in ("zeroshot", "instseg"):
            assert e["protocol"] == "efficientsam"
    identity = Counter(
        (e["model"], e["task"], e["dataset"], e["setting"], e["metric"], e["source"])
        for e in entries
    )
    assert [k for k, n in identity.items() if n > 1] == []  # no duplicates


def _paper(entries: list[dict[str, Any]], table: int) -> dict[tuple[str, ...], float]:
    return {
        (e["model"], e["task"], e["dataset"], e["setting"], e["metric"]): e["value"]
        for e in entries
        if e["source"] == f"EfficientSAM paper, Table {table}"
    }


def test_the_papers_tables_are_published():
    entries = json.loads(PUBLISHED.read_text())["entries"]
    t1 = _paper(entries, 1)
    assert t1[("SAMI ViT-Ti", "imagenet", "imagenet-1k", "finetune", "top1")] == 76.8
    assert t1[("MAE ViT-B", "imagenet", "imagenet-1k", "finetune", "top1")] == 83.6
    assert len(t1) == 6
    t2 = _paper(entries, 2)
    assert t2[("SAMI ViT-S", "coco-maskrcnn", "coco", "", "bbox_mAP")] == 49.8
    assert t2[("SAMI ViT-S", "coco-maskrcnn", "coco", "", "segm_mAP")] == 44.2
    assert len(t2) == 6
    t3 = _paper(entries, 3)
    assert t3 == {
        ("SAMI ViT-Ti", "ade20k-mask2former", "ade20k", "", "mIoU"): 42.7,
        ("SAMI ViT-S", "ade20k-mask2former", "ade20k", "", "mIoU"): 48.8,
        ("SAMI ViT-B", "ade20k-mask2former", "ade20k", "", "mIoU"): 51.8,
    }
    t4 = _paper(entries, 4)
    assert len(t4) == 12
    assert t4[("EfficientSAM-S", "zeroshot", "coco", "point3", "miou")] == 69.8
    assert t4[("SAM ViT-H", "zeroshot", "coco", "box", "miou")] == 78.4
    t5 = _paper(entries, 5)
    assert t5[("EfficientSAM-Ti", "instseg", "coco", "vitdet", "ap")] == 42.3
    assert len(t5) == 5
    t8 = _paper(entries, 8)
    assert sorted(t8.values()) == [2, 47, 54]  # already there, not duplicated


@pytest.mark.parametrize(
    ("task", "metric", "label"),
    [
        ("imagenet", "top1", "top-1 ↑"),
        ("coco-maskrcnn", "bbox_mAP", "box AP ↑"),
        ("coco-maskrcnn", "segm_mAP", "mask AP ↑"),
        ("ade20k-mask2former", "mIoU", "mIoU ↑"),
    ],
)
def test_downstream_tables_render_with_declared_metrics(task, metric, label):
    boards = build_leaderboards(load_published(PUBLISHED).frame)
    (board,) = boards[task]
    assert board.task.declared and board.task.metric(metric).direction == "higher"
    assert metric in [m.name for m in board.metrics]
    assert f"| {label} |" in to_markdown(board) or f" {label} |" in to_markdown(board)
    assert set(board.rows["source"]) == {"published"} and board.rows["rank"].isna().all()


def test_declared_downstream_metrics():
    assert [m.name for m in TASKS["imagenet"].metrics] == ["top1", "top5", "n_images"]
    assert {m.name for m in TASKS["coco-maskrcnn"].metrics} == {
        f"{kind}_mAP{size}" for kind in ("bbox", "segm") for size in ("", "_s", "_m", "_l")
    }
    assert [m.name for m in TASKS["ade20k-mask2former"].metrics] == ["mIoU", "aAcc"]


def test_bad_published_entries_are_skipped(tmp_path):
    path = _published(
        tmp_path / "pub.json",
        [_entry("efficientsam", 50.0), _entry("paper-protocol", 51.0), _entry("sam", float("nan"))],
    )
    pub = load_published(path)
    assert list(pub.frame["value"]) == [50.0]
    reasons = [s.reason for s in pub.skipped]
    assert "protocol 'paper-protocol' is not one of" in reasons[0]
    assert "not finite" in reasons[1]
    # a note on the protocol reaches the row's note
    pub = load_published(
        _published(
            tmp_path / "note.json",
            [_entry("unspecified", 50.0, note="One click.", protocol_note="Not stated.")],
        )
    )
    assert pub.frame["note"].iloc[0] == "One click. Not stated."
    assert pub.frame["protocol"].iloc[0] == "unspecified"
