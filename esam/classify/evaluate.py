"""Evaluation: top-1 / top-5 over a labelled image set, per-image rows, per-class accuracy.

The images are decoded in DataLoader workers and sharded across processes (rank r takes images
r, r + W, ...); every process scores its share and rank 0 merges the rows. The same scoring
serves logits computed from images (fine-tuned classifier) and from cached features (probe).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from esam.classify.data import ClassificationSet
from esam.runtime.distributed import DistContext, gather_to_main, shard
from esam.runtime.precision import autocast

log = logging.getLogger(__name__)


@dataclass
class EvalOutput:
    """Rows of the images scored (rank 0: all ranks'), skip counts, timing."""

    rows: list[dict[str, Any]]
    skips: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    forward_seconds: float = 0.0


def score_rows(
    logits: torch.Tensor, labels: torch.Tensor, indices: list[int], files: tuple[str, ...]
) -> list[dict[str, Any]]:
    """One row per image: ``index``, ``file``, ``label``, ``pred``, ``top5`` (predicted
    classes, best first), ``correct1``, ``correct5``.

    Args:
        logits: BxK.
        labels: B class indices.
        indices: B dataset indices.
        files: the dataset's files (to name each row's image).
    """
    k = min(5, logits.shape[1])
    top = logits.float().topk(k, dim=1).indices.cpu()
    labels = labels.cpu()
    rows = []
    for j, idx in enumerate(indices):
        preds = [int(v) for v in top[j]]
        y = int(labels[j])
        rows.append(
            {
                "index": int(idx),
                "file": files[idx],
                "label": y,
                "pred": preds[0],
                "top5": preds,
                "correct1": preds[0] == y,
                "correct5": y in preds,
            }
        )
    return rows


def summarise(
    rows: list[dict[str, Any]], classes: tuple[str, ...] | list[str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics and per-class accuracy of scored rows; each row gains ``class``,
    ``class_count`` and ``class_top1`` (its class's image count and top-1, percent).

    Returns:
        (metrics ``{top1, top5, n_images, n_classes_evaluated}`` in percent, per-class list
        ``{class, index, n, top1, top5}`` of the classes that have images).
    """
    n = len(rows)
    count: Counter[int] = Counter(r["label"] for r in rows)
    hit1: Counter[int] = Counter(r["label"] for r in rows if r["correct1"])
    hit5: Counter[int] = Counter(r["label"] for r in rows if r["correct5"])
    per_class = [
        {
            "class": classes[c],
            "index": c,
            "n": count[c],
            "top1": 100.0 * hit1[c] / count[c],
            "top5": 100.0 * hit5[c] / count[c],
        }
        for c in sorted(count)
    ]
    by_class = {p["index"]: p for p in per_class}
    for r in rows:
        p = by_class[r["label"]]
        r["class"] = p["class"]
        r["class_count"] = p["n"]
        r["class_top1"] = p["top1"]
    metrics = {
        "top1": 100.0 * sum(hit1.values()) / n if n else None,
        "top5": 100.0 * sum(hit5.values()) / n if n else None,
        "n_images": n,
        "n_classes_evaluated": len(count),
    }
    return metrics, per_class


def eval_loader(
    dataset: ClassificationSet, batch_size: int, workers: int, ctx: DistContext
) -> DataLoader:
    """This process's share of ``dataset`` in order, decoded in ``workers`` processes."""
    part = Subset(dataset, shard(range(len(dataset)), ctx))
    return DataLoader(part, batch_size=batch_size, shuffle=False, num_workers=workers)


@torch.no_grad()
def run_batches(
    fn: Callable[[torch.Tensor], torch.Tensor],
    dataset: ClassificationSet,
    batch_size: int,
    workers: int,
    device: torch.device,
    precision: str,
    ctx: DistContext,
    desc: str = "eval",
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int], dict[str, int], float, float]:
    """Apply ``fn`` (Bx3xSxS -> BxD) to this process's readable images.

    Returns:
        (outputs per batch, labels per batch, dataset indices, skip counts by reason, wall
        seconds, seconds inside ``fn``).
    """
    from tqdm import tqdm

    outs: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    indices: list[int] = []
    skips: Counter[str] = Counter()
    spent = 0.0
    t0 = time.perf_counter()
    loader = eval_loader(dataset, batch_size, workers, ctx)
    for batch in tqdm(loader, desc=desc, disable=not ctx.is_main, leave=False):
        ok = batch["ok"]
        for reason in (
            r for r, good in zip(batch["skip_reason"], ok.tolist(), strict=True) if not good
        ):
            skips[reason] += 1
        if not bool(ok.any()):
            continue
        x = batch["image"][ok].to(device, non_blocking=True)
        t1 = time.perf_counter()
        with autocast(device, precision):
            out = fn(x)
        out = out.float().cpu()
        spent += time.perf_counter() - t1
        outs.append(out)
        labels.append(batch["label"][ok])
        indices.extend(int(i) for i in batch["index"][ok])
    return outs, labels, indices, dict(skips), time.perf_counter() - t0, spent


def evaluate_model(
    model: nn.Module,
    dataset: ClassificationSet,
    batch_size: int,
    workers: int,
    device: torch.device,
    precision: str,
    ctx: DistContext,
) -> EvalOutput:
    """Score ``model`` (images -> logits) on ``dataset``; rank 0 gets every rank's rows."""
    model.eval()
    outs, labels, indices, skips, wall, spent = run_batches(
        model, dataset, batch_size, workers, device, precision, ctx
    )
    rows: list[dict[str, Any]] = []
    if outs:
        rows = score_rows(torch.cat(outs), torch.cat(labels), indices, dataset.images.files)
    return merge(EvalOutput(rows, skips, wall, spent), ctx)


def merge(local: EvalOutput, ctx: DistContext) -> EvalOutput:
    """Every process's rows (sorted by index) and skips on rank 0; the others get theirs."""
    parts = gather_to_main((local.rows, local.skips, local.seconds, local.forward_seconds), ctx)
    if parts is None:
        return local
    rows = sorted((r for p in parts for r in p[0]), key=lambda r: r["index"])
    skips: Counter[str] = Counter()
    for p in parts:
        skips.update(p[1])
    return EvalOutput(rows, dict(skips), max(p[2] for p in parts), max(p[3] for p in parts))
