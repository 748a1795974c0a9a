"""Metric values are validated: NaN, infinity and text where a number is declared are errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from esam.report.load import load_results
from esam.utils.results import ResultsSchemaError, make_results, validate_results

META = {
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "versions": {},
    "hardware": {"cpu_model": "Test CPU"},
    "device": "cpu",
    "dtype": "fp32",
    "start_time": "2024-01-01T00:00:00+00:00",
    "end_time": "2024-01-01T00:01:00+00:00",
}


def _obj(metrics, task: str = "zeroshot", **extra) -> dict:
    return {
        "schema": "esam.results/1",
        "task": task,
        "model": {"name": "m"},
        "config": {"prompt": "box"},
        "metrics": metrics,
        "meta": META,
        **extra,
    }


@pytest.mark.parametrize(
    ("metrics", "where"),
    [
        ({"miou": math.nan}, "metrics.miou is nan"),
        ({"miou": 70.0, "miou_small": math.inf}, "metrics.miou_small is inf"),
        ({"per_class": {"cat": -math.inf}}, "metrics.per_class.cat is -inf"),
        ({"history": [1.0, math.nan]}, r"metrics.history\[1\] is nan"),
        ([{"images_per_s": 3.0}, {"images_per_s": math.nan}], r"metrics\[1\].images_per_s is nan"),
        ([{"images_per_s": 3.0}, "oops"], r"metrics\[1\] has type str"),
        ({"miou": np.float32("nan")}, "metrics.miou is nan"),
    ],
)
def test_non_finite_values_are_errors_naming_the_key(metrics, where):
    with pytest.raises(ResultsSchemaError, match=where):
        validate_results(_obj(metrics), "r.json")
    with pytest.raises(ResultsSchemaError, match=where):
        make_results("zeroshot", {"name": "m"}, {}, metrics, META)


def test_declared_numbers_must_be_numbers():
    numeric = ("miou", "n_instances", "images_per_s")
    for metrics, where in [
        ({"miou": "75.2"}, "metrics.miou is str '75.2'"),
        ({"miou": True}, "metrics.miou is bool True"),
        ({"miou": [75.2]}, "metrics.miou is list"),
        ([{"images_per_s": "fast"}], r"metrics\[0\].images_per_s is str"),
    ]:
        with pytest.raises(ResultsSchemaError, match=where):
            validate_results(_obj(metrics), "r.json", numeric=numeric)
    # null (an empty size bucket), numpy scalars and bookkeeping of any shape are fine
    ok = {
        "miou": None,
        "n_instances": np.int64(3),
        "label": "text",
        "flags": [True, None, "x"],
        "per_class": {"cat": 1.5, "dog": None},
    }
    assert validate_results(_obj(ok), numeric=numeric)["metrics"] is ok
    assert validate_results(_obj({"miou": "75.2"}))  # not declared numeric: bookkeeping text


def test_dataset_counts_and_protocol_types():
    for dataset, where in [
        ({"n_images": -1}, "dataset.n_images"),
        ({"n_images_skipped": 2.5}, "dataset.n_images_skipped"),
        ({"n_images": "500"}, "dataset.n_images"),
    ]:
        with pytest.raises(ResultsSchemaError, match=where):
            validate_results(_obj({"miou": 1.0}, dataset=dataset))
    validate_results(_obj({"miou": 1.0}, dataset={"n_images": 5, "n_images_skipped": None}))
    validate_results(_obj({"miou": 1.0}, dataset="coco"))  # a bare name is left alone
    bad = _obj({"miou": 1.0})
    bad["config"] = {"protocol": "efficientsam", "protocol_overrides": ["click"]}
    with pytest.raises(ResultsSchemaError, match="config.protocol_overrides"):
        validate_results(bad)


def test_invalid_metric_files_are_skipped_and_named(tmp_path):
    good = make_results("zeroshot", {"name": "good"}, {"prompt": "box"}, {"miou": 70.0}, META)
    (tmp_path / "good.json").write_text(json.dumps(good))
    # Python's json writes NaN and Infinity unless allow_nan=False, and reads them back
    for name, metrics in [
        ("nan", {"miou": math.nan}),
        ("inf", {"miou": 70.0, "miou_large": math.inf}),
        ("text", {"miou": "70.0"}),
    ]:
        bad = dict(good, model={"name": name}, metrics=metrics)
        (tmp_path / f"{name}.json").write_text(json.dumps(bad))
    loaded = load_results([tmp_path], warn=False)
    reasons = {Path(s.path).name: s.reason for s in loaded.skipped}
    assert set(reasons) == {"nan.json", "inf.json", "text.json"}
    assert "metrics.miou is nan" in reasons["nan.json"]
    assert "metrics.miou_large is inf" in reasons["inf.json"]
    assert "metrics.miou is str" in reasons["text.json"]
    assert set(loaded.frame["model"]) == {"good"}


def test_the_report_imports_no_feature_package():
    """The report reads results files only: it never imports the evaluators or the benchmark."""
    code = (
        "import sys\n"
        "import esam.report.build, esam.report.page, esam.report.plots, esam.cli.report\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('esam.eval', 'esam.bench')))\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_later_setting_defaults_agree():
    from esam.bench import settings
    from esam.utils import results

    assert settings.LATER_SETTING_DEFAULTS == results.LATER_SETTING_DEFAULTS
