"""Declared metrics of every task the report knows.

Each task states its metrics once: their label, whether a higher value is better, how repeated
measurements of the same configuration are combined, and how a value is displayed. Tables,
best-value marks and plots read these declarations instead of guessing.

Tasks that are not declared here still appear in the report: :func:`task_spec` builds a generic
spec for them, and :func:`guess_direction` infers the direction of undeclared metrics from their
names (latency, memory, loss, parameter counts: lower is better; counts: no direction).

Tasks whose results name an evaluation protocol preset (``config.protocol``, see
:mod:`esam.utils.results`) are split into one table per protocol, so numbers taken under
different protocols never share a ranked table.

This module imports nothing beyond the standard library and :mod:`esam.utils.results`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from esam.utils.results import LATER_SETTING_DEFAULTS, PROTOCOL_KEY, PROTOCOL_OVERRIDES_KEY

Direction = Literal["higher", "lower"]
Aggregation = Literal["mean", "max", "min", "latest"]

#: Columns of the tidy frame that may be used to split a task into tables or identify a row.
KEY_COLUMNS = (
    "dataset",
    "setting",
    "protocol",
    "data",
    "hardware",
    "component",
    "model",
    "batch_size",
    "dtype",
    "compile",
)


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a task.

    Attributes:
        name: key in the results file's ``metrics`` (or in each metrics row).
        label: column header.
        direction: ``"higher"`` or ``"lower"`` is better; ``None`` for bookkeeping numbers
            (counts) that are shown but never ranked or marked.
        aggregation: how repeated runs of the same configuration combine into one table cell.
        unit: ``"%"`` for percentages (0-100), otherwise a free-form unit shown in the header.
        display_factor: multiply the stored value by this before display (1e-6 shows counts in M).
        decimals: digits after the decimal point when displayed.
    """

    name: str
    label: str
    direction: Direction | None = "higher"
    aggregation: Aggregation = "mean"
    unit: str = ""
    display_factor: float = 1.0
    decimals: int = 1

    @property
    def higher_is_better(self) -> bool | None:
        """``True``/``False`` for ranked metrics, ``None`` for bookkeeping numbers."""
        if self.direction is None:
            return None
        return self.direction == "higher"

    def header(self) -> str:
        """Column header with the unit and an arrow telling which way is better."""
        arrow = {"higher": " ↑", "lower": " ↓", None: ""}[self.direction]
        unit = f" ({self.unit})" if self.unit and self.unit != "%" else ""
        return f"{self.label}{unit}{arrow}"

    def format(self, value: float | None) -> str:
        """Display form of ``value`` (empty for missing values)."""
        if value is None or value != value:  # NaN check without importing math
            return ""
        scaled = value * self.display_factor
        if self.decimals == 0:
            return f"{scaled:,.0f}"
        return f"{scaled:,.{self.decimals}f}"


@dataclass(frozen=True)
class TaskSpec:
    """A task: its metrics, the primary metric tables sort by, and how tables are laid out.

    Attributes:
        name: value of ``task`` in results files.
        label: section heading.
        description: one sentence shown under the heading.
        metrics: declared metrics in display order.
        primary: metric the leaderboard ranks by.
        setting_keys: keys of the config (or, failing that, of the model block) whose values form
            the ``setting`` column; ``"a|b"`` takes ``a`` when present, else ``b``.
        variant_keys: further config keys that change the numbers; runs that differ in them are
            never combined into one row (their values form the ``variant`` column), while runs
            that differ only in other keys (seed, device, workers) are. Keys derived from others
            (``n_clicks`` and ``click_rule`` from the prompt and click, ``multimask_output`` from
            the mask choice) are left out. The weights are part of every row's identity through
            the tidy ``checkpoint`` column, independently of these keys.
        group_by: tidy columns that split the task into separate tables (one per value).
        row_keys: tidy columns identifying one row within a table (besides ``source``).
        accuracy: whether the primary metric is an accuracy usable on a plot's accuracy axis.
        protocol: whether the task's results name an evaluation protocol preset
            (``config.protocol`` and ``config.protocol_overrides``); the tidy ``protocol`` column
            then holds it (``"unspecified"`` when a file names none) and ``group_by`` should
            include ``"protocol"``.
    """

    name: str
    label: str
    description: str
    metrics: tuple[MetricSpec, ...]
    primary: str
    setting_keys: tuple[str, ...] = ()
    variant_keys: tuple[str, ...] = ()
    group_by: tuple[str, ...] = ("dataset", "setting")
    row_keys: tuple[str, ...] = ("model", "dtype")
    accuracy: bool = False
    protocol: bool = False
    declared: bool = True
    _index: dict[str, MetricSpec] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self._index.update({m.name: m for m in self.metrics})
        if self.primary not in self._index:
            raise ValueError(f"task {self.name!r}: primary metric {self.primary!r} is not declared")

    def metric(self, name: str) -> MetricSpec:
        """The declared spec of ``name``, or a spec guessed from the name for extra metrics."""
        if name in self._index:
            return self._index[name]
        return guess_metric(name)

    def is_declared(self, name: str) -> bool:
        """Whether ``name`` is one of the task's declared metrics."""
        return name in self._index


