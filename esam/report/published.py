"""Published reference numbers (``reports/published.json``) as tidy rows.

The file holds numbers reported by papers and official repositories, each with the exact place
it comes from. They enter the tidy frame with ``source="published"`` and the citation in
``reference``; tables show them as separate rows and never count them when marking the best
measured value or drawing the Pareto front of measured points.

File layout::

    {
      "schema": "esam.published/1",
      "aliases": {"EfficientSAM-Ti": "efficientsam_vitt", ...},               # optional
      "entries": [
        {"model": str, "task": str, "dataset": str, "setting": str, "metric": str,
         "value": number, "source": str, "protocol": str | null,
         "note": str, "protocol_note": str,
         "hardware": str, "dtype": str, "component": str, "batch_size": int},   # optional
        ...
      ]
    }

Percentages are stored on a 0-100 scale, parameter counts and MACs as plain counts. Values must
be finite numbers.

``protocol`` names the evaluation protocol a number was taken under, for tasks whose tables are
split by protocol (``zeroshot``, ``instseg``, ``proposals``): one of esam's presets
(:data:`esam.utils.results.PROTOCOL_NAMES`) when the source follows it, else ``"unspecified"``
with a ``protocol_note`` saying what the source does state. A missing or null ``protocol`` of
such a task counts as ``"unspecified"``; other tasks ignore it (null). The ``protocol_note`` is
appended to the row's ``note``.

``aliases`` maps a published model name to the name esam's adapters record in results files
(``"SAM ViT-H": "sam_vit_h"``). An aliased entry's ``model`` becomes the measured name, so its
row sits beside the measured rows of the same model and shares its colour on plots, and the
name it was published under is kept in the ``published_as`` column and shown with it
(``sam_vit_h (SAM ViT-H, published)``). It stays a published row: never ranked, never marked
best, never on a measured Pareto front. Names without an alias are kept as published.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from esam.report.load import SkippedFile, display_path, empty_frame, normalise_frame
from esam.report.tasks import TASKS, metric_direction
from esam.utils.results import PROTOCOL_NAMES, UNSPECIFIED_PROTOCOL

PUBLISHED_SCHEMA = "esam.published/1"
REQUIRED_ENTRY_KEYS = ("model", "task", "dataset", "setting", "metric", "value", "source")
_OPTIONAL_COLUMNS = ("hardware", "dtype", "component", "batch_size", "compile")
#: Accepted values of an entry's ``protocol`` (besides null).
PROTOCOL_VALUES: tuple[str, ...] = (*PROTOCOL_NAMES, UNSPECIFIED_PROTOCOL)


@dataclass
class PublishedNumbers:
    """Rows read from a published-numbers file and the entries that were rejected."""

    frame: pd.DataFrame
    path: str = ""
    skipped: list[SkippedFile] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)


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
    if not math.isfinite(value):
        return f"value {value!r} is not finite"
    if not str(entry["source"]).strip():
        return "empty 'source'"
    protocol = entry.get("protocol")
    if protocol is not None and protocol not in PROTOCOL_VALUES:
        choices = ", ".join(repr(p) for p in PROTOCOL_VALUES)
        return f"protocol {protocol!r} is not one of {choices} or null"
    return None


def entry_protocol(entry: dict[str, Any]) -> str:
    """The ``protocol`` column of an entry: its protocol for tasks split by protocol, else ``""``.

    Entries of such tasks without a protocol are ``"unspecified"``.
    """
    spec = TASKS.get(str(entry["task"]))
    if spec is None or not spec.protocol:
        return ""
    return str(entry.get("protocol") or UNSPECIFIED_PROTOCOL)


def _entry_note(entry: dict[str, Any]) -> str:
    """The entry's ``note`` and ``protocol_note`` joined."""
    parts = [str(entry.get(k) or "").strip() for k in ("note", "protocol_note")]
    return " ".join(p for p in parts if p)


