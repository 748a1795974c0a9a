"""The results file format shared by every esam job and read by the report layer.

A results file is one JSON object::

    {
      "schema": "esam.results/1",
      "task": "zeroshot" | "instseg" | "throughput" | ...,
      "model": {"name": str, "checkpoint": str | null, "checkpoint_sha256": str | null, ...},
      "dataset": {...} | null,          # name, annotation file and its sha256, ...
      "config": {...},                  # every setting that influences the numbers
      "metrics": {...},                 # flat name -> number (or list of row dicts for sweeps)
      "meta": {...},                    # esam.utils.meta.run_metadata(): versions, commit, hardware
      ...                               # task-specific extras (skips, rows file, ...)
    }
"""

from __future__ import annotations

from typing import Any

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


class ResultsSchemaError(ValueError):
    """A results object does not follow the esam results schema."""


def validate_results(obj: Any, source: str = "<results>") -> dict[str, Any]:
    """Check ``obj`` against the results schema and return it.

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
    return obj


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
