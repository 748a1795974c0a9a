"""The results file format shared by every esam job and read by the report layer.

A results file is one JSON object::

    {
      "schema": "esam.results/1",
      "task": "zeroshot" | "instseg" | "throughput" | ...,
      "model": {"name": str, "checkpoint": str | null, "checkpoint_sha256": str | null,
                "weights": str | null, ...},
      "dataset": {...} | null,          # see "Dataset block" below
      "config": {...},                  # every setting that influences the numbers
      "metrics": {...},                 # flat name -> number (or list of row dicts for sweeps)
      "meta": {...},                    # esam.utils.meta.run_metadata(): versions, commit, hardware
      "skips": {reason: count, ...},    # optional: what was left out, by reason
      ...                               # task-specific extras (rows file, timing, ...)
    }

Metric values (checked by :func:`check_metrics`)
    ``metrics`` is an object, or a list of objects (one per row of a sweep). Every value inside
    it, at any depth, is one of: a finite number; ``null`` (no value, e.g. an empty size
    bucket); ``true``/``false``; a string; or a list or object of such values. Strings, booleans,
    lists and nested objects are bookkeeping (labels, flags, per-class breakdowns): the report
    ranks only numbers. ``NaN`` and ``Infinity`` (which Python's ``json`` reads and, without
    ``allow_nan=False``, writes) are never valid anywhere in ``metrics``: write ``null`` for a
    missing value. Names a caller declares numeric (the report passes each task's declared
    metrics) must hold a number or ``null`` at the top level of ``metrics`` and of every sweep
    row; a string, boolean, list or object there is an error. Every error names the key, e.g.
    ``metrics.miou`` or ``metrics[2].images_per_s``.

Dataset block (read by the report; every key optional)
    ``name`` (``coco``, ``lvis``), ``annotations`` (path of the annotation file),
    ``annotations_sha256``, ``lvis_version`` (``v0.5``, ``v1``), ``n_images`` (images
    evaluated), ``n_images_skipped`` (images left out as missing, corrupt or mis-sized),
    ``n_images_selected`` (images the run set out to evaluate: evaluated plus skipped),
    ``n_images_in_file`` (images the annotation file lists). The counts are non-negative
    integers or ``null``. A file without ``n_images_skipped`` counts the image-level reasons of
    ``skips`` (:data:`IMAGE_SKIP_REASONS`) instead (:func:`images_skipped`).

Protocol (tasks ``zeroshot``, ``instseg`` and ``proposals``)
    ``config.protocol`` names the preset the run followed (one of :data:`PROTOCOL_NAMES` for
    esam's presets) and ``config.protocol_overrides`` is an object of the settings changed from
    that preset (``{}`` when none). Files written before presets existed have neither key and
    count as protocol :data:`UNSPECIFIED_PROTOCOL`.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Collection, Mapping
from typing import Any

from esam.errors import InputError
from esam.utils.meta import RESULTS_SCHEMA

REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {
    "schema": str,
    "task": str,
    "model": dict,
    "config": dict,
    "metrics": (dict, list),
    "meta": dict,
}
REQUIRED_META_KEYS = (
    "git_commit",
    "versions",
    "hardware",
    "device",
    "dtype",
    "start_time",
    "end_time",
)

#: Names of esam's evaluation protocol presets (``config.protocol``).
PROTOCOL_NAMES: tuple[str, ...] = ("efficientsam", "efficientvit-sam", "sam")
#: Protocol of results and published numbers that do not name one.
UNSPECIFIED_PROTOCOL = "unspecified"
#: Config keys holding the protocol preset and the settings changed from it.
PROTOCOL_KEY = "protocol"
PROTOCOL_OVERRIDES_KEY = "protocol_overrides"

#: ``skips`` reasons that count images (not instances or detections) left out of a run.
IMAGE_SKIP_REASONS: tuple[str, ...] = (
    "image_missing",
    "image_corrupt",
    "image_unsupported",
    "image_size_mismatch",
)
#: Largest share of its images a run may skip and still be ranked by the report (the default
#: of ``esam report --max-skipped-images``).
DEFAULT_MAX_SKIPPED_IMAGES = 0.01
#: Image counts of the dataset block: non-negative integers or null.
DATASET_COUNT_KEYS: tuple[str, ...] = (
    "n_images",
    "n_images_skipped",
    "n_images_selected",
    "n_images_in_file",
)

#: Settings added after results files already existed, with the value those older files ran
#: with (a file without the key ran with it). Read by ``bench compare`` and the report.
LATER_SETTING_DEFAULTS: dict[str, Any] = {"retain_freed_memory": False}


class ResultsSchemaError(InputError):
    """A results object does not follow the esam results schema."""


def _is_number(value: Any) -> bool:
    """A real number that is not a boolean (numpy scalars included)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not _is_bool(value)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ in ("bool_", "bool")


