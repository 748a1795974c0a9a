"""The run's ``log.jsonl``: one JSON object per logged optimizer step, written by rank 0.

Each line holds ``step`` (optimizer steps done), ``epoch``, ``epoch_step`` (steps done in that
epoch), ``loss``, ``lr``, ``wd``, ``grad_norm``, ``samples_per_s`` (global samples per second
since the previous line), ``time`` (Unix seconds) and the task's own values, e.g. ``{"step":
10, "epoch": 0, "loss": 0.53, ...}``. Non-finite numbers are written as null. Every line is
flushed as it is written, so a killed run loses at most the line being written.

Resuming: a run starting after global step ``k`` (0 for a fresh start) first drops every line
whose step is greater than ``k``, and any torn last line, rewriting the file atomically; the
resumed run then logs those steps again. The file thus never holds a step twice and always
matches the weights the run continues from.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from esam.utils.io import write_text_atomic

LOG_FILENAME = "log.jsonl"
#: The most lines of a training curve that a run's ``results.json`` keeps.
CURVE_POINTS = 400


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The complete lines of a ``log.jsonl`` (a torn last line is skipped)."""
    p = Path(path)
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def loss_curve(
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str] = ("loss", "lr"),
    points: int = CURVE_POINTS,
) -> list[dict[str, float | None]]:
    """A run's training curve for ``results.json``.

    Args:
        rows: the lines of ``log.jsonl`` (:func:`read_log`); only those holding a ``loss`` are
            training lines (a validation's line has none).
        keys: the values kept besides ``step``, where a line holds them; one logged as null (not
            finite) stays None.
        points: at most this many lines, evenly spaced over the run, the first and last kept.
    """
    lines = [r for r in rows if "loss" in r]
    if len(lines) > points:
        keep = np.unique(np.linspace(0, len(lines) - 1, points).round().astype(int))
        lines = [lines[int(k)] for k in keep]
    return [
        {
            "step": int(r["step"]),
            **{k: None if r[k] is None else float(r[k]) for k in keys if k in r},
        }
        for r in lines
    ]


class MetricsLog:
    """Appends lines to ``log.jsonl`` on rank 0; does nothing elsewhere.

    Args:
        path: the log file.
        enabled: write (rank 0) or not.
        start_step: global step the run starts after; later lines already in the file are
            dropped first.
    """

    def __init__(self, path: str | os.PathLike[str], *, enabled: bool, start_step: int) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._file: IO[str] | None = None
        if not enabled:
            return
        if self.path.exists():
            kept = [
                r
                for r in read_log(self.path)
                if isinstance(r.get("step"), int) and r["step"] <= start_step
            ]
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: dict[str, Any]) -> None:
        """Append one line and flush it."""
        if self._file is None:
            return
        line = json.dumps({k: _clean(v) for k, v in record.items()}, allow_nan=False)
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
