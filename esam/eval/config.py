"""The settings of evaluation runs, one dataclass per run kind (see :mod:`esam.config`).

:class:`EvalRunConfig` holds what every run shares (model, data, output, device, loading);
:class:`ZeroShotConfig` and :class:`InstSegConfig` add their protocol's settings. The
``esam eval`` command line is generated from these classes (field docstrings are its help),
and they load from YAML with ``key=value`` overrides like every esam run. This module imports
nothing heavy, so building the command line stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from esam.data.prompts import (
    PROMPTS,
    click_rule,
    n_clicks,
    validate_prompt_settings,
)
from esam.errors import InputError
from esam.eval.metrics import MASK_CHOICES, SIZE_BUCKET_TEXT, multimask_rule, round_mask_choice
from esam.eval.protocols import (
    DEFAULT_PROTOCOL,
    NO_ERROR_CLICKS,
    SIZE_BUCKET_RULES,
    ProtocolName,
    get_protocol,
    resolve_settings,
)


@dataclass(kw_only=True)
class EvalRunConfig:
    """Model, data, output and execution settings of one evaluation run."""

    model: str
    """Adapter name (``esam eval models`` lists them)."""
    dataset: Literal["coco", "lvis", "sa1b"]
    """``coco`` or ``lvis`` (the annotation file's format is checked against it), or ``sa1b``
    (SA-1B's jpg + json pairs, zeroshot only; docs/data.md)."""
    annotations: str
    """Ground-truth instance annotation json; for sa1b: a folder, tar shards as a
    comma-separated list, or a glob (quoted)."""
    images: str
    """Image folder (for LVIS: COCO's image root or split folder; for sa1b: the same as
    --annotations)."""
    output: str | None = None
    """Results JSON path; per-instance rows go to ``<stem>.rows.jsonl`` beside it."""
    checkpoint: str | None = None
    """Model weights file."""
    limit_images: int | None = None
    """Evaluate the first N images by id."""
    device: str = "cpu"
    """``cpu`` or ``cuda`` (``cuda:<local rank>`` under torchrun)."""
    workers: int | None = None
    """Image-decoding worker processes; unset: chosen from the device and the cores (none on
    a CPU with fewer than 8 cores, where they would compete with the model's threads)."""
    skip_bad_images: bool = False
    """Count and skip missing, corrupt or mis-sized images instead of stopping (they leave the
    evaluated set and the results say how many, by reason)."""
    progress: bool = True
    """Show a progress bar (rank 0 only)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form settings recorded under ``config.extra``."""
    workers_auto: bool = field(default=False, init=False)
    """Whether ``workers`` was chosen automatically (set on construction)."""

    def __post_init__(self) -> None:
        if self.limit_images is not None and self.limit_images < 1:
            raise InputError(f"limit_images must be >= 1, got {self.limit_images}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise InputError(f"unknown device {self.device!r}; choose cpu or cuda")
        if self.output is not None:
            from esam.eval.outputs import rows_path_for
            from esam.utils.io import check_writable_file

            check_writable_file(self.output, "results file")
            check_writable_file(rows_path_for(self.output), "rows file")
        if self.workers is None:
            from esam.data.image_tasks import default_workers

            self.workers = default_workers(self.device)
            self.workers_auto = True
        if self.workers < 0:
            raise InputError(f"workers must be >= 0, got {self.workers}")


#: Instances with a smaller annotation ``area`` are left out of zero-shot runs (counted).
MIN_AREA = 1.0
#: Detections per image evaluated by default.
MAX_DETS = {"coco": 100, "lvis": 300}


@dataclass(kw_only=True)
class ZeroShotConfig(EvalRunConfig):
    """Settings of one zero-shot run; everything that changes the numbers is recorded.

    The prompt-selection rules come from a named :mod:`protocol preset <esam.eval.protocols>`;
    each rule left ``None`` takes the preset's value, and a rule set to a value that differs from
    the preset's is recorded as an override. After construction every rule holds its resolved
    value and :attr:`overrides` the user's departures from the preset.
    """

    prompt: Literal["box", "point1", "point3"] = "box"
    """``box``, ``point1`` or ``point3``."""
    protocol: ProtocolName = DEFAULT_PROTOCOL
    """Protocol preset: the prompt-selection rules of a paper's evaluation (docs/protocols.md)."""
    click: Literal["random", "center", "iterative"] | None = None
    """Click rule for point prompts (default: the preset's)."""
    box_source: Literal["bbox", "mask"] | None = None
    """Box prompts from the annotation's bbox or the tight box of its mask (default: the
    preset's)."""
    clip_boxes: bool | None = None
    """Clip box prompts to the image before the model sees them (default: the preset's)."""
    mask_choice: Literal["score", "single", "oracle", "score-single"] | None = None
    """score: the highest predicted IoU of 3 outputs; single: single-output mode; oracle: the
    best of 3 against the ground truth; score-single: score for one box or click, single for
    several clicks (default: the preset's)."""
    include_crowd: bool | None = None
    """Evaluate iscrowd regions too (default: the preset's)."""
    no_error_click: Literal["pad", "negative-origin"] | None = None
    """Iterative clicks once the mask is exact: padding, or a negative click at (0, 0)
    (default: the preset's)."""
    size_buckets: Literal["coco", "inclusive"] | None = None
    """Size buckets half-open as COCO's, or inclusive (boundary areas count in both buckets)
    (default: the preset's)."""
    seed: int = 0
    """Seed of the random clicks (combined with image and annotation ids)."""
    overrides: dict[str, Any] = field(default_factory=dict, init=False)
    """The rules given explicitly that differ from the preset (set on construction)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.prompt not in PROMPTS:
            raise InputError(f"unknown prompt {self.prompt!r}; choose from {PROMPTS}")
        point = self.prompt != "box"
        chosen: dict[str, Any] = {
            "click": self.click if point else None,
            "no_error_click": self.no_error_click if point else None,
            "box_source": None if point else self.box_source,
            "clip_boxes": None if point else self.clip_boxes,
            "mask_choice": self.mask_choice,
            "include_crowd": self.include_crowd,
            "size_buckets": self.size_buckets,
        }
        resolved, self.overrides = resolve_settings(
            self.protocol, chosen, n_clicks=n_clicks(self.prompt) if point else None
        )
        for key, value in resolved.items():
            setattr(self, key, value)
        if not (point and self.click == "iterative"):
            # only iterative clicks have a no-error click: a value given for other prompts
            # changes nothing, so it is no override (results_config records it as null)
            self.overrides.pop("no_error_click", None)
        validate_prompt_settings(self.prompt, self.click, self.box_source)
        if self.mask_choice not in MASK_CHOICES:
            raise InputError(
                f"unknown mask choice {self.mask_choice!r}; choose from {MASK_CHOICES}"
            )
        if self.no_error_click not in NO_ERROR_CLICKS:
            raise InputError(
                f"unknown no-error click {self.no_error_click!r}; choose from {NO_ERROR_CLICKS}"
            )
        if self.size_buckets not in SIZE_BUCKET_RULES:
            raise InputError(
                f"unknown size-bucket rule {self.size_buckets!r}; choose from {SIZE_BUCKET_RULES}"
            )

    def results_config(self, world_size: int) -> dict[str, Any]:
        """The ``config`` block of the results (settings that do not apply are null)."""
        point = self.prompt != "box"
        iterative = point and self.click == "iterative"
        return {
            "protocol": self.protocol,
            "protocol_overrides": dict(self.overrides),
            "prompt": self.prompt,
            "n_clicks": n_clicks(self.prompt) if point else None,
            "click": self.click if point else None,
            "click_rule": click_rule(
                self.prompt, self.click if point else None, str(self.no_error_click)
            ),
            "no_error_click": self.no_error_click if iterative else None,
            "click_coordinates": "(x, y) = (column, row) index of the clicked pixel"
            if point
            else None,
            "box_source": None if point else self.box_source,
            "clip_boxes": None if point else self.clip_boxes,
            "mask_choice": self.mask_choice,
            "multimask_output": multimask_rule(str(self.mask_choice)),
            "include_crowd": self.include_crowd,
            "min_area": MIN_AREA,
            "size_buckets": self.size_buckets,
            "size_bucket_rule": SIZE_BUCKET_TEXT[str(self.size_buckets)],
            "limit_images": self.limit_images,
            "seed": self.seed,
            "device": self.device,
            "world_size": world_size,
            "workers": self.workers,
            "workers_auto": self.workers_auto,
            "skip_bad_images": self.skip_bad_images,
            "extra": dict(self.extra),
        }


@dataclass(kw_only=True)
class InstSegConfig(EvalRunConfig):
    """Settings of one instance-segmentation-from-boxes run.

    ``mask_choice`` and ``clip_boxes`` come from the :mod:`protocol preset
    <esam.eval.protocols>` unless given; :attr:`overrides` records the departures from it.
    """

    detections: str
    """Detections in COCO results format (json list)."""
    protocol: ProtocolName = DEFAULT_PROTOCOL
    """Protocol preset: the prompt-selection rules of a paper's evaluation (docs/protocols.md)."""
    mask_choice: Literal["score", "single"] | None = None
    """``score`` (highest predicted IoU of the multimask outputs) or ``single``."""
    clip_boxes: bool | None = None
    """Clip detector boxes to the image before the model sees them."""
    max_dets: int | None = None
    """Detection limit (None: 100 for COCO, 300 for LVIS). COCO: COCOeval's maxDets, the N
    highest-scoring detections per image *and category* (as COCO's own evaluation and
    detectron2's apply it; nothing is dropped per image). LVIS: the N highest-scoring per image
    over all categories, kept before the model runs (the rest counted as
    ``detection_over_max_dets``)."""
    save_segm: bool = False
    """Also write the masks as COCO segmentation results (``<stem>.segm.json``)."""
    overrides: dict[str, Any] = field(default_factory=dict, init=False)
    """The settings given explicitly that differ from the preset (set on construction)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dataset == "sa1b":
            raise InputError(
                "instseg needs category labels and detections, which SA-1B has none of; "
                "evaluate sa1b data with esam eval zeroshot"
            )
        if self.dataset not in MAX_DETS:
            raise InputError(f"unknown dataset {self.dataset!r}; choose from {tuple(MAX_DETS)}")
        resolved, self.overrides = resolve_settings(
            self.protocol,
            {"mask_choice": self.mask_choice, "clip_boxes": self.clip_boxes},
            n_clicks=None,
        )
        # a detector box is a prompt of one box, for which score-single is score
        self.mask_choice = round_mask_choice(resolved["mask_choice"], None)  # type: ignore[assignment]
        preset_choice = round_mask_choice(get_protocol(self.protocol).mask_choice, None)
        if self.overrides.get("mask_choice") == preset_choice:
            del self.overrides["mask_choice"]  # score under a score-single preset: no change
        self.clip_boxes = resolved["clip_boxes"]
        if self.mask_choice not in ("score", "single"):
            raise InputError(
                f"mask choice {self.mask_choice!r} is not available for detector boxes; use score or single"
            )
        if self.max_dets is None:
            self.max_dets = MAX_DETS[self.dataset]
        if self.max_dets < 1:
            raise InputError(f"max_dets must be >= 1, got {self.max_dets}")

    def results_config(self, world_size: int) -> dict[str, Any]:
        """The ``config`` block of the results."""
        return {
            "protocol": self.protocol,
            "protocol_overrides": dict(self.overrides),
            "prompt": "detector_box",
            "clip_boxes": self.clip_boxes,
            "detections": str(self.detections),
            "mask_choice": self.mask_choice,
            "multimask_output": multimask_rule(str(self.mask_choice)),
            "iou_type": "segm",
            "evaluator": "pycocotools COCOeval" if self.dataset == "coco" else "lvis LVISEval",
            "max_dets": self.max_dets,
            "limit_images": self.limit_images,
            "device": self.device,
            "world_size": world_size,
            "workers": self.workers,
            "workers_auto": self.workers_auto,
            "skip_bad_images": self.skip_bad_images,
            "extra": dict(self.extra),
        }


#: Proposals per image kept by default (the largest AR budget reported).
MAX_PROPOSALS = 1000


#: Protocol the object-proposal benchmark follows (``config.protocol`` of its results): the
#: Segment Anything paper's zero-shot object proposals (its section 7.3) as far as the paper
#: states it: class-agnostic mask average recall over IoU 0.50:0.05:0.95 at a budget of
#: proposals per image (1000 in the paper), overall, by COCO size bucket and, on LVIS, by category
#: frequency. The generator's settings are not part of the protocol; they are recorded apart.
PROPOSALS_PROTOCOL = "sam"


@dataclass(kw_only=True)
class ProposalsConfig(EvalRunConfig):
    """Settings of one zero-shot object-proposal run (class-agnostic mask average recall).

    ``model`` is ``oracle`` (ground-truth masks), ``box_grid`` (a fixed grid of boxes) or an
    EfficientSAM registry name run through the automatic mask generator; the generator
    settings below have segment-anything's names and defaults.
    """

    max_proposals: int = MAX_PROPOSALS
    """Proposals per image kept, highest score (predicted IoU) first."""
    points_per_side: int = 32
    """Grid points along each side of the image."""
    points_per_batch: int = 64
    """Point prompts decoded in one decoder call."""
    pred_iou_thresh: float = 0.88
    """Minimum predicted IoU of a proposal."""
    stability_score_thresh: float = 0.95
    """Minimum stability score of a proposal."""
    stability_score_offset: float = 1.0
    """Logit offset of the stability score."""
    box_nms_thresh: float = 0.7
    """Box NMS IoU threshold within a crop."""
    crop_n_layers: int = 0
    """Extra crop layers."""
    crop_nms_thresh: float = 0.7
    """Box NMS IoU threshold across crops."""
    crop_overlap_ratio: float = 512 / 1500
    """Overlap of neighbouring crops, as a fraction of the image side."""
    min_mask_region_area: int = 0
    """Remove holes and islands smaller than this (needs OpenCV)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_proposals < 1:
            raise InputError(f"max_proposals must be >= 1, got {self.max_proposals}")
        if self.points_per_side < 1:
            raise InputError(f"points_per_side must be >= 1, got {self.points_per_side}")

    def generator_settings(self) -> dict[str, Any]:
        """Keyword arguments of the automatic mask generator."""
        keys = (
            "points_per_side",
            "points_per_batch",
            "pred_iou_thresh",
            "stability_score_thresh",
            "stability_score_offset",
            "box_nms_thresh",
            "crop_n_layers",
            "crop_nms_thresh",
            "crop_overlap_ratio",
            "min_mask_region_area",
        )
        return {k: getattr(self, k) for k in keys}

    def results_config(self, world_size: int) -> dict[str, Any]:
        """The ``config`` block of the results."""
        return {
            "protocol": PROPOSALS_PROTOCOL,
            "protocol_overrides": {},
            "prompt": "point_grid",
            "iou_type": "segm",
            "evaluator": "pycocotools COCOeval, useCats=0 (class-agnostic)",
            "ranking": "score (predicted IoU), highest first",
            "max_proposals": self.max_proposals,
            "generator": self.generator_settings(),
            "limit_images": self.limit_images,
            "device": self.device,
            "world_size": world_size,
            "workers": self.workers,
            "workers_auto": self.workers_auto,
            "skip_bad_images": self.skip_bad_images,
            "extra": dict(self.extra),
        }