def _pct(name: str, label: str, direction: Direction = "higher") -> MetricSpec:
    return MetricSpec(name, label, direction=direction, aggregation="mean", unit="%", decimals=1)


def _count(name: str, label: str) -> MetricSpec:
    return MetricSpec(name, label, direction=None, aggregation="max", decimals=0)


ZEROSHOT = TaskSpec(
    name="zeroshot",
    label="Zero-shot promptable segmentation",
    description=(
        "Mean IoU of the predicted mask against each ground-truth instance, prompted by its box "
        "or by clicks; one table per dataset, prompt and evaluation protocol."
    ),
    metrics=(
        _pct("miou", "mIoU"),
        _pct("miou_small", "mIoU small"),
        _pct("miou_medium", "mIoU medium"),
        _pct("miou_large", "mIoU large"),
        _count("n_instances", "instances"),
    ),
    primary="miou",
    setting_keys=("prompt",),
    # every protocol setting esam.eval.zeroshot writes into ``config`` that changes the numbers
    # (the prompt itself is the setting); ``image_size`` when a writer records it
    variant_keys=(
        "click",
        "no_error_click",
        "box_source",
        "clip_boxes",
        "mask_choice",
        "include_crowd",
        "min_area",
        "size_buckets",
        "limit_images",
        "image_size",
    ),
    group_by=("dataset", "setting", "protocol"),
    accuracy=True,
    protocol=True,
)

INSTSEG = TaskSpec(
    name="instseg",
    label="Zero-shot instance segmentation",
    description=(
        "Mask AP (COCO protocol) when each detector box prompts the model; one table per "
        "dataset, box source and evaluation protocol."
    ),
    metrics=(
        _pct("ap", "AP"),
        _pct("ap50", "AP50"),
        _pct("ap75", "AP75"),
        _pct("ap_small", "AP small"),
        _pct("ap_medium", "AP medium"),
        _pct("ap_large", "AP large"),
        _count("n_detections", "detections"),
    ),
    primary="ap",
    setting_keys=("box_source|detections",),
    # the setting names the detector only; the detections file itself (by name), the prompt
    # kind and the evaluation protocol written by esam.eval.instseg are part of the identity
    variant_keys=(
        "prompt",
        "detections",
        "clip_boxes",
        "mask_choice",
        "iou_type",
        "max_dets",
        "limit_images",
    ),
    group_by=("dataset", "setting", "protocol"),
    accuracy=True,
    protocol=True,
)

#: Size buckets and LVIS frequency groups of the proposal metrics (``esam.eval.proposals``).
SIZE_NAMES = ("small", "medium", "large")
FREQUENCY_NAMES = ("frequent", "common", "rare")


def _recall_family(budget: int) -> tuple[MetricSpec, ...]:
    """Mask AR at ``budget`` proposals by object size and by LVIS category frequency."""
    return (
        *(_pct(f"ar_{size}_{budget}", f"AR@{budget} {size}") for size in SIZE_NAMES),
        *(_pct(f"ar_{group}_{budget}", f"AR@{budget} {group}") for group in FREQUENCY_NAMES),
    )


