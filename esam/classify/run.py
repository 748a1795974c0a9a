"""One ``esam eval imagenet`` run: fine-tune, linear probe or evaluate, then write the results.

:func:`run_classify` wires a :class:`~esam.classify.config.ClassifyConfig` to the shared
training engine (one process, or one per GPU under ``torchrun``) and, on rank 0, writes into
the run folder (``cfg.output``):

* ``config.yaml``, ``log.jsonl``, ``checkpoints/`` (the engine's; mode eval writes only the
  config);
* ``classifier.pt``: the trained classifier (a probe's BatchNorm folded into its head), which
  ``--mode eval model.checkpoint=RUN_DIR/classifier.pt`` evaluates again;
* ``results.json`` (task ``imagenet``: metrics top1 / top5 / n_images, the backbone's sha256
  and origin, every setting, per-class accuracy) and ``results.rows.jsonl`` (one row per val
  image: label, top-5 predictions, its class's count and accuracy).

Mixup / CutMix mix a process's own batch (timm's batch mode), so several processes are
equivalent to one process only with mixup and cutmix off; everything else (sample order,
augmentation, gradients) is shared as the engine documents.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from esam.classify.config import ClassifyConfig
from esam.classify.data import (
    ClassificationSet,
    LabeledImages,
    eval_transform,
    train_images,
    train_transform,
    val_images,
)
from esam.classify.evaluate import EvalOutput, evaluate_model, merge, score_rows, summarise
from esam.classify.model import ViTClassifier, build_classifier, load_classifier, save_classifier
from esam.config import CONFIG_FILENAME, config_to_dict, save_config
from esam.errors import InputError
from esam.runtime.distributed import (
    DistContext,
    broadcast_object,
    check_device,
    device_for,
    finish,
    gather_to_main,
    init_distributed,
    setup_logging,
    shard,
)
from esam.runtime.seeding import derive_seed, seed_everything
from esam.train import Trainer, build_optimization, make_train_loader, steps_per_epoch
from esam.train.metrics import LOG_FILENAME, loss_curve, read_log
from esam.train.schedules import ParamScheduler, build_schedules, peak_lr
from esam.train.task_state import KeepsUnreadable
from esam.utils.io import sha256_file, write_json_atomic, write_text_atomic
from esam.utils.meta import run_metadata, utc_now
from esam.utils.results import make_results

log = logging.getLogger(__name__)

TASK = "imagenet"
RESULTS_FILENAME = "results.json"
ROWS_FILENAME = "results.rows.jsonl"
CLASSIFIER_FILENAME = "classifier.pt"
FEATURES_DIRNAME = "features"


@dataclass
class ClassifyResult:
    """What a run returns (rank 0 holds the results; other ranks None)."""

    results: dict[str, Any] | None
    run_dir: Path


@dataclass
class FinetuneTask(KeepsUnreadable):
    """The engine's task: mixup / cutmix on the batch, then the (soft-target) loss."""

    mixup: Any
    criterion: nn.Module
    unreadable: set[str] = dataclasses.field(default_factory=set)

    def training_step(
        self, model: nn.Module, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = batch["image"], batch["label"]
        if self.mixup is not None:
            x, y = self.mixup(x, y)
        loss = self.criterion(model(x), y)
        self.unreadable.update(p for text in batch["unreadable"] for p in text.split("\n") if p)
        return loss, {}


def _loop(cfg: ClassifyConfig, linear: bool) -> Any:
    base = cfg.linear.train if linear else cfg.train
    return dataclasses.replace(base, output_dir=cfg.output, device=cfg.device)


def _criterion(cfg: ClassifyConfig, num_classes: int) -> tuple[Any, nn.Module]:
    """timm's Mixup (or None) and the matching loss (soft targets, label smoothing, or CE)."""
    from esam.utils.deps import require

    timm_data = require("timm.data", extra="classify")
    timm_loss = require("timm.loss", extra="classify")
    a = cfg.aug
    if a.mixup > 0 or a.cutmix > 0:
        mixup = timm_data.Mixup(
            mixup_alpha=a.mixup,
            cutmix_alpha=a.cutmix,
            prob=a.mixup_prob,
            switch_prob=a.mixup_switch_prob,
            mode="batch",
            label_smoothing=a.smoothing,
            num_classes=num_classes,
        )
        return mixup, timm_loss.SoftTargetCrossEntropy()
    if a.smoothing > 0:
        return None, timm_loss.LabelSmoothingCrossEntropy(smoothing=a.smoothing)
    return None, nn.CrossEntropyLoss()


def run_classify(cfg: ClassifyConfig) -> ClassifyResult:
    """Run the configured mode and write its results (see the module doc)."""
    if not cfg.data.val:
        raise InputError("no validation images: pass --val DIR (data.val)")
    if cfg.mode != "eval" and not cfg.data.train:
        raise InputError(f"mode {cfg.mode} trains: pass --train DIR (data.train)")
    if cfg.mode == "eval" and cfg.model.checkpoint is None:
        raise InputError("mode eval needs a classifier: model.checkpoint=RUN_DIR/classifier.pt")
    check_device(cfg.device)
    ctx = init_distributed(cfg.device)
    try:
        setup_logging(ctx)
        device = torch.device(device_for(cfg.device, ctx))
        start = utc_now()
        run_dir = Path(cfg.output)
        if cfg.mode == "finetune":
            model, origin, classes, extra, val = _finetune(cfg, ctx, device)
            out = evaluate_model(
                model, val, cfg.data.eval_batch_size, cfg.data.eval_workers, device,
                cfg.train.precision, ctx,
            )  # fmt: skip
        elif cfg.mode == "linear":
            model, origin, classes, extra, val, out = _linear(cfg, ctx, device)
        else:
            model, classes, meta = load_classifier(str(cfg.model.checkpoint))
            model.to(device)
            origin = dict(meta.get("origin") or {})
            stored = int(model.trunk.img_size)
            if cfg.model.img_size != stored:
                # the classifier is evaluated at the size it was trained at, not the config's
                log.warning(
                    "%s was trained at %d px: evaluating at %d px (model.img_size=%d ignored)",
                    cfg.model.checkpoint, stored, stored, cfg.model.img_size,
                )  # fmt: skip
                cfg = dataclasses.replace(
                    cfg, model=dataclasses.replace(cfg.model, img_size=stored)
                )
            extra = {
                "trained_mode": meta.get("mode"),
                "trained_name": meta.get("name"),
                "trained_backbone": meta.get("backbone") or origin.get("path"),
            }
            val = _val_set(cfg, classes)
            if ctx.is_main:
                save_config(cfg, run_dir / CONFIG_FILENAME)
            out = evaluate_model(
                model, val, cfg.data.eval_batch_size, cfg.data.eval_workers, device,
                cfg.train.precision, ctx,
            )  # fmt: skip
        if not ctx.is_main:
            return ClassifyResult(None, run_dir)
        results = _write_results(cfg, model, origin, classes, val.images, out, extra, start)
        return ClassifyResult(results, run_dir)
    finally:
        finish(ctx)


def _model_name(model: Any, backbone: str | None) -> str:
    """The leaderboard name: ``model.name``, else the backbone file's stem, else the random
    trunk's shape."""
    if model.name:
        return str(model.name)
    if backbone:
        return Path(backbone).stem
    return f"random {model.arch}"


def _classifier_meta(cfg: ClassifyConfig, mode: str, origin: dict[str, Any]) -> dict[str, Any]:
    """What classifier.pt records of its training, for a later ``--mode eval``."""
    return {
        "mode": mode,
        "origin": origin,
        "name": _model_name(cfg.model, cfg.model.backbone),
        "backbone": cfg.model.backbone,
    }


def _val_set(cfg: ClassifyConfig, classes: list[str] | tuple[str, ...]) -> ClassificationSet:
    images = val_images(cfg.data.val, tuple(classes), cfg.data.labels, cfg.data.synsets)
    tf = eval_transform(cfg.model.img_size, cfg.data.crop_pct)
    return ClassificationSet(images, tf, seed=0, train=False, size=cfg.model.img_size)


def _finetune(
    cfg: ClassifyConfig, ctx: DistContext, device: torch.device
) -> tuple[ViTClassifier, dict[str, Any], list[str], dict[str, Any], ClassificationSet]:
    loop = _loop(cfg, linear=False)
    train = train_images(cfg.data.train)
    val = _val_set(cfg, train.classes)
    log.info(
        "%d training images in %d classes; %d val images", len(train), len(train.classes), len(val)
    )
    seed_everything(loop.seed)  # the same initial weights on every rank
    model, origin = build_classifier(cfg.model, len(train.classes))
    model.to(device).train()
    data = ClassificationSet(train, train_transform(cfg.model.img_size, cfg.aug), loop.seed)
    loader = make_train_loader(data, loop, ctx, with_epoch=True)
    assert loader.batch_size is not None
    spe = steps_per_epoch(loader.sampler, loader.batch_size, loop.accum_steps)  # type: ignore[arg-type]
    global_batch = loader.batch_size * loop.accum_steps * ctx.world_size
    optimizer, scheduler = build_optimization(model, loop, spe, global_batch)
    mixup, criterion = _criterion(cfg, len(train.classes))
    task = FinetuneTask(mixup, criterion)
    trainer = Trainer(model, task, loader, optimizer, scheduler, loop, ctx=ctx, run_config=cfg)
    t0 = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - t0
    parts = gather_to_main(sorted(task.unreadable), ctx)
    unreadable = sorted({p for part in parts or [] for p in part})
    extra = {
        "steps": result.global_step,
        "final_loss": result.last.get("loss"),
        "train_seconds": seconds,
        "global_batch": global_batch,
        "peak_lr": peak_lr(loop.optim, global_batch),
        "n_train_images": len(train),
        "unreadable_train_images": unreadable,
    }
    if ctx.is_main:
        save_classifier(
            model, Path(cfg.output) / CLASSIFIER_FILENAME, cfg.model, list(train.classes),
            _classifier_meta(cfg, "finetune", origin),
        )  # fmt: skip
    return model, origin, list(train.classes), extra, val


def _linear(
    cfg: ClassifyConfig, ctx: DistContext, device: torch.device
) -> tuple[ViTClassifier, dict[str, Any], list[str], dict[str, Any], ClassificationSet, EvalOutput]:
    from esam.classify.linear import FeatureSet, Probe, ProbeTask, extract_features, probe_optimizer

    loop = _loop(cfg, linear=True)
    train = train_images(cfg.data.train)
    val = _val_set(cfg, train.classes)
    seed_everything(loop.seed)
    model, origin = build_classifier(cfg.model, len(train.classes), drop_path=0.0)
    model.to(device).eval().requires_grad_(False)
    cache = Path(cfg.linear.cache) if cfg.linear.cache else Path(cfg.output) / FEATURES_DIRNAME
    tf = eval_transform(cfg.model.img_size, cfg.data.crop_pct)
    settings = {
        "img_size": cfg.model.img_size,
        "crop_pct": cfg.data.crop_pct,
        "precision": cfg.train.precision,
    }
    train_set = ClassificationSet(train, tf, seed=0, train=False, size=cfg.model.img_size)
    common = (cfg.data.eval_batch_size, cfg.data.eval_workers, device, cfg.train.precision, ctx)
    ftrain = extract_features(model, train_set, cache, "train", settings, *common)
    fval = extract_features(model, val, cache, "val", settings, *common)
    if not len(ftrain["labels"]):
        raise InputError(f"no readable training image in {cfg.data.train}")
    # the probe's initial weights must not depend on whether the features came from the cache
    # (iterating a DataLoader draws from the global RNG)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(loop.seed, 1))
        probe = Probe(model.trunk.embed_dim, len(train.classes), cfg.linear.batchnorm)
    probe.to(device)
    loader = make_train_loader(FeatureSet(ftrain["features"], ftrain["labels"]), loop, ctx)
    assert loader.batch_size is not None
    spe = steps_per_epoch(loader.sampler, loader.batch_size, loop.accum_steps)  # type: ignore[arg-type]
    global_batch = loader.batch_size * loop.accum_steps * ctx.world_size
    optimizer = probe_optimizer(probe, loop, cfg.linear.lars)
    lr_s, wd_s = build_schedules(loop, spe, peak_lr(loop.optim, global_batch))
    trainer = Trainer(
        probe, ProbeTask(), loader, optimizer, ParamScheduler(optimizer, lr_s, wd_s), loop,
        ctx=ctx, run_config=cfg,
    )  # fmt: skip
    t0 = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - t0
    probe.eval()
    # the last forward updated each rank's BatchNorm statistics from its own batch: score with
    # rank 0's, the ones classifier.pt keeps, so re-evaluating that file gives these numbers
    state = broadcast_object({k: v.cpu() for k, v in probe.state_dict().items()}, ctx)
    probe.load_state_dict(state)
    local = fval["indices"].tolist()
    mine = set(shard(range(len(local)), ctx))
    keep = [j for j in range(len(local)) if j in mine]
    with torch.no_grad():
        logits = probe(fval["features"][keep].float().to(device))
    rows = score_rows(logits, fval["labels"][keep], [local[j] for j in keep], val.images.files)
    out = merge(EvalOutput(rows, dict(fval["skips"]) if ctx.is_main else {}), ctx)
    model.head = probe.folded().to(device)
    extra = {
        "steps": result.global_step,
        "final_loss": result.last.get("loss"),
        "train_seconds": seconds,
        "global_batch": global_batch,
        "peak_lr": peak_lr(loop.optim, global_batch),
        "n_train_images": len(train),
        "train_skips": dict(ftrain["skips"]),
        "features": {
            "cache": str(cache),
            "dtype": "float16",
            "train_cached": bool(ftrain["cached"]),
            "val_cached": bool(fval["cached"]),
            "extract_seconds": float(ftrain["seconds"]) + float(fval["seconds"]),
            # images each process encoded (None when read from the cache)
            "train_encoded_per_process": ftrain.get("encoded_per_process"),
            "val_encoded_per_process": fval.get("encoded_per_process"),
        },
    }
    if ctx.is_main:
        save_classifier(
            model, Path(cfg.output) / CLASSIFIER_FILENAME, cfg.model, list(train.classes),
            _classifier_meta(cfg, "linear", origin),
        )  # fmt: skip
    return model, origin, list(train.classes), extra, val, out


def _weights_label(mode: str, origin: dict[str, Any]) -> str | None:
    """What the evaluated classifier's weights are, for the report's caveats: a fine-tuned or
    probed model is trained whatever its backbone started from (a random backbone's probe is a
    baseline, not a placeholder); only ``eval`` of an untrained model keeps the origin's label."""
    start = origin.get("weights") or origin.get("init")
    if mode == "finetune":
        return f"fine-tuned from {start or 'unrecorded weights'}"
    if mode == "linear":
        return f"linear probe on {start or 'unrecorded weights'} (backbone frozen)"
    return None if start is None else str(start)


def _write_results(
    cfg: ClassifyConfig,
    model: ViTClassifier,
    origin: dict[str, Any],
    classes: list[str],
    images: LabeledImages,
    out: EvalOutput,
    extra: dict[str, Any],
    start: str,
) -> dict[str, Any]:
    run_dir = Path(cfg.output)
    metrics, per_class = summarise(out.rows, classes)
    n_skipped = sum(out.skips.values())
    metrics |= {
        "n_classes": len(classes),
        "eval_images_per_s": len(out.rows) / out.seconds if out.seconds else None,
        "steps": extra.get("steps"),
        "final_loss": extra.get("final_loss"),
    }
    loop = _loop(cfg, cfg.mode == "linear")
    mode = cfg.mode if cfg.mode != "eval" else str(extra.get("trained_mode") or "eval")
    checkpoint = (
        run_dir / CLASSIFIER_FILENAME if cfg.mode != "eval" else Path(str(cfg.model.checkpoint))
    )
    if cfg.mode == "eval":  # what the classifier file says it was trained from
        backbone = cfg.model.backbone or extra.get("trained_backbone")
        name = cfg.model.name or extra.get("trained_name") or _model_name(cfg.model, backbone)
    else:
        backbone = cfg.model.backbone
        name = _model_name(cfg.model, backbone)
    dim, depth, heads = (
        model.trunk.embed_dim,
        model.trunk.depth,
        model.num_heads,
    )
    config = {
        **config_to_dict(cfg),
        "mode": mode,
        "img_size": cfg.model.img_size,
        "epochs": loop.epochs if cfg.mode != "eval" else None,
    }
    rows_text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in out.rows)
    write_text_atomic(run_dir / ROWS_FILENAME, rows_text)
    obj = make_results(
        TASK,
        model={
            "name": name,
            "arch": {
                "embed_dim": dim,
                "depth": depth,
                "num_heads": heads,
                "img_size": cfg.model.img_size,
            },
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": sha256_file(checkpoint) if checkpoint.is_file() else None,
            "backbone": backbone,
            "backbone_sha256": origin.get("sha256"),
            "origin": origin,
            "weights": _weights_label(mode, origin),
            "params": sum(p.numel() for p in model.parameters()),
        },
        config=config,
        metrics=metrics,
        meta=run_metadata(
            device=str(next(model.parameters()).device), dtype=cfg.train.precision, start_time=start
        ),
        dataset={
            "name": cfg.data.name,
            "path": cfg.data.val,
            "layout": images.layout,
            "labels": images.labels_file,
            "n_images": len(out.rows),
            "n_images_skipped": n_skipped,
            "n_images_selected": len(images),
        },
        skips=dict(sorted(out.skips.items())),
        rows_file=ROWS_FILENAME,
        per_class=per_class,
        training={k: v for k, v in extra.items() if k not in ("steps", "final_loss")},
        curve=loss_curve(read_log(run_dir / LOG_FILENAME)),
    )
    write_json_atomic(run_dir / RESULTS_FILENAME, obj)
    log.info(
        "top-1 %.2f%%, top-5 %.2f%% on %d images (%d skipped) -> %s",
        metrics["top1"] or 0.0, metrics["top5"] or 0.0, metrics["n_images"], n_skipped,
        run_dir / RESULTS_FILENAME,
    )  # fmt: skip
    return obj
