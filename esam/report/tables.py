"""Per-task leaderboards from the tidy frame, rendered as Markdown, CSV and plain text.

A task is split into tables by its spec's ``group_by`` columns (for example one table per
dataset, prompt and evaluation protocol). Within a table each row is one configuration (its
``row_keys``, e.g. model and dtype, plus its protocol ``variant``, the ``checkpoint`` it used
and the data it was measured on, ``data_id``) from one source; repeated measurements of the same
configuration on the same data (true repeats: other seeds, devices) are combined with each
metric's declared aggregation. Runs on other annotation files, subsets or dataset versions are
separate rows, labelled by their ``data`` column.

Measured rows are ranked by the task's primary metric in its declared direction.
Published rows are never ranked: one of a model that was also measured sits directly below that
model's best measured row, the others follow the measured rows. The best measured value of every
ranked column is marked; published values never are.

Runs that skipped more than a share of their images (:data:`DEFAULT_MAX_SKIPPED_IMAGES`), or
skipped some without recording how many they evaluated, are left out of the leaderboards and
listed by :func:`partial_runs` instead; every run with skipped images carries a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from esam.report.load import TIDY_COLUMNS, data_sha, normalise_frame, skipped_share
from esam.report.tasks import TASKS, MetricSpec, TaskSpec, task_spec
from esam.utils.results import DEFAULT_MAX_SKIPPED_IMAGES

#: Labels of key columns in rendered tables.
KEY_LABELS = {
    "model": "model",
    "dtype": "dtype",
    "batch_size": "batch",
    "compile": "compile",
    "dataset": "dataset",
    "setting": "setting",
    "hardware": "hardware",
    "component": "component",
    "variant": "variant",
    "checkpoint": "checkpoint",
    "data": "data",
    "protocol": "protocol",
}

#: Marks a row with a note (placeholder weights, incomplete run, ...) in Markdown and text.
NOTE_MARK = "†"


@dataclass
class Leaderboard:
    """One ranked table of a task.

    Attributes:
        task: the task's spec.
        group: the values of the task's ``group_by`` columns this table holds.
        keys: key columns shown (row identity), ``model`` first.
        metrics: metric columns shown, declared ones first.
        rows: one row per configuration and source. Columns: ``rank`` (``<NA>`` for published
            rows), the key columns, ``variant``, ``checkpoint``, ``published_as``, ``source``,
            ``reference``, ``provenance``, ``n_runs``, ``note``, and one float column per metric
            (named by the metric).
        best: metric name -> positions (0-based, in ``rows`` order) holding its best measured value.
    """

    task: TaskSpec
    group: dict[str, str]
    keys: list[str]
    metrics: list[MetricSpec]
    rows: pd.DataFrame
    best: dict[str, list[int]] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """The group values joined, e.g. ``coco · box · protocol efficientsam``.

        The task label for ungrouped tasks.
        """
        return group_title(self.group) or self.task.label

    @property
    def slug(self) -> str:
        """A file- and anchor-safe identifier of the table."""
        text = "-".join([self.task.name, *[v for v in self.group.values() if v]])
        return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")

    @property
    def n_measured(self) -> int:
        """Number of measured rows."""
        return int((self.rows["source"] == "measured").sum())

    def is_best(self, position: int, metric: str) -> bool:
        """Whether the cell at ``position`` of ``metric`` holds the best measured value."""
        return position in self.best.get(metric, [])


def group_title(group: dict[str, str]) -> str:
    """Non-empty group values joined by `` · ``; the protocol reads ``protocol <name>``."""
    parts = [f"protocol {v}" if k == "protocol" else v for k, v in group.items() if v]
    return " · ".join(parts)


def _aggregate(values: pd.Series, dates: pd.Series, how: str) -> float:
    values = values.astype("float64")
    mask = values.notna()
    if not mask.any():
        return float("nan")
    values, dates = values[mask], dates[mask]
    if how == "max":
        return float(values.max())
    if how == "min":
        return float(values.min())
    if how == "latest":
        return float(values.iloc[int(np.argmax(dates.astype(str).to_numpy()))])
    return float(values.mean())


def provenance(commit: str, device: str, dtype: str, date: str, n_runs: int = 1) -> str:
    """Provenance text of a measured row: ``commit · device · dtype · date`` (+ run count)."""
    parts = [commit or "no commit", device or "n/a", dtype or "n/a", (date or "n/a")[:10]]
    text = " · ".join(parts)
    return f"{text} · {n_runs} runs" if n_runs > 1 else text


def _metric_order(spec: TaskSpec, present: list[str]) -> list[MetricSpec]:
    declared = [m for m in spec.metrics if m.name in present]
    extra = [spec.metric(n) for n in present if not spec.is_declared(n)]
    return declared + extra


#: Columns every row identity includes besides the task's row keys.
_IDENTITY = (
    "protocol",
    "variant",
    "data_id",
    "checkpoint",
    "published_as",
    "source",
    "reference",
)


def _build_rows(sub: pd.DataFrame, spec: TaskSpec, metrics: list[MetricSpec]) -> pd.DataFrame:
    # runs are combined only when they agree in every part of this identity: the task's row
    # keys, the protocol and its variant, the data (annotation file, version, images evaluated
    # and skipped) and the weights (checkpoint) they used
    identity = [*spec.row_keys, *[c for c in _IDENTITY if c not in spec.row_keys]]
    records: list[dict[str, Any]] = []
    for key, rows in sub.groupby(identity, dropna=False, sort=False):
        record: dict[str, Any] = dict(zip(identity, key, strict=True))
        latest = rows.iloc[int(np.argmax(rows["date"].astype(str).to_numpy()))]
        record["data"] = latest["data"]
        record["n_images"] = latest["n_images"]
        record["n_images_skipped"] = latest["n_images_skipped"]
        n_runs = int(rows["results_file"].nunique()) if record["source"] == "measured" else 1
        record["n_runs"] = n_runs
        if record["source"] == "measured":
            record["provenance"] = provenance(
                latest["commit"], latest["device"], latest["dtype"], latest["date"], n_runs
            )
        else:
            record["provenance"] = record["reference"]
        record["results_file"] = latest["results_file"]
        notes = sorted({n for n in rows["note"] if n})
        record["note"] = "; ".join(notes)
        for m in metrics:
            mrows = rows[rows["metric"] == m.name]
            record[m.name] = _aggregate(mrows["value"], mrows["date"], m.aggregation)
        records.append(record)
    _disambiguate_data(records)
    return pd.DataFrame.from_records(records)


def _disambiguate_data(records: list[dict[str, Any]]) -> None:
    """Append the annotation hash to ``data`` labels that two different data identities share."""
    ids: dict[str, set[str]] = {}
    for r in records:
        ids.setdefault(str(r["data"]), set()).add(str(r["data_id"]))
    for r in records:
        sha = data_sha(str(r["data_id"]))
        if len(ids[str(r["data"])]) > 1 and sha:
            r["data"] = " · ".join(p for p in (str(r["data"]), f"sha256 {sha}") if p)


def sort_rows(
    board: Leaderboard, metric: str | None = None, ascending: bool | None = None
) -> Leaderboard:
    """Sort a leaderboard in place and recompute ranks and best marks.

    Measured rows are ranked by ``metric`` (the task's primary metric by default) in the
    metric's declared direction unless ``ascending`` says otherwise; missing values go last.
    Published rows, in the same order among themselves and without a rank, are placed directly
    below the best measured row of the same model, or after all measured rows when that model
    was not measured.
    """
    name = metric or board.task.primary
    mspec = board.task.metric(name)
    if ascending is None:
        ascending = mspec.direction == "lower"
    df = board.rows.copy()
    if name not in df.columns:
        df[name] = np.nan
    df["_missing"] = df[name].isna().astype(int)
    df = df.sort_values(
        ["_missing", name, "model"], ascending=[True, ascending, True], kind="mergesort"
    ).drop(columns=["_missing"])
    is_measured = df["source"] == "measured"
    measured, published = df[is_measured], df[~is_measured]
    below: dict[str, list[int]] = {}  # model -> published rows placed under its best measured row
    after: list[int] = []
    measured_models = set(measured["model"])
    for idx, model in zip(published.index, published["model"], strict=True):
        (below.setdefault(model, []) if model in measured_models else after).append(idx)
    order: list[int] = []
    for idx, model in zip(measured.index, measured["model"], strict=True):
        order.append(idx)
        order.extend(below.pop(model, []))  # only under the model's first (best) row
    order.extend(after)
    df = df.loc[order].reset_index(drop=True)
    measured_mask = df["source"] == "measured"
    ranks = pd.Series(pd.NA, index=df.index, dtype="Int64")
    ranks[measured_mask] = np.arange(1, int(measured_mask.sum()) + 1)
    df["rank"] = ranks
    board.rows = df[["rank", *[c for c in df.columns if c != "rank"]]]
    board.best = best_positions(board.rows, board.metrics)
    return board


def best_positions(rows: pd.DataFrame, metrics: list[MetricSpec]) -> dict[str, list[int]]:
    """Positions of the best measured value of each ranked metric (ties all marked)."""
    best: dict[str, list[int]] = {}
    measured = (rows["source"] == "measured").to_numpy()
    for m in metrics:
        if m.direction is None or m.name not in rows.columns:
            continue
        values = rows[m.name].to_numpy(dtype="float64")
        ok = measured & ~np.isnan(values)
        if not ok.any():
            continue
        target = values[ok].max() if m.direction == "higher" else values[ok].min()
        hits = np.flatnonzero(ok & np.isclose(values, target, rtol=1e-12, atol=0.0))
        best[m.name] = [int(i) for i in hits]
    return best


def _group_sort_key(item: tuple[tuple[str, ...], pd.DataFrame]) -> tuple[Any, ...]:
    values, sub = item
    has_measured = bool((sub["source"] == "measured").any())
    preferred = tuple(0 if v in ("coco", "box") else 1 for v in values)
    return (not has_measured, preferred, values)


def partial_mask(
    tidy: pd.DataFrame, max_skipped_images: float | None = DEFAULT_MAX_SKIPPED_IMAGES
) -> pd.Series:
    """Rows of measured runs that skipped more than ``max_skipped_images`` of their images.

    A run whose skipped share is unknown (images skipped, images evaluated not recorded) counts
    as partial. ``None`` keeps every run.
    """
    if max_skipped_images is None or tidy.empty:
        return pd.Series(False, index=tidy.index)
    measured = tidy["source"] == "measured"

    def partial(n_images: Any, n_skipped: Any) -> bool:
        share = skipped_share(
            None if pd.isna(n_images) else int(n_images),
            None if pd.isna(n_skipped) else int(n_skipped),
        )
        return share is None or share > max_skipped_images

    flags = [partial(n, k) for n, k in zip(tidy["n_images"], tidy["n_images_skipped"], strict=True)]
    return measured & pd.Series(flags, index=tidy.index, dtype=bool)


def build_leaderboards(
    tidy: pd.DataFrame, max_skipped_images: float | None = DEFAULT_MAX_SKIPPED_IMAGES
) -> dict[str, list[Leaderboard]]:
    """Leaderboards of every task in ``tidy``: declared tasks first, in declaration order.

    Measured runs that skipped more than ``max_skipped_images`` of their images are left out
    (see :func:`partial_mask` and :func:`partial_runs`); ``None`` keeps them.
    """
    if not set(TIDY_COLUMNS) <= set(tidy.columns):
        tidy = normalise_frame(tidy)  # a frame from elsewhere: add the missing columns
    tidy = tidy[~partial_mask(tidy, max_skipped_images)]
    tasks = [t for t in TASKS if (tidy["task"] == t).any()]
    tasks += sorted(t for t in tidy["task"].unique() if t not in TASKS)
    boards: dict[str, list[Leaderboard]] = {}
    for task in tasks:
        sub = tidy[tidy["task"] == task]
        present = list(dict.fromkeys(sub["metric"]))
        spec = task_spec(task, present)
        metrics = _metric_order(spec, present)
        if spec.group_by:
            groups = [
                (tuple(str(v) for v in (k if isinstance(k, tuple) else (k,))), g)
                for k, g in sub.groupby(list(spec.group_by), dropna=False, sort=False)
            ]
        else:
            groups = [((), sub)]
        task_boards = []
        for values, gsub in sorted(groups, key=_group_sort_key):
            present_here = set(gsub["metric"])
            gmetrics = [m for m in metrics if m.name in present_here]
            rows = _build_rows(gsub, spec, gmetrics)
            board = Leaderboard(
                task=spec,
                group=dict(zip(spec.group_by, values, strict=True)),
                keys=_shown_keys(rows, spec),
                metrics=gmetrics,
                rows=rows,
            )
            task_boards.append(sort_rows(board))
        boards[task] = task_boards
    return boards


def _shown_keys(rows: pd.DataFrame, spec: TaskSpec) -> list[str]:
    """Key columns of a table: the model, then what tells its measured rows apart.

    ``checkpoint`` where one model ran with other weights, ``variant`` where measured rows
    differ in it, ``data`` where measured rows differ in it or any of them records how many
    images it evaluated (so a subset run is visible as one), then the task's other row keys
    that hold a value.
    """
    measured = rows[rows["source"] == "measured"]
    keys = ["model"]
    if (measured.groupby("model")["checkpoint"].nunique() > 1).any():
        keys.append("checkpoint")
    if measured["variant"].nunique() > 1:
        keys.append("variant")
    if measured["data"].nunique() > 1 or measured["n_images"].notna().any():
        keys.append("data")
    keys += [k for k in spec.row_keys if k not in keys and rows[k].map(_filled).any()]
    return keys


#: Columns of the table :func:`partial_runs` returns.
PARTIAL_COLUMNS = (
    "task",
    "table",
    "model",
    "checkpoint",
    "variant",
    "data",
    "metric",
    "value",
    "shown",
    "n_images",
    "n_images_skipped",
    "skipped_share",
    "note",
    "results_file",
)


def partial_runs(
    tidy: pd.DataFrame, max_skipped_images: float | None = DEFAULT_MAX_SKIPPED_IMAGES
) -> pd.DataFrame:
    """The runs :func:`build_leaderboards` leaves out for skipped images, one row per file.

    Columns (:data:`PARTIAL_COLUMNS`): the task, the title of the table the run would have
    joined, the run's model, weights, variant and data, its primary metric (name, raw value and
    display text ``shown``), images evaluated and skipped, the skipped share (``NaN`` when
    unknown), its notes and results file.
    """
    sub = tidy[partial_mask(tidy, max_skipped_images)]
    records: list[dict[str, Any]] = []
    for (path, task), rows in sub.groupby(["results_file", "task"], sort=True):
        spec = task_spec(str(task), list(dict.fromkeys(rows["metric"])))
        first = rows.iloc[0]
        primary = rows[rows["metric"] == spec.primary]
        value = float(primary["value"].iloc[0]) if len(primary) else float("nan")
        n_images = None if pd.isna(first["n_images"]) else int(first["n_images"])
        n_skipped = None if pd.isna(first["n_images_skipped"]) else int(first["n_images_skipped"])
        share = skipped_share(n_images, n_skipped)
        mspec = spec.metric(spec.primary)
        records.append(
            {
                "task": task,
                "table": group_title({k: str(first[k]) for k in spec.group_by}),
                "model": first["model"],
                "checkpoint": first["checkpoint"],
                "variant": first["variant"],
                "data": first["data"],
                "metric": spec.primary,
                "value": value,
                "shown": f"{mspec.label} {mspec.format(value)}".strip(),
                "n_images": n_images,
                "n_images_skipped": n_skipped,
                "skipped_share": float("nan") if share is None else share,
                "note": first["note"],
                "results_file": path,
            }
        )
    df = pd.DataFrame.from_records(records, columns=list(PARTIAL_COLUMNS))
    for col in ("n_images", "n_images_skipped"):
        df[col] = df[col].astype("Int64")
    return df


def share_text(share: Any) -> str:
    """A skipped share as a percentage (``12.5%``), ``unknown`` when not known."""
    if share is None or pd.isna(share):
        return "unknown"
    return f"{100.0 * float(share):.1f}%"


def threshold_text(max_skipped_images: float | None) -> str:
    """The partial-run threshold as a percentage (``1%``), or ``not applied``."""
    if max_skipped_images is None:
        return "not applied"
    return f"{100.0 * max_skipped_images:g}%"


def partial_markdown(partial: pd.DataFrame, max_skipped_images: float | None) -> str:
    """The "Partial runs" section of ``report.md``."""
    limit = threshold_text(max_skipped_images)
    parts = [
        "## Partial runs\n",
        f"Runs that skipped more than {limit} of their images (missing, corrupt or mis-sized "
        "files; `esam report --max-skipped-images`), or that skipped images without recording "
        "how many they evaluated. Their numbers describe a different image set, so they are "
        "not ranked in the leaderboards above.\n",
    ]
    if partial.empty:
        parts.append("None.\n")
        return "\n".join(parts)
    headers = ["task", "table", "model", "data", "result", "images evaluated", "skipped", "file"]
    align = [":---"] * 4 + ["---:"] * 3 + [":---"]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    for r in partial.to_dict("records"):
        evaluated = "" if pd.isna(r["n_images"]) else f"{int(r['n_images']):,}"
        skipped = "" if pd.isna(r["n_images_skipped"]) else f"{int(r['n_images_skipped']):,}"
        cells = [
            r["task"],
            r["table"],
            r["model"],
            r["data"],
            r["shown"],
            evaluated,
            f"{skipped} ({share_text(r['skipped_share'])})",
            f"`{r['results_file']}`",
        ]
        lines.append("| " + " | ".join(_md_escape(str(c)) for c in cells) + " |")
    parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _filled(v: Any) -> bool:
    return not (v is None or v is pd.NA or v == "" or (isinstance(v, float) and np.isnan(v)))


def key_text(value: Any) -> str:
    """Display text of a key cell (``compile`` as yes/no, missing as empty)."""
    if not _filled(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    return str(value)


def model_text(row: dict[str, Any], mark_published: bool = True) -> str:
    """Display name of a row's model.

    Measured rows show the model name. Published rows show it with the name it was published
    under, when that differs, and (with ``mark_published``) the word "published":
    ``efficientsam_vitt (EfficientSAM-Ti, published)``.
    """
    model = key_text(row.get("model"))
    if row.get("source", "measured") == "measured":
        return model
    extra = [key_text(row.get("published_as"))] + (["published"] if mark_published else [])
    extra = [e for e in extra if e]
    return f"{model} ({', '.join(extra)})" if extra else model


def _notes(records: list[dict[str, Any]]) -> list[str]:
    """``† model: note`` lines for the measured rows among ``records`` that carry a note."""
    seen: dict[str, None] = {}
    for row in records:
        if row["source"] == "measured" and row.get("note"):
            seen[f"{NOTE_MARK} {row['model']}: {row['note']}"] = None
    return list(seen)


def main_board(boards: dict[str, list[Leaderboard]]) -> Leaderboard | None:
    """The table shown first: the first table with measured rows of the first accuracy task."""
    ordered = sorted(
        (b for task_boards in boards.values() for b in task_boards),
        key=lambda b: (not b.task.accuracy, b.n_measured == 0),
    )
    return ordered[0] if ordered else None


# --- renderers ---------------------------------------------------------------------------------


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(board: Leaderboard) -> str:
    """A GitHub-flavoured Markdown table; best measured values bold, published rows italic."""
    headers = [
        "#",
        *[KEY_LABELS.get(k, k) for k in board.keys],
        *[m.header() for m in board.metrics],
    ]
    headers += ["runs", "provenance / source"]
    lines = ["| " + " | ".join(_md_escape(h) for h in headers) + " |"]
    align = ["---:"] + [":---"] * len(board.keys) + ["---:"] * len(board.metrics) + ["---:", ":---"]
    lines.append("| " + " | ".join(align) + " |")
    for pos, row in enumerate(board.rows.to_dict("records")):
        published = row["source"] != "measured"
        cells = [key_text(row["rank"])]
        for k in board.keys:
            text = _md_escape(key_text(row[k]))
            if k == "model" and published:
                suffix = model_text(row)[len(key_text(row["model"])) :]  # " (..., published)"
                text = f"*{text}*{_md_escape(suffix)}"
            elif k == "model" and row.get("note"):
                text = f"{text} {NOTE_MARK}"
            cells.append(text)
        for m in board.metrics:
            text = m.format(row[m.name])
            if text and published:
                text = f"*{text}*"
            elif text and board.is_best(pos, m.name):
                text = f"**{text}**"
            cells.append(text)
        cells.append("" if published else str(row["n_runs"]))
        prov = _md_escape(str(row["provenance"]))
        cells.append(f"*{prov}*" if published else f"`{prov}`")
        lines.append("| " + " | ".join(cells) + " |")
    notes = _notes(board.rows.to_dict("records"))
    if notes:
        lines += ["", *[_md_escape(n) + "  " for n in notes]]
    return "\n".join(lines) + "\n"


def to_csv_frame(board: Leaderboard) -> pd.DataFrame:
    """The table as plain data: raw metric values, a ``best`` column naming best-marked metrics."""
    df = board.rows.drop(columns=[c for c in board.group if c in board.rows.columns])
    for col, value in reversed(board.group.items()):
        df.insert(0, col, value)
    df.insert(0, "task", board.task.name)
    df["best"] = [
        ";".join(m.name for m in board.metrics if board.is_best(pos, m.name))
        for pos in range(len(df))
    ]
    return df


def to_text(board: Leaderboard, max_rows: int = 15) -> str:
    """A fixed-width plain-text rendering for the terminal (best values starred)."""
    headers = [
        "#",
        *[KEY_LABELS.get(k, k) for k in board.keys],
        *[m.header() for m in board.metrics],
    ]
    headers.append("source")
    body: list[list[str]] = []
    for pos, row in enumerate(board.rows.head(max_rows).to_dict("records")):
        published = row["source"] != "measured"
        cells = [key_text(row["rank"])]
        for k in board.keys:
            text = model_text(row, mark_published=False) if k == "model" else key_text(row[k])
            if k == "model" and not published and row.get("note"):
                text = f"{text} {NOTE_MARK}"
            cells.append(text)
        for m in board.metrics:
            text = m.format(row[m.name])
            cells.append(f"{text}*" if text and board.is_best(pos, m.name) else text)
        cells.append("published" if published else "measured")
        body.append(cells)
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)
    ]
    numeric = {0} | set(range(1 + len(board.keys), 1 + len(board.keys) + len(board.metrics)))

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in body]
    if len(board.rows) > max_rows:
        out.append(f"... {len(board.rows) - max_rows} more rows")
    out += _notes(board.rows.head(max_rows).to_dict("records"))
    return "\n".join(out) + "\n"


def task_markdown(boards: list[Leaderboard]) -> str:
    """Markdown of one task: heading, description and one table per group."""
    if not boards:
        return ""
    spec = boards[0].task
    parts = [f"## {spec.label}\n", f"{spec.description}\n"]
    for board in boards:
        if spec.group_by:
            parts.append(f"### {board.title}\n")
        parts.append(to_markdown(board))
    return "\n".join(parts)


def not_run_markdown(not_run: pd.DataFrame) -> str:
    """The "Not run" section of ``report.md``: suite runs that were not run or failed, and why."""
    parts = [
        "## Not run\n",
        "Runs of a benchmark suite (`esam suite run`) with no results: an input was missing, "
        "esam has no harness for the task, or the run failed.\n",
    ]
    if not_run.empty:
        parts.append("None.\n")
        return "\n".join(parts)
    lines = ["| run | task | model | status | reason |", "| :--- | :--- | :--- | :--- | :--- |"]
    for r in not_run.to_dict("records"):
        cells = [
            str(r[k]).replace("|", "\\|") for k in ("run", "task", "model", "status", "reason")
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(parts + lines) + "\n"
