"""A run's results file and its side files are written as one set: all or nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from esam.eval.outputs import assemble_and_write, read_rows


def _write(out: Path, rows: list[dict[str, Any]], metrics: dict[str, Any]) -> dict[str, Any]:
    return assemble_and_write(
        task="zeroshot", output=out, model={"name": "m"}, dataset={"name": "coco"},
        config={"prompt": "box"}, metrics=metrics, skips={"crowd": 1}, rows=rows, device="cpu",
        start_time="2026-01-01T00:00:00Z", extra_files={".segm.json": [{"image_id": 1}]},
    )  # fmt: skip


def test_a_failed_write_leaves_the_previous_set_untouched(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    first = _write(out, [{"image_id": 1, "iou": 0.5}], {"miou": 50.0})
    assert json.loads(out.read_text())["rows_file"] == "run.rows.jsonl" == first["rows_file"]
    assert read_rows(tmp_path / "run.rows.jsonl") == [{"image_id": 1, "iou": 0.5}]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(before) == ["run.json", "run.rows.jsonl", "run.segm.json"]
    # the results cannot be serialised (NaN): the rows were written first, yet nothing changes
    with pytest.raises(ValueError):
        _write(out, [{"image_id": 2, "iou": 0.9}], {"miou": float("nan")})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    second = _write(out, [{"image_id": 2, "iou": 0.9}], {"miou": 90.0})
    assert read_rows(tmp_path / "run.rows.jsonl") == [{"image_id": 2, "iou": 0.9}]
    assert json.loads(out.read_text())["metrics"] == second["metrics"] == {"miou": 90.0}
