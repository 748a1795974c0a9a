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
from esam.report.tasks import (
    PROTOCOL_CONFIG_KEYS,
    TASKS,
    guess_direction,
    metric_direction,
    task_spec,
)
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
        "efficientsam_vits",
        "efficientsam_vitt",
        "mobilesam",
    ]
    assert list(measured["rank"]) == [1, 2, 3, 4]
    ti = measured[measured["model"] == "efficientsam_vitt"].iloc[0]
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
        board.rows.iloc[0]["model"] == "efficientsam_vitt" and board.rows.iloc[0]["batch_size"] == 1
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
        "miou_small": ["efficientsam_vits"],
        "miou_medium": ["sam_vit_h"],
        "miou_large": ["efficientsam_vits"],
    }
    md = to_markdown(board)
    assert "**78.6**" in _line(md, "sam_vit_h") and "**83.5**" in _line(md, "sam_vit_h")
    assert "**72.8**" in _line(md, "efficientsam_vits") and "**86.5**" in _line(
        md, "efficientsam_vits"
    )
    assert "**" not in _line(md, "efficientsam_vitt")
    assert "n_instances" not in board.best  # counts are never marked


def test_published_rows_kept_apart(boards):
    # measured runs that name no protocol never share a table with numbers of a named protocol
    board = _board(boards, "zeroshot", dataset="coco", setting="box", protocol="unspecified")
    assert set(board.rows["source"]) == {"measured"}
    evit = _board(boards, "zeroshot", dataset="coco", setting="box", protocol="efficientvit-sam")
    assert evit.title == "coco · box · protocol efficientvit-sam"
    pub = evit.rows
    # aliased to the measured name, the published name kept beside it
    assert list(pub["model"]) == ["efficientvit_sam_xl1"]
    assert list(pub["published_as"]) == ["EfficientViT-SAM-XL1"]
    assert pub["rank"].isna().all() and evit.best == {}
    assert "EfficientViT-SAM README" in pub["provenance"].iloc[0]
    md_line = next(
        line for line in to_markdown(evit).splitlines() if "EfficientViT-SAM-XL1" in line
    )
    assert "*efficientvit_sam_xl1* (EfficientViT-SAM-XL1, published)" in md_line
    assert "*79.9*" in md_line and "**" not in md_line

    instseg = _board(boards, "instseg", dataset="coco", setting="vitdet", protocol="unspecified")
    rows = instseg.rows
    published = rows[rows["source"] == "published"]
    assert set(published["model"]) >= {"sam_vit_h", "FastSAM", "mobilesam", "EdgeSAM"}
    # EfficientViT-SAM's and the EfficientSAM paper's numbers name their protocols: elsewhere
    assert "efficientvit_sam_l0" not in set(published["model"])
    assert not published["reference"].str.startswith("EfficientSAM paper").any()
    # a model nobody measured: after the measured rows, unranked, and never marked best
    last_measured = int(rows.index[rows["source"] == "measured"].max())
    edge = rows.index[rows["model"] == "EdgeSAM"]
    assert (edge > last_measured).all()
    assert rows.loc[edge, "rank"].isna().all()
    (pos,) = instseg.best["ap"]
    assert instseg.rows.iloc[pos]["model"] == "sam_vit_h"  # 46.3 measured beats nothing published
    assert instseg.rows.iloc[pos]["source"] == "measured"
    paper = _board(boards, "instseg", dataset="coco", setting="vitdet", protocol="efficientsam")
    assert dict(zip(paper.rows["model"], paper.rows["ap"], strict=True)) == {
        "sam_vit_h": 46.5,
        "mobilesam": 38.7,
        "FastSAM": 37.9,
        "efficientsam_vitt": 42.3,
        "efficientsam_vits": 44.4,
    }


