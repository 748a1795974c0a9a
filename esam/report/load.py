"""Read results files into one tidy frame: one row per measured number.

Every ``*.json`` below the given folders is parsed and checked with
:func:`esam.utils.results.validate_results`. Files that are not JSON, not esam results, or fail
the schema are not fatal: each becomes a :class:`SkippedFile` naming the path and the reason,
and a warning on stderr. Side files are ignored: per-instance rows (``*.rows.jsonl``,
``*.rows.csv``, ``*.rows.json``), raw segmentations (``*.segm.json``), and any file a results
file names in its ``rows_file`` or ``files`` keys.

Extra keys in a results file are tolerated. Tasks without a declared spec still produce rows;
their metric directions are guessed from the metric names (see :mod:`esam.report.tasks`).

Percentages are read as written: esam writes them on a 0-100 scale. A file that stores them as
fractions must say so with a top-level ``"units": {"percent_metrics": "fraction"}``; only then
are they multiplied by 100. The value is never guessed from the numbers (a genuinely low score
such as 0.3 % AP from placeholder weights must stay 0.3 %).

Each row carries the identity of the weights that produced it (``checkpoint``: the first 8 hex
digits of ``model.checkpoint_sha256``, else the checkpoint's file name, else the kind of
placeholder weights); runs of one model name with different weights are never combined.

Each row also carries the identity of the data it was measured on (``data_id``: dataset name,
annotation file hash, LVIS version, images evaluated and skipped) with a short label for tables
(``data``: ``instances_val2017 · 5,000 images``), the image counts (``n_images`` evaluated,
``n_images_skipped``), and, for tasks with protocol presets, the protocol (``protocol``:
``efficientsam``, ``efficientsam + click=random``, or ``unspecified`` for files that name none).
A run that skipped images says so in its ``note``.

Results are validated with :func:`esam.utils.results.validate_results`, the task's declared
metrics required to be numbers or null; ``NaN`` and ``Infinity``, which Python's ``json`` reads
without complaint, make a file invalid.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pandas as pd

from esam.report.tasks import TASKS, VARIANT_DEFAULTS, VARIANT_EQUIVALENTS, task_spec
from esam.utils.results import (
    IMAGE_SKIP_REASONS,
    PROTOCOL_KEY,
    PROTOCOL_OVERRIDES_KEY,
    UNSPECIFIED_PROTOCOL,
    ResultsSchemaError,
    images_skipped,
    validate_results,
)

#: Column order of the tidy frame.
TIDY_COLUMNS: tuple[str, ...] = (
    "task",
    "model",
    "published_as",
    "dataset",
    "setting",
    "protocol",
    "variant",
    "data",
    "data_id",
    "checkpoint",
    "component",
    "batch_size",
    "compile",
    "n_images",
    "n_images_skipped",
    "metric",
    "value",
    "higher_is_better",
    "source",
    "commit",
    "device",
    "hardware",
    "dtype",
    "date",
    "results_file",
    "reference",
    "note",
)
#: Columns holding integers (nullable).
INT_COLUMNS: tuple[str, ...] = ("batch_size", "n_images", "n_images_skipped")
#: Columns holding text; a missing value is the empty string, never NaN.
STRING_COLUMNS: tuple[str, ...] = tuple(
    c for c in TIDY_COLUMNS if c not in (*INT_COLUMNS, "compile", "value", "higher_is_better")
)

#: Keys of a metrics row (list-valued ``metrics``) that describe the configuration, not a number.
_ROW_CONFIG_KEYS = ("component", "batch_size", "dtype", "compile")
#: The ledger ``esam suite run`` keeps in a results folder (see :func:`load_not_run`).
LEDGER_SUFFIX = ".ledger.json"
#: Side files written beside results files (per-instance rows, raw segmentations, a suite's
#: ledger): never results.
_SIDE_SUFFIXES = (".rows.json", ".rows.jsonl", ".rows.csv", ".segm.json", LEDGER_SUFFIX)
#: Columns of :func:`load_not_run`.
NOT_RUN_COLUMNS = ("run", "task", "model", "dataset", "status", "reason", "ledger")
#: Accepted values of ``units.percent_metrics`` and the factor that brings them to 0-100.
PERCENT_UNITS: dict[str, float] = {"percent": 1.0, "fraction": 100.0}
#: Model-block keys that may say the weights are placeholders (checked in this order).
PLACEHOLDER_KEYS = ("weights", "weights_kind", "checkpoint_note")
#: Prefixes (lower case) of a placeholder-weights value: ``untrained``, ``standin (seed 0)``, ...
PLACEHOLDER_PREFIXES = ("untrained", "standin", "stand-in", "stand_in", "stand in", "random")


@dataclass(frozen=True)
class SkippedFile:
    """A file that could not be used, and why."""

    path: str
    reason: str


@dataclass
class LoadedResults:
    """What :func:`load_results` found."""

    frame: pd.DataFrame
    files: list[str] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    curves: list[TrainingCurve] = field(default_factory=list)


@dataclass(frozen=True)
class TrainingCurve:
    """The loss curve a training run recorded (its results file's ``curve``).

    Attributes:
        task: the run's task (e.g. ``pretrain``).
        model: the run's model name.
        results_file: where it was read.
        steps: optimizer steps, increasing.
        losses: the training loss at each step.
    """

    task: str
    model: str
    results_file: str
    steps: tuple[int, ...]
    losses: tuple[float, ...]


def training_curve(obj: dict[str, Any], path: str) -> TrainingCurve | None:
    """The ``curve`` of a results object (rows of ``step`` and ``loss``), or None without one.

    Rows whose step or loss is not a finite number are left out; a curve needs two points.
    """
    rows = obj.get("curve")
    if not isinstance(rows, list):
        return None
    points = [
        (int(r["step"]), float(r["loss"]))
        for r in rows
        if isinstance(r, dict)
        and _is_number(r.get("step"))
        and _is_number(r.get("loss"))
        and float(r["loss"]) not in (float("inf"), float("-inf"))
    ]
    if len(points) < 2:
        return None
    points.sort()
    return TrainingCurve(
        task=str(obj["task"]),
        model=str(obj["model"].get("name")),
        results_file=path,
        steps=tuple(p[0] for p in points),
        losses=tuple(p[1] for p in points),
    )


def discover(dirs: Iterable[str | Path]) -> list[Path]:
    """Every results candidate (``*.json``, not a rows file) below ``dirs``, sorted, no repeats.

    Raises:
        FileNotFoundError: a folder does not exist.
    """
    found: dict[Path, None] = {}
    for d in dirs:
        root = Path(d)
        if not root.exists():
            raise FileNotFoundError(f"results folder not found: {root}")
        candidates = [root] if root.is_file() else sorted(root.rglob("*.json"))
        for path in candidates:
            if path.name.endswith(_SIDE_SUFFIXES) or path.name.startswith("."):
                continue
            if path.is_file():
                found[path.resolve()] = None
    return sorted(found)


def load_not_run(dirs: Iterable[str | Path]) -> pd.DataFrame:
    """The runs a benchmark suite did not run, from the ``not_run`` lists of its ledgers.

    ``esam suite run`` writes ``<suite>.ledger.json`` into its results folder; each entry of its
    ``not_run`` list names the run, task, model, dataset, status (``not run`` or ``failed``)
    and the reason. Unreadable ledgers are ignored. Columns: :data:`NOT_RUN_COLUMNS`.
    """
    rows: list[dict[str, Any]] = []
    for d in dirs:
        root = Path(d)
        ledgers = [root] if root.is_file() else sorted(root.rglob("*" + LEDGER_SUFFIX))
        for path in ledgers:
            if not path.name.endswith(LEDGER_SUFFIX):
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            entries = data.get("not_run") if isinstance(data, dict) else None
            for e in entries if isinstance(entries, list) else []:
                if isinstance(e, dict):
                    row = {k: _text(e.get(k)) for k in NOT_RUN_COLUMNS[:-1]}
                    rows.append({**row, "ledger": display_path(path)})
    return pd.DataFrame(rows, columns=list(NOT_RUN_COLUMNS))


def display_path(path: Path) -> str:
    """``path`` relative to the working folder when it lies below it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def empty_frame() -> pd.DataFrame:
    """A tidy frame with no rows and the right column types."""
    return normalise_frame(pd.DataFrame({c: [] for c in TIDY_COLUMNS}))


def normalise_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Give ``df`` the tidy column order and types (missing text as ``""``)."""
    df = df.copy()
    for col in TIDY_COLUMNS:
        if col not in df.columns:
            df[col] = None
    df = df[list(TIDY_COLUMNS)]
    for col in STRING_COLUMNS:
        df[col] = df[col].map(_text).astype(object)
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype("float64")
    for col in INT_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    df["compile"] = df["compile"].map(_maybe_bool).astype("boolean")
    df["higher_is_better"] = df["higher_is_better"].map(_maybe_bool).astype("boolean")
    return df.reset_index(drop=True)


def _text(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v) or v is pd.NA:
        return ""
    return str(v)


def _maybe_bool(v: Any) -> bool | None:
    if v is None or v is pd.NA or (isinstance(v, float) and v != v) or v == "":
        return None
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return bool(v)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def _flatten_numbers(obj: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """``(dotted_name, value)`` for every number in a (nested) dict; other values are ignored."""
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if _is_number(value):
            yield name, float(value)
        elif isinstance(value, dict):
            yield from _flatten_numbers(value, prefix=f"{name}.")


def _short_commit(commit: Any) -> str:
    if not commit:
        return ""
    text = str(commit)
    dirty = text.endswith("-dirty")
    sha = text[: -len("-dirty")] if dirty else text
    return sha[:7] + ("-dirty" if dirty else "")


def hardware_label(meta: dict[str, Any]) -> str:
    """Human name of the machine a run used: the GPU for CUDA runs, else the CPU model with
    its cores and the threads torch used (the same CPU model with 2 or 32 cores is another
    machine for a throughput)."""
    hw: dict[str, Any] = meta["hardware"] if isinstance(meta.get("hardware"), dict) else {}
    device = str(meta.get("device") or "")
    gpu = hw.get("gpu_name") if hw else None
    cpu = hw.get("cpu_model") if hw else None
    if gpu and not device.startswith("cpu"):
        return str(gpu)
    if cpu:
        detail = [
            f"{hw[key]} {unit}"
            for key, unit in (("cpu_cores", "cores"), ("torch_threads", "threads"))
            if hw.get(key)
        ]
        return f"{cpu} ({', '.join(detail)})" if detail else str(cpu)
    return device or "unknown"


#: Detectors recognised in the name of a detections file (``coco_vitdet.json`` -> ``vitdet``).
KNOWN_DETECTORS = ("vitdet", "yolov8", "groundingdino", "grounding_dino", "detr", "maskrcnn")


def _setting_value(key: str, value: Any) -> str:
    """Display form of one setting value; a detections file becomes its detector's name."""
    text = str(value)
    if key == "detections":
        stem = Path(text).name.split(".")[0].lower()
        return next((d for d in KNOWN_DETECTORS if d in stem), stem)
    return text


def _setting(task: str, config: dict[str, Any], model: dict[str, Any]) -> str:
    """The ``setting`` text: the first present of the task's setting keys in each group.

    Keys are looked up in the config, then in the model block. For instance segmentation the
    box source is ``box_source`` when given, else the detector named by the detections file.
    """
    spec = TASKS.get(task)
    keys = spec.setting_keys if spec else ("prompt", "setting")
    parts = []
    for group in keys:
        for key in group.split("|"):
            value = config.get(key, model.get(key))
            if value not in (None, ""):
                parts.append(_setting_value(key, value))
                break
    return " / ".join(parts)


def _variant_value(key: str, value: Any) -> str:
    """Text of one variant value: sorted JSON for dicts and lists, a file's name for paths."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if key == "detections":
        return Path(str(value)).name  # the same file at another path is the same protocol
    return str(value)


def _variant(task: str, config: dict[str, Any]) -> str:
    """``key=value`` pairs of the task's variant keys present in the config.

    Absent and empty values are left out, and so is a key's value in
    :data:`~esam.report.tasks.VARIANT_DEFAULTS` (the setting of files written before the key
    existed). Values older files wrote for the same setting are first mapped to today's
    (:data:`~esam.report.tasks.VARIANT_EQUIVALENTS`).
    """
    spec = TASKS.get(task)
    parts = []
    for key in spec.variant_keys if spec else ():
        value = config.get(key)
        if isinstance(value, str):
            value = VARIANT_EQUIVALENTS.get(key, {}).get(value, value)
        if value in (None, "", {}, []) or (
            key in VARIANT_DEFAULTS and value == VARIANT_DEFAULTS[key]
        ):
            continue
        parts.append(f"{key}={_variant_value(key, value)}")
    return ", ".join(parts)


def percent_scale(obj: dict[str, Any]) -> float:
    """Factor bringing the file's percentage metrics to 0-100: 100 only for declared fractions.

    Reads ``units.percent_metrics`` (``"percent"``, the default, or ``"fraction"``). Nothing is
    inferred from the values themselves.

    Raises:
        ResultsSchemaError: ``units`` is not an object or declares an unknown unit.
    """
    units = obj.get("units")
    if units is None:
        return 1.0
    if not isinstance(units, dict):
        raise ResultsSchemaError(f"'units' must be an object, got {type(units).__name__}")
    unit = units.get("percent_metrics", "percent")
    if not isinstance(unit, str) or unit.strip().lower() not in PERCENT_UNITS:
        choices = " or ".join(repr(u) for u in PERCENT_UNITS)
        raise ResultsSchemaError(f"units.percent_metrics must be {choices}, got {unit!r}")
    return PERCENT_UNITS[unit.strip().lower()]


def placeholder_weights(model: dict[str, Any]) -> str | None:
    """The placeholder-weights value of a model block (lower case), or ``None`` for real weights.

    ``model.weights``, ``model.weights_kind`` and ``model.checkpoint_note`` are read in that
    order; a value counts when it starts with ``untrained``, ``standin``, ``stand-in`` or
    ``random``, in any case (``"Standin (seed 0)"``, ``"random init"``).
    """
    for key in PLACEHOLDER_KEYS:
        value = model.get(key)
        if not isinstance(value, str):
            continue
        text = value.strip().lower()
        if text.startswith(PLACEHOLDER_PREFIXES):
            return text
    return None


def checkpoint_id(model: dict[str, Any]) -> str:
    """Short identity of the weights a run used, for telling runs of one model name apart.

    The first 8 hex digits of ``model.checkpoint_sha256``; without a hash, the checkpoint's file
    name; without a checkpoint, ``"untrained"`` (or ``"standin"``) for placeholder weights,
    followed by `` on <8 hex digits>`` of ``model.backbone_sha256`` when the run names a
    backbone, else ``""`` (nothing recorded, e.g. a baseline that needs no weights).
    """
    sha = model.get("checkpoint_sha256")
    if isinstance(sha, str) and sha.strip():
        return sha.strip().lower()[:8]
    ckpt = model.get("checkpoint")
    if isinstance(ckpt, str) and ckpt.strip():
        return Path(ckpt.strip()).name
    kind = placeholder_weights(model)
    if kind is None:
        return ""
    label = "standin" if kind.startswith("stand") else "untrained"
    # heads left untrained on a given backbone (a downstream smoke run): the backbone tells
    # two such runs apart
    backbone = model.get("backbone_sha256")
    if isinstance(backbone, str) and backbone.strip():
        return f"{label} on {backbone.strip().lower()[:8]}"
    return label


def protocol_label(config: dict[str, Any]) -> str:
    """The protocol of a run: its preset, with each setting changed from it.

    ``config.protocol`` (``"unspecified"`` when absent) followed by ``+ key=value`` for every
    entry of ``config.protocol_overrides``, sorted by key: ``efficientsam + click=random``.
    Non-text values are written as JSON (``true``, ``3``, ``{"a": 1}``).
    """
    name = config.get(PROTOCOL_KEY)
    parts = [str(name).strip() if name else UNSPECIFIED_PROTOCOL]
    overrides = config.get(PROTOCOL_OVERRIDES_KEY)
    for key, value in sorted((overrides or {}).items()):
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        parts.append(f"{key}={text}")
    return " + ".join(parts)


@dataclass(frozen=True)
class DataFacts:
    """What a results file says about the data it was measured on.

    Attributes:
        key: identity of the data (``data_id``): runs are combined only when it is equal.
        label: short text for tables (``instances_val2017 · 5,000 images``).
        n_images: images evaluated (``dataset.n_images``), ``None`` when not recorded.
        n_skipped: images skipped (see :func:`esam.utils.results.images_skipped`).
        reasons: image-level skip reasons with their counts (non-zero only).
    """

    key: str = ""
    label: str = ""
    n_images: int | None = None
    n_skipped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def _count(value: Any) -> int | None:
    return int(value) if _is_number(value) and not isinstance(value, float) else None


def _annotation_identity(dataset: dict[str, Any]) -> str:
    """``sha256:<hex>`` of the annotation file, else ``file:<name>``, else ``""``."""
    sha = dataset.get("annotations_sha256")
    if isinstance(sha, str) and sha.strip():
        return f"sha256:{sha.strip().lower()}"
    ann = dataset.get("annotations")
    if isinstance(ann, str) and ann.strip():
        return f"file:{Path(ann.strip()).name}"
    return ""


def data_facts(dataset: dict[str, Any] | None, skips: Any) -> DataFacts:
    """The data identity, label and image counts of a results file's ``dataset`` and ``skips``.

    The identity joins the dataset name, the annotation file (its SHA-256, else its file name),
    the LVIS version, the images evaluated and the images skipped: runs on different files,
    subsets, or LVIS versions never share it. The label names the annotation file (without
    ``.json``), the LVIS version when the file name does not show it, and the image counts.
    """
    dataset = dataset or {}
    name = dataset.get("name")
    annotations = _annotation_identity(dataset)
    lvis = dataset.get("lvis_version")
    n_images = _count(dataset.get("n_images"))
    n_skipped = images_skipped(dataset, skips)
    parts = {
        "name": name,
        "annotations": annotations,
        "lvis": lvis,
        "images": n_images,
        "skipped": n_skipped or None,
    }
    key = "|".join(f"{k}={v}" for k, v in parts.items() if v not in (None, ""))
    label: list[str] = []
    ann = dataset.get("annotations")
    stem = Path(ann.strip()).name.removesuffix(".json") if isinstance(ann, str) else ""
    if stem:
        label.append(stem)
    if isinstance(lvis, str) and lvis and lvis not in stem:
        label.append(f"LVIS {lvis}")
    if n_images is not None:
        label.append(f"{n_images:,} images")
    if n_skipped:
        label.append(f"{n_skipped:,} skipped")
    reasons: dict[str, int] = {}
    if isinstance(skips, dict):
        reasons = {r: int(skips[r]) for r in IMAGE_SKIP_REASONS if (_count(skips.get(r)) or 0) > 0}
    return DataFacts(key, " · ".join(label), n_images, n_skipped, reasons)


def data_sha(key: str) -> str:
    """The first 8 hex digits of the annotation hash in a ``data_id``, or ``""``."""
    for part in key.split("|"):
        if part.startswith("annotations=sha256:"):
            return part.removeprefix("annotations=sha256:")[:8]
    return ""


def skipped_share(n_images: int | None, n_skipped: int | None) -> float | None:
    """Share of a run's images it skipped: skipped / (evaluated + skipped).

    0.0 when nothing was skipped; ``None`` when images were skipped but the number evaluated
    is not recorded (the share is unknown).
    """
    if not n_skipped:
        return 0.0
    if n_images is None:
        return None
    return n_skipped / (n_images + n_skipped)


def skip_note(facts: DataFacts) -> str:
    """The caveat of a run with image-level skips (empty when it skipped none).

    ``skipped 3 of 503 images (0.6%): image_missing 2, image_corrupt 1``.
    """
    if not facts.n_skipped:
        return ""
    share = skipped_share(facts.n_images, facts.n_skipped)
    if share is None or facts.n_images is None:
        text = f"skipped {facts.n_skipped:,} images (images evaluated not recorded)"
    else:
        total = facts.n_images + facts.n_skipped
        text = f"skipped {facts.n_skipped:,} of {total:,} images ({share:.1%})"
    if facts.reasons:
        text += ": " + ", ".join(f"{r} {n:,}" for r, n in facts.reasons.items())
    return text


def _run_notes(obj: dict[str, Any]) -> list[str]:
    """Caveats of a whole run shown beside its numbers: partial sweeps, placeholder weights."""
    notes = []
    if obj.get("complete") is False:
        notes.append("incomplete run (complete = false)")
    weights = placeholder_weights(obj["model"])
    if weights is not None:
        notes.append(f"{weights} weights: accuracy is not meaningful")
    trained = obj["model"].get("weights")
    if isinstance(trained, str) and "synthetic" in trained.lower():
        notes.append(f"{trained.strip()}: not comparable with models trained on real data")
    return notes


def results_to_rows(obj: dict[str, Any], path: str) -> list[dict[str, Any]]:
    """Tidy rows of one validated results object.

    Flat ``metrics`` give one row per number (nested dicts are flattened with dotted names).
    List-valued ``metrics`` (benchmark sweeps) give one row per number per list entry, with the
    entry's ``component``/``batch_size``/``dtype``/``compile`` as configuration columns. A task
    with a declared spec contributes only its declared metrics (other numbers in its metrics,
    such as warm-up counts, are configuration); an undeclared task contributes every number. The
    model's ``params`` and ``macs`` become rows of the ``model`` task. Percentages of a file that
    declares ``units.percent_metrics = "fraction"`` are scaled to 0-100 and the row's ``note``
    says so; without that declaration values are taken as written.

    Raises:
        ResultsSchemaError: the file declares an unknown percentage unit.
    """
    task = str(obj["task"])
    model = obj["model"]
    meta = obj["meta"]
    config = obj["config"]
    dataset = obj.get("dataset") if isinstance(obj.get("dataset"), dict) else {}
    facts = data_facts(dataset, obj.get("skips"))
    run_notes = _run_notes(obj)
    spec = task_spec(task)
    base: dict[str, Any] = {
        "task": task,
        "model": str(model.get("name")),
        "dataset": (dataset or {}).get("name") or config.get("dataset") or "",
        "setting": _setting(task, config, model),
        "protocol": protocol_label(config) if spec.protocol else "",
        "variant": _variant(task, config),
        "data": facts.label,
        "data_id": facts.key,
        "n_images": facts.n_images,
        "n_images_skipped": facts.n_skipped if facts.key else None,
        "checkpoint": checkpoint_id(model),
        "source": "measured",
        "commit": _short_commit(meta.get("git_commit")),
        "device": meta.get("device") or "",
        "hardware": hardware_label(meta),
        "dtype": meta.get("dtype") or config.get("dtype") or "",
        "date": meta.get("start_time") or meta.get("end_time") or "",
        "results_file": path,
        "reference": "",
        "note": "; ".join(n for n in (*run_notes, skip_note(facts)) if n),
    }
    scale = percent_scale(obj)
    rows: list[dict[str, Any]] = []

    def add(extra: dict[str, Any], numbers: list[tuple[str, float]]) -> None:
        for name, value in numbers:
            if spec.declared and not spec.is_declared(name):
                continue  # bookkeeping numbers of a declared task (warm-up counts, ...)
            mspec = spec.metric(name)
            scaled = scale != 1.0 and spec.is_declared(name) and mspec.unit == "%"
            row = dict(base, **extra)
            row.update(
                metric=name,
                value=value * scale if scaled else value,
                higher_is_better=mspec.higher_is_better,
            )
            if scaled:
                note = "stored as a fraction; shown in percent"
                row["note"] = f"{row['note']}; {note}" if row["note"] else note
            rows.append(row)

    metrics = obj["metrics"]
    if isinstance(metrics, dict):
        add({}, list(_flatten_numbers(metrics)))
    else:
        entries = [e for e in metrics if isinstance(e, dict)]
        for entry in entries:
            extra = {k: entry.get(k) for k in _ROW_CONFIG_KEYS if k in entry}
            if "dtype" in extra and not extra["dtype"]:
                extra.pop("dtype")
            numbers = [(k, v) for k, v in _flatten_numbers(entry) if k not in _ROW_CONFIG_KEYS]
            if task != "throughput":
                # text fields of a sweep entry describe its configuration: extend the setting
                label = ", ".join(
                    f"{k}={v}"
                    for k, v in entry.items()
                    if k not in _ROW_CONFIG_KEYS and isinstance(v, str) and v
                )
                if label:
                    extra["setting"] = " / ".join(p for p in (base["setting"], label) if p)
            add(extra, numbers)

    if task not in TRAINED_MODEL_TASKS:
        rows.extend(_model_rows(model, dict(base, note="; ".join(run_notes)), config))
    return rows


#: Tasks whose ``model.params`` count what the run trained (a classifier with its head, SAMI's
#: decoder, a detector or segmenter around the backbone), not the model its name denotes: they
#: give no row of the model-size table.
TRAINED_MODEL_TASKS = frozenset(
    {"imagenet", "pretrain", "finetune", "coco-maskrcnn", "ade20k-mask2former"}
)


def _model_rows(
    model: dict[str, Any], base: dict[str, Any], config: dict[str, Any]
) -> list[dict[str, Any]]:
    """Rows of the ``model`` task from ``model.params`` and ``model.macs``.

    Their variant is the architecture overrides the run measured under (``config.overrides``,
    such as a smaller encoder for a quick sweep) and a prompt count other than one per image
    (the decoder's multiply-accumulates grow with it), so a shrunken model never stands in a
    row with the full one, nor a 10-prompt count of MACs with a 1-prompt one.
    """
    parts = []
    overrides = config.get("overrides")
    if overrides:
        parts.append(f"overrides={_variant_value('overrides', overrides)}")
    prompts = config.get("prompts_per_image")
    if prompts not in (None, 1):
        parts.append(f"prompts_per_image={prompts}")
    variant = ", ".join(parts)
    numbers: list[tuple[str, float]] = []
    params = model.get("params")
    if _is_number(params):
        numbers.append(("params_total", float(cast(float, params))))
    elif isinstance(params, dict):
        numbers.extend((f"params_{k}", v) for k, v in _flatten_numbers(params))
    macs = model.get("macs")
    if _is_number(macs):
        numbers.append(("macs", float(cast(float, macs))))
    elif isinstance(macs, dict):
        for key, value in _flatten_numbers(macs):
            numbers.append(("macs" if key in ("total", "end_to_end") else f"macs_{key}", value))
    spec = TASKS["model"]
    return [
        dict(
            base,
            task="model",
            dataset="",
            setting="",
            protocol="",
            variant=variant,
            data="",  # parameter counts do not depend on the data either
            data_id="",
            n_images=None,
            n_images_skipped=None,
            checkpoint="",  # parameter counts do not depend on the weights' values
            dtype="",
            metric=name,
            value=value,
            higher_is_better=spec.metric(name).higher_is_better,
        )
        for name, value in numbers
    ]


def declared_metrics(task: Any) -> tuple[str, ...]:
    """Names of the declared metrics of ``task`` (none for undeclared tasks)."""
    spec = TASKS.get(task) if isinstance(task, str) else None
    return tuple(m.name for m in spec.metrics) if spec else ()


def read_results_file(path: Path) -> dict[str, Any]:
    """Parse and validate one results file.

    Raises:
        ResultsSchemaError: not JSON, not an esam results object, or a schema violation; the
            message names the reason (the caller adds the path).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsSchemaError(f"unreadable: {e}") from e
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ResultsSchemaError(
            f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from e
    if not isinstance(obj, dict) or "schema" not in obj:
        kind = type(obj).__name__ if not isinstance(obj, dict) else "object without a 'schema' key"
        raise ResultsSchemaError(f"not an esam results file (JSON {kind})")
    try:
        return validate_results(obj, source="results", numeric=declared_metrics(obj.get("task")))
    except ResultsSchemaError as e:
        raise ResultsSchemaError(f"schema check failed: {str(e).removeprefix('results: ')}") from e


def _side_file_names(obj: dict[str, Any]) -> list[str]:
    """Names of the side files a results object declares (``rows_file``, ``files``)."""
    names = [obj.get("rows_file")]
    files = obj.get("files")
    if isinstance(files, dict):
        names += list(files.values())
    return [Path(n).name for n in names if isinstance(n, str) and n]


def load_results(dirs: Iterable[str | Path], warn: bool = True) -> LoadedResults:
    """Read every results file below ``dirs`` into a tidy frame.

    Args:
        dirs: folders (searched recursively) or single files.
        warn: print a warning on stderr for each skipped file.
    """
    rows: list[dict[str, Any]] = []
    loaded = LoadedResults(frame=empty_frame())
    failed: list[tuple[Path, str]] = []
    side_files: set[Path] = set()
    for path in discover(dirs):
        display = display_path(path)
        try:
            obj = read_results_file(path)
            file_rows = results_to_rows(obj, display)
        except ResultsSchemaError as e:
            failed.append((path, str(e)))
            continue
        side_files.update(path.parent / name for name in _side_file_names(obj))
        loaded.files.append(display)
        rows.extend(file_rows)
        curve = training_curve(obj, display)
        if curve is not None:
            loaded.curves.append(curve)
    for path, reason in failed:
        if path in side_files:
            continue  # a file a results file names as its own side output
        display = display_path(path)
        loaded.skipped.append(SkippedFile(display, reason))
        if warn:
            print(f"esam report: warning: skipped {display}: {reason}", file=sys.stderr)
    if rows:
        loaded.frame = normalise_frame(pd.DataFrame(rows))
    return loaded


def write_tidy_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write the tidy frame as CSV (atomically)."""
    from esam.utils.io import write_text_atomic

    return write_text_atomic(path, normalise_frame(df).to_csv(index=False))


def read_tidy_csv(path: str | Path) -> pd.DataFrame:
    """Read a CSV written by :func:`write_tidy_csv` back into an identical frame."""
    numeric = ("value", *INT_COLUMNS, "compile", "higher_is_better")
    df = pd.read_csv(
        path,
        dtype={c: str for c in STRING_COLUMNS},
        keep_default_na=False,
        na_values={c: [""] for c in numeric},
    )
    return normalise_frame(df)
