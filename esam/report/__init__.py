"""The report layer: results files in, leaderboards, plots and one static HTML page out.

Modules, one job each:

* :mod:`esam.report.tasks` declares each task's metrics (direction, aggregation, display).
* :mod:`esam.report.load` reads and validates results files into a tidy frame.
* :mod:`esam.report.published` reads the published reference numbers.
* :mod:`esam.report.tables` builds per-task leaderboards and renders Markdown, CSV and text.
* :mod:`esam.report.plots` draws the figures (matplotlib, Agg backend).
* :mod:`esam.report.page` renders the self-contained ``index.html``.
* :mod:`esam.report.build` ties them together and writes every output file.

Importing this package loads neither pandas nor matplotlib; the modules above do, so import
them only where a report is actually built.
"""

from __future__ import annotations

__all__ = ["build_report"]


def build_report(*args: object, **kwargs: object) -> object:
    """Build a report; see :func:`esam.report.build.build_report` (imported on first use)."""
    from esam.report.build import build_report as _build_report

    return _build_report(*args, **kwargs)  # type: ignore[arg-type]
