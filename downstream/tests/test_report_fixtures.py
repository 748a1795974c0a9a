"""The report's downstream fixtures (tests/fixtures/downstream) have today's results layout.

The core suite renders those files beside the paper's Tables 2 and 3 without mmcv; here the
command writes them afresh (report_fixtures.write_results) and the committed copies must have
the same task, metrics, model and config keys, so the report is tested on what ``test`` writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("mmcv")
from report_fixtures import FIXTURES, MODEL_NAME, write_results  # noqa: E402

from esam.utils.results import validate_results  # noqa: E402

COMMITTED = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "downstream"


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(FIXTURES))
def test_committed_fixture_has_the_layout_test_writes(task: str, tmp_path: Path) -> None:
    fresh = write_results(task, tmp_path)
    committed = json.loads((COMMITTED / FIXTURES[task][1]).read_text())
    validate_results(committed)
    assert committed["task"] == fresh["task"] == task
    assert committed["model"]["name"] == fresh["model"]["name"] == MODEL_NAME
    for block in ("metrics", "model", "config", "dataset", "units"):
        assert set(committed[block]) == set(fresh[block]), block
    for key in ("img_size", "schedule", "crop_size", "iters"):
        assert committed["config"].get(key) == fresh["config"].get(key), key