PROPOSALS = TaskSpec(
    name="proposals",
    label="Zero-shot object proposals (segment everything)",
    description=(
        "Class-agnostic mask average recall (IoU 0.50:0.95) of the masks a segment-everything "
        "generator proposes, ranked by predicted IoU, at 1000 and 100 proposals per image; by "
        "object size, and on LVIS by category frequency. One table per dataset and evaluation "
        "protocol."
    ),
    metrics=(
        _pct("ar_1000", "AR@1000"),
        _pct("ar_100", "AR@100"),
        *_recall_family(1000),
        *_recall_family(100),
        _count("n_instances", "instances"),
        _count("n_proposals", "proposals"),
        _count("n_images", "images"),
    ),
    primary="ar_1000",
    # the proposal source is the model; what changes its numbers is how many proposals are
    # kept, the generator's settings (null for the weightless references) and the image subset
    variant_keys=("max_proposals", "generator", "limit_images"),
    group_by=("dataset", "protocol"),
    protocol=True,
)


THROUGHPUT = TaskSpec(
    name="throughput",
    label="Throughput and latency",
    description=(
        "Images per second, latency percentiles and peak memory per component, batch size, "
        "dtype and compile mode; one table per hardware and component."
    ),
    metrics=(
        MetricSpec("images_per_s", "images/s", "higher", "max", decimals=1),
        MetricSpec("latency_p50_ms", "p50 latency", "lower", "min", unit="ms", decimals=2),
        MetricSpec("latency_p90_ms", "p90 latency", "lower", "min", unit="ms", decimals=2),
        MetricSpec("peak_mem_mib", "peak memory", "lower", "max", unit="MiB", decimals=0),
        MetricSpec("miou_vs_fp32", "mIoU vs fp32", "higher", "mean", unit="%", decimals=2),
    ),
    primary="images_per_s",
    setting_keys=("mode",),
    variant_keys=(
        "image_size",
        "prompts_per_image",
        "threads",
        "compile_mode",
        "overrides",
        "retain_freed_memory",
    ),
    group_by=("hardware", "component"),
    row_keys=("model", "setting", "batch_size", "dtype", "compile"),
)

MODEL = TaskSpec(
    name="model",
    label="Model size",
    description="Parameter counts and multiply-accumulates per image, as recorded by the benchmark.",
    metrics=(
        MetricSpec(
            "params_total", "params", "lower", "max", unit="M", display_factor=1e-6, decimals=2
        ),
        MetricSpec(
            "params_image_encoder",
            "image encoder",
            "lower",
            "max",
            unit="M",
            display_factor=1e-6,
            decimals=2,
        ),
        MetricSpec(
            "params_prompt_encoder",
            "prompt encoder",
            "lower",
            "max",
            unit="M",
            display_factor=1e-6,
            decimals=3,
        ),
        MetricSpec(
            "params_mask_decoder",
            "mask decoder",
            "lower",
            "max",
            unit="M",
            display_factor=1e-6,
            decimals=2,
        ),
        MetricSpec("macs", "MACs", "lower", "max", unit="G", display_factor=1e-9, decimals=1),
    ),
    primary="params_total",
    group_by=(),
    row_keys=("model",),
)

IMAGENET = TaskSpec(
    name="imagenet",
    label="ImageNet-1K classification",
    description=(
        "Top-1 and top-5 accuracy of a pretrained backbone on ImageNet-1K val after fine-tuning "
        "or linear probing (the setting says which); one table per dataset and setting."
    ),
    metrics=(
        _pct("top1", "top-1"),
        _pct("top5", "top-5"),
        _count("n_images", "images"),
    ),
    primary="top1",
    setting_keys=("mode",),  # finetune or linprobe
    variant_keys=("img_size", "epochs"),
    accuracy=True,
)


def _ap_family(prefix: str, label: str) -> tuple[MetricSpec, ...]:
    """``<prefix>_mAP`` and its small/medium/large buckets, as mmdetection names them."""
    return (
        _pct(f"{prefix}_mAP", label),
        _pct(f"{prefix}_mAP_s", f"{label} small"),
        _pct(f"{prefix}_mAP_m", f"{label} medium"),
        _pct(f"{prefix}_mAP_l", f"{label} large"),
    )


