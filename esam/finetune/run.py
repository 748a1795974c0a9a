"""An EfficientSAM fine-tuning run: wiring of model, data, prompts, loss and the engine.

:func:`run_finetune` builds everything from a :class:`~esam.finetune.config.FinetuneConfig`,
trains with :class:`esam.train.Trainer` (one process, or one per GPU under ``torchrun``) and,
on rank 0, writes into the run folder ``model.pt`` (an esam checkpoint storing its
architecture: ``--model efficientsam --checkpoint RUN_DIR/model.pt`` everywhere) and
``results.json`` (task ``finetune``: the last losses, the loss curve, skipped annotations and
files, unreadable images; with held-out data, ``val``: every validation's mIoU and the final
one in ``metrics``) beside ``config.yaml``, ``log.jsonl`` and ``checkpoints/``. Resuming a run
that was complete already changes neither file.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from esam.config import config_to_dict
from esam.errors import InputError
from esam.finetune.config import FinetuneConfig
from esam.finetune.data import FinetuneSamples, SampleSettings, collate
from esam.finetune.model import (
    build_finetune_model,
    freeze_parts,
    save_finetuned,
    weights_note,
)
from esam.finetune.task import FinetuneTask, InteractiveTraining
from esam.finetune.validate import PROTOCOL, Validation, metric_name
from esam.runtime.distributed import (
    DistContext,
    check_device,
    device_for,
    finish,
    gather_to_main,
    init_distributed,
    setup_logging,
)
from esam.runtime.seeding import seed_everything
from esam.train import Trainer, build_optimization, make_train_loader, steps_per_epoch
from esam.train.metrics import LOG_FILENAME, loss_curve, read_log
from esam.utils.io import write_json_atomic
from esam.utils.meta import run_metadata, utc_now
from esam.utils.results import make_results

log = logging.getLogger(__name__)

MODEL_FILENAME = "model.pt"
RESULTS_FILENAME = "results.json"
TASK = "finetune"
#: Points of the loss curve kept in results.json.


@dataclass
class FinetuneResult:
    """What a run returns (rank 0 holds the results; other ranks None)."""

    global_step: int
    results: dict[str, Any] | None
    run_dir: Path
    model_path: Path | None


def data_sources(path: str) -> list[str]:
    """The SA-1B sources of ``data.path``: comma-separated folders or tar files."""
    sources = [p.strip() for p in path.split(",") if p.strip()]
    if not sources:
        raise InputError("no training data: pass --data DIR_OR_TARS (data.path)")
    return sources


def loss_size(cfg: FinetuneConfig) -> int:
    """Side of the masks the loss compares: the decoder's low-res output (4x the embedding
    grid) or the encoder input."""
    from esam.finetune.model import model_config

    arch = model_config(cfg)
    grid = arch.img_size // arch.patch_size
    return 4 * grid if cfg.loss.resolution == "low" else arch.img_size


def run_finetune(cfg: FinetuneConfig) -> FinetuneResult:
    """Train and write the results of one fine-tuning run (see the module doc)."""
    from esam.data.sa1b import SA1BDataset

    sources = data_sources(cfg.data.path)
    check_device(cfg.train.device)
    ctx = init_distributed(cfg.train.device)
    try:
        setup_logging(ctx)
        device = torch.device(device_for(cfg.train.device, ctx))
        start = utc_now()
        data = SA1BDataset(sources, check_rle=False)  # each drawn mask is checked
        listing_skips = dict(data.skips)  # files the listing left out (unpaired, ignored)
        log.info("%d training images in %s", len(data), ", ".join(sources))
        seed_everything(cfg.train.seed)  # the same initial weights on every rank
        model, origin = build_finetune_model(cfg)
        if cfg.model.freeze:
            frozen = freeze_parts(model, list(cfg.model.freeze))
            origin["frozen"] = sorted(cfg.model.freeze)
            log.info("frozen: %s (%d tensors)", ", ".join(cfg.model.freeze), len(frozen))
        trained = InteractiveTraining(
            model, cfg.prompts, cfg.loss, recompute_rounds=cfg.memory.recompute_rounds
        )
        trained = trained.to(device).train()
        settings = SampleSettings(
            img_size=cfg.model.img_size,
            mask_size=loss_size(cfg),
            max_masks=cfg.data.max_masks,
            min_area=cfg.data.min_mask_area,
            seed=cfg.train.seed,
        )
        samples = FinetuneSamples(data, settings)
        loader = make_train_loader(samples, cfg.train, ctx, collate_fn=collate, with_epoch=True)
        assert loader.batch_size is not None
        spe = steps_per_epoch(loader.sampler, loader.batch_size, cfg.train.accum_steps)  # type: ignore[arg-type]
        global_batch = loader.batch_size * cfg.train.accum_steps * ctx.world_size
        optimizer, scheduler = build_optimization(trained, cfg.train, spe, global_batch)
        task = FinetuneTask()
        validation = Validation(cfg.val, model, ctx) if cfg.val.path else None
        # without corrective rounds the single-mask output's hypernetwork MLP gets no
        # gradient, which DDP must be told
        ddp_kwargs = {"find_unused_parameters": cfg.prompts.corrective_rounds == 0}
        trainer = Trainer(
            trained,
            task,
            loader,
            optimizer,
            scheduler,
            cfg.train,
            ctx=ctx,
            run_config=cfg,
            ddp_kwargs=ddp_kwargs,
            evaluate=validation,
            evaluate_every_epochs=cfg.val.every_epochs,
        )
        t0 = time.perf_counter()
        result = trainer.fit()
        seconds = time.perf_counter() - t0
        unreadable, skips = _gather(task, ctx)
        skips = dict(sorted((Counter(skips) + Counter(listing_skips)).items()))
        run_dir = Path(cfg.train.output_dir)
        if not ctx.is_main:
            return FinetuneResult(result.global_step, None, run_dir, None)
        existing = run_dir / RESULTS_FILENAME
        complete = result.steps_run == 0 and not result.evaluations  # nothing new this call
        if complete and existing.is_file() and (run_dir / MODEL_FILENAME).is_file():
            log.info(
                "the run in %s was complete already (step %d); %s and %s left as they are",
                run_dir,
                result.global_step,
                MODEL_FILENAME,
                RESULTS_FILENAME,
            )
            obj = json.loads(existing.read_text(encoding="utf-8"))
            return FinetuneResult(result.global_step, obj, run_dir, run_dir / MODEL_FILENAME)
        model_path = save_finetuned(model, run_dir / MODEL_FILENAME, weights_note(cfg))
        results = _write_results(
            cfg,
            result,
            len(data),
            unreadable,
            skips,
            origin,
            seconds,
            start,
            trainer,
            model_path,
            validation,
        )
        return FinetuneResult(result.global_step, results, run_dir, model_path)
    finally:
        finish(ctx)


def _gather(task: FinetuneTask, ctx: DistContext) -> tuple[list[str], dict[str, int]]:
    """Every process's unreadable images and skipped masks, on rank 0."""
    parts = gather_to_main((sorted(task.unreadable), dict(task.skips)), ctx)
    if parts is None:
        return [], {}
    unreadable = sorted({p for part in parts for p in part[0]})
    skips: Counter[str] = Counter()
    for part in parts:
        skips.update(part[1])
    if unreadable:
        log.warning(
            "%d unreadable image(s) were replaced by the next readable one", len(unreadable)
        )
    if skips:
        log.info("masks left out: %s", ", ".join(f"{k}={v}" for k, v in sorted(skips.items())))
    return unreadable, dict(sorted(skips.items()))