def test_published_rows_sit_beside_the_same_measured_model(boards):
    board = _board(boards, "instseg", dataset="coco", setting="vitdet")
    rows = board.rows.to_dict("records")
    order = [(r["model"], r["source"]) for r in rows]
    # measured sam_vit_h (rank 1), then every published SAM ViT-H number, then rank 2
    first_other = next(i for i, r in enumerate(rows) if i > 0 and r["model"] != "sam_vit_h")
    assert order[0] == ("sam_vit_h", "measured")
    assert {o for o in order[1:first_other]} == {("sam_vit_h", "published")}
    assert first_other - 1 == sum(o == ("sam_vit_h", "published") for o in order)
    assert order[first_other] == ("efficientsam_vits", "measured")
    assert list(board.rows["rank"].iloc[: first_other + 1]) == [1, *[pd.NA] * (first_other - 1), 2]
    # published rows never take a rank or a best mark, and all others follow the measured rows
    assert all(r["source"] == "published" for r in rows[first_other + 1 :])
    marked = {p for positions in board.best.values() for p in positions}
    assert all(rows[p]["source"] == "measured" for p in marked)
    pub = [r for r in rows if r["source"] == "published" and r["model"] == "sam_vit_h"]
    assert {r["published_as"] for r in pub} == {"SAM ViT-H"}
    md = to_markdown(board)
    assert "| *sam_vit_h* (SAM ViT-H, published) |" in md
    assert "sam_vit_h (SAM ViT-H)" in to_text(board, max_rows=30)

    # the model table: published EfficientSAM-Ti parameters beside measured efficientsam_vitt
    model = boards["model"][0]
    mrows = model.rows.to_dict("records")
    i = next(i for i, r in enumerate(mrows) if r["model"] == "efficientsam_vitt")
    assert mrows[i]["source"] == "measured"
    assert (mrows[i + 1]["model"], mrows[i + 1]["source"]) == ("efficientsam_vitt", "published")
    assert mrows[i + 1]["published_as"] == "EfficientSAM-Ti"


def test_groups_and_generic_task(boards):
    groups = [(b.group["dataset"], b.group["setting"]) for b in boards["zeroshot"]]
    assert groups[0] == ("coco", "box")
    assert ("lvis", "point1") in groups  # a published-only table still appears, last
    assert groups[-1] == ("lvis", "point1")
    hw = {b.group["hardware"] for b in boards["throughput"]}
    assert {"Fixture GPU (synthetic)", "Fixture CPU (synthetic) (2 cores, 2 threads)"} <= hw
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
    assert "78.6*" in text and "measured" in text
    assert main_board(boards) is board
    instseg = _board(boards, "instseg", dataset="coco", setting="vitdet", protocol="unspecified")
    assert "published" in to_text(instseg, max_rows=30)


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


_META = {
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "versions": {},
    "hardware": {"cpu_model": "Test CPU"},
    "device": "cpu",
    "dtype": "fp32",
    "start_time": "2024-01-01T00:00:00+00:00",
    "end_time": "2024-01-01T00:01:00+00:00",
}


def _write_runs(folder: Path, task: str, runs: list[tuple[dict, dict, dict]]) -> None:
    """Write one results file per ``(model block, config, metrics)``."""
    for i, (model, config, metrics) in enumerate(runs):
        obj = make_results(task, model, config, metrics, _META, dataset={"name": "coco"})
        (folder / f"run{i}.json").write_text(json.dumps(obj))


def test_box_sources_are_never_averaged(tmp_path):
    box = {"prompt": "box", "mask_choice": "score"}
    _write_runs(
        tmp_path,
        "zeroshot",
        [
            ({"name": "m"}, {**box, "box_source": "bbox", "seed": 0}, {"miou": 70.0}),
            ({"name": "m"}, {**box, "box_source": "bbox", "seed": 1}, {"miou": 72.0}),
            ({"name": "m"}, {**box, "box_source": "mask"}, {"miou": 60.0}),
        ],
    )
    (board,) = build_leaderboards(load_results([tmp_path], warn=False).frame)["zeroshot"]
    assert "variant" in board.keys
    got = {r["variant"]: (r["miou"], r["n_runs"]) for r in board.rows.to_dict("records")}
    assert got == {
        "box_source=bbox, mask_choice=score": (71.0, 2),
        "box_source=mask, mask_choice=score": (60.0, 1),
    }


