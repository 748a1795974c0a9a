"""Build a whole report: load, tabulate, plot, render, and write every output file.

Output layout under ``out_dir``::

    index.html                  self-contained page (tables, partial runs, plots, skipped files)
    report.md                   every leaderboard, the partial runs, the plots, the skipped files
    results.csv                 the tidy frame: one row per measured or published number
    leaderboards/<task>.md      one Markdown file per task
    leaderboards/<task>.csv     the same tables as data (raw values, ``best`` column)
    plots/<name>.png|.svg       figures

Every file is written atomically.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from esam.report.load import SkippedFile, load_not_run, load_results, write_tidy_csv
from esam.report.page import PageInfo, render_page
from esam.report.plots import PlotResult, make_plots
from esam.report.published import (
    align_published_hardware,
    default_published_path,
    load_published,
)
from esam.report.tables import (
    DEFAULT_MAX_SKIPPED_IMAGES,
    Leaderboard,
    build_leaderboards,
    main_board,
    not_run_markdown,
    partial_markdown,
    partial_mask,
    partial_runs,
    task_markdown,
    threshold_text,
    to_csv_frame,
    to_text,
)
from esam.utils.io import write_text_atomic
from esam.utils.meta import git_commit, utc_now

#: Passed as ``published`` to use ``reports/published.json`` when it can be found.
DEFAULT = "default"


@dataclass
class ReportOutputs:
    """What :func:`build_report` wrote and found."""

    out_dir: Path
    index_html: Path
    results_csv: Path
    report_md: Path
    markdown: list[Path] = field(default_factory=list)
    csv: list[Path] = field(default_factory=list)
    plots: list[PlotResult] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    published_note: str = ""
    boards: dict[str, list[Leaderboard]] = field(default_factory=dict)
    tidy: pd.DataFrame = field(default_factory=pd.DataFrame)
    partial: pd.DataFrame = field(default_factory=pd.DataFrame)
    not_run: pd.DataFrame = field(default_factory=pd.DataFrame)
    max_skipped_images: float | None = DEFAULT_MAX_SKIPPED_IMAGES

    @property
    def main(self) -> Leaderboard | None:
        """The leaderboard shown first (see :func:`esam.report.tables.main_board`)."""
        return main_board(self.boards)


def _report_markdown(
    title: str,
    header: str,
    boards: dict[str, list[Leaderboard]],
    plots: Sequence[PlotResult],
    skipped: Sequence[SkippedFile],
    partial: str = "",
) -> str:
    parts = [f"# {title}\n", header + "\n"]
    parts.append(
        "Arrows: ↑ higher is better, ↓ lower is better. **Bold**: best measured value of the column. "
        "*Italic* rows marked (published) are numbers reported elsewhere and are never ranked. "
        "Repeated runs are combined only on identical data (the data column names it); zero-shot "
        "and object-proposal tables are split by evaluation protocol; † marks a note under the table.\n"
    )
    parts += [task_markdown(b) for b in boards.values()]
    if partial:
        parts.append(partial)
    parts.append("## Plots\n")
    for p in plots:
        if p.drawn and p.png is not None:
            parts.append(f"![{p.title}](plots/{p.png.name})\n\n{p.caption}\n")
        else:
            parts.append(f"- {p.title}: not drawn; {p.skipped}.\n")
    parts.append("## Skipped files\n")
    if skipped:
        parts += [f"- `{s.path}`: {s.reason}" for s in skipped]
        parts.append("")
    else:
        parts.append("None: every results file was read.\n")
    return "\n".join(parts)


def build_report(
    results: Sequence[str | Path],
    out_dir: str | Path,
    published: str | Path | None = DEFAULT,
    title: str = "esam benchmark report",
    warn: bool = True,
    max_skipped_images: float | None = DEFAULT_MAX_SKIPPED_IMAGES,
) -> ReportOutputs:
    """Build the report of every results file below ``results`` into ``out_dir``.

    Args:
        results: folders searched recursively for ``*.json`` results files (or single files).
        out_dir: output folder (created).
        published: a published-numbers file, :data:`DEFAULT` for ``reports/published.json``
            when it can be found, or ``None`` for no published numbers.
        title: page and Markdown title.
        warn: print a warning on stderr for each skipped file.
        max_skipped_images: largest share of its images (0-1) a run may skip and still be
            ranked; runs above it are listed under "Partial runs" instead. ``None`` ranks all.

    Raises:
        FileNotFoundError: a results folder, or an explicitly named published file, is missing.
        ValueError: ``max_skipped_images`` outside 0-1.
    """
    if max_skipped_images is not None and not 0.0 <= max_skipped_images <= 1.0:
        raise ValueError(f"max_skipped_images must be within 0 and 1, got {max_skipped_images}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_results(results, warn=warn)
    frames = [loaded.frame]
    skipped = list(loaded.skipped)

    if published == DEFAULT:
        path = default_published_path()
        published_note = "none found (reports/published.json)" if path is None else ""
    elif published is None:
        path, published_note = None, "not included (--no-published)"
    else:
        path = Path(published)
        if not path.is_file():
            raise FileNotFoundError(f"published numbers file not found: {path}")
        published_note = ""
    if path is not None:
        pub = load_published(path)
        frames.append(pub.frame)
        skipped += pub.skipped
        if warn:
            for s in pub.skipped:
                print(f"esam report: warning: skipped {s.path}: {s.reason}", file=sys.stderr)
        published_note = f"{pub.path} ({len(pub.frame)} numbers)"

    non_empty = [f for f in frames if len(f)]
    tidy = pd.concat(non_empty, ignore_index=True) if non_empty else loaded.frame
    # tables and plots show a paper's "A100" beside a measured "A100-SXM4-80GB"; the CSV
    # keeps each number once, as its source states it
    shown = align_published_hardware(tidy)
    boards = build_leaderboards(shown, max_skipped_images)
    partial = partial_runs(shown, max_skipped_images)
    plots = make_plots(
        shown[~partial_mask(shown, max_skipped_images)], out / "plots", curves=loaded.curves
    )

    outputs = ReportOutputs(
        out_dir=out,
        index_html=out / "index.html",
        results_csv=out / "results.csv",
        report_md=out / "report.md",
        plots=plots,
        files=loaded.files,
        skipped=skipped,
        published_note=published_note,
        boards=boards,
        tidy=tidy,
        partial=partial,
        not_run=load_not_run(results),
        max_skipped_images=max_skipped_images,
    )
    write_tidy_csv(tidy, outputs.results_csv)
    for task, task_boards in boards.items():
        md = out / "leaderboards" / f"{task}.md"
        write_text_atomic(md, task_markdown(task_boards))
        csv = out / "leaderboards" / f"{task}.csv"
        write_text_atomic(
            csv, pd.concat([to_csv_frame(b) for b in task_boards]).to_csv(index=False)
        )
        outputs.markdown.append(md)
        outputs.csv.append(csv)

    info = PageInfo(
        title=title,
        generated=utc_now(),
        esam_commit=(git_commit() or "unknown")[:12],
        n_files=len(loaded.files),
        published=published_note,
    )
    header = (
        f"Generated {info.generated} by esam at commit `{info.esam_commit}` · {info.n_files} results "
        f"files read · {len(skipped)} skipped · published numbers: {published_note}"
    )
    partial_md = partial_markdown(partial, max_skipped_images)
    if len(outputs.not_run):
        partial_md += "\n" + not_run_markdown(outputs.not_run)
    write_text_atomic(
        outputs.report_md, _report_markdown(title, header, boards, plots, skipped, partial_md)
    )
    write_text_atomic(
        outputs.index_html,
        render_page(info, boards, plots, skipped, partial, max_skipped_images, outputs.not_run),
    )
    return outputs


def summary_text(outputs: ReportOutputs, max_rows: int = 12) -> str:
    """Terminal summary: where the report is, what was skipped, and the main leaderboard."""
    lines = [
        f"report: {outputs.index_html}",
        f"  markdown: {outputs.report_md}   tidy csv: {outputs.results_csv}   plots: {outputs.out_dir / 'plots'}",
        f"  {len(outputs.files)} results files read, {len(outputs.skipped)} skipped, "
        f"published numbers: {outputs.published_note}",
    ]
    for s in outputs.skipped:
        lines.append(f"  skipped {s.path}: {s.reason}")
    if len(outputs.partial):
        limit = threshold_text(outputs.max_skipped_images)
        lines.append(
            f"  {len(outputs.partial)} partial runs (skipped more than {limit} of their images) "
            "listed apart, not ranked:"
        )
        lines += [f"    {p}" for p in outputs.partial["results_file"]]
    if len(outputs.not_run):
        lines.append(
            f"  {len(outputs.not_run)} suite runs have no results (listed under 'Not run'):"
        )
        lines += [f"    {r['run']}: {r['reason']}" for r in outputs.not_run.to_dict("records")]
    drawn = sum(p.drawn for p in outputs.plots)
    lines.append(f"  plots: {drawn} drawn, {len(outputs.plots) - drawn} not drawn")
    board = outputs.main
    if board is not None:
        lines += [
            "",
            f"{board.task.label} · {board.title} (ranked by {board.task.primary}):",
            to_text(board, max_rows),
        ]
    else:
        lines += ["", "no leaderboard: no usable results"]
    return "\n".join(lines)