COCO_MASKRCNN = TaskSpec(
    name="coco-maskrcnn",
    label="COCO detection and instance segmentation (Mask R-CNN)",
    description=(
        "Box and mask AP on COCO val2017 of a Mask R-CNN whose backbone is the pretrained ViT, "
        "trained with the ViTDet recipe; one table per dataset."
    ),
    metrics=(*_ap_family("bbox", "box AP"), *_ap_family("segm", "mask AP")),
    primary="bbox_mAP",
    variant_keys=("schedule", "img_size"),
    accuracy=True,
)

ADE20K_MASK2FORMER = TaskSpec(
    name="ade20k-mask2former",
    label="ADE20K semantic segmentation (Mask2Former)",
    description=(
        "Mean IoU over the 150 classes and pixel accuracy on ADE20K val of a Mask2Former whose "
        "backbone is the pretrained ViT; one table per dataset."
    ),
    metrics=(_pct("mIoU", "mIoU"), _pct("aAcc", "pixel accuracy")),
    primary="mIoU",
    variant_keys=("crop_size", "iters"),
    accuracy=True,
)

PRETRAIN = TaskSpec(
    name="pretrain",
    label="Masked-image pretraining (SAMI / MAE)",
    description=(
        "Reconstruction error of the pretrained student on held-out images, relative to "
        "predicting the teacher's mean feature (lower is better; 1 means nothing was learned), "
        "with the final training loss; the training curves are plotted below."
    ),
    metrics=(
        MetricSpec(
            "eval_mse_ratio", "held-out MSE / mean-feature MSE", "lower", "mean", decimals=3
        ),
        MetricSpec("eval_mse", "held-out MSE", "lower", "mean", decimals=4),
        MetricSpec("eval_mean_feature_mse", "mean-feature MSE", None, "mean", decimals=4),
        MetricSpec("final_loss", "final loss", "lower", "mean", decimals=4),
        _count("steps", "steps"),
        _count("unreadable_images", "unreadable images"),
    ),
    primary="eval_mse_ratio",
    setting_keys=("target",),  # teacher (SAMI) or pixels (MAE)
    group_by=("dataset", "setting"),
)

FINETUNE = TaskSpec(
    name="finetune",
    label="EfficientSAM fine-tuning",
    description=(
        "The last logged training losses of a fine-tuning run (SAM's focal + dice on the best "
        "output, and the IoU-prediction error); its accuracy is in the zero-shot tables, as "
        "model efficientsam with its checkpoint."
    ),
    metrics=(
        MetricSpec("final_loss", "final loss", "lower", "mean", decimals=4),
        MetricSpec("final_dice", "dice", "lower", "mean", decimals=4),
        MetricSpec("final_focal", "focal", "lower", "mean", decimals=4),
        MetricSpec("final_iou_mse", "IoU MSE", "lower", "mean", decimals=4),
        _count("steps", "steps"),
        _count("unreadable_images", "unreadable images"),
    ),
    primary="final_loss",
    group_by=("dataset",),
)

#: Largest drop of ``miou_vs_fp32`` below 100 (percentage points) for which a faster dtype or
#: compile setting still counts as accurate (the rule of ``esam.bench.throughput.best_row``).
MAX_MIOU_DROP = 0.5


def accuracy_ok(miou_vs_fp32: float | None, dtype: str, compiled: bool | None) -> bool:
    """Whether a throughput setting may stand for its model's speed.

    A setting qualifies when its end-to-end masks agree with the fp32 reference within
    :data:`MAX_MIOU_DROP` (``miou_vs_fp32 >= 99.5``). Without an accuracy measurement only the
    reference itself qualifies: fp32 without compile. This is the rule of
    ``esam.bench.throughput.best_row``.
    """
    if miou_vs_fp32 is not None and miou_vs_fp32 == miou_vs_fp32:  # not None, not NaN
        return miou_vs_fp32 >= 100.0 - MAX_MIOU_DROP
    return dtype == "fp32" and not compiled