def test_instseg_detection_files_and_protocol_are_never_averaged(tmp_path):
    base = {"prompt": "detector_box", "mask_choice": "score", "max_dets": 100}
    _write_runs(
        tmp_path,
        "instseg",
        [
            ({"name": "m"}, {**base, "detections": "a/coco_vitdet.json"}, {"ap": 40.0}),
            ({"name": "m"}, {**base, "detections": "/b/coco_vitdet.json"}, {"ap": 42.0}),
            ({"name": "m"}, {**base, "detections": "a/coco_vitdet_h.json"}, {"ap": 44.0}),
            (
                {"name": "m"},
                {**base, "detections": "a/coco_vitdet.json", "clip_boxes": False},
                {"ap": 30.0},
            ),
        ],
    )
    (board,) = build_leaderboards(load_results([tmp_path], warn=False).frame)["instseg"]
    assert board.group["setting"] == "vitdet"  # all four name the same detector ...
    got = sorted((r["ap"], r["n_runs"]) for r in board.rows.to_dict("records"))
    # ... but only the same file (at any path) with the same protocol is averaged
    assert got == [(30.0, 1), (41.0, 2), (44.0, 1)]


#: Protocol keys esam's evaluators write that do not change the numbers (or are derived from
#: keys that are part of the identity), so runs differing only in them may be averaged.
_COMBINABLE = {
    "seed",  # random clicks: repeated runs with other seeds are averaged on purpose
    "device",
    "world_size",
    "workers",
    "skip_bad_images",
    "extra",
    "n_clicks",  # from the prompt
    "click_rule",  # from the prompt and click
    "click_coordinates",  # a description of the convention
    "multimask_output",  # from the mask choice
    "size_bucket_rule",  # a description of the size buckets, which are a variant key
    "evaluator",  # from the dataset, which splits tables
    "workers_auto",
}


def test_every_protocol_setting_of_the_evaluators_is_part_of_a_row_identity():
    from esam.eval.instseg import InstSegConfig
    from esam.eval.zeroshot import ZeroShotConfig

    common = {"model": "m", "dataset": "coco", "annotations": "a.json", "images": "i"}
    protocols = {
        "zeroshot": [
            ZeroShotConfig(**common).results_config(1),
            ZeroShotConfig(**common, prompt="point1", click="center").results_config(1),
        ],
        "instseg": [InstSegConfig(**common, detections="d/coco_vitdet.json").results_config(1)],
    }
    for task, configs in protocols.items():
        spec = TASKS[task]
        identity = {k for group in spec.setting_keys for k in group.split("|")}
        identity |= set(spec.variant_keys)
        identity |= set(PROTOCOL_CONFIG_KEYS) if spec.protocol else set()  # split tables
        for config in configs:
            unknown = set(config) - identity - _COMBINABLE
            assert not unknown, (
                f"{task}: config keys {sorted(unknown)} are neither part of the row identity "
                "(esam.report.tasks variant_keys) nor known not to change the numbers"
            )


def test_runs_with_different_checkpoints_stay_apart(tmp_path):
    config = {"prompt": "box", "box_source": "bbox", "mask_choice": "score"}
    official = {"name": "efficientsam_vitt", "checkpoint_sha256": "a" * 64}
    standin = {"name": "efficientsam_vitt", "checkpoint_sha256": "b" * 64, "weights": "standin"}
    other = {"name": "sam_vit_h", "checkpoint_sha256": "c" * 64}
    _write_runs(
        tmp_path,
        "zeroshot",
        [
            (official, {**config, "seed": 0}, {"miou": 75.0}),
            (official, {**config, "seed": 1}, {"miou": 77.0}),
            (standin, config, {"miou": 0.4}),
            (other, config, {"miou": 78.0}),
        ],
    )
    (board,) = build_leaderboards(load_results([tmp_path], warn=False).frame)["zeroshot"]
    assert board.keys[:2] == ["model", "checkpoint"]  # shown: one model ran with two weights
    got = {
        (r["model"], r["checkpoint"]): (r["miou"], r["n_runs"])
        for r in board.rows.to_dict("records")
    }
    assert got == {
        ("sam_vit_h", "cccccccc"): (78.0, 1),
        ("efficientsam_vitt", "aaaaaaaa"): (76.0, 2),  # same weights: seeds averaged
        ("efficientsam_vitt", "bbbbbbbb"): (0.4, 1),  # stand-in weights: its own row
    }
    # the placeholder row is flagged in every rendering
    md = to_markdown(board)
    line = next(ln for ln in md.splitlines() if "bbbbbbbb" in ln)
    assert "efficientsam_vitt †" in line
    assert "† efficientsam_vitt: standin weights: accuracy is not meaningful" in md
    assert "standin weights: accuracy is not meaningful" in to_text(board)

    # the same model with one checkpoint only: no checkpoint column
    (tmp_path / "run2.json").unlink()
    (board,) = build_leaderboards(load_results([tmp_path], warn=False).frame)["zeroshot"]
    assert "checkpoint" not in board.keys


