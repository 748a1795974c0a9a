"""One fine-tuning step: SAM's simulated interaction on a batch of images.

Per image, the encoder runs once; then the K masks' prompts go through the decoder together,
one call per round: round 0 with each mask's first prompt (a jittered box or one point,
multimask output, the best of the outputs supervised), then ``corrective_rounds`` rounds that
each add one click in the previous prediction's error region (single output). Every round's
loss (:func:`esam.finetune.losses.sam_loss_terms`) counts equally; the step's loss is their
mean. The prompts of an image are drawn from a generator seeded per image by the data loader,
so they do not depend on the batch or the process the image lands in.

Every round's decoder activations stay alive until the step's backward pass, so activation
memory grows with images x masks x rounds; with ``recompute_rounds`` each round's decoder and
loss are recomputed during backward instead (``torch.utils.checkpoint``), and only one round's
activations are alive at a time.

EfficientSAM's decoder has no dense (mask) prompt, so unlike SAM the previous round's logits
are not fed back: the clicks carry the interaction (:mod:`esam.finetune.prompting`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from esam.finetune.config import LossConfig, PromptConfig
from esam.finetune.losses import sam_loss_terms
from esam.finetune.prompting import (
    append_points,
    corrective_points,
    first_prompts,
    select_best,
    to_encoder_frame,
)
from esam.train.task_state import KeepsUnreadable

#: SAM's box noise cap is 20 px of its 1024 px input.
REFERENCE_SIDE = 1024


class InteractiveTraining(nn.Module):
    """An EfficientSAM and the simulated interaction that trains it, as one module.

    Its ``forward`` is the whole step (encoder once, every prompt round, the loss), so that
    wrapped in DistributedDataParallel, the wrapper sees the forward it needs to average the
    gradients of every process.

    Args:
        model: the EfficientSAM being trained (``.model``).
        prompts: prompt settings.
        loss: loss settings.
        recompute_rounds: recompute each round's decoder and loss during backward instead of
            keeping their activations (same gradients, less memory, more compute).
    """

    def __init__(
        self,
        model: nn.Module,
        prompts: PromptConfig,
        loss: LossConfig,
        *,
        recompute_rounds: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.prompts = prompts
        self.loss = loss
        self.recompute_rounds = recompute_rounds

    def _round(
        self, embeddings: Tensor, points: Tensor, labels: Tensor, targets: Tensor, multimask: bool
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """One prompt round for BxK queries.

        Returns:
            per-query loss, focal, dice and IoU MSE (each B*K), the logits (BxKxMxTxT) and the
            predicted IoU (BxKxM).
        """
        b, k, t = targets.shape[0], targets.shape[1], targets.shape[-1]
        core: Any = self.model
        side = core.img_size
        points = to_encoder_frame(points, labels, (t, t), (side, side))
        logits, iou = core.predict_masks(embeddings, points, labels, multimask, side, side)
        if logits.shape[-1] != t:
            logits = F.interpolate(
                logits.flatten(0, 2).unsqueeze(1), (t, t), mode="bilinear"
            ).reshape(b, k, -1, t, t)
        terms = sam_loss_terms(
            logits.flatten(0, 1),
            iou.flatten(0, 1),
            targets.flatten(0, 1),
            self.loss.focal_weight,
            self.loss.dice_weight,
            self.loss.iou_weight,
            multimask=multimask,
            per_query=True,
        )
        return (
            terms["per_query"],
            terms["per_query_focal"],
            terms["per_query_dice"],
            terms["per_query_iou_mse"],
            logits,
            iou,
        )

    def forward(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """The mean loss over rounds for a batch of B images with K masks each.

        Batch: ``image`` Bx3xSxS in [0, 1], ``masks`` BxKxTxT bool, ``valid`` BxK bool,
        ``prompt_seed`` B int64.
        """
        images, masks, valid = batch["image"], batch["masks"], batch["valid"]
        b, k, t = masks.shape[0], masks.shape[1], masks.shape[-1]
        core: Any = self.model
        gens = [torch.Generator().manual_seed(int(s)) for s in batch["prompt_seed"].tolist()]
        max_noise = self.prompts.box_noise_max * t / REFERENCE_SIDE
        first = [
            first_prompts(
                masks[i], gens[i], self.prompts.box_prob, self.prompts.box_noise, max_noise
            )
            for i in range(b)
        ]
        points = torch.stack([p for p, _ in first])  # BxKxNx2, frame T
        labels = torch.stack([lab for _, lab in first])
        embeddings = core.get_image_embeddings(images)
        targets = masks.float()
        # each image weighs the same (the mean over its real masks), so the loss of a global
        # batch is the mean of the processes' losses whatever the split
        weights = valid.float() / valid.sum(dim=1, keepdim=True).clamp(min=1)  # BxK
        weights = (weights / b).reshape(-1)
        slots = core.decoder_max_num_input_points
        totals: dict[str, Tensor] = {}
        rounds = 1 + self.prompts.corrective_rounds
        loss = images.new_zeros((), dtype=torch.float32)
        for r in range(rounds):
            args = (embeddings, points, labels, targets, r == 0)
            if self.recompute_rounds and torch.is_grad_enabled():
                out = checkpoint(self._round, *args, use_reentrant=False)
            else:
                out = self._round(*args)
            per_query, focal, dice, iou_mse, logits, iou = out
            loss = loss + (per_query * weights).sum() / rounds
            for name, term in (("focal", focal), ("dice", dice), ("iou_mse", iou_mse)):
                totals[name] = totals.get(name, 0.0) + (term * weights).sum() / rounds
            if r + 1 < rounds:
                with torch.no_grad():
                    best = select_best(logits.flatten(0, 1), iou.flatten(0, 1)) > 0
                    pred = best.reshape(b, k, t, t)
                    clicks = [corrective_points(pred[i], masks[i], gens[i]) for i in range(b)]
                    new_points = torch.stack([c for c, _ in clicks])
                    new_labels = torch.stack([lab for _, lab in clicks])
                    p2, l2 = append_points(
                        points.flatten(0, 1),
                        labels.flatten(0, 1),
                        new_points.flatten(0, 1),
                        new_labels.flatten(0, 1),
                        slots,
                    )
                    points = p2.reshape(b, k, -1, 2)
                    labels = l2.reshape(b, k, -1)
        return loss, dict(totals)


@dataclass
class FinetuneTask(KeepsUnreadable):
    """The engine's task: run the :class:`InteractiveTraining` module on a batch, and count
    the masks the data loader left out and the unreadable images it replaced."""

    unreadable: set[str] = field(default_factory=set)
    skips: Counter[str] = field(default_factory=Counter)

    def training_step(self, model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, dict]:
        self.unreadable.update(batch.get("unreadable", []))
        self.skips.update(batch.get("skips", {}))
        loss, logs = model(batch)
        return loss, logs

    def state_dict(self) -> dict[str, Any]:
        """The names and counts so far (checkpointed, so a resumed run keeps them)."""
        return super().state_dict() | {"skips": dict(self.skips)}

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        """Add the names and counts of saved processes' states."""
        super().load_state_dict(states)
        for state in states:
            self.skips.update(state["skips"])
