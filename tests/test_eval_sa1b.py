"""``esam eval zeroshot --dataset sa1b``: SA-1B data through the COCO code path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from esam.cli.main import main
from esam.data.coco import load_annotation_set
from esam.data.convert import coco_to_sa1b
from esam.data.sa1b import SA1BDataset
from esam.data.synth_sa1b import write_synthetic_sa1b
from esam.data.synthetic import sample_paths
from esam.data.tarshards import write_tar_atomic
from esam.errors import InputError
from esam.eval.zeroshot import ZeroShotConfig, run_zeroshot
from esam.utils.results import validate_results

ANN, IMG = sample_paths()


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """5 synthetic SA-1B images (64x80) as tar shards and as folders."""
    root = tmp_path_factory.mktemp("sa1b_eval")
    for layout in ("tar", "folder"):
        write_synthetic_sa1b(
            root / layout, 5, seed=2, height=64, width=80, shard_size=2, layout=layout
        )
    return {"tar": root / "tar", "folder": root / "folder"}


def _run(data: str | Path, images: str | Path | None = None, **kw: Any) -> Any:
    base: dict[str, Any] = {"model": "oracle", "dataset": "sa1b", "workers": 0, "progress": False}
    base.update(kw)
    cfg = ZeroShotConfig(annotations=str(data), images=str(images or data), **base)
    run = run_zeroshot(cfg)
    assert run is not None
    return run


@pytest.mark.parametrize("prompt", ["box", "point1", "point3"])
def test_oracle_scores_100_on_synthetic_sa1b(synth: dict[str, Path], prompt: str) -> None:
    run = _run(synth["tar"], prompt=prompt)
    assert run.results["metrics"]["miou"] == 100.0
    assert run.results["metrics"]["n_instances"] > 40
    validate_results(run.results)
    ds = run.results["dataset"]
    assert ds["name"] == "sa1b" and ds["n_images"] == 5 and ds["n_images_in_file"] == 5
    assert len(ds["annotations_sha256"]) == 64
    assert run.results["skips"] == {}
    assert {r["category_id"] for r in run.rows} == {1}


def test_box_fill_is_the_same_on_tars_and_folders(synth: dict[str, Path]) -> None:
    tars = _run(synth["tar"], model="box_fill")
    folders = _run(synth["folder"], model="box_fill")
    assert 20 < tars.results["metrics"]["miou"] < 100
    assert tars.results["metrics"] == folders.results["metrics"]
    assert tars.rows == folders.rows
    assert (
        tars.results["dataset"]["annotations_sha256"]
        == folders.results["dataset"]["annotations_sha256"]
    )
    # a glob of the shards and a comma-separated list read the same data
    shards = sorted(synth["tar"].glob("*.tar"))
    by_glob = _run(str(synth["tar"] / "sa_*.tar"), model="box_fill", limit_images=3)
    by_list = _run(",".join(map(str, shards)), model="box_fill", limit_images=3)
    assert by_glob.rows == by_list.rows == [r for r in tars.rows if r["image_id"] <= 3]


def test_tar_members_are_read_in_worker_processes(synth: dict[str, Path]) -> None:
    run = _run(synth["tar"], workers=2, prompt="point1")
    assert run.results["metrics"]["miou"] == 100.0
    assert run.results["dataset"]["n_images"] == 5


def test_converted_coco_sample_scores_as_the_coco_file(tmp_path: Path) -> None:
    coco_to_sa1b(ANN, IMG, tmp_path / "sa1b", shard_size=3)
    kw: dict[str, Any] = {"model": "box_fill", "box_source": "mask"}
    coco = run_zeroshot(
        ZeroShotConfig(
            annotations=str(ANN),
            images=str(IMG),
            dataset="coco",
            workers=0,
            progress=False,
            **kw,
        )
    )
    sa1b = _run(tmp_path / "sa1b", **kw)
    assert coco is not None
    assert sa1b.results["metrics"]["miou"] == coco.results["metrics"]["miou"] < 100
    assert [(r["ann_id"], r["iou"]) for r in sa1b.rows] == [
        (r["ann_id"], r["iou"]) for r in coco.rows
    ]
    assert _run(tmp_path / "sa1b").results["metrics"]["miou"] == 100.0


def test_command_line(synth: dict[str, Path], tmp_path: Path, capsys: Any) -> None:
    data = str(synth["tar"])
    argv = ["eval", "zeroshot", "--model", "oracle", "--dataset", "sa1b", "--workers", "0"]
    out = tmp_path / "r.json"
    args = [*argv, "--annotations", data, "--images", data, "--no-progress"]
    assert main([*args, "--output", str(out)]) == 0
    assert "mIoU=100.00" in capsys.readouterr().out
    assert json.loads(out.read_text())["dataset"]["name"] == "sa1b"
    other = str(synth["folder"])
    bad = [*argv, "--annotations", data, "--images", other, "--output", str(out)]
    assert main(bad) == 2
    assert "pass the same folders or tar shards" in capsys.readouterr().err
    inst = ["eval", "instseg", "--model", "oracle", "--dataset", "sa1b", "--annotations", data]
    assert main([*inst, "--images", data, "--detections", "d.json", "--output", str(out)]) == 2
    assert "instseg needs category labels" in capsys.readouterr().err


def test_missing_and_corrupt_images_follow_skip_bad_images(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    js = SA1BDataset(synth["tar"]).json_bytes(0)  # image 1
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "sa_1.json").write_bytes(js)  # its jpg is missing
    with pytest.raises(FileNotFoundError, match="image id 1 not found"):
        _run(folder)
    run = _run(folder, skip_bad_images=True)
    n = run.results["skips"]["instance_in_skipped_image"]
    assert run.results["skips"] == {"image_missing": 1, "instance_in_skipped_image": n} and n > 5
    members = [("sa_1.jpg", b"garbage"), ("sa_1.json", js)]
    shard = write_tar_atomic(tmp_path / "t" / "sa_000000.tar", members)
    with pytest.raises(InputError, match=r"sa_000000\.tar::sa_1\.jpg: cannot be decoded"):
        _run(shard)
    run = _run(shard, skip_bad_images=True)
    assert run.results["skips"]["image_corrupt"] == 1
    assert run.results["dataset"]["n_images_skipped"] == 1


def test_annotation_set_keeps_sa1b_counts(synth: dict[str, Path]) -> None:
    aset = load_annotation_set("sa1b", synth["folder"], synth["folder"], limit_images=2)
    assert [s.image_id for s in aset.images] == [1, 2]
    assert aset.n_images_in_file == 5 and aset.dataset == "sa1b"
    assert all(s.path is not None and s.path.endswith(".jpg") for s in aset.images)
    assert all(i.category_id == 1 and i.iscrowd == 0 for s in aset.images for i in s.instances)


def test_limit_images_counts_only_the_selected_images_skips(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(synth["folder"], data)

    def add_bad(json_path: Path, n: int) -> None:
        record = json.loads(json_path.read_text())
        good = record["annotations"][0]
        record["annotations"] += [{k: v for k, v in good.items() if k != "id"}] * n
        json_path.write_text(json.dumps(record))

    add_bad(data / "sa_000000" / "sa_1.json", 1)  # selected
    add_bad(data / "sa_000001" / "sa_4.json", 5)  # beyond --limit-images 2
    (data / "sa_000001" / "notes.txt").write_text("x")  # a file of the listing
    aset = load_annotation_set("sa1b", data, data, limit_images=2)
    assert aset.skips["annotation_without_id"] == 1
    assert aset.skips["ignored_file"] == 1
    everything = load_annotation_set("sa1b", data, data)
    assert everything.skips["annotation_without_id"] == 6


def test_an_image_id_twice_is_refused_and_unselected_masks_are_not_checked(
    synth: dict[str, Path], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(synth["folder"], data)
    # a corrupt RLE in an image beyond --limit-images: never decoded, so not counted
    path = data / "sa_000001" / "sa_4.json"
    record = json.loads(path.read_text())
    record["annotations"][0]["segmentation"]["counts"] = "!!not an rle"
    path.write_text(json.dumps(record))
    aset = load_annotation_set("sa1b", data, data, limit_images=2)
    assert "invalid_rle" not in aset.skips
    assert load_annotation_set("sa1b", data, data).skips["invalid_rle"] == 1
    # another json claiming image id 1
    record["image"]["image_id"] = 1
    (data / "sa_000001" / "sa_99.json").write_text(json.dumps(record))
    (data / "sa_000001" / "sa_99.jpg").write_bytes((data / "sa_000001" / "sa_4.jpg").read_bytes())
    with pytest.raises(InputError, match=r"image id 1 occurs twice: .*sa_1.jpg and .*sa_99.jpg"):
        load_annotation_set("sa1b", data, data)
