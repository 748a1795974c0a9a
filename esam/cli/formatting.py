"""How the commands print numbers that may be missing."""

from __future__ import annotations


def number(value: object, spec: str, unit: str = "") -> str:
    """``value`` formatted with ``spec`` (``".2f"``) followed by ``unit``, or ``n/a`` when it
    is not a number (a metric a run could not compute is null in its results)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, spec) + unit
    return "n/a"
