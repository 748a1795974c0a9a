"""Rows are combined only over identical data; runs that skipped images are flagged or set apart."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from esam.report.build import build_report
from esam.report.load import data_facts, load_results, skip_note, skipped_share
from esam.report.tables import build_leaderboards, partial_runs, to_markdown, to_text
from esam.utils.results import make_results

META = {
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "versions": {},
    "hardware": {"cpu_model": "Test CPU"},
    "device": "cpu",
    "dtype": "fp32",
    "start_time": "2024-01-01T00:00:00+00:00",
    "end_time": "2024-01-01T00:01:00+00:00",
}
BOX = {"prompt": "box", "box_source": "bbox", "mask_choice": "score"}


def _dataset(
    annotations: str = "annotations/instances_val2017.json",
    sha: str = "a" * 64,
    n_images: int | None = 5000,
    **extra: Any,
) -> dict[str, Any]:
    """A dataset block as esam's evaluators write it."""
    block: dict[str, Any] = {
        "name": "coco",
        "annotations": annotations,
        "annotations_sha256": sha,
        "images": "val2017",
        "n_images_in_file": n_images,
        **extra,
    }
    if n_images is not None:
        block["n_images"] = n_images
    return block


def _write(folder: Path, name: str, dataset: dict[str, Any], miou: float, **kw: Any) -> Path:
    """One zero-shot results file of model ``box_fill``."""
    config = {**BOX, "seed": kw.pop("seed", 0)}
    metrics = {"miou": miou, "n_instances": kw.pop("n_instances", 10)}
    obj = make_results(
        "zeroshot",
        {"name": kw.pop("model", "box_fill")},
        config,
        metrics,
        META,
        dataset=dataset,
        **kw,
    )
    path = folder / f"{name}.json"
    path.write_text(json.dumps(obj))
    return path


def _board(folder: Path, **kw: Any):
    (board,) = build_leaderboards(load_results([folder], warn=False).frame, **kw)["zeroshot"]
    return board


def test_runs_on_disjoint_annotation_files_are_separate_rows(tmp_path):
    # two 2-image COCO files: once averaged into "66.8 · instances 12 · 2 runs"
    _write(tmp_path, "a", _dataset("coco/part_a.json", "a" * 64, 2), 66.04, n_instances=10)
    _write(tmp_path, "b", _dataset("coco/part_b.json", "b" * 64, 2), 67.54, n_instances=12)
    board = _board(tmp_path)
    got = {
        r["data"]: (r["miou"], r["n_instances"], r["n_runs"]) for r in board.rows.to_dict("records")
    }
    assert got == {
        "part_a · 2 images": (66.04, 10, 1),
        "part_b · 2 images": (67.54, 12, 1),
    }
    assert board.keys[:2] == ["model", "data"]
    md = to_markdown(board)
    assert "| data |" in md and "part_a · 2 images" in md and "part_b · 2 images" in md
    assert "2 runs" not in md and "part_a · 2 images" in to_text(board)


def test_true_repeats_are_combined(tmp_path):
    data = _dataset()
    _write(tmp_path, "seed0", data, 70.0, seed=0)
    _write(
        tmp_path, "seed1", dict(data, annotations="elsewhere/instances_val2017.json"), 72.0, seed=1
    )
    (row,) = _board(tmp_path).rows.to_dict("records")
    assert (row["miou"], row["n_runs"]) == (71.0, 2)  # same file (by hash), other seed and path
    assert row["data"] == "instances_val2017 · 5,000 images"


def test_subsets_versions_and_same_named_files_stay_apart(tmp_path):
    full = _dataset(n_images=5000)
    _write(tmp_path, "full", full, 75.0)
    _write(tmp_path, "subset", dict(full, n_images=500), 78.0)  # same file, fewer images
    _write(tmp_path, "other", _dataset(sha="c" * 64, n_images=5000), 74.0)  # same name, other file
    board = _board(tmp_path)
    got = {r["data"]: r["miou"] for r in board.rows.to_dict("records")}
    assert got == {
        "instances_val2017 · 5,000 images · sha256 aaaaaaaa": 75.0,
        "instances_val2017 · 500 images": 78.0,
        "instances_val2017 · 5,000 images · sha256 cccccccc": 74.0,
    }
    assert (board.rows["n_runs"] == 1).all()

    lvis = tmp_path / "lvis"
    lvis.mkdir()
    for version, miou in (("v0.5", 70.0), ("v1", 72.0)):
        block = dict(_dataset("lvis/lvis_val.json", version[1] * 64, 100), name="lvis")
        _write(lvis, version, dict(block, lvis_version=version), miou)
    got = {r["data"]: r["miou"] for r in _board(lvis).rows.to_dict("records")}
    assert got == {
        "lvis_val · LVIS v0.5 · 100 images": 70.0,
        "lvis_val · LVIS v1 · 100 images": 72.0,
    }


