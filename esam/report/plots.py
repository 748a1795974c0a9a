"""Report figures, drawn with matplotlib's object API (Agg for PNG) and saved as PNG and SVG.

1. Accuracy against end-to-end throughput (log x), one panel per hardware, with the Pareto
   front of the measured points, in the manner of the EfficientSAM paper's Figure 1. A model's
   throughput is its fastest measured setting that passes the accuracy check (``miou_vs_fp32``
   within 0.5 of fp32, see :func:`esam.report.tasks.accuracy_ok`); each point is labelled with
   that setting.
2. mIoU by object size (small / medium / large) per model, as grouped bars.
3. Parameter count against accuracy.

Measured and published points use distinct markers; published points never enter a Pareto
front. A figure without enough data is not drawn; its :class:`PlotResult` says why.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from esam.report.load import TrainingCurve
from esam.report.tables import model_text
from esam.report.tasks import MAX_MIOU_DROP, accuracy_ok
from esam.utils.io import write_bytes_atomic

#: (task, metric, preferred setting, axis label) for the accuracy axis, in order of preference.
ACCURACY_AXES: tuple[tuple[str, str, str, str], ...] = (
    ("zeroshot", "miou", "box", "zero-shot mIoU (%)"),
    ("instseg", "ap", "", "instance-segmentation mask AP (%)"),
)
#: Protocol preferred for the accuracy axis when measured runs use several.
PREFERRED_PROTOCOL = "efficientsam"
SIZE_METRICS = (("miou_small", "small"), ("miou_medium", "medium"), ("miou_large", "large"))
_RC: dict[Any, Any] = {
    "svg.hashsalt": "esam-report",
    "svg.fonttype": "path",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


@dataclass
class PlotResult:
    """One figure: where it was written, or why it was not drawn."""

    name: str
    title: str
    caption: str = ""
    png: Path | None = None
    svg: Path | None = None
    skipped: str | None = None

    @property
    def drawn(self) -> bool:
        """Whether the figure was written."""
        return self.png is not None


def pareto_front(x: Sequence[float], y: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats in both ``x`` and ``y`` (both maximised).

    Returned in order of increasing ``x``. A point equal to another in both coordinates is kept
    once (the first).
    """
    order = sorted(range(len(x)), key=lambda i: (-x[i], -y[i], i))
    front: list[int] = []
    best_y = -np.inf
    for i in order:
        if y[i] > best_y:
            front.append(i)
            best_y = y[i]
    return sorted(front, key=lambda i: x[i])


def _choose(sub: pd.DataFrame, column: str, preferred: str) -> str | None:
    """The preferred value of ``column`` if present, else the most frequent one."""
    values = [v for v in sub[column] if v]
    if not values:
        return "" if len(sub) else None
    if preferred and preferred in values:
        return preferred
    return str(pd.Series(values).value_counts().index[0])


