"""Leaderboards: metric specs, sort direction, best marks, published rows, renderers."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from esam.report.load import load_results
from esam.report.published import load_published
from esam.report.tables import (
    build_leaderboards,
    main_board,
    sort_rows,
    to_csv_frame,
    to_markdown,
    to_text,
)
from esam.report.tasks import TASKS, guess_direction, metric_direction, task_spec
from esam.utils.results import make_results

FIXTURES = Path(__file__).parent / "fixtures" / "results"
PUBLISHED = Path(__file__).resolve().parents[1] / "reports" / "published.json"


@pytest.fixture(scope="module")
def boards():
    tidy = pd.concat(
        [load_results([FIXTURES], warn=False).frame, load_published(PUBLISHED).frame],
        ignore_index=True,
    )
    return build_leaderboards(tidy)


def _board(boards, task, **group):
    for b in boards[task]:
        if all(b.group.get(k) == v for k, v in group.items()):
            return b
    raise AssertionError(f"no {task} table for {group}")


def _line(markdown: str, model: str) -> str:
    return next(line for line in markdown.splitlines() if f"| {model} |" in line)


def test_declared_directions():
    assert metric_direction("zeroshot", "miou") == "higher"
    assert metric_direction("throughput", "images_per_s") == "higher"
    assert metric_direction("throughput", "latency_p50_ms") == "lower"
    assert metric_direction("throughput", "peak_mem_mib") == "lower"
    assert metric_direction("zeroshot", "n_instances") is None
    for spec in TASKS.values():
        assert spec.metric(spec.primary).direction is not None


@pytest.mark.parametrize(
    ("name", "direction"),
    [
        ("latency_ms", "lower"),
        ("recon_loss", "lower"),
        ("top1", "higher"),
        ("fps", "higher"),
        ("images_per_s", "higher"),
        ("n_images", None),
        ("peak_mem_gib", "lower"),
        ("error_rate", "lower"),
    ],
)
def test_guessed_directions(name, direction):
    assert guess_direction(name) == direction


def test_generic_task_spec():
    spec = task_spec("mystery", ["n_items", "wall_time_s", "score"])
    assert not spec.declared
    assert spec.primary == "wall_time_s"  # first metric with a direction
    assert spec.metric("score").direction == "higher"


def test_higher_is_better_sort_and_aggregation(boards):
    board = _board(boards, "zeroshot", dataset="coco", setting="box")
    measured = board.rows[board.rows["source"] == "measured"]
    assert list(measured["model"]) == [
        "sam_vit_h",
        "efficientsam_s",
        "efficientsam_ti",
        "mobilesam",
    ]
    assert list(measured["rank"]) == [1, 2, 3, 4]
    ti = measured[measured["model"] == "efficientsam_ti"].iloc[0]
    assert ti["miou"] == pytest.approx(75.3)  # mean of the two seeds
    assert ti["n_runs"] == 2
    assert ti["provenance"] == "3f9c2a1 · cuda:0 · fp32 · 2024-06-02 · 2 runs"


def test_lower_is_better_sort_and_best(boards):
    board = _board(boards, "throughput", hardware="Fixture GPU (synthetic)", component="end_to_end")
    # default: primary metric images/s, highest first
    assert board.rows["images_per_s"].iloc[0] == pytest.approx(1630.0)
    sort_rows(board, "latency_p50_ms")
    lat = list(board.rows["latency_p50_ms"])
    assert lat == sorted(lat)  # lower is better: ascending
    assert (
        board.rows.iloc[0]["model"] == "efficientsam_ti" and board.rows.iloc[0]["batch_size"] == 1
    )
    (pos,) = board.best["latency_p50_ms"]
    assert board.rows.iloc[pos]["latency_p50_ms"] == pytest.approx(4.71)
    (pos,) = board.best["images_per_s"]
    assert board.rows.iloc[pos]["images_per_s"] == pytest.approx(1630.0)
    sort_rows(board)  # back to the default order

    model = boards["model"][0]
    measured = model.rows[model.rows["source"] == "measured"]
    params = list(measured["params_total"])
    assert params == sorted(params)  # parameter count: lower is better
    assert measured.iloc[0]["model"] == "mobilesam"


def test_best_marks_on_the_right_cells(boards):
    board = _board(boards, "zeroshot", dataset="coco", setting="box")
    best_models = {m: [board.rows.iloc[p]["model"] for p in pos] for m, pos in board.best.items()}
    assert best_models == {
        "miou": ["sam_vit_h"],
        "miou_small": ["efficientsam_s"],
        "miou_medium": ["sam_vit_h"],
        "miou_large": ["efficientsam_s"],
    }
    md = to_markdown(board)
    assert "**78.6**" in _line(md, "sam_vit_h") and "**83.5**" in _line(md, "sam_vit_h")
    assert "**72.8**" in _line(md, "efficientsam_s") and "**86.5**" in _line(md, "efficientsam_s")
    assert "**" not in _line(md, "efficientsam_ti")
    assert "n_instances" not in board.best  # counts are never marked


def test_published_rows_kept_apart(boards):
    board = _board(boards, "zeroshot", dataset="coco", setting="box")
    rows = board.rows
    pub = rows[rows["source"] == "published"]
    assert list(pub["model"]) == ["EfficientViT-SAM-XL1"]
    pub_pos = int(pub.index[0])
    # published rows follow the measured ones, unranked, and are never marked best
    assert pub_pos == len(rows) - 1
    assert pub["rank"].isna().all()
    assert pub["miou"].iloc[0] > rows[rows["source"] == "measured"]["miou"].max()
    assert all(pub_pos not in positions for positions in board.best.values())
    assert "EfficientViT-SAM README" in pub["provenance"].iloc[0]
    md_line = next(
        line for line in to_markdown(board).splitlines() if "EfficientViT-SAM-XL1" in line
    )
    assert "(published)" in md_line and "*79.9*" in md_line and "**" not in md_line

    instseg = _board(boards, "instseg", dataset="coco", setting="vitdet")
    assert set(instseg.rows[instseg.rows["source"] == "published"]["model"]) >= {
        "SAM ViT-H",
        "FastSAM",
        "MobileSAM",
        "EfficientViT-SAM-L0",
    }
    (pos,) = instseg.best["ap"]
    assert instseg.rows.iloc[pos]["model"] == "sam_vit_h"  # 46.3 measured beats nothing published


def test_groups_and_generic_task(boards):
    groups = [(b.group["dataset"], b.group["setting"]) for b in boards["zeroshot"]]
    assert groups[0] == ("coco", "box")
    assert ("lvis", "point1") in groups  # a published-only table still appears, last
    assert groups[-1] == ("lvis", "point1")
    hw = {b.group["hardware"] for b in boards["throughput"]}
    assert {"Fixture GPU (synthetic)", "Fixture CPU (synthetic)"} <= hw
    generic = boards["sami_pretrain"][0]
    assert not generic.task.declared
    assert {m.name for m in generic.metrics} == {"recon_loss", "linear_probe_top1"}


def test_csv_and_text_renderers(boards):
    board = _board(boards, "zeroshot", dataset="coco", setting="box")
    df = to_csv_frame(board)
    assert {
        "task",
        "dataset",
        "setting",
        "rank",
        "model",
        "source",
        "provenance",
        "best",
        "miou",
    } <= set(df.columns)
    assert df.loc[df["model"] == "sam_vit_h", "best"].iloc[0] == "miou;miou_medium"
    assert df.loc[df["source"] == "published", "best"].eq("").all()
    text = to_text(board)
    assert text.splitlines()[0].lstrip().startswith("#")
    assert "78.6*" in text and "published" in text
    assert main_board(boards) is board


def test_runs_differing_in_a_variant_key_stay_apart(tmp_path):
    meta = {
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "versions": {},
        "hardware": {"cpu_model": "Test CPU"},
        "device": "cpu",
        "dtype": "fp32",
        "start_time": "2024-01-01T00:00:00+00:00",
        "end_time": "2024-01-01T00:01:00+00:00",
    }
    runs = [("score", 0, 70.0), ("score", 1, 72.0), ("single", 0, 60.0)]
    for i, (choice, seed, miou) in enumerate(runs):
        obj = make_results(
            "zeroshot",
            {"name": "m"},
            {"prompt": "box", "mask_choice": choice, "seed": seed},
            {"miou": miou},
            meta,
            dataset={"name": "coco"},
        )
        (tmp_path / f"r{i}.json").write_text(json.dumps(obj))
    board = build_leaderboards(load_results([tmp_path], warn=False).frame)["zeroshot"][0]
    assert board.keys[:2] == ["model", "variant"]
    got = {r["variant"]: (r["miou"], r["n_runs"]) for r in board.rows.to_dict("records")}
    # seeds of one configuration are averaged; another mask choice is its own row
    assert got == {"mask_choice=score": (71.0, 2), "mask_choice=single": (60.0, 1)}
