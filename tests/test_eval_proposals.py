"""Object proposals: class-agnostic mask AR with known answers, references, the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("pycocotools")

from esam.data.masks import encode_mask  # noqa: E402
from esam.errors import InputError  # noqa: E402
from esam.eval.config import ProposalsConfig  # noqa: E402
from esam.eval.proposals import (  # noqa: E402
    BoxGridProposals,
    average_recall,
    ground_truth,
    run_proposals,
)
from tests.polygons import with_short_polygon_parts  # noqa: E402


def _coco_file(
    tmp_path: Path, masks: list[np.ndarray], size: tuple[int, int] = (64, 64)
) -> tuple[Path, Path]:
    """One image of ``size`` with ``masks`` as RLE instances (category 1)."""
    h, w = size
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(img_dir / "1.png")
    anns = []
    for i, m in enumerate(masks, start=1):
        ys, xs = np.nonzero(m)
        bbox = [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)]
        anns.append(
            {
                "id": i,
                "image_id": 1,
                "category_id": 1,
                "segmentation": encode_mask(m),
                "area": float(m.sum()),
                "bbox": bbox,
                "iscrowd": 0,
            }
        )
    data = {
        "images": [{"id": 1, "file_name": "1.png", "height": h, "width": w}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path, img_dir


def _rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_average_recall_known_values() -> None:
    from esam.data.coco import ImageSpec, InstanceSpec

    h, w = 200, 200
    small = _rect(h, w, 0, 10, 0, 50)  # 500 px: small
    large = _rect(h, w, 50, 170, 50, 150)  # 12000 px: large
    insts = tuple(
        InstanceSpec(i, 7, float(m.sum()), 0, (0.0, 0.0, 1.0, 1.0), encode_mask(m))
        for i, m in ((1, small), (2, large))
    )
    gt = ground_truth([ImageSpec(1, h, w, "x", (), insts)])

    def res(m: np.ndarray, score: float) -> dict[str, Any]:
        return {"image_id": 1, "category_id": 1, "segmentation": encode_mask(m), "score": score}

    # the large one exactly, the small one at IoU 310/500 = 0.62: recalled at 0.50, 0.55, 0.60
    partial = _rect(h, w, 0, 10, 0, 31)
    ar = average_recall(gt, [res(large, 0.9), res(partial, 0.8)], [1])
    assert ar["ar_1000"] == pytest.approx(65.0) and ar["ar_100"] == pytest.approx(65.0)
    assert ar["ar_small_1000"] == pytest.approx(30.0)
    assert ar["ar_large_1000"] == pytest.approx(100.0)
    assert ar["ar_medium_1000"] is None  # no instance of that size
    # no proposal at all: recall 0, not undefined
    none = average_recall(gt, [], [1])
    assert none["ar_1000"] == 0.0 and none["ar_medium_100"] is None


def test_box_grid_recalls_grid_aligned_boxes_exactly(tmp_path: Path) -> None:
    grid = BoxGridProposals().boxes(64, 64)
    assert len(grid) == len({tuple(b) for b in grid})  # no box twice
    (x0, y0, x1, y1), (a0, b0, a1, b1) = grid[0], grid[10]
    masks = [_rect(64, 64, y0, y1, x0, x1), _rect(64, 64, b0, b1, a0, a1)]
    ann, images = _coco_file(tmp_path, masks)
    cfg = ProposalsConfig(
        model="box_grid", dataset="coco", annotations=str(ann), images=str(images), progress=False
    )
    run = run_proposals(cfg)
    assert run is not None
    m = run.results["metrics"]
    assert m["ar_100"] == pytest.approx(100.0) and m["ar_1000"] == pytest.approx(100.0)
    assert m["n_proposals"] == min(len(grid), 1000) and m["n_instances"] == 2


def test_oracle_on_synthetic_coco_with_skip_accounting(tmp_path: Path) -> None:
    from esam.data.synthetic import write_synthetic_coco
    from esam.utils.results import validate_results

    ann, images = write_synthetic_coco(tmp_path / "syn", n_images=3)
    out = tmp_path / "res" / "oracle.json"
    kw = dict(model="oracle", dataset="coco", annotations=str(ann), images=str(images))
    run = run_proposals(ProposalsConfig(**kw, output=str(out), progress=False))
    assert run is not None
    m = run.results["metrics"]
    assert m["ar_100"] == 100.0 and m["ar_1000"] == 100.0 and m["n_images"] == 3
    assert m["n_proposals"] == m["n_instances"] > 0
    written = json.loads(out.read_text())
    validate_results(written)
    assert written["task"] == "proposals" and written["skips"] == {}
    rows = [json.loads(line) for line in (out.parent / written["rows_file"]).read_text().split()]
    assert [r["image_id"] for r in rows] == [1, 2, 3]
    assert sum(r["n_gt"] for r in rows) == m["n_instances"]

    first = sorted(images.iterdir())[0]
    first.unlink()
    with pytest.raises(FileNotFoundError, match="--skip-bad-images"):
        run_proposals(ProposalsConfig(**kw, progress=False))
    run = run_proposals(ProposalsConfig(**kw, skip_bad_images=True, progress=False))
    assert run is not None
    assert run.results["skips"]["image_missing"] == 1
    assert run.results["skips"]["instance_in_skipped_image"] > 0
    assert run.results["metrics"]["n_images"] == 2
    assert run.results["metrics"]["ar_1000"] == 100.0
    assert run.results["dataset"]["n_images_skipped"] == 1


def test_short_polygon_parts_in_the_ground_truth_are_left_out(tmp_path: Path) -> None:
    """COCOeval would read a first part of 4 numbers as a box and fail; the harness drops such
    parts, as instance segmentation and zero-shot evaluation do."""
    from esam.data.synthetic import write_synthetic_coco

    ann, images = write_synthetic_coco(tmp_path / "syn", n_images=2)
    slivers = with_short_polygon_parts(ann, tmp_path / "slivers.json")
    kw = dict(model="oracle", dataset="coco", images=str(images), progress=False)
    clean = run_proposals(ProposalsConfig(**kw, annotations=str(ann)))
    run = run_proposals(ProposalsConfig(**kw, annotations=str(slivers)))
    assert clean is not None and run is not None
    assert run.results["metrics"]["ar_100"] == clean.results["metrics"]["ar_100"] == 100.0
    assert run.results["metrics"]["n_instances"] == clean.results["metrics"]["n_instances"]


def test_settings_and_sources_are_checked(tmp_path: Path) -> None:
    ann, images = _coco_file(tmp_path, [_rect(64, 64, 0, 8, 0, 8)])
    kw = dict(dataset="coco", annotations=str(ann), images=str(images), progress=False)
    with pytest.raises(InputError, match="max_proposals must be >= 1"):
        ProposalsConfig(model="oracle", max_proposals=0, **kw)
    with pytest.raises(InputError, match="points_per_side must be >= 1"):
        ProposalsConfig(model="oracle", points_per_side=0, **kw)
    with pytest.raises(InputError, match="built in are \\['box_grid', 'oracle'\\]"):
        run_proposals(ProposalsConfig(model="efficientsam_vitt", **kw))


def test_cli_runs_the_generator_on_a_checkpoint(
    tiny_model: torch.nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("segment_anything")
    from esam.checkpoint import save_checkpoint
    from esam.cli.main import main
    from esam.data.synthetic import write_synthetic_coco

    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(tiny_model, ckpt, "efficientsam", tiny_model.config.to_dict(), "standin")
    ann, images = write_synthetic_coco(tmp_path / "syn", n_images=2)
    out = tmp_path / "p.json"
    common = ["eval", "proposals", "--dataset", "coco", "--annotations", str(ann)]
    common += ["--images", str(images), "--output", str(out), "--no-progress"]
    args = ["--model", "efficientsam", "--checkpoint", str(ckpt), "--points-per-side", "4"]
    args += ["--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
    assert main([*common, *args]) == 0
    assert "ar_1000=" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["model"]["weights"] == "standin"
    assert res["config"]["generator"]["points_per_side"] == 4
    m = res["metrics"]
    assert m["n_images"] == 2 and 0 < m["n_proposals"] <= 2 * 16 * 3
    assert 0.0 <= m["ar_1000"] <= 100.0
    # a model that is not EfficientSAM is refused with a message
    assert main([*common, "--model", "box_fill"]) == 2
    assert "cannot segment everything" in capsys.readouterr().err


def test_sa1b_data_goes_through_the_same_evaluation(tmp_path: Path) -> None:
    """Generated SA-1B shards: the oracle recalls every mask, the box grid far fewer."""
    from esam.data.synth_sa1b import write_synthetic_sa1b

    summary = write_synthetic_sa1b(tmp_path / "sa1b", 3, seed=2, height=96)
    kw = dict(dataset="sa1b", annotations=str(summary.out), images=str(summary.out))
    oracle = run_proposals(ProposalsConfig(model="oracle", **kw, progress=False))
    grid = run_proposals(ProposalsConfig(model="box_grid", **kw, progress=False))
    assert oracle is not None and grid is not None
    assert oracle.results["metrics"]["n_instances"] == summary.n_masks
    assert oracle.results["metrics"]["ar_1000"] == 100.0
    assert grid.results["metrics"]["ar_1000"] < 50.0
