"""Linear probing on cached features (MAE's probe, one backbone pass per image).

The frozen classifier's pooled, LayerNorm-normalised features (:meth:`ViTClassifier.features`,
evaluation transform: resize + centre crop) are extracted once per split and stored in fp16 in
the cache folder, under a key of everything that changes them (the weights' digest, the image
list and labels, the preprocessing); a later run with the same key reads them back instead of
running the backbone. The probe is ``BatchNorm1d(affine=False)`` then a linear layer, trained
by the shared engine on the cached vectors with SGD + momentum, by default wrapped in LARS
(timm's ``Lars``, trust ratio on the weight matrix only, as MAE's probe).

Difference from MAE's probe, by design: MAE augments every epoch (random resized crop + flip)
and so runs the backbone every epoch; cached features are of the centre crop only.

After training, the BatchNorm (its running statistics, no affine) is folded into the linear
layer, so the probe becomes the classifier's head and ``classifier.pt`` evaluates like a
fine-tuned one (``--mode eval``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from esam.classify.data import ClassificationSet
from esam.classify.evaluate import run_batches
from esam.classify.model import ViTClassifier
from esam.errors import InputError
from esam.runtime.distributed import (
    DistContext,
    broadcast_object,
    gather_to_all,
    run_collectively,
)
from esam.train.config import TrainConfig
from esam.train.param_groups import param_groups
from esam.utils.io import write_bytes_atomic

log = logging.getLogger(__name__)

FEATURES_FORMAT = "esam-features/1"


def weights_digest(module: nn.Module) -> str:
    """sha256 of a module's state dict (names, shapes, dtypes and bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_key(digest: str, dataset: ClassificationSet, settings: dict[str, Any]) -> str:
    """Key of one split's features: weights, images, labels and preprocessing."""
    images = dataset.images
    text = json.dumps(
        {
            "weights": digest,
            "root": str(images.root),
            "files": list(images.files),
            "targets": list(images.targets),
            **settings,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def extract_features(
    model: ViTClassifier,
    dataset: ClassificationSet,
    cache_dir: Path,
    split: str,
    settings: dict[str, Any],
    batch_size: int,
    workers: int,
    device: torch.device,
    precision: str,
    ctx: DistContext,
) -> dict[str, Any]:
    """One split's features, from the cache or extracted and cached.

    Every process extracts its share of the images (as evaluation shards them); rank 0 puts
    the shares in dataset order, so the cache does not depend on the number of processes,
    writes it and hands the whole split to every process. (One process extracting a split of
    ImageNet's size alone would leave the others waiting for longer than a collective's
    timeout.)

    Returns:
        ``{"features": NxC float16, "labels": N int64, "indices": N int64, "skips": {...},
        "key": str, "cached": bool, "seconds": float}`` over the readable images.
    """
    key = cache_key(weights_digest(model), dataset, settings)
    path = cache_dir / f"{split}-{key}.pt"
    dim = model.trunk.embed_dim

    def read() -> dict[str, Any]:
        if not (ctx.is_main and path.is_file()):
            return {}
        log.info("%s features read from %s", split, path)
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(obj, dict) or obj.get("format") != FEATURES_FORMAT:
            raise InputError(f"{path} is not a feature cache of esam eval imagenet")
        return {**obj, "cached": True, "seconds": 0.0}

    def extract() -> dict[str, Any]:
        outs, labels, indices, skips, wall, _ = run_batches(
            model.features, dataset, batch_size, workers, device, precision, ctx, desc=split
        )
        return {
            "features": torch.cat(outs).half() if outs else torch.zeros(0, dim).half(),
            "labels": torch.cat(labels).long() if labels else torch.zeros(0).long(),
            "indices": torch.tensor(indices, dtype=torch.long),
            "skips": skips,
            "seconds": wall,
        }

    model.eval()
    with torch.no_grad():
        cached = run_collectively(read, ctx)
        if ctx.distributed:
            cached = broadcast_object(cached, ctx)
        if cached:
            return cached
        part = run_collectively(extract, ctx)
    parts = gather_to_all(part, ctx)  # every process assembles the split from the shares

    def assemble() -> dict[str, Any]:
        indices = torch.cat([q["indices"] for q in parts])
        order = torch.argsort(indices)
        skips: Counter[str] = Counter()
        for q in parts:
            skips.update(q["skips"])
        obj = {
            "format": FEATURES_FORMAT,
            "key": key,
            "features": torch.cat([q["features"] for q in parts])[order],
            "labels": torch.cat([q["labels"] for q in parts])[order],
            "indices": indices[order],
            "skips": dict(skips),
        }
        if ctx.is_main:
            buf = io.BytesIO()
            torch.save(obj, buf)
            write_bytes_atomic(path, buf.getvalue())
            log.info("%s features (%d x %d, fp16) cached in %s", split, len(indices), dim, path)
        return {
            **obj,
            "cached": False,
            "seconds": max(q["seconds"] for q in parts),
            "encoded_per_process": [len(q["indices"]) for q in parts],
        }

    return run_collectively(assemble, ctx)


class FeatureSet(Dataset[dict[str, torch.Tensor]]):
    """Cached features as training samples: ``{"feature": C float32, "label": int64}``."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.features = features
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: Any) -> dict[str, torch.Tensor]:
        i = key[1] if isinstance(key, tuple) else int(key)
        return {"feature": self.features[i].float(), "label": self.labels[i]}


class Probe(nn.Module):
    """BatchNorm1d without affine (optional) then a linear layer: BxC -> BxK."""

    def __init__(self, dim: int, num_classes: int, batchnorm: bool = True) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6) if batchnorm else nn.Identity()
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01, a=-0.02, b=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(x))

    @torch.no_grad()
    def folded(self) -> nn.Linear:
        """One linear layer equal to this probe in eval mode (BN statistics folded in)."""
        w, b = self.head.weight.clone(), self.head.bias.clone()
        if isinstance(self.bn, nn.BatchNorm1d):
            assert self.bn.running_var is not None and self.bn.running_mean is not None
            inv = torch.rsqrt(self.bn.running_var + self.bn.eps)
            b = b - (w * (self.bn.running_mean * inv)).sum(dim=1)
            w = w * inv
        out = nn.Linear(w.shape[1], w.shape[0])
        out.weight.copy_(w)
        out.bias.copy_(b)
        return out


class ProbeTask:
    """The engine's task: cross-entropy of the probe on a batch of cached features."""

    def training_step(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["feature"])
        loss = nn.functional.cross_entropy(logits, batch["label"])
        acc = (logits.argmax(1) == batch["label"]).float().mean()
        return loss, {"train_top1": 100.0 * float(acc)}


def probe_optimizer(probe: Probe, loop: TrainConfig, lars: bool) -> torch.optim.Optimizer:
    """SGD with momentum over the probe's groups, or timm's LARS (adapting the weight only).

    Weight decay follows ``loop.optim.weight_decay`` (MAE's probe: 0); the bias group is
    never adapted nor decayed.
    """
    from esam.train.optim import build_optimizer

    groups = param_groups(probe, weight_decay=loop.optim.weight_decay)
    if not lars:
        return build_optimizer(groups, loop.optim)
    from esam.utils.deps import require

    timm_optim = require("timm.optim", extra="classify")
    for g in groups:
        g["always_adapt"] = g["wd_scale"] > 0  # the 2-D weight: trust ratio even at wd 0
    return timm_optim.Lars(groups, lr=0.0, momentum=loop.optim.momentum, trust_coeff=0.001)