def accuracy_table(
    tidy: pd.DataFrame, task: str, metric: str, setting: str, rank_by: str | None = None
) -> tuple[pd.DataFrame, str]:
    """Per-model accuracy for one dataset, setting and protocol: measured and published.

    Measured runs of one configuration (variant, weights and data) are averaged; a model
    measured in several is represented by the one evaluated on the most images, and among
    those by the best, judged by ``rank_by`` when given (another metric of the same runs:
    the size-split mIoUs of one model then all come from its best configuration by mIoU).

    The dataset is COCO when present, the setting ``setting`` when present, the protocol
    ``efficientsam`` when present (else the most frequent); all are chosen from the measured
    rows when there are any, so published rows are only shown when they use the same dataset,
    setting and protocol. Returns the table (model, published_as, source, reference, value) and
    a label such as ``coco · box · protocol efficientsam``. Runs with different weights
    (``checkpoint``) or data (``data_id``) are never averaged together.
    """
    sub = tidy[(tidy["task"] == task) & (tidy["metric"] == metric)]
    basis = sub[sub["source"] == "measured"]
    if basis.empty:
        basis = sub
    dataset = _choose(basis, "dataset", "coco")
    if dataset is None:
        return sub.iloc[0:0][["model", "published_as", "source", "reference", "value"]], ""
    basis = basis[basis["dataset"] == dataset]
    chosen_setting = _choose(basis, "setting", setting) or ""
    basis = basis[basis["setting"] == chosen_setting]
    protocol = _choose(basis, "protocol", PREFERRED_PROTOCOL) or ""

    def scoped(m: str) -> pd.DataFrame:
        """Rows of metric ``m`` in the chosen dataset, setting and protocol."""
        return tidy[
            (tidy["task"] == task)
            & (tidy["metric"] == m)
            & (tidy["dataset"] == dataset)
            & (tidy["setting"] == chosen_setting)
            & (tidy["protocol"] == protocol)
        ]

    sub = scoped(metric)
    # repeated runs: mean per configuration; then per model the most images, then the best
    config = ["model", "variant", "checkpoint", "data_id"]

    def per_config(rows: pd.DataFrame) -> pd.DataFrame:
        runs = rows[rows["source"] == "measured"].assign(
            n=lambda d: d["n_images"].astype("Float64").fillna(-1.0).astype("float64")
        )
        return (
            runs.groupby(config, as_index=False)
            .agg(value=("value", "mean"), n=("n", "max"))
            .sort_values(["n", "value"], ascending=False, kind="mergesort")
        )

    configs = per_config(sub)
    if rank_by is not None and rank_by != metric:
        best = per_config(scoped(rank_by)).drop_duplicates("model")[config]
        configs = configs.merge(best, on=config, how="inner")
    measured = (
        configs.drop_duplicates("model")[["model", "value"]]
        .sort_values("model", kind="mergesort")
        .reset_index(drop=True)
    )
    measured["source"], measured["reference"], measured["published_as"] = "measured", "", ""
    published = sub[sub["source"] == "published"][
        ["model", "published_as", "reference", "value"]
    ].copy()
    published["source"] = "published"
    protocol_text = f"protocol {protocol}" if protocol else ""
    label = " · ".join(v for v in (dataset, chosen_setting, protocol_text) if v)
    return pd.concat([measured, published], ignore_index=True), label


#: Columns of :func:`throughput_table`.
THROUGHPUT_COLUMNS = (
    "model",
    "published_as",
    "hardware",
    "source",
    "reference",
    "setting",
    "batch_size",
    "dtype",
    "compile",
    "miou_vs_fp32",
    "value",
)
#: Tidy columns that identify one measured throughput configuration within a results file.
_CONFIG_KEYS = (
    "results_file",
    "model",
    "hardware",
    "component",
    "setting",
    "variant",
    "checkpoint",
    "batch_size",
    "dtype",
    "compile",
    "source",
    "reference",
)


def _config_key(df: pd.DataFrame) -> pd.Series:
    """One string per row identifying its configuration (missing values compare equal)."""
    columns = [df[c].map(str) for c in _CONFIG_KEYS]
    return pd.Series(
        ["\x1f".join(t) for t in zip(*columns, strict=True)], index=df.index, dtype=object
    )


def throughput_table(tidy: pd.DataFrame) -> pd.DataFrame:
    """Fastest end-to-end images/s per model, hardware and source, with the setting it used.

    A measured setting counts only if it passes the accuracy check of
    :func:`esam.report.tasks.accuracy_ok`: its ``miou_vs_fp32`` is at least 99.5, or, when no
    accuracy was measured, it is fp32 without compile. A bf16 or compiled setting that failed
    the check, or was never checked, never stands for the model's speed. Published numbers are
    taken as published. A sweep of another workload (architecture overrides, more than one
    prompt per image: see :func:`_stands_for_the_model`) never does either.
    Columns: :data:`THROUGHPUT_COLUMNS`.
    """
    sub = tidy[(tidy["task"] == "throughput") & (tidy["component"] == "end_to_end")]
    sub = sub[sub["variant"].map(_stands_for_the_model).astype(bool)]
    speed = sub[(sub["metric"] == "images_per_s") & sub["value"].notna()].copy()
    if speed.empty:
        return pd.DataFrame(columns=list(THROUGHPUT_COLUMNS))
    checks = sub[sub["metric"] == "miou_vs_fp32"]
    miou = (
        checks.groupby(_config_key(checks))["value"].mean()
        if len(checks)
        else pd.Series(dtype="float64")
    )
    speed["miou_vs_fp32"] = _config_key(speed).map(miou).astype("float64")
    ok = [
        source != "measured" or accuracy_ok(m if m == m else None, str(dtype), _flag(comp))
        for source, m, dtype, comp in zip(
            speed["source"], speed["miou_vs_fp32"], speed["dtype"], speed["compile"], strict=True
        )
    ]
    speed = speed[ok]
    if speed.empty:
        return pd.DataFrame(columns=list(THROUGHPUT_COLUMNS))
    group = ["model", "hardware", "source", "reference"]
    best = speed.loc[speed.groupby(group, sort=False)["value"].idxmax()]
    return best[list(THROUGHPUT_COLUMNS)].reset_index(drop=True)


