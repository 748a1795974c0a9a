"""Held-out SA-1B-format data scored during fine-tuning, as the zero-shot benchmark scores it.

:class:`Validation` loads the held-out set once, with the benchmark's loader
(:func:`esam.data.coco.load_annotation_set`: one instance per mask, the same rules and skips),
and each call scores the model on it: per image the encoder runs once; every instance's
prompt comes from :class:`esam.data.gt_prompts.PreparePrompts` under the benchmark's default
protocol (``efficientsam``: annotation boxes clipped to the image, clicks at random inside
the mask seeded per instance); up to 64 prompts go through
:class:`esam.predictor.EfficientSamPredictor` per call; the output of highest predicted IoU is
compared with the mask at the image's own resolution. ``val_box_miou`` of a run's final
validation is therefore what ``esam eval zeroshot --model efficientsam --checkpoint
RUN_DIR/model.pt --dataset sa1b --prompt box`` reports on the same data.

Images are split over the processes (every N-th); the per-instance IoUs are gathered and summed
with ``math.fsum``, so the value does not depend on the number of processes. An image whose
file is missing or cannot be read is counted (by reason, its instances under
``instances_in_skipped_images``) and logged, not raised: a bad file should not end a long run
at its first validation. Nothing here draws from the global random generators.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from esam.data.coco import ImageSpec, load_annotation_set
from esam.data.gt_prompts import PreparePrompts
from esam.data.image_tasks import ImageTaskDataset, LoadedImage
from esam.data.masks import mask_iou
from esam.data.skips import SKIP_IN_SKIPPED_IMAGE
from esam.finetune.config import ValConfig
from esam.predictor import EfficientSamPredictor
from esam.runtime.distributed import DistContext, gather_to_all, shard

log = logging.getLogger(__name__)

#: Prompts decoded in one call (their masks are Qx1xHxW at the image's size).
PROMPTS_PER_CALL = 64
#: The benchmark's default protocol (``esam.eval.protocols``, preset ``efficientsam``).
CLICK, BOX_SOURCE = "random", "bbox"
PROTOCOL = {"click": CLICK, "box_source": BOX_SOURCE, "clip_boxes": True, "mask_choice": "score"}


def metric_name(prompt: str) -> str:
    """The logged name of a prompt's mIoU: ``val_box_miou``, ``val_point1_miou``, ..."""
    return f"val_{prompt}_miou"


@dataclass
class _Scores:
    """One process's IoUs (percent) by prompt and its skip counts."""

    ious: dict[str, list[float]] = field(default_factory=dict)
    skips: dict[str, Counter[str]] = field(default_factory=dict)


class Validation:
    """Scores a model on held-out data; one instance per run, called after chosen epochs.

    Args:
        cfg: the validation settings (``cfg.path`` must be set).
        model: the :class:`esam.EfficientSam` being trained (scored as it is at each call).
        ctx: the process group (images are split over its processes).

    Raises:
        InputError / FileNotFoundError: the data cannot be read as SA-1B-format data, or holds
            no instance to score (raised when the run starts, not at its first validation).
    """

    def __init__(self, cfg: ValConfig, model: Any, ctx: DistContext) -> None:
        if not cfg.path:
            raise ValueError("Validation needs val.path")
        self.cfg = cfg
        self.model = model
        self.ctx = ctx
        self.specs: dict[str, dict[int, ImageSpec]] = {}
        self.load_skips: dict[str, Counter[str]] = {}
        for prompt in cfg.prompts:
            aset = load_annotation_set(
                "sa1b",
                cfg.path,
                cfg.path,
                limit_images=cfg.max_images,
                need_bbox=prompt == "box",
            )
            self.specs[prompt] = {s.image_id: s for s in aset.images if s.instances}
            self.load_skips[prompt] = Counter(aset.skips)
        self.prepare: dict[str, PreparePrompts] = {
            p: PreparePrompts(p, CLICK, BOX_SOURCE, cfg.seed, clip=True) for p in cfg.prompts
        }
        # the images with an instance to score under some prompt, by id; each is read once,
        # whichever prompts score it (their specs share the file)
        image_ids = sorted({i for specs in self.specs.values() for i in specs})
        self.images = ImageTaskDataset(
            [next(s[i] for s in self.specs.values() if i in s) for i in image_ids]
        )
        self.n_instances = {
            p: sum(len(s.instances) for s in v.values()) for p, v in self.specs.items()
        }
        if not any(self.n_instances.values()):
            raise FileNotFoundError(
                f"val.path {cfg.path}: no mask to score (is this SA-1B-format data, jpg + json "
                "pairs or tar shards of them?)"
            )
        #: masks scored and left out by the last call, by prompt
        self.last_scored: dict[str, int] = {}
        self.last_skips: dict[str, dict[str, int]] = {}
        log.info(
            "validation data: %d images, %s",
            len(self.images),
            ", ".join(f"{n} masks for {p}" for p, n in self.n_instances.items()),
        )

    def __call__(self) -> dict[str, float]:
        """mIoU (percent) per prompt on the whole held-out set, as ``val_<prompt>_miou``."""
        prompts = self.cfg.prompts
        mine = _Scores({p: [] for p in prompts}, {p: Counter() for p in prompts})
        predictor = EfficientSamPredictor(self.model)
        for index in shard(range(len(self.images)), self.ctx):
            self._score_image(self.images[index], predictor, mine)
        parts = gather_to_all(mine, self.ctx)
        values: dict[str, float] = {}
        self.last_skips = {}
        for prompt in self.cfg.prompts:
            ious = [v for part in parts for v in part.ious[prompt]]
            skips = Counter(self.load_skips[prompt])
            for part in parts:
                skips.update(part.skips[prompt])
            self.last_skips[prompt] = dict(sorted(skips.items()))
            self.last_scored[prompt] = len(ious)
            values[metric_name(prompt)] = math.fsum(ious) / len(ious) if ious else math.nan
        return values

    def _score_image(
        self, loaded: LoadedImage, predictor: EfficientSamPredictor, out: _Scores
    ) -> None:
        """Add the IoUs of one image's instances under every prompt (or count the image)."""
        image_id = loaded.spec.image_id
        specs = {p: s[image_id] for p, s in self.specs.items() if image_id in s}
        if loaded.error is not None:
            reason, message = loaded.error
            log.warning("validation image id %d: skipped (%s)", image_id, message)
            for prompt, s in specs.items():
                out.skips[prompt][reason] += 1
                out.skips[prompt][SKIP_IN_SKIPPED_IMAGE] += len(s.instances)
            return
        image = loaded.image
        assert image is not None  # a LoadedImage without an error holds its image
        predictor.set_image(image)
        for prompt, s in specs.items():
            payload = self.prepare[prompt](s, image)
            out.skips[prompt].update(payload.skips)
            for start in range(0, len(payload.instances), PROMPTS_PER_CALL):
                part = slice(start, start + PROMPTS_PER_CALL)
                masks, _, _ = predictor.predict_batch(
                    point_coords=None if payload.points is None else payload.points[part],
                    point_labels=None if payload.labels is None else payload.labels[part],
                    boxes=None if payload.boxes is None else payload.boxes[part],
                    multimask_output=True,
                    best_only=True,
                )
                out.ious[prompt].extend(mask_iou(masks[:, 0], payload.gt_masks[part]).tolist())
        predictor.reset_image()
