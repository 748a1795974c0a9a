"""The GPU sweep script's plan and summary (rehearsed on CPU with tiny models)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location(
        "esam_gpu_sweep", REPO / "benchmarks" / "gpu" / "sweep.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["esam_gpu_sweep"] = module
    spec.loader.exec_module(module)
    return module


def test_plan_fits_the_file_and_time_limits(sweep) -> None:
    stages = sweep.plan(dry_run=False, with_sam=True)
    files = {s.filename for s in stages}
    assert len(files) + 1 <= 8  # plus summary.txt
    assert stages[0].model == "efficientsam_vitt:reference"  # the baseline runs first
    assert sum(s.allowance_s for s in stages) <= 450
    ti, ti_ref = stages[1], stages[0]
    shared = set(ti.configs) & set(ti_ref.configs)
    assert len(shared) >= 3  # fast and reference share settings for the ratio
    assert any(c.compile and c.dtype == "bf16" for c in ti.configs)


def test_dry_run_plan_is_tiny_and_eager(sweep) -> None:
    for st in sweep.plan(dry_run=True, with_sam=False):
        assert all(not c.compile and c.batch_size <= 2 for c in st.configs)
        assert st.overrides == {"img_size": 64, "encoder_depth": 1}


@pytest.mark.slow
def test_dry_run_end_to_end(sweep, tmp_path, capsys) -> None:
    assert sweep.main(["--out", str(tmp_path), "--dry-run", "--budget-s", "900"]) == 0
    out = capsys.readouterr().out
    assert "DRY RUN" in out and "EfficientSAM-Ti" in out and "speed-up" in out
    assert "measured here: dense bf16 matmul" in out
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "summary.txt" in files and "efficientsam_vitt.json" in files and len(files) <= 8
    assert all(p.is_file() for p in tmp_path.iterdir())


def test_merge_results_of_one_model(sweep) -> None:
    def fake(batch: int, dtype: str, complete: bool) -> dict:
        return {
            "metrics": [{"component": "end_to_end", "batch_size": batch, "dtype": dtype}],
            "failures": [],
            "skipped": [],
            "runs": [{"config": f"b{batch}"}],
            "config": {
                "batch_sizes": [batch],
                "dtypes": [dtype],
                "compile": [False],
                "precision": {dtype: "x"},
            },
            "meta": {"end_time": f"t{batch}", "dtype": dtype},
            "complete": complete,
        }

    merged = sweep.merge_results(fake(8, "fp32", True), fake(2, "bf16", True))
    assert [r["batch_size"] for r in merged["metrics"]] == [8, 2]
    assert merged["config"]["batch_sizes"] == [2, 8]
    assert merged["config"]["dtypes"] == ["fp32", "bf16"]
    assert merged["meta"] == {"end_time": "t2", "dtype": "fp32,bf16"}
    assert merged["complete"] is True
