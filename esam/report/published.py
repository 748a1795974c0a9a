"""Published reference numbers (``reports/published.json``) as tidy rows.

The file holds numbers reported by papers and official repositories, each with the exact place
it comes from. They enter the tidy frame with ``source="published"`` and the citation in
``reference``; tables show them as separate rows and never count them when marking the best
measured value or drawing the Pareto front of measured points.

File layout::

    {
      "schema": "esam.published/1",
      "entries": [
        {"model": str, "task": str, "dataset": str, "setting": str, "metric": str,
         "value": number, "source": str, "note": str,
         "hardware": str, "dtype": str, "component": str, "batch_size": int},   # optional
        ...
      ]
    }

Percentages are stored on a 0-100 scale, parameter counts and MACs as plain counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from esam.report.load import SkippedFile, display_path, empty_frame, normalise_frame
from esam.report.tasks import metric_direction

PUBLISHED_SCHEMA = "esam.published/1"
REQUIRED_ENTRY_KEYS = ("model", "task", "dataset", "setting", "metric", "value", "source")
_OPTIONAL_COLUMNS = ("hardware", "dtype", "component", "batch_size", "compile", "note")


@dataclass
class PublishedNumbers:
    """Rows read from a published-numbers file and the entries that were rejected."""

    frame: pd.DataFrame
    path: str = ""
    skipped: list[SkippedFile] = field(default_factory=list)


def default_published_path() -> Path | None:
    """``reports/published.json`` in the working folder or in the source checkout, if present."""
    candidates = [
        Path.cwd() / "reports" / "published.json",
        Path(__file__).resolve().parents[2] / "reports" / "published.json",
    ]
    for path in candidates:
        if path.is_file():
            return path
    return None


def _entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return f"entry is a {type(entry).__name__}, not an object"
    missing = [k for k in REQUIRED_ENTRY_KEYS if k not in entry]
    if missing:
        return "missing " + ", ".join(repr(k) for k in missing)
    value = entry["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"value {value!r} is not a number"
    if not str(entry["source"]).strip():
        return "empty 'source'"
    return None


def load_published(path: str | Path) -> PublishedNumbers:
    """Read a published-numbers file.

    A file that cannot be read or parsed gives no rows and one :class:`SkippedFile`; a bad entry
    is skipped on its own, named by its index.
    """
    path = Path(path)
    display = display_path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        return PublishedNumbers(empty_frame(), display, [SkippedFile(display, f"unreadable: {e}")])
    except json.JSONDecodeError as e:
        reason = f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}"
        return PublishedNumbers(empty_frame(), display, [SkippedFile(display, reason)])
    if not isinstance(obj, dict) or obj.get("schema") != PUBLISHED_SCHEMA:
        reason = f"not a published-numbers file (expected schema {PUBLISHED_SCHEMA!r})"
        return PublishedNumbers(empty_frame(), display, [SkippedFile(display, reason)])
    entries = obj.get("entries")
    if not isinstance(entries, list):
        return PublishedNumbers(
            empty_frame(), display, [SkippedFile(display, "'entries' is not a list")]
        )

    rows: list[dict[str, Any]] = []
    skipped: list[SkippedFile] = []
    for i, entry in enumerate(entries):
        problem = _entry_problem(entry)
        if problem:
            skipped.append(SkippedFile(f"{display} (entry {i})", problem))
            continue
        direction = metric_direction(str(entry["task"]), str(entry["metric"]))
        row: dict[str, Any] = {
            "task": entry["task"],
            "model": entry["model"],
            "dataset": entry["dataset"],
            "setting": entry["setting"],
            "metric": entry["metric"],
            "value": float(entry["value"]),
            "higher_is_better": None if direction is None else direction == "higher",
            "source": "published",
            "results_file": display,
            "reference": entry["source"],
        }
        row.update({k: entry[k] for k in _OPTIONAL_COLUMNS if k in entry})
        rows.append(row)
    frame = normalise_frame(pd.DataFrame(rows)) if rows else empty_frame()
    return PublishedNumbers(frame, display, skipped)