#: Variant keys added after results files already existed, with the value those files ran
#: with: that value is left out of the variant label, so old and new files of one setting
#: share a row.
VARIANT_DEFAULTS: dict[str, Any] = {**LATER_SETTING_DEFAULTS, "size_buckets": "coco"}
#: Values older files wrote for a variant key, by key, with the value they mean today.
VARIANT_EQUIVALENTS: dict[str, dict[str, Any]] = {
    # zero-shot files once described the (then fixed) COCO buckets in ``size_buckets``
    "size_buckets": {"small < 32^2 <= medium < 96^2 <= large, by annotation area": "coco"},
}
#: Config keys naming the protocol preset and the departures from it: part of every row's
#: identity of a task with ``protocol=True`` through the tidy ``protocol`` column.
PROTOCOL_CONFIG_KEYS: tuple[str, ...] = (PROTOCOL_KEY, PROTOCOL_OVERRIDES_KEY)

#: Declared tasks in the order their sections appear in the report.
TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        ZEROSHOT,
        INSTSEG,
        PROPOSALS,
        THROUGHPUT,
        MODEL,
        IMAGENET,
        COCO_MASKRCNN,
        ADE20K_MASK2FORMER,
        PRETRAIN,
        FINETUNE,
    )
}

_LOWER_PATTERN = re.compile(
    r"(latency|_ms$|(^|_)ms(_|$)|time|seconds|(^|_)s$|mem|mib|gib|bytes|loss|error|(^|_)err"
    r"|params|macs|flops|size)",
    re.IGNORECASE,
)
_COUNT_PATTERN = re.compile(r"^(n|num|count)_|_count$", re.IGNORECASE)


def guess_direction(name: str) -> Direction | None:
    """Direction of an undeclared metric from its name.

    Counts (``n_*``, ``num_*``, ``*_count``) have no direction; names that speak of time,
    latency, memory, loss, error or model size are lower-is-better; everything else
    (accuracy-like scores, throughput) is higher-is-better.
    """
    if _COUNT_PATTERN.search(name):
        return None
    if "per_s" in name.lower() or "throughput" in name.lower() or "fps" in name.lower():
        return "higher"
    if _LOWER_PATTERN.search(name):
        return "lower"
    return "higher"


def guess_metric(name: str) -> MetricSpec:
    """A :class:`MetricSpec` for a metric no task declares."""
    direction = guess_direction(name)
    aggregation: Aggregation = "mean" if direction is not None else "max"
    lowered = name.lower()
    if lowered.startswith("params"):
        return MetricSpec(name, name, direction, "max", unit="M", display_factor=1e-6, decimals=2)
    if lowered.startswith(("macs", "flops")):
        return MetricSpec(name, name, direction, "max", unit="G", display_factor=1e-9, decimals=1)
    if lowered.endswith("_ms"):
        return MetricSpec(name, name[:-3], direction, aggregation, unit="ms", decimals=2)
    return MetricSpec(name, name, direction, aggregation, decimals=3)


def generic_task(name: str, metric_names: list[str]) -> TaskSpec:
    """A spec for a task no module declares: every metric guessed, the first one primary."""
    names = list(dict.fromkeys(metric_names)) or ["value"]
    metrics = tuple(guess_metric(n) for n in names)
    ranked = [m.name for m in metrics if m.direction is not None]
    return TaskSpec(
        name=name,
        label=f"{name} (generic table)",
        description=(
            "Task without a declared metric spec: metric directions are inferred from their names."
        ),
        metrics=metrics,
        primary=ranked[0] if ranked else metrics[0].name,
        declared=False,
    )


def task_spec(name: str, metric_names: list[str] | None = None) -> TaskSpec:
    """The declared spec of ``name``, or a generic spec over ``metric_names``."""
    if name in TASKS:
        return TASKS[name]
    return generic_task(name, metric_names or [])


def metric_direction(task: str, metric: str) -> Direction | None:
    """Direction of ``metric`` within ``task`` (declared, or guessed from the name)."""
    if task in TASKS:
        return TASKS[task].metric(metric).direction
    return guess_direction(metric)