def _read_aliases(obj: dict[str, Any]) -> tuple[dict[str, str], str | None]:
    """``aliases`` of a published-numbers file and, if it is malformed, why (then no aliases)."""
    aliases = obj.get("aliases", {})
    if not isinstance(aliases, dict):
        return {}, f"'aliases' is a {type(aliases).__name__}, not an object; aliases ignored"
    bad = [k for k, v in aliases.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        return {}, f"alias of {bad[0]!r} is not a model name; aliases ignored"
    return {str(k): v.strip() for k, v in aliases.items()}, None


def load_published(path: str | Path) -> PublishedNumbers:
    """Read a published-numbers file.

    A file that cannot be read or parsed gives no rows and one :class:`SkippedFile`; a bad entry
    is skipped on its own, named by its index. Model names are mapped through the file's
    ``aliases`` (the original name goes to ``published_as``); malformed aliases are reported as
    skipped and ignored.
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
    aliases, alias_problem = _read_aliases(obj)
    if alias_problem:
        skipped.append(SkippedFile(f"{display} (aliases)", alias_problem))
    for i, entry in enumerate(entries):
        problem = _entry_problem(entry)
        if problem:
            skipped.append(SkippedFile(f"{display} (entry {i})", problem))
            continue
        direction = metric_direction(str(entry["task"]), str(entry["metric"]))
        name = str(entry["model"])
        model = aliases.get(name, name)
        row: dict[str, Any] = {
            "task": entry["task"],
            "model": model,
            "published_as": name if model != name else "",
            "dataset": entry["dataset"],
            "setting": entry["setting"],
            "protocol": entry_protocol(entry),
            "metric": entry["metric"],
            "value": float(entry["value"]),
            "higher_is_better": None if direction is None else direction == "higher",
            "source": "published",
            "results_file": display,
            "reference": entry["source"],
            "note": _entry_note(entry),
        }
        row.update({k: entry[k] for k in _OPTIONAL_COLUMNS if k in entry})
        rows.append(row)
    frame = normalise_frame(pd.DataFrame(rows)) if rows else empty_frame()
    return PublishedNumbers(frame, display, skipped, aliases)


#: Tokens of a GPU's reported name that give its memory or form factor, not its model.
_GPU_VARIANT_TOKEN = re.compile(r"^(\d+GB|HBM\d*e?|PCIE|SXM\d*)$", re.IGNORECASE)


def gpu_family(name: str) -> str:
    """The model of a GPU without its memory size or form factor, as papers name it.

    ``NVIDIA A100-SXM4-80GB`` and ``NVIDIA A100 80GB PCIe`` -> ``NVIDIA A100``; ``NVIDIA H100
    80GB HBM3`` -> ``NVIDIA H100``; ``Tesla V100-SXM2-16GB`` -> ``Tesla V100``. Names that are
    already a model (``NVIDIA H200``, ``NVIDIA GeForce RTX 4090``) come back unchanged.
    """
    head = name.strip().split("-", 1)[0]
    words = head.split()
    while len(words) > 1 and _GPU_VARIANT_TOKEN.match(words[-1]):
        words.pop()
    return " ".join(words)


def align_published_hardware(frame: pd.DataFrame) -> pd.DataFrame:
    """Put published rows beside the measured rows of the same GPU model.

    Papers name a GPU by its model (``NVIDIA A100``); a measured run records the full name the
    driver reports (``NVIDIA A100-SXM4-80GB``), so tables grouped by hardware would set them
    apart. A published row whose hardware is the :func:`gpu_family` of measured hardware is
    shown in that hardware's table (once per such variant), with a note saying what the source
    states; published rows with no measured counterpart, and measured rows, are unchanged.
    """
    if "hardware" not in frame.columns or not len(frame):
        return frame
    measured = frame["source"] == "measured"
    labels = {str(h) for h in frame.loc[measured, "hardware"].dropna() if str(h)}
    by_family: dict[str, list[str]] = {}
    for label in sorted(labels):
        by_family.setdefault(gpu_family(label).casefold(), []).append(label)
    rows: list[dict[str, Any]] = []
    moved = 0
    for rec in frame.to_dict("records"):
        stated = rec.get("hardware")
        if rec.get("source") != "published" or not isinstance(stated, str) or stated in labels:
            rows.append(rec)
            continue
        variants = by_family.get(gpu_family(stated).casefold(), [])
        if not variants:
            rows.append(rec)
            continue
        moved += 1
        for variant in variants:
            note = f"published for {stated}, shown with the measured {variant}"
            rows.append(
                {
                    **rec,
                    "hardware": variant,
                    "note": "; ".join(filter(None, (rec.get("note"), note))),
                }
            )
    if not moved:
        return frame
    return pd.DataFrame(rows, columns=frame.columns).astype(frame.dtypes.to_dict())