#: Variant keys of throughput sweeps that change the workload itself: architecture overrides
#: (a smaller input or encoder) and several prompts per image. Such a sweep's speed is not the
#: model's. (``image_size`` is recorded by every sweep; only overrides change it.)
_OVERRIDES = re.compile(r"(^|, )overrides=")
_MANY_PROMPTS = re.compile(r"(^|, )prompts_per_image=(?!1(,|$))")


def _has_overrides(variant: Any) -> bool:
    """Whether rows of this ``variant`` measured a model under architecture overrides."""
    return isinstance(variant, str) and _OVERRIDES.search(variant) is not None


def _stands_for_the_model(variant: Any) -> bool:
    """Whether rows of this ``variant`` measured the model as it is, on one prompt per image."""
    many_prompts = isinstance(variant, str) and _MANY_PROMPTS.search(variant) is not None
    return not (_has_overrides(variant) or many_prompts)


def _flag(value: Any) -> bool:
    """A nullable boolean cell as a plain bool (missing counts as false)."""
    return value is not None and value is not pd.NA and value == value and bool(value)


def setting_label(row: dict[str, Any]) -> str:
    """Short text of a throughput setting: ``fast · bf16 · bs 8 · compiled``."""
    parts = [str(row.get("setting") or ""), str(row.get("dtype") or "")]
    batch = row.get("batch_size")
    if batch is not None and batch is not pd.NA and batch == batch:
        parts.append(f"bs {int(batch)}")
    if _flag(row.get("compile")):
        parts.append("compiled")
    return " · ".join(p for p in parts if p)


def params_table(tidy: pd.DataFrame) -> pd.DataFrame:
    """Total parameter count per model and source (measured first, then published); counts
    taken under architecture overrides are left out (they describe a shrunken model)."""
    sub = tidy[(tidy["task"] == "model") & (tidy["metric"] == "params_total")]
    sub = sub[~sub["variant"].map(_has_overrides).astype(bool)]
    return sub.groupby(["model", "source", "reference"], as_index=False, sort=False)["value"].max()


def _pick(df: pd.DataFrame, model: str, source: str, reference: str = "") -> float | None:
    """A model's value from ``df``: the one with ``reference`` if present, else the first."""
    rows = df[(df["model"] == model) & (df["source"] == source)]
    if rows.empty:
        return None
    same = rows[rows["reference"] == reference]
    return float((same if not same.empty else rows)["value"].iloc[0])


def throughput_panels(
    tidy: pd.DataFrame, task: str, metric: str, setting: str
) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """Points of the accuracy-against-throughput figure, per hardware.

    Each point is ``{"model", "label", "source", "x" (images/s), "y" (accuracy), "setting",
    "front"}``: ``label`` is the model's display name (published points keep the name they were
    published under), ``setting`` the throughput setting ``x`` comes from (see
    :func:`throughput_table`: measured settings must pass the accuracy check). Measured
    throughput pairs with measured accuracy, published with published (preferring the same
    source). ``front`` is true for measured points on the Pareto front of their panel's measured
    points; published points are never on it.
    """
    acc, acc_label = accuracy_table(tidy, task, metric, setting)
    panels: dict[str, list[dict[str, Any]]] = {}
    for row in throughput_table(tidy).to_dict("records"):
        y = _pick(acc, row["model"], row["source"], row["reference"])
        if y is None:
            continue
        point = {
            "model": row["model"],
            "label": model_text(row, mark_published=False),
            "source": row["source"],
            "x": row["value"],
            "y": y,
            "setting": setting_label(row),
            "front": False,
        }
        panels.setdefault(row["hardware"], []).append(point)
    for points in panels.values():
        measured = [p for p in points if p["source"] == "measured"]
        for i in pareto_front([p["x"] for p in measured], [p["y"] for p in measured]):
            measured[i]["front"] = True
    return panels, acc_label


