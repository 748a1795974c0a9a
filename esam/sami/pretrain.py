"""A SAMI (or MAE) pretraining run: wiring of model, teacher, data and the training engine.

:func:`run_pretrain` builds everything from a :class:`~esam.sami.config.SamiConfig`, trains
with :class:`esam.train.Trainer` (single process, or one process per GPU under ``torchrun``),
then, on rank 0, evaluates the reconstruction on held-out images (when ``data.eval_path`` is
set) and writes ``results.json`` in the run folder (task ``pretrain``: final loss, held-out
error against the mean-feature baseline, the loss curve, unreadable images) for the report.

The run folder holds ``config.yaml``, ``log.jsonl``, ``checkpoints/`` and ``results.json``;
``esam pretrain export RUN_DIR`` turns it into a backbone checkpoint.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from esam.config import config_to_dict
from esam.data.imagefolder import ImageFolder, read_rgb, scan_image_folder
from esam.data.images import ImageReadError
from esam.data.views import ViewParams, apply_view, render_crops
from esam.errors import InputError
from esam.runtime.distributed import (
    DistContext,
    device_for,
    finish,
    gather_to_main,
    init_distributed,
    run_collectively,
    setup_logging,
)
from esam.runtime.seeding import seed_everything
from esam.sami.config import SamiConfig
from esam.sami.data import EVAL_MASK_STREAM, PretrainViews, ViewSettings, collate, sample_rng
from esam.sami.model import SamiModel, build_sami_encoder
from esam.sami.teacher import Teacher, build_teacher
from esam.train import Trainer, build_optimization, make_train_loader, steps_per_epoch
from esam.train.metrics import LOG_FILENAME, loss_curve, read_log
from esam.train.schedules import peak_lr
from esam.train.task_state import KeepsUnreadable
from esam.utils.io import sha256_file, write_json_atomic
from esam.utils.meta import run_metadata, utc_now
from esam.utils.results import make_results

log = logging.getLogger(__name__)

RESULTS_FILENAME = "results.json"
TASK = "pretrain"
#: Points of the loss curve kept in results.json (evenly spaced steps).


@dataclass
class SamiTask(KeepsUnreadable):
    """The engine's task: one (micro-)batch -> the SAMI loss.

    Runs the frozen teacher on the batch when no cached targets come with it, and collects
    the unreadable images the data loader skipped (this process's share; checkpointed).
    """

    teacher: Teacher | None
    unreadable: set[str] = field(default_factory=set)

    def training_step(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        images = batch["image"]
        targets = batch.get("target")
        if targets is None and self.teacher is not None:
            with torch.no_grad():
                if "teacher_crop" in batch:
                    views = render_crops(
                        batch["teacher_crop"], batch["teacher_flip"], self.teacher.input_size
                    )
                else:
                    views = images
                targets = self.teacher(views).clone()
        loss, _, _ = model(images, targets, noise=batch["noise"])
        self.unreadable.update(batch["unreadable"])
        return loss, {}


@dataclass
class PretrainResult:
    """What a run returns (rank 0 holds the results; other ranks None)."""

    global_step: int
    results: dict[str, Any] | None
    run_dir: Path


def student_encoder(cfg: SamiConfig) -> nn.Module:
    """The student ViT of the config (MAE-style initialisation)."""
    s = cfg.student
    overrides: dict[str, Any] = {}
    if s.embed_dim is not None:
        overrides["encoder_embed_dim"] = s.embed_dim
    if s.depth is not None:
        overrides["encoder_depth"] = s.depth
    if s.num_heads is not None:
        overrides["encoder_num_heads"] = s.num_heads
    return build_sami_encoder(s.arch, img_size=s.img_size, drop_path_rate=s.drop_path, **overrides)


def make_teacher(cfg: SamiConfig, device: torch.device | str) -> Teacher:
    """The frozen teacher of the config, on ``device`` (named errors for missing weights)."""
    t = cfg.teacher
    if t.checkpoint is None and not t.random_weights:
        raise InputError(
            f"teacher {t.name!r} needs --teacher-checkpoint PATH (teacher.checkpoint), or train "
            "from a feature cache with --teacher-cache DIR"
        )
    grid = cfg.student.img_size // 16
    return build_teacher(
        t.name,
        t.checkpoint,
        input_size=t.input_size or cfg.student.img_size,
        output=t.output,
        output_grid=grid,
        random_weights=t.random_weights,
        device=device,
    )


def open_cache(cfg: SamiConfig, images: ImageFolder, ctx: DistContext) -> Any:
    """The teacher cache of the config, checked against the images, the teacher named (name,
    output, view size, weights: the file's SHA-256 when ``teacher.checkpoint`` is set) and its
    shards' checksums.

    Raises:
        InputError: the cache does not match the run (the differing setting named).
        CacheError: the cache is damaged or belongs to another image list.
    """
    from esam.sami.cache import TeacherCache

    assert cfg.teacher.cache is not None
    cache = TeacherCache(
        cfg.teacher.cache, images=[str(images.path(i)) for i in range(len(images))]
    )
    cached = cache.teacher.get("name")
    if cached != cfg.teacher.name:
        raise InputError(
            f"{cfg.teacher.cache} holds features of teacher {cached!r}, the run names "
            f"{cfg.teacher.name!r} (set teacher.name={cached} or rebuild the cache)"
        )
    if cache.teacher.get("output") not in (None, cfg.teacher.output):
        raise InputError(
            f"{cfg.teacher.cache} holds {cache.teacher.get('output')} features, the run asks "
            f"for {cfg.teacher.output} (teacher.output)"
        )
    size = cfg.teacher.input_size or cfg.student.img_size
    if cache.teacher.get("input_size") != size:
        raise InputError(
            f"{cfg.teacher.cache} holds features of {cache.teacher.get('input_size')} px teacher "
            f"views, the run asks for {size} px (set teacher.input_size="
            f"{cache.teacher.get('input_size')} or rebuild the cache)"
        )
    if bool(cache.teacher.get("random_weights")) != cfg.teacher.random_weights:
        state = "random" if cache.teacher.get("random_weights") else "trained"
        raise InputError(
            f"{cfg.teacher.cache} holds features of a teacher with {state} weights; the run sets "
            f"teacher.random_weights={cfg.teacher.random_weights}"
        )
    if cfg.teacher.checkpoint is not None:
        # the file the run names (and evaluates with) must be the one the cache was built from
        digest = sha256_file(cfg.teacher.checkpoint)
        if cache.teacher.get("checkpoint_sha256") != digest:
            raise InputError(
                f"{cfg.teacher.cache} was built from teacher weights with SHA-256 "
                f"{str(cache.teacher.get('checkpoint_sha256'))[:12]}..., but teacher.checkpoint "
                f"{cfg.teacher.checkpoint} has {digest[:12]}...; pass the cache's weights or "
                "rebuild the cache"
            )
    augment = cache.index.get("augment") or {}
    scale, flip = augment.get("scale"), augment.get("flip_prob")
    if scale is not None and (scale[0] != cfg.data.scale_min or flip != cfg.data.flip_prob):
        log.warning(
            "%s: the cached views were cropped with scale >= %s and flipped with probability %s; "
            "the run's data.scale_min=%s and data.flip_prob=%s do not apply (each image has %d "
            "fixed views; rebuild the cache to change them)",
            cfg.teacher.cache,
            scale[0],
            flip,
            cfg.data.scale_min,
            cfg.data.flip_prob,
            cache.views_per_image,
        )
    # the shards are checked once here (each process a share), not in every loader worker
    run_collectively(lambda: cache.verify_shards(ctx.rank, ctx.world_size), ctx)
    cache.verify_checksums = False
    return cache


def build_model(cfg: SamiConfig, teacher_dim: int | None) -> SamiModel:
    """The SAMI model (student + decoder + head) of the config."""
    return SamiModel(
        student_encoder(cfg),  # type: ignore[arg-type]
        teacher_dim=teacher_dim if cfg.target == "teacher" else None,
        decoder_depth=cfg.decoder.depth,
        decoder_dim=cfg.decoder.dim,
        decoder_heads=cfg.decoder.heads,
        mask_ratio=cfg.mask_ratio,
        loss_on=cfg.loss_on,
        norm_target=cfg.norm_target,
        target=cfg.target,
        decoder_self_attn=cfg.decoder.self_attn,
    )


def run_pretrain(cfg: SamiConfig) -> PretrainResult:
    """Train, evaluate and write the results of one pretraining run (see the module doc)."""
    if not cfg.data.path:
        raise InputError("no training images: pass --data DIR (data.path)")
    ctx = init_distributed(cfg.train.device)
    try:
        setup_logging(ctx)
        device = torch.device(device_for(cfg.train.device, ctx))
        start = utc_now()
        images = scan_image_folder(cfg.data.path)
        log.info("%d training images in %s", len(images), images.root)
        cache = (
            open_cache(cfg, images, ctx) if cfg.target == "teacher" and cfg.teacher.cache else None
        )
        teacher = None
        if cfg.target == "teacher" and cache is None:
            teacher = make_teacher(cfg, device)
        teacher_dim = (
            int(cache.feature_shape[1])
            if cache is not None
            else (teacher.feature_dim if teacher is not None else None)
        )
        seed_everything(cfg.train.seed)  # the same initial weights on every rank
        model = build_model(cfg, teacher_dim).to(device)
        grid = cfg.student.img_size // model.patch_size
        views = ViewSettings(
            size=cfg.student.img_size,
            scale=(cfg.data.scale_min, 1.0),
            flip_prob=cfg.data.flip_prob,
            teacher_size=teacher.input_size if teacher is not None else None,
        )
        dataset = PretrainViews(images, views, grid * grid, cfg.train.seed, cache)
        loader = make_train_loader(dataset, cfg.train, ctx, collate_fn=collate, with_epoch=True)
        assert loader.batch_size is not None
        spe = steps_per_epoch(loader.sampler, loader.batch_size, cfg.train.accum_steps)  # type: ignore[arg-type]
        global_batch = loader.batch_size * cfg.train.accum_steps * ctx.world_size
        optimizer, scheduler = build_optimization(model, cfg.train, spe, global_batch)
        task = SamiTask(teacher)
        trainer = Trainer(
            model, task, loader, optimizer, scheduler, cfg.train, ctx=ctx, run_config=cfg
        )
        t0 = time.perf_counter()
        result = trainer.fit()
        seconds = time.perf_counter() - t0
        unreadable = _gather_unreadable(task.unreadable, ctx)
        if not ctx.is_main:
            return PretrainResult(result.global_step, None, Path(cfg.train.output_dir))
        evaluation = None
        if cfg.data.eval_path:
            if teacher is None and cfg.target == "teacher":
                teacher = _teacher_for_eval(cfg, device)
            if teacher is not None or cfg.target == "pixels":
                evaluation = evaluate_reconstruction(model, teacher, cfg, device)
        cached_teacher = None
        if cache is not None:  # the features, and the views they were computed on
            cached_teacher = {
                **cache.teacher,
                "views_per_image": cache.views_per_image,
                "view_seed": cache.index.get("seed"),
                "view_augment": cache.index.get("augment"),
            }
        results = _write_results(
            cfg, result, images, unreadable, evaluation, seconds, start, trainer, cached_teacher
        )
        return PretrainResult(result.global_step, results, Path(cfg.train.output_dir))
    finally:
        finish(ctx)


def _gather_unreadable(local: set[str], ctx: DistContext) -> list[str]:
    """Every process's unreadable image paths, on rank 0 (sorted; empty elsewhere)."""
    parts = gather_to_main(sorted(local), ctx)
    if parts is None:
        return []
    merged = sorted({p for part in parts for p in part})
    if merged:
        log.warning(
            "%d unreadable image(s) were skipped (replaced by the next readable one): %s",
            len(merged),
            ", ".join(merged[:5]) + (" ..." if len(merged) > 5 else ""),
        )
    return merged


def _teacher_for_eval(cfg: SamiConfig, device: torch.device) -> Teacher | None:
    """The teacher for the held-out evaluation of a cache-trained run, when its file is given."""
    if cfg.teacher.checkpoint is None and not cfg.teacher.random_weights:
        log.warning(
            "no held-out evaluation: the run trained from a cache and teacher.checkpoint is not "
            "set, so there is no teacher to compute the held-out targets"
        )
        return None
    return make_teacher(cfg, device)


@torch.no_grad()
def evaluate_reconstruction(
    model: SamiModel,
    teacher: Teacher | None,
    cfg: SamiConfig,
    device: torch.device,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Reconstruction error on held-out images, against predicting the mean target.

    Every held-out image is viewed whole (resized to the student's side, not flipped) and
    masked with noise seeded by (seed, image index), so the number is reproducible. The
    baseline predicts, for every token, the mean target feature over all held-out tokens
    (the best constant prediction); a student that learned something beats it clearly.

    Returns:
        ``mse`` (over all tokens), ``mse_masked``, ``mean_feature_mse``, ``mse_ratio``
        (mse / mean_feature_mse), ``n_images`` and ``unreadable`` (paths skipped).
    """
    assert cfg.data.eval_path is not None
    folder = scan_image_folder(cfg.data.eval_path)
    n = min(len(folder), cfg.data.eval_limit)
    size = cfg.student.img_size
    tsize = teacher.input_size if teacher is not None else size
    grid = size // model.patch_size
    was_training = model.training
    model.eval()
    preds: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    unreadable: list[str] = []
    batch: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def flush() -> None:
        if not batch:
            return
        imgs = torch.stack([b[0] for b in batch]).to(device)
        timgs = torch.stack([b[1] for b in batch]).to(device)
        noise = torch.stack([b[2] for b in batch]).to(device)
        latent, masking = model.forward_encoder(imgs, noise=noise)
        pred = model.forward_decoder(latent, masking.ids_restore, (grid, grid))
        raw = teacher(timgs).clone() if teacher is not None else None
        tgt = model.prepare_targets(imgs, raw, pred)
        preds.append(pred.float().cpu())
        targets.append(tgt.float().cpu())
        masks.append(masking.mask.cpu())
        batch.clear()

    for i in range(n):
        try:
            image = read_rgb(folder.path(i))
        except ImageReadError as e:
            log.warning("held-out %s: skipped (%s)", folder.path(i), e)
            unreadable.append(str(folder.path(i)))
            continue
        h, w = image.shape[:2]
        whole = ViewParams(0, 0, h, w, False)
        noise = sample_rng(cfg.train.seed, 0, i, EVAL_MASK_STREAM).random(grid * grid)
        batch.append(
            (
                apply_view(image, whole, size),
                apply_view(image, whole, tsize),
                torch.from_numpy(noise.astype(np.float32)),
            )
        )
        if len(batch) == batch_size:
            flush()
    flush()
    model.train(was_training)
    if not preds:
        raise InputError(f"no held-out image of {folder.root} could be read")
    pred, tgt, mask = torch.cat(preds), torch.cat(targets), torch.cat(masks)
    per_token = (pred - tgt).pow(2).mean(-1).double()
    mean_feature = tgt.double().mean(dim=(0, 1))
    baseline = (tgt.double() - mean_feature).pow(2).mean(-1)
    mse = float(per_token.mean())
    base = float(baseline.mean())
    return {
        "mse": mse,
        "mse_masked": float(per_token[mask].mean()) if mask.any() else None,
        "mean_feature_mse": base,
        "mse_ratio": mse / base if base > 0 else None,
        "n_images": int(pred.shape[0]),
        "unreadable": unreadable,
    }


def _write_results(
    cfg: SamiConfig,
    result: Any,
    images: ImageFolder,
    unreadable: list[str],
    evaluation: dict[str, Any] | None,
    seconds: float,
    start: str,
    trainer: Trainer,
    cached_teacher: dict[str, Any] | None = None,
) -> dict[str, Any]:
    run_dir = Path(cfg.train.output_dir)
    curve = loss_curve(read_log(run_dir / LOG_FILENAME))
    name = f"{'sami' if cfg.target == 'teacher' else 'mae'}_{cfg.student.arch.removeprefix('efficientsam_')}"
    metrics: dict[str, Any] = {
        "final_loss": result.last.get("loss"),
        "steps": result.global_step,
        # of the steps this process ran (a resumed run's earlier steps took other seconds)
        "images_per_s": trainer.global_batch * result.steps_run / seconds
        if result.steps_run and seconds > 0
        else None,
        "unreadable_images": len(unreadable),
        # train.batch_size is per process: these give the recipe's batch and rate
        "world_size": trainer.ctx.world_size,
        "global_batch": trainer.global_batch,
        "peak_lr": peak_lr(cfg.train.optim, trainer.global_batch),
    }
    if evaluation is not None:
        metrics.update(
            eval_mse=evaluation["mse"],
            eval_mse_masked=evaluation["mse_masked"],
            eval_mean_feature_mse=evaluation["mean_feature_mse"],
            eval_mse_ratio=evaluation["mse_ratio"],
            eval_images=evaluation["n_images"],
        )
    teacher_block = None
    if cfg.target == "teacher":
        teacher_block = {
            "name": cfg.teacher.name,
            "checkpoint": cfg.teacher.checkpoint,
            "cache": cfg.teacher.cache,
            "output": cfg.teacher.output,
            "input_size": cfg.teacher.input_size or cfg.student.img_size,
            "random_weights": cfg.teacher.random_weights,
        }
        if cached_teacher is not None:  # what the features were computed with
            teacher_block |= {**cached_teacher, "cache": cfg.teacher.cache}
    obj = make_results(
        TASK,
        model={
            "name": name,
            "checkpoint": str(result.checkpoint) if result.checkpoint else None,
            # the weights' identity: runs of other recipes are other rows in the report
            "checkpoint_sha256": (
                sha256_file(result.checkpoint)
                if result.checkpoint and Path(result.checkpoint).is_file()
                else None
            ),
            "teacher": teacher_block,
            "params": sum(p.numel() for p in trainer.raw_model.parameters()),
        },
        config=config_to_dict(cfg),
        metrics=metrics,
        meta=run_metadata(device=str(trainer.device), dtype=cfg.train.precision, start_time=start),
        dataset={
            "name": "imagefolder",
            "path": str(images.root),
            "n_images": len(images),
            "n_images_skipped": len(unreadable),
            "eval_path": cfg.data.eval_path,
        },
        curve=curve,
        unreadable_images=unreadable,
        eval_unreadable_images=(evaluation or {}).get("unreadable", []),
    )
    write_json_atomic(run_dir / RESULTS_FILENAME, obj)
    log.info("results written to %s", run_dir / RESULTS_FILENAME)
    return obj


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The resolved config a run wrote (``config.yaml``) as a dict."""
    from esam.config import CONFIG_FILENAME, read_yaml

    path = Path(run_dir) / CONFIG_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a pretraining run folder?")
    return read_yaml(path)