def test_a_run_with_freed_memory_retained_is_its_own_variant(tmp_path):
    src = json.loads(
        (
            Path(__file__).parent / "fixtures/results/fixture_gpu/throughput/efficientsam_ti.json"
        ).read_text()
    )
    for name, retain in (("absent", None), ("off", False), ("on", True)):
        obj = json.loads(json.dumps(src))
        if retain is not None:
            obj["config"]["retain_freed_memory"] = retain
        (tmp_path / f"{name}.json").write_text(json.dumps(obj))
    boards = build_leaderboards(load_results([tmp_path], warn=False).frame)["throughput"]
    board = next(b for b in boards if b.group.get("component") == "end_to_end")
    variants = {str(r["variant"]) for r in board.rows.to_dict("records")}
    assert any("retain_freed_memory=True" in v for v in variants)
    assert any("retain_freed_memory" not in v for v in variants)
    # a file without the key and one with it off are the same setting: averaged, not apart
    plain = [r for r in board.rows.to_dict("records") if "retain" not in str(r["variant"])]
    assert plain and all(r["n_runs"] == 2 for r in plain)


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("NVIDIA A100-SXM4-80GB", "NVIDIA A100"),
        ("NVIDIA A100 80GB PCIe", "NVIDIA A100"),
        ("NVIDIA H100 80GB HBM3", "NVIDIA H100"),
        ("Tesla V100-SXM2-16GB", "Tesla V100"),
        ("NVIDIA H200", "NVIDIA H200"),
        ("NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090"),
        ("NVIDIA H100 NVL", "NVIDIA H100 NVL"),
    ],
)
def test_gpu_family(name, family):
    from esam.report.published import gpu_family

    assert gpu_family(name) == family


def test_published_gpu_rows_join_the_measured_variant_of_their_gpu(tmp_path):
    from esam.report.published import align_published_hardware

    src = FIXTURES / "fixture_gpu/throughput/efficientsam_ti.json"
    obj = json.loads(src.read_text())
    obj["meta"]["hardware"]["gpu_name"] = "NVIDIA A100-SXM4-80GB"
    (tmp_path / "a100.json").write_text(json.dumps(obj))
    pub = load_published(PUBLISHED).frame
    tidy = pd.concat([load_results([tmp_path], warn=False).frame, pub], ignore_index=True)
    stated = pub[(pub["task"] == "throughput") & (pub["hardware"] == "NVIDIA A100")]
    assert len(stated)
    shown = align_published_hardware(tidy)
    assert len(shown) == len(tidy) and list(shown.columns) == list(tidy.columns)
    moved = shown[(shown["source"] == "published") & (shown["hardware"] == "NVIDIA A100-SXM4-80GB")]
    assert sorted(moved["value"]) == sorted(stated["value"])
    assert (
        moved["note"]
        .str.endswith("published for NVIDIA A100, shown with the measured NVIDIA A100-SXM4-80GB")
        .all()
    )
    board = _board(
        build_leaderboards(shown),
        "throughput",
        hardware="NVIDIA A100-SXM4-80GB",
        component="end_to_end",
    )
    assert set(board.rows["source"]) == {"measured", "published"}
    # no measured GPU of that model: the published rows stay as stated
    alone = align_published_hardware(pub)
    assert alone is pub