def _colors(models: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(models) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(sorted(set(models)))}


def _save(fig: Any, out_dir: Path, name: str) -> tuple[Path, Path]:
    paths = []
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(
            buf,
            format=ext,
            dpi=150,
            bbox_inches="tight",
            metadata={"Date": None} if ext == "svg" else {},
        )
        paths.append(write_bytes_atomic(out_dir / f"{name}.{ext}", buf.getvalue()))
    return paths[0], paths[1]


def _plain_log_axis(ax: Any) -> None:
    """Label a log x axis with plain numbers (3, 10, 300) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _scatter_point(ax: Any, p: dict[str, Any], color: Any) -> bool:
    """Draw one point: filled circle when measured, hollow diamond when published.

    Returns whether the point is measured.
    """
    measured = p["source"] == "measured"
    ax.scatter(
        p["x"],
        p["y"],
        s=46 if measured else 40,
        marker="o" if measured else "D",
        facecolors=color if measured else "none",
        edgecolors=color,
        linewidths=1.4,
        zorder=3,
    )
    return measured


def _annotate(ax: Any, x: float, y: float, text: str, italic: bool = False) -> None:
    ax.annotate(
        text,
        (x, y),
        textcoords="offset points",
        xytext=(4, 4),
        fontsize=7,
        style="italic" if italic else "normal",
        color="0.25",
    )


def plot_accuracy_vs_throughput(
    tidy: pd.DataFrame, out_dir: Path, task: str, metric: str, setting: str, label: str
) -> PlotResult:
    """Figure 1 for one accuracy metric: one panel per hardware, Pareto front of measured points."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    name = f"accuracy_vs_throughput_{task}"
    panels, acc_label = throughput_panels(tidy, task, metric, setting)
    title = f"{label} against end-to-end throughput"
    result = PlotResult(name=name, title=title)
    n_points = sum(len(p) for p in panels.values())
    if n_points < 2:
        result.skipped = (
            f"needs {label} and end-to-end throughput for at least two models on the same hardware "
            f"(found {n_points})"
        )
        return result
    hardware = sorted(
        panels, key=lambda h: (not any(p["source"] == "measured" for p in panels[h]), h)
    )
    ncols = min(3, len(hardware))
    nrows = -(-len(hardware) // ncols)
    colors = _colors([p["model"] for ps in panels.values() for p in ps])
    with rc_context(_RC):
        fig = Figure(figsize=(4.6 * ncols, 3.6 * nrows), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax, hw in zip(axes, hardware, strict=False):
            points = panels[hw]
            for p in points:
                measured = _scatter_point(ax, p, colors[p["model"]])
                text = f"{p['label']}\n{p['setting']}" if p["setting"] else p["label"]
                _annotate(ax, p["x"], p["y"], text, italic=not measured)
            front = sorted((p for p in points if p["front"]), key=lambda p: p["x"])
            if len(front) >= 2:
                ax.plot(
                    [p["x"] for p in front],
                    [p["y"] for p in front],
                    linestyle="--",
                    color="0.35",
                    linewidth=1.2,
                    zorder=2,
                )
            _plain_log_axis(ax)
            ax.set_title(hw, fontsize=9)
            ax.set_xlabel("end-to-end images/s (log scale)")
            ax.set_ylabel(f"{label}\n{acc_label}")
            ax.margins(x=0.25, y=0.15)
        for ax in axes[len(hardware) :]:
            ax.set_visible(False)
        handles = [
            Line2D([], [], marker="o", linestyle="", color="0.3", label="measured"),
            Line2D(
                [],
                [],
                marker="D",
                linestyle="",
                markerfacecolor="none",
                color="0.3",
                label="published",
            ),
            Line2D([], [], linestyle="--", color="0.35", label="Pareto front (measured)"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
        result.png, result.svg = _save(fig, out_dir, name)
    result.caption = (
        f"{label} ({acc_label}) against the best end-to-end images/s of each model on each "
        "hardware, over the batch sizes, dtypes and compile modes whose masks stay within "
        f"{MAX_MIOU_DROP:g} mIoU of fp32 (miou_vs_fp32 >= {100 - MAX_MIOU_DROP:g}; unchecked "
        "settings count only when fp32 without compile). Each point is labelled with the setting "
        "it uses (mode · dtype · batch size · compiled). Filled circles: measured; open diamonds: "
        "published (paired with published accuracy, published setting); dashed: Pareto front of "
        "the measured points."
    )
    return result


def plot_miou_by_size(tidy: pd.DataFrame, out_dir: Path) -> PlotResult:
    """Figure 2: grouped bars of mIoU for small, medium and large objects per model."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    name = "miou_by_object_size"
    result = PlotResult(name=name, title="mIoU by object size")
    # every size from the configuration with the best overall mIoU, not each size's best
    tables = {
        m: accuracy_table(tidy, "zeroshot", m, "box", rank_by="miou") for m, _ in SIZE_METRICS
    }
    label = tables["miou_small"][1]
    entries: list[tuple[str, str, list[float]]] = []
    measured_models = sorted(set(tables["miou_small"][0].query("source == 'measured'")["model"]))
    published = tables["miou_small"][0].query("source == 'published'")
    keys = [(m, "measured", "", m) for m in measured_models]
    keys += [
        (r["model"], "published", r["reference"], model_text(r, mark_published=False))
        for r in published.to_dict("records")
    ]
    for model, source, ref, text in keys:
        picked = [_pick(tables[m][0], model, source, ref) for m, _ in SIZE_METRICS]
        found = [v for v in picked if v is not None]
        if len(found) == len(picked):
            entries.append((text, source, found))
    if not entries:
        result.skipped = "needs zero-shot mIoU split by object size (miou_small/medium/large)"
        return result
    with rc_context(_RC):
        fig = Figure(figsize=(max(5.0, 1.1 * len(entries) + 2.0), 3.8), layout="constrained")
        ax = fig.subplots()
        x = np.arange(len(entries))
        width = 0.26
        shades = ("#4C72B0", "#55A868", "#C44E52")
        for j, (_, size) in enumerate(SIZE_METRICS):
            for i, (_, source, values) in enumerate(entries):
                published_bar = source == "published"
                ax.bar(
                    x[i] + (j - 1) * width,
                    values[j],
                    width,
                    color=shades[j],
                    alpha=0.55 if published_bar else 0.95,
                    hatch="///" if published_bar else None,
                    edgecolor="0.25" if published_bar else shades[j],
                    linewidth=0.6,
                    label=size if i == 0 else None,
                )
        ax.set_xticks(x)
        ax.set_xticklabels(
            [f"{m}\n(published)" if s == "published" else m for m, s, _ in entries], fontsize=8
        )
        low = min(min(v) for _, _, v in entries)
        ax.set_ylim(max(0.0, low - 10.0), min(100.0, max(max(v) for _, _, v in entries) + 5.0))
        ax.set_ylabel(f"mIoU (%) · {label}")
        ax.legend(title="object size", frameon=False, ncols=3, loc="upper left")
        result.png, result.svg = _save(fig, out_dir, name)
    result.caption = f"Zero-shot mIoU on {label} per COCO object-size bucket; hatched bars are published numbers."
    return result


def plot_params_vs_accuracy(
    tidy: pd.DataFrame, out_dir: Path, task: str, metric: str, setting: str, label: str
) -> PlotResult:
    """Figure 3 for one accuracy metric: total parameters (log x) against accuracy."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    name = f"params_vs_accuracy_{task}"
    result = PlotResult(name=name, title=f"Parameters against {label}")
    acc, acc_label = accuracy_table(tidy, task, metric, setting)
    params = params_table(tidy)
    points: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for row in acc.to_dict("records"):
        count = _pick(params, row["model"], row["source"], row["reference"])
        key = (row["model"], row["source"])
        if count is None or key in seen:
            continue  # one point per model and source: the first published source listed
        seen.add(key)
        points.append(
            {
                "model": row["model"],
                "label": model_text(row, mark_published=False),
                "source": row["source"],
                "x": count / 1e6,
                "y": row["value"],
            }
        )
    if len(points) < 2:
        result.skipped = (
            f"needs parameter counts and {label} for at least two models (found {len(points)})"
        )
        return result
    colors = _colors([p["model"] for p in points])
    with rc_context(_RC):
        fig = Figure(figsize=(5.6, 3.9), layout="constrained")
        ax = fig.subplots()
        for p in points:
            measured = _scatter_point(ax, p, colors[p["model"]])
            _annotate(ax, p["x"], p["y"], p["label"], italic=not measured)
        _plain_log_axis(ax)
        ax.set_xlabel("total parameters (M, log scale)")
        ax.set_ylabel(f"{label}\n{acc_label}")
        ax.margins(x=0.2, y=0.15)
        ax.legend(
            handles=[
                Line2D([], [], marker="o", linestyle="", color="0.3", label="measured"),
                Line2D(
                    [],
                    [],
                    marker="D",
                    linestyle="",
                    markerfacecolor="none",
                    color="0.3",
                    label="published",
                ),
            ],
            frameon=False,
            loc="lower right",
        )
        result.png, result.svg = _save(fig, out_dir, name)
    result.caption = (
        f"Total parameter count against {label} ({acc_label}); published points pair published "
        "parameter counts with published accuracy."
    )
    return result


def plot_training_curves(curves: Sequence[TrainingCurve], out_dir: Path) -> PlotResult:
    """Training loss against optimizer step, one line per run (log scale when it spans 10x)."""
    name, title = "training_curves", "Training loss"
    if not curves:
        return PlotResult(name=name, title=title, skipped="no training run in the results")
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    colors = _colors([c.results_file for c in curves])
    with rc_context(_RC):
        fig = Figure(figsize=(6.4, 3.6), layout="constrained")
        ax = fig.subplots()
        for c in curves:
            run = Path(c.results_file).parent.name or c.results_file
            label = f"{c.model} ({c.task}, {run})"
            ax.plot(c.steps, c.losses, color=colors[c.results_file], linewidth=1.2, label=label)
        lows = [min(c.losses) for c in curves]
        highs = [max(c.losses) for c in curves]
        if min(lows) > 0 and max(highs) / min(lows) > 10:
            ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=7, loc="upper right")
        png, svg = _save(fig, out_dir, name)
    caption = (
        "The loss each training run logged (results file ``curve``), thinned to at most a few "
        "hundred evenly spaced steps."
    )
    return PlotResult(name=name, title=title, caption=caption, png=png, svg=svg)


def make_plots(
    tidy: pd.DataFrame, out_dir: str | Path, curves: Sequence[TrainingCurve] = ()
) -> list[PlotResult]:
    """Draw every figure the data allows into ``out_dir``; the others come back as skipped."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: list[PlotResult] = []
    if curves:
        results.append(plot_training_curves(curves, out))
    for kind in ("throughput", "params"):
        tries: list[PlotResult] = []
        for task, metric, setting, label in ACCURACY_AXES:
            if not ((tidy["task"] == task) & (tidy["metric"] == metric)).any():
                continue
            fn = plot_accuracy_vs_throughput if kind == "throughput" else plot_params_vs_accuracy
            tries.append(fn(tidy, out, task, metric, setting, label))
        if not tries:
            title = (
                "Accuracy against throughput"
                if kind == "throughput"
                else "Parameters against accuracy"
            )
            tries.append(
                PlotResult(
                    name=f"{kind}_plot",
                    title=title,
                    skipped="no zero-shot mIoU or instance-segmentation AP in the results",
                )
            )
        results.extend(tries)
        if kind == "throughput":
            results.append(plot_miou_by_size(tidy, out))
    return results