def _is_count(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not _is_bool(value) and int(value) >= 0


def _check_value(value: Any, where: str) -> None:
    """Check one bookkeeping-or-number value (recursively); raise naming ``where``."""
    if value is None or _is_bool(value) or isinstance(value, str | os.PathLike):
        return
    if _is_number(value):
        if not math.isfinite(float(value)):
            raise ResultsSchemaError(f"{where} is {float(value)!r}: metric values must be finite")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_value(item, f"{where}.{key}")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_value(item, f"{where}[{i}]")
        return
    if hasattr(value, "tolist"):  # numpy arrays handed to make_results by a writer
        _check_value(value.tolist(), where)
        return
    raise ResultsSchemaError(f"{where} has type {type(value).__name__}")


def _check_row(row: Mapping[str, Any], numeric: Collection[str], where: str) -> None:
    """Check one flat metrics object: declared names hold numbers or null."""
    for key, value in row.items():
        at = f"{where}.{key}"
        if key in numeric and value is not None and not _is_number(value):
            raise ResultsSchemaError(
                f"{at} is {type(value).__name__} {value!r}: a number or null is expected"
            )
        _check_value(value, at)


def check_metrics(metrics: Any, numeric: Collection[str] = (), where: str = "metrics") -> None:
    """Check ``metrics`` values against the rules of the module docstring.

    Args:
        metrics: the ``metrics`` of a results object (an object or a list of objects).
        numeric: names that must hold a number or null (top level, or in every sweep row).
        where: prefix of key names in messages.

    Raises:
        ResultsSchemaError: naming the first offending key.
    """
    if isinstance(metrics, Mapping):
        _check_row(metrics, numeric, where)
    elif isinstance(metrics, list):
        for i, row in enumerate(metrics):
            if not isinstance(row, Mapping):
                raise ResultsSchemaError(
                    f"{where}[{i}] has type {type(row).__name__}, expected an object"
                )
            _check_row(row, numeric, f"{where}[{i}]")
    else:
        raise ResultsSchemaError(f"{where} has type {type(metrics).__name__}")


def _check_dataset(dataset: Any) -> None:
    """The image counts of a dataset object are non-negative integers or null.

    A ``dataset`` that is not an object (absent, null, a bare name) is left alone: the report
    then reads the dataset's name from ``config.dataset``.
    """
    if not isinstance(dataset, Mapping):
        return
    for key in DATASET_COUNT_KEYS:
        value = dataset.get(key)
        if value is not None and not _is_count(value):
            raise ResultsSchemaError(
                f"dataset.{key} is {value!r}: a non-negative integer or null is expected"
            )


def _check_protocol(config: Mapping[str, Any]) -> None:
    """``config.protocol`` is a string and ``config.protocol_overrides`` an object, if present."""
    name = config.get(PROTOCOL_KEY)
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ResultsSchemaError(f"config.{PROTOCOL_KEY} is {name!r}: a preset name is expected")
    overrides = config.get(PROTOCOL_OVERRIDES_KEY)
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ResultsSchemaError(
            f"config.{PROTOCOL_OVERRIDES_KEY} has type {type(overrides).__name__}, "
            "expected an object"
        )


def validate_results(
    obj: Any, source: str = "<results>", numeric: Collection[str] = ()
) -> dict[str, Any]:
    """Check ``obj`` against the results schema and return it.

    Args:
        obj: the parsed results object.
        source: name used in messages (usually the file).
        numeric: metric names that must hold numbers or null (see :func:`check_metrics`).

    Raises:
        ResultsSchemaError: naming ``source`` and the first offending key.
    """
    if not isinstance(obj, dict):
        raise ResultsSchemaError(
            f"{source}: top level must be a JSON object, got {type(obj).__name__}"
        )
    for key, typ in REQUIRED_KEYS.items():
        if key not in obj:
            raise ResultsSchemaError(f"{source}: missing key '{key}'")
        if not isinstance(obj[key], typ):
            raise ResultsSchemaError(f"{source}: key '{key}' has type {type(obj[key]).__name__}")
    if obj["schema"] != RESULTS_SCHEMA:
        raise ResultsSchemaError(
            f"{source}: schema is {obj['schema']!r}, expected {RESULTS_SCHEMA!r}"
        )
    if "name" not in obj["model"]:
        raise ResultsSchemaError(f"{source}: missing key 'model.name'")
    for key in REQUIRED_META_KEYS:
        if key not in obj["meta"]:
            raise ResultsSchemaError(f"{source}: missing key 'meta.{key}'")
    try:
        check_metrics(obj["metrics"], numeric)
        _check_dataset(obj.get("dataset"))
        _check_protocol(obj["config"])
    except ResultsSchemaError as e:
        raise ResultsSchemaError(f"{source}: {e}") from e
    return obj


def images_skipped(dataset: Mapping[str, Any] | None, skips: Any) -> int:
    """Images a run left out: ``dataset.n_images_skipped``, else the image-level ``skips``.

    Files written before ``n_images_skipped`` existed count the reasons of
    :data:`IMAGE_SKIP_REASONS` in their ``skips`` object.
    """
    recorded: Any = (dataset or {}).get("n_images_skipped")
    if _is_count(recorded):
        return int(recorded)
    if not isinstance(skips, Mapping):
        return 0
    return sum(int(skips[r]) for r in IMAGE_SKIP_REASONS if _is_count(skips.get(r)))


def make_results(
    task: str,
    model: dict[str, Any],
    config: dict[str, Any],
    metrics: dict[str, Any] | list[Any],
    meta: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """Assemble and validate a results object (see module docstring for the layout)."""
    obj: dict[str, Any] = {
        "schema": RESULTS_SCHEMA,
        "task": task,
        "model": model,
        "config": config,
        "metrics": metrics,
        "meta": meta,
    }
    obj.update(extra)
    return validate_results(obj)
