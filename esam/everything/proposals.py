"""The automatic mask generator as an object-proposal source.

Answers the proposal-source interface of the zero-shot proposal benchmark
(``esam eval proposals``) structurally, without importing it: ``propose(image, gt_masks)``
returns the generator's masks as compressed COCO RLEs and their predicted IoUs as scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from esam.errors import InputError
from esam.everything.generator import EfficientSamAutomaticMaskGenerator
from esam.modeling.efficient_sam import EfficientSam


class GeneratorProposals:
    """Proposals of :class:`EfficientSamAutomaticMaskGenerator` over one model.

    Args:
        model: the EfficientSAM model, on its device.
        name: recorded in the results.
        settings: generator keyword arguments (``points_per_side`` ...).
        checkpoint: the weights file, recorded.
        weights_note: where the weights come from (e.g. ``standin``), recorded.
    """

    needs_ground_truth = False

    def __init__(
        self,
        model: EfficientSam,
        name: str,
        settings: dict[str, Any],
        checkpoint: str | None = None,
        weights_note: str | None = None,
    ) -> None:
        self.name = name
        self.checkpoint = checkpoint
        self.weights_note = weights_note
        self.settings = dict(settings)
        self.generator = EfficientSamAutomaticMaskGenerator(
            model, output_mode="coco_rle", **self.settings
        )

    def propose(
        self, image: np.ndarray, gt_masks: np.ndarray | None = None
    ) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Masks of ``image`` (compressed RLE, ``counts`` as str) and their predicted IoUs."""
        records = self.generator.generate(image)
        scores = np.asarray([r["predicted_iou"] for r in records], dtype=np.float64)
        return [r["segmentation"] for r in records], scores

    def describe(self) -> dict[str, Any]:
        cfg = getattr(self.generator.model, "config", None)
        return {
            "kind": "efficientsam_automatic_mask_generator",
            "config": cfg.to_dict() if cfg is not None else None,
            "generator": dict(self.settings),
            "score": "predicted IoU",
        }


def build_generator_proposals(
    name: str, checkpoint: str | None, device: str, settings: dict[str, Any]
) -> GeneratorProposals:
    """The generator over the EfficientSAM model that ``esam eval`` knows as ``name``.

    Raises:
        InputError: the adapter of ``name`` is not an EfficientSAM model.
    """
    from esam.adapters import build_adapter

    adapter = build_adapter(name, checkpoint, device)
    model = getattr(adapter, "model", None)
    if not isinstance(model, EfficientSam):
        raise InputError(
            f"model {name!r} cannot segment everything here: proposals come from esam's "
            "generator, which runs EfficientSAM models (or use oracle / box_grid)"
        )
    return GeneratorProposals(
        model, name, settings, checkpoint, getattr(adapter, "weights_note", None)
    )