def _val_block(
    cfg: FinetuneConfig, rows: list[dict[str, Any]], validation: Validation | None, step: int
) -> tuple[dict[str, Any] | None, dict[str, float | None]]:
    """results.json's ``val`` section (every validation in ``log.jsonl``, earlier sessions of a
    resumed run included) and the final step's values for ``metrics`` (None where the final
    step was not validated)."""
    if validation is None:
        return None, {}
    names = [metric_name(p) for p in cfg.val.prompts]
    curve = [
        {"step": int(r["step"]), "epoch": int(r["epoch"]), **{n: r.get(n) for n in names}}
        for r in rows
        if any(n in r for n in names)
    ]
    final = curve[-1] if curve and curve[-1]["step"] == step else {}
    block = {
        "path": cfg.val.path,
        "prompts": list(cfg.val.prompts),
        "protocol": PROTOCOL | {"seed": cfg.val.seed},
        "every_epochs": cfg.val.every_epochs,
        "n_images": len(validation.images),
        "n_instances": validation.n_instances,
        # of the last validation
        "n_scored": validation.last_scored,
        "skips": validation.last_skips,
        "curve": curve,
    }
    return block, {n: final.get(n) for n in names}


def _write_results(
    cfg: FinetuneConfig,
    result: Any,
    n_images: int,
    unreadable: list[str],
    skips: dict[str, int],
    origin: dict[str, Any],
    seconds: float,
    start: str,
    trainer: Trainer,
    model_path: Path,
    validation: Validation | None,
) -> dict[str, Any]:
    from esam.utils.io import sha256_file

    run_dir = Path(cfg.train.output_dir)
    last = result.last
    rows = read_log(run_dir / LOG_FILENAME)
    val, val_metrics = _val_block(cfg, rows, validation, result.global_step)
    metrics = {
        "final_loss": last.get("loss"),
        "final_focal": last.get("focal"),
        "final_dice": last.get("dice"),
        "final_iou_mse": last.get("iou_mse"),
        "steps": result.global_step,
        # of the steps this process ran (a resumed run's earlier steps took other seconds)
        "images_per_s": trainer.global_batch * result.steps_run / seconds
        if result.steps_run and seconds > 0
        else None,
        "unreadable_images": len(unreadable),
        **val_metrics,
    }
    obj = make_results(
        TASK,
        model={
            "name": "efficientsam",
            "arch": cfg.model.arch,
            "checkpoint": str(model_path),
            "checkpoint_sha256": sha256_file(model_path),
            "weights": weights_note(cfg),
            "origin": origin,
            "params": sum(p.numel() for p in trainer.raw_model.parameters()),  # the model's
            "trainable_params": sum(
                p.numel() for p in trainer.raw_model.parameters() if p.requires_grad
            ),
        },
        config=config_to_dict(cfg),
        metrics=metrics,
        meta=run_metadata(device=str(trainer.device), dtype=cfg.train.precision, start_time=start),
        dataset={
            "name": "sa1b",
            "path": cfg.data.path,
            "n_images": n_images,
            "n_images_skipped": len(unreadable),
        },
        skips=skips,
        curve=loss_curve(rows, ("loss", "focal", "dice", "iou_mse", "lr")),
        unreadable_images=unreadable,
        **({"val": val} if val is not None else {}),
    )
    write_json_atomic(run_dir / RESULTS_FILENAME, obj)
    log.info("model written to %s; results to %s", model_path, run_dir / RESULTS_FILENAME)
    return obj
