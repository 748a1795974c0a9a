"""The static, self-contained ``index.html`` of a report.

Everything the page needs is inside the file: CSS, a few lines of vanilla JavaScript that sort
tables when a header is clicked, and the figures as base64 data URLs. It works offline from
``file://`` and loads nothing from the network.

Conventions on the page: ``↑``/``↓`` in a header says which way is better; the best measured
value of each column is bold with the ``best`` class; published rows are italic, carry a
``published`` badge and are never ranked or marked; every measured row has a provenance cell
(commit, device, dtype, date). JavaScript errors, should any occur, are written into the visible
``#js-errors`` box, and ``<body data-js="ready">`` is set once the sorting code has run.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from esam.report.load import SkippedFile
from esam.report.plots import PlotResult
from esam.report.tables import (
    DEFAULT_MAX_SKIPPED_IMAGES,
    KEY_LABELS,
    Leaderboard,
    key_text,
    model_text,
    share_text,
    threshold_text,
)

_CSS = """
:root { --fg: #1d2430; --muted: #5b6573; --line: #d9dee5; --best: #e3f4e1; --pub: #f5f6f8;
        --accent: #2f5d9b; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: #fff; }
header { padding: 20px 32px 12px; border-bottom: 1px solid var(--line); background: #fafbfc; }
header h1 { margin: 0 0 4px; font-size: 22px; }
.meta { color: var(--muted); margin: 2px 0; }
nav { padding: 8px 32px; border-bottom: 1px solid var(--line); font-size: 13px; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
main { padding: 8px 32px 40px; max-width: 1500px; }
h2 { margin: 28px 0 4px; font-size: 19px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { margin: 18px 0 6px; font-size: 15px; }
p.desc { color: var(--muted); margin: 4px 0 10px; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: 4px 0 8px; }
th, td { padding: 4px 9px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { background: #f0f2f5; position: sticky; top: 0; cursor: pointer; user-select: none; }
th:hover { background: #e4e8ee; }
th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: 10px; }
th[aria-sort="descending"]::after { content: " \\25BC"; font-size: 10px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { background: var(--best); }
tr.published td { background: var(--pub); font-style: italic; color: #3f4754; }
.badge { display: inline-block; font-style: normal; font-size: 10px; padding: 0 5px; margin-left: 5px;
         border-radius: 8px; background: #dfe5ee; color: #34465f; vertical-align: 1px; }
td.prov { font-size: 12px; color: var(--muted); white-space: normal; min-width: 260px; }
td.prov code { color: var(--fg); }
td.measured-prov { white-space: nowrap; min-width: 0; }
.note-mark { color: #9a6b00; cursor: help; }
figure { margin: 14px 0 26px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); background: #fff; }
figcaption { color: var(--muted); font-size: 13px; max-width: 1000px; }
.plot-skipped { color: #7a5a00; background: #fff8e1; border: 1px solid #f0dca0; padding: 6px 10px;
                border-radius: 4px; }
.ok { color: #2d6a2d; }
#js-errors { white-space: pre-wrap; color: #a00; background: #fee; border: 1px solid #f99; padding: 8px; }
.legend li { margin: 2px 0; }
"""

#: Installed first, so errors in any later script are caught and shown on the page.
_ERROR_CAPTURE_JS = """
window.__esamErrors = [];
window.addEventListener('error', function (e) {
  var msg = 'JS error: ' + (e.message || 'unknown') + (e.lineno ? ' (line ' + e.lineno + ')' : '');
  var box = document.getElementById('js-errors');
  if (box) { box.hidden = false; box.textContent += msg + '\\n'; } else { window.__esamErrors.push(msg); }
});
"""

_SORT_JS = """
(function () {
  var box = document.getElementById('js-errors');
  if (window.__esamErrors.length) { box.hidden = false; box.textContent += window.__esamErrors.join('\\n'); }
  function value(td) { var v = td.getAttribute('data-sort'); return v === null ? td.textContent.trim() : v; }
  function compare(a, b, numeric, asc) {
    if (a === '' || b === '') { return a === b ? 0 : (a === '' ? 1 : -1); }
    var r = numeric ? parseFloat(a) - parseFloat(b) : a.localeCompare(b);
    return asc ? r : -r;
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), function (table) {
    var headers = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(headers, function (th, col) {
      th.tabIndex = 0;
      function sortBy() {
        var current = th.getAttribute('aria-sort');
        var asc = current ? current !== 'ascending' : th.getAttribute('data-better') !== 'higher';
        var numeric = th.getAttribute('data-type') === 'num';
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var order = rows.map(function (r, i) { return [r, i]; });
        order.sort(function (x, y) {
          return compare(value(x[0].cells[col]), value(y[0].cells[col]), numeric, asc) || x[1] - y[1];
        });
        Array.prototype.forEach.call(headers, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
        order.forEach(function (pair) { body.appendChild(pair[0]); });
      }
      th.addEventListener('click', sortBy);
      th.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortBy(); }
      });
    });
  });
  document.body.setAttribute('data-js', 'ready');
})();
"""


@dataclass
class PageInfo:
    """Facts shown in the page header."""

    title: str
    generated: str
    esam_commit: str
    n_files: int
    published: str


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _anchor(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def render_table(board: Leaderboard) -> str:
    """One leaderboard as a sortable HTML table."""
    head = ['<th class="num" data-type="num" title="rank among measured rows">#</th>']
    head += [f'<th data-type="text">{_e(KEY_LABELS.get(k, k))}</th>' for k in board.keys]
    for m in board.metrics:
        better = f' data-better="{m.direction}"' if m.direction else ""
        tip = {"higher": "higher is better", "lower": "lower is better", None: "not ranked"}[
            m.direction
        ]
        head.append(
            f'<th class="num" data-type="num"{better} title="{_e(m.name)}: {tip}; '
            f'repeated runs: {m.aggregation}">{_e(m.header())}</th>'
        )
    head += [
        '<th class="num" data-type="num">runs</th>',
        '<th data-type="text">provenance / source</th>',
    ]
    body = []
    for pos, row in enumerate(board.rows.to_dict("records")):
        published = row["source"] != "measured"
        rank = key_text(row["rank"])
        cells = [f'<td class="num" data-sort="{_e(rank)}">{_e(rank)}</td>']
        for k in board.keys:
            text = _e(key_text(row[k]))
            if k == "model":
                if published:
                    # "sam_vit_h (SAM ViT-H)": the name it was published under stays visible
                    name = _e(model_text(row, mark_published=False))
                    text = f'{name}<span class="badge">published</span>'
                if row.get("note"):
                    text += f' <span class="note-mark" title="{_e(row["note"])}">&dagger;</span>'
            cells.append(f"<td>{text}</td>")
        for m in board.metrics:
            value = row[m.name]
            shown = m.format(value)
            sort = "" if not shown else repr(float(value))
            if shown and board.is_best(pos, m.name):
                cells.append(
                    f'<td class="num best" data-sort="{sort}"><strong>{_e(shown)}</strong></td>'
                )
            else:
                cells.append(f'<td class="num" data-sort="{sort}">{_e(shown)}</td>')
        runs = "" if published else str(row["n_runs"])
        cells.append(f'<td class="num" data-sort="{runs}">{runs}</td>')
        if published:
            ref = str(row["provenance"])
            short = re.sub(r" \([^()]*\)", "", ref)
            cells.append(f'<td class="prov" title="{_e(ref)}">{_e(short)}</td>')
        else:
            commit, _, rest = str(row["provenance"]).partition(" · ")
            title = _e(row.get("results_file", ""))
            cells.append(
                f'<td class="prov measured-prov" title="{title}"><code>{_e(commit)}</code> · {_e(rest)}</td>'
            )
        cls = ' class="published"' if published else ' class="measured"'
        body.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    table_id = _e(board.slug)
    return (
        f'<div class="table-wrap"><table class="leaderboard sortable" id="{table_id}">'
        f"<thead><tr>{''.join(head)}</tr></thead><tbody>\n"
        + "\n".join(body)
        + "\n</tbody></table></div>"
    )


def _figure(plot: PlotResult) -> str:
    if not plot.drawn or plot.svg is None or plot.png is None:
        return (
            f'<p class="plot-skipped"><strong>{_e(plot.title)}</strong>: not drawn; '
            f"{_e(plot.skipped or 'no data')}.</p>"
        )
    data = base64.b64encode(Path(plot.svg).read_bytes()).decode("ascii")
    return (
        f'<figure id="plot-{_e(plot.name)}"><img src="data:image/svg+xml;base64,{data}" '
        f'alt="{_e(plot.title)}"><figcaption><strong>{_e(plot.title)}.</strong> {_e(plot.caption)} '
        f'Files: <a href="plots/{_e(plot.png.name)}">PNG</a> · <a href="plots/{_e(plot.svg.name)}">SVG</a>'
        "</figcaption></figure>"
    )


def render_partial(partial: pd.DataFrame, max_skipped_images: float | None) -> str:
    """The "Partial runs" section: runs left out of the leaderboards for skipped images."""
    limit = threshold_text(max_skipped_images)
    intro = (
        f'<p class="desc">Runs that skipped more than {_e(limit)} of their images (missing, '
        "corrupt or mis-sized files; <code>esam report --max-skipped-images</code>), or that "
        "skipped images without recording how many they evaluated. Their numbers describe a "
        "different image set, so they are not ranked in the leaderboards.</p>"
    )
    if partial.empty:
        return (
            f'<section id="partial"><h2>Partial runs</h2>{intro}<p class="ok">None.</p></section>'
        )
    head = "".join(
        f'<th data-type="{t}">{_e(h)}</th>'
        for h, t in (
            ("task", "text"),
            ("table", "text"),
            ("model", "text"),
            ("data", "text"),
            ("result", "text"),
            ("images evaluated", "num"),
            ("images skipped", "num"),
            ("file", "text"),
        )
    )
    body = []
    for r in partial.to_dict("records"):
        evaluated = "" if pd.isna(r["n_images"]) else f"{int(r['n_images']):,}"
        skipped = "" if pd.isna(r["n_images_skipped"]) else f"{int(r['n_images_skipped']):,}"
        share = share_text(r["skipped_share"])
        sort = "" if pd.isna(r["skipped_share"]) else repr(float(r["skipped_share"]))
        cells = [
            f"<td>{_e(r['task'])}</td>",
            f"<td>{_e(r['table'])}</td>",
            f'<td title="{_e(r["note"])}">{_e(r["model"])}</td>',
            f"<td>{_e(r['data'])}</td>",
            f"<td>{_e(r['shown'])}</td>",
            f'<td class="num">{evaluated}</td>',
            f'<td class="num" data-sort="{sort}">{skipped} ({_e(share)})</td>',
            f"<td><code>{_e(r['results_file'])}</code></td>",
        ]
        body.append('<tr class="partial">' + "".join(cells) + "</tr>")
    return (
        f'<section id="partial"><h2>Partial runs</h2>{intro}<div class="table-wrap">'
        f'<table class="partial-runs sortable"><thead><tr>{head}</tr></thead><tbody>\n'
        + "\n".join(body)
        + "\n</tbody></table></div></section>"
    )


def render_not_run(not_run: pd.DataFrame) -> str:
    """The "Not run" section: suite runs without results (see :func:`esam.report.load.load_not_run`)."""
    rows = "\n".join(
        "<tr>"
        + "".join(f"<td>{_e(r[k])}</td>" for k in ("run", "task", "model", "status"))
        + f"<td>{_e(r['reason'])}</td></tr>"
        for r in not_run.to_dict("records")
    )
    head = "".join(
        f'<th data-type="text">{h}</th>' for h in ("run", "task", "model", "status", "reason")
    )
    return (
        '<section id="not-run"><h2>Not run</h2><p class="desc">Runs of a benchmark suite '
        "(<code>esam suite run</code>) with no results: an input was missing, esam has no harness "
        'for the task, or the run failed.</p><div class="table-wrap"><table class="not-run sortable">'
        f"<thead><tr>{head}</tr></thead><tbody>\n{rows}\n</tbody></table></div></section>"
    )


def render_page(
    info: PageInfo,
    boards: dict[str, list[Leaderboard]],
    plots: Sequence[PlotResult],
    skipped: Sequence[SkippedFile],
    partial: pd.DataFrame | None = None,
    max_skipped_images: float | None = DEFAULT_MAX_SKIPPED_IMAGES,
    not_run: pd.DataFrame | None = None,
) -> str:
    """The full HTML document.

    ``partial`` lists the runs left out of the leaderboards for skipped images
    (:func:`esam.report.tables.partial_runs`); its section appears when it is given. ``not_run``
    lists a suite's runs without results; its section appears when it has rows.
    """
    nav = []
    sections = []
    for task_boards in boards.values():
        spec = task_boards[0].task
        anchor = f"task-{_anchor(spec.name)}"
        nav.append(f'<a href="#{anchor}">{_e(spec.label)}</a>')
        parts = [
            f'<section id="{anchor}"><h2>{_e(spec.label)}</h2><p class="desc">{_e(spec.description)}</p>'
        ]
        for board in task_boards:
            if spec.group_by:
                parts.append(f'<h3 id="{_e(board.slug)}-title">{_e(board.title)}</h3>')
            parts.append(render_table(board))
        parts.append("</section>")
        sections.append("\n".join(parts))
    if not boards:
        sections.append(
            '<section><h2>Leaderboards</h2><p class="desc">No usable results were found.</p></section>'
        )
    if partial is not None:
        nav.append(f'<a href="#partial">Partial runs ({len(partial)})</a>')
        sections.append(render_partial(partial, max_skipped_images))
    if not_run is not None and len(not_run):
        nav.append(f'<a href="#not-run">Not run ({len(not_run)})</a>')
        sections.append(render_not_run(not_run))
    nav.append('<a href="#plots">Plots</a>')
    nav.append(f'<a href="#skipped">Skipped files ({len(skipped)})</a>')

    figures = "\n".join(_figure(p) for p in plots) or '<p class="desc">No plots.</p>'
    if skipped:
        rows = "\n".join(
            f"<tr><td><code>{_e(s.path)}</code></td><td>{_e(s.reason)}</td></tr>" for s in skipped
        )
        skipped_html = (
            '<p class="desc">These files were not used; the rest of the report was built without them.</p>'
            '<div class="table-wrap"><table class="skipped sortable"><thead><tr><th data-type="text">file</th>'
            f'<th data-type="text">reason</th></tr></thead><tbody>\n{rows}\n</tbody></table></div>'
        )
    else:
        skipped_html = '<p class="ok">None: every results file was read.</p>'

    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(info.title)}</title>
<script>{_ERROR_CAPTURE_JS}</script>
<style>{_CSS}</style>
</head>
<body>
<header>
<h1>{_e(info.title)}</h1>
<p class="meta">Generated {_e(info.generated)} by esam at commit <code>{_e(info.esam_commit)}</code> ·
{info.n_files} results files read · {len(skipped)} skipped · published numbers: {_e(info.published)}</p>
</header>
<nav>{" ".join(nav)}</nav>
<main>
<div id="js-errors" hidden></div>
<section id="legend"><h2>Reading the tables</h2><ul class="legend">
<li>&uarr; higher is better, &darr; lower is better; columns without an arrow are counts and are not ranked.</li>
<li>Rows are ranked by the task's primary metric; click any header to re-sort (click again to reverse).</li>
<li><strong>Bold</strong> cells hold the best measured value of their column.</li>
<li><em>Italic</em> rows with a <span class="badge">published</span> badge are numbers reported elsewhere,
with their source; they are never ranked, bold-marked or part of a measured Pareto front.</li>
<li>Provenance of measured rows: commit · device · dtype · date of the newest run (hover for its file).
Repeated runs of one configuration on the same data are combined as each header's
tooltip says; runs on other annotation files, subsets or dataset versions are separate rows
(the data column). &dagger; marks a note (placeholder weights, skipped images, ...).</li>
<li>Zero-shot and object-proposal tables are split by evaluation protocol (in the title): numbers taken under
different protocols are never ranked together. Runs that skipped too many images are listed
under <a href="#partial">Partial runs</a> instead.</li>
</ul></section>
{"".join(sections)}
<section id="plots"><h2>Plots</h2>
{figures}
</section>
<section id="skipped"><h2>Skipped files</h2>
{skipped_html}
</section>
</main>
<script>{_SORT_JS}</script>
</body>
</html>
"""