def test_harness_runs_on_disjoint_files_are_not_averaged(tmp_path):
    """Two ``box_fill`` runs of ``esam eval zeroshot`` on disjoint halves of one dataset."""
    pytest.importorskip("pycocotools")
    from esam.data.synthetic import write_synthetic_coco
    from esam.eval.zeroshot import ZeroShotConfig, run_zeroshot

    ann, images = write_synthetic_coco(tmp_path / "data", n_images=4)
    full = json.loads(ann.read_text())
    ids = sorted(img["id"] for img in full["images"])
    results = tmp_path / "results"
    for part, keep in (("part_a", set(ids[:2])), ("part_b", set(ids[2:]))):
        half = dict(
            full,
            images=[i for i in full["images"] if i["id"] in keep],
            annotations=[a for a in full["annotations"] if a["image_id"] in keep],
        )
        path = tmp_path / f"{part}.json"
        path.write_text(json.dumps(half))
        cfg = ZeroShotConfig(
            model="box_fill",
            dataset="coco",
            annotations=str(path),
            images=str(images),
            output=str(results / f"{part}.json"),
            workers=0,
            progress=False,
        )
        run_zeroshot(cfg)
    board = _board(results)
    assert len(board.rows) == 2 and (board.rows["n_runs"] == 1).all()
    assert set(board.rows["data"]) == {"part_a · 2 images", "part_b · 2 images"}


def test_data_facts_and_skip_notes():
    facts = data_facts(
        _dataset(n_images=497, n_images_skipped=3), {"image_missing": 2, "image_corrupt": 1}
    )
    assert facts.label == "instances_val2017 · 497 images · 3 skipped"
    assert (facts.n_images, facts.n_skipped) == (497, 3)
    assert skip_note(facts) == "skipped 3 of 500 images (0.6%): image_missing 2, image_corrupt 1"
    # files without n_images_skipped count the image-level reasons of ``skips``
    old = data_facts(_dataset(n_images=70), {"image_missing": 30, "crowd": 12})
    assert old.n_skipped == 30 and skipped_share(old.n_images, old.n_skipped) == 0.3
    assert skipped_share(None, 4) is None and skipped_share(None, 0) == 0.0
    assert skip_note(data_facts(_dataset(), {"crowd": 5})) == ""  # instance-level: no note


def _skip_runs(folder: Path) -> None:
    """Runs of four models with ever more images skipped."""
    _write(folder, "clean", _dataset(n_images=200), 70.0, model="clean")
    _write(
        folder,
        "few",
        _dataset(n_images=199, n_images_skipped=1),
        71.0,
        model="few",
        skips={"image_corrupt": 1},
    )
    _write(
        folder,
        "half",
        _dataset(n_images=100, n_images_skipped=100),
        99.0,
        model="half",
        skips={"image_missing": 100},
    )
    # written before n_images_skipped existed: its image-level skip reasons count
    _write(folder, "old", _dataset(n_images=70), 98.0, model="old", skips={"image_missing": 30})


def test_runs_that_skipped_images_are_noted_or_set_apart(tmp_path):
    _skip_runs(tmp_path)
    tidy = load_results([tmp_path], warn=False).frame
    board = build_leaderboards(tidy)["zeroshot"][0]
    rows = {r["model"]: r for r in board.rows.to_dict("records")}
    assert set(rows) == {"clean", "few"}  # 50 % and 30 % skipped: not ranked
    assert rows["clean"]["note"] == ""
    assert rows["few"]["note"] == "skipped 1 of 200 images (0.5%): image_corrupt 1"
    assert "† few: skipped 1 of 200 images (0.5%)" in to_markdown(board)

    partial = partial_runs(tidy)
    assert list(partial["model"]) == ["half", "old"]
    assert list(partial["skipped_share"]) == [0.5, 0.3]
    assert list(partial["shown"]) == ["mIoU 99.0", "mIoU 98.0"]
    assert list(partial["table"]) == ["coco · box · protocol unspecified"] * 2

    # the threshold is a setting: at 40 % the 30 % run is ranked again
    loose = {
        r["model"] for r in build_leaderboards(tidy, 0.4)["zeroshot"][0].rows.to_dict("records")
    }
    assert loose == {"clean", "few", "old"}
    assert list(partial_runs(tidy, 0.4)["model"]) == ["half"]
    strict = build_leaderboards(tidy, 0.0)["zeroshot"][0]
    assert set(strict.rows["model"]) == {"clean"}


def test_partial_runs_in_markdown_html_and_summary(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    _skip_runs(results)
    out = build_report([results], tmp_path / "out", published=None, warn=False)
    md = out.report_md.read_text()
    section = md[md.index("## Partial runs") : md.index("## Plots")]
    assert "half.json" in section and "old.json" in section and "50.0%" in section
    assert "clean.json" not in section
    page = out.index_html.read_text()
    partial_html = page[page.index('<section id="partial">') :]
    partial_html = partial_html[: partial_html.index("</section>")]
    assert "half.json" in partial_html and "(30.0%)" in partial_html
    assert 'href="#partial">Partial runs (2)' in page
    board = out.boards["zeroshot"][0]
    assert set(board.rows["model"]) == {"clean", "few"}

    relaxed = build_report(
        [results], tmp_path / "out2", published=None, warn=False, max_skipped_images=1.0
    )
    assert relaxed.partial.empty and "None." in relaxed.report_md.read_text()
    assert len(relaxed.boards["zeroshot"][0].rows) == 4


def test_cli_max_skipped_images(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    _skip_runs(results)
    cmd = [sys.executable, "-m", "esam.cli.main", "report", "--results", str(results)]
    cmd += ["--no-published"]
    done = subprocess.run(
        [*cmd, "--out", str(tmp_path / "a")], capture_output=True, text=True, check=True
    )
    assert "2 partial runs" in done.stdout
    done = subprocess.run(
        [*cmd, "--out", str(tmp_path / "b"), "--max-skipped-images", "0.6"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "partial runs" not in done.stdout
    bad = subprocess.run(
        [*cmd, "--out", str(tmp_path / "c"), "--max-skipped-images", "5"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--max-skipped-images" in bad.stderr
    shutil.rmtree(tmp_path / "a")
