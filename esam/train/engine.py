"""The training loop, knowing no task.

A job builds the model, a :class:`TrainTask` (or a plain function) turning a batch into
``(loss, logs)``, the loader (:func:`esam.train.loader.make_train_loader`), the optimizer over
:func:`esam.train.param_groups.param_groups` and a :class:`~esam.train.schedules.ParamScheduler`;
:class:`Trainer` then runs the steps::

    for each optimizer step:
        set lr / wd for this step
        for each of accum_steps micro-batches (DDP gradient sync on the last only):
            loss, logs = task.training_step(model, batch)      # under autocast
            backward(loss / accum_steps)                       # through the fp16 scaler if any
        loss, logs = mean over micro-batches, then over ranks  # one collective
        stop if the loss is not finite                         # before touching the weights
        clip the gradient norm (recorded; stop if not finite)  # fp16's scaler skips instead
        optimizer step
        log.jsonl line, progress bar, checkpoint when due
    after every N-th epoch and at the end: the job's evaluate() if it gave one (own log line)

With micro-batches of equal size (incomplete ones are never used) the mean of the
micro-batch losses is the loss of the whole global batch, and so is its gradient: ``k``
micro-batches of ``b`` on ``W`` processes take the same step as one batch of ``k * b * W``.

Resuming (``TrainConfig.resume``) restores weights, optimizer, scaler, every rank's RNG state,
the task's own state (a task with ``state_dict`` / ``load_state_dict``, e.g. its counts of
skipped inputs) and the data position, so a run stopped after step ``k`` and resumed reproduces the
uninterrupted run's losses and weights (bitwise on CPU in one process; on GPUs as far as
the kernels are deterministic, see ``torch.use_deterministic_algorithms``). What it relies on:
the data order depends on (seed, epoch) only, every rank's RNG state is in the checkpoint, and
creating an epoch's loader iterator never draws from the global RNG. A checkpoint refuses
another global batch, dataset length or seed (another data order). A run stopped between an
epoch's checkpoint and that epoch's evaluation evaluates first when resumed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import torch
from torch import nn
from torch.utils.data import DataLoader

from esam.config import CONFIG_FILENAME, config_to_dict, save_config
from esam.data.samplers import ResumableSampler
from esam.errors import UserError
from esam.runtime.distributed import (
    DistContext,
    all_reduce_mean,
    broadcast_object,
    device_for,
    gather_to_main,
    run_collectively,
    unwrap_model,
    wrap_ddp,
)
from esam.runtime.precision import autocast, check_precision, make_grad_scaler
from esam.runtime.seeding import capture_rng_state, derive_seed, restore_rng_state, seed_everything
from esam.train.checkpointing import CheckpointManager, TrainCheckpointError, load_checkpoint
from esam.train.config import TrainConfig
from esam.train.loader import steps_per_epoch, to_device
from esam.train.metrics import LOG_FILENAME, MetricsLog, read_log
from esam.train.schedules import ParamScheduler

log = logging.getLogger(__name__)

StepOutput = tuple[torch.Tensor, Mapping[str, float]]


class TrainTask(Protocol):
    """What a job gives the engine: the loss of one (micro-)batch."""

    def training_step(self, model: nn.Module, batch: Any) -> StepOutput:
        """``(loss, logs)``: the mean loss over the batch (0-d tensor with grad) and named
        floats to log (averaged like the loss)."""
        ...


class StatefulTask(Protocol):
    """A task whose state (counts it keeps across steps) goes into checkpoints.

    ``state_dict()`` returns what a checkpoint can hold (numbers, strings, lists and dicts of
    them) for this process; on resume, ``load_state_dict(states)`` receives a list of the
    saved processes' states: all of them in a one-process run, and with N processes rank r
    receives every N-th one from r, so each saved state is restored exactly once whatever the
    number of processes before and after.
    """

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, states: list[dict[str, Any]]) -> None: ...


class NonFiniteLossError(UserError, FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the values."""


class ResumeError(UserError, ValueError):
    """The run cannot start or resume as configured (existing run, mismatched checkpoint)."""


@dataclass
class TrainResult:
    """How :meth:`Trainer.fit` ended.

    Attributes:
        global_step: optimizer steps done (including those before a resume).
        last: the last step's logged values; when this call ran no step (a resumed run that
            was complete already), those of the log's last line, or empty without one.
        checkpoint: the last checkpoint written by this process (None off rank 0).
        steps_run: optimizer steps this call ran (``global_step`` less the resumed step): the
            steps a throughput divides by.
        evaluations: the ``evaluate`` lines this call wrote (``step``, ``epoch``, the values,
            ``eval_s``), oldest first.
    """

    global_step: int
    last: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    steps_run: int = 0
    evaluations: list[dict[str, float]] = field(default_factory=list)


class Trainer:
    """Runs :class:`TrainConfig`'s loop over a task; one instance per run.

    Args:
        model: the model, already on its device (wrapped in DDP here when several processes
            run; a DDP model is used as it is).
        task: a :class:`TrainTask`, or a function ``(model, batch) -> (loss, logs)``.
        loader: from :func:`esam.train.loader.make_train_loader` (its sampler must be a
            :class:`~esam.data.samplers.ResumableSampler` and its ``batch_size`` set).
        optimizer: over the model's parameter groups.
        scheduler: sets lr / wd per step; its lr schedule must span ``epochs x steps_per_epoch``.
        cfg: the loop's settings.
        ctx: the process group context (default: one process).
        device: the device of this process (default ``device_for(cfg.device, ctx)``).
        run_config: the job's whole config, written to ``config.yaml`` and into checkpoints.
        ddp_kwargs: passed to DistributedDataParallel.
        evaluate: called on every process after every ``evaluate_every_epochs``-th epoch and
            at the end of the run, with the model in eval mode and gradients off; returns named
            floats (e.g. ``val_box_miou``), those of the main process written to ``log.jsonl``
            as a line of their own (with ``step``, ``epoch`` and ``eval_s``) and kept in
            ``TrainResult.evaluations``. It must not draw from the global random generators
            (a resumed run would then differ from an uninterrupted one).
        evaluate_every_epochs: 0 evaluates only at the end of the run.
    """

    def __init__(
        self,
        model: nn.Module,
        task: TrainTask | Callable[[nn.Module, Any], StepOutput],
        loader: DataLoader[Any],
        optimizer: torch.optim.Optimizer,
        scheduler: ParamScheduler,
        cfg: TrainConfig,
        *,
        ctx: DistContext | None = None,
        device: str | torch.device | None = None,
        run_config: Any = None,
        ddp_kwargs: Mapping[str, Any] | None = None,
        evaluate: Callable[[], Mapping[str, float]] | None = None,
        evaluate_every_epochs: int = 1,
    ) -> None:
        if evaluate_every_epochs < 0:
            raise ValueError(f"evaluate_every_epochs must be >= 0, got {evaluate_every_epochs}")
        self.cfg = cfg
        self.ctx = ctx or DistContext()
        self.device = torch.device(
            device if device is not None else device_for(cfg.device, self.ctx)
        )
        check_precision(self.device, cfg.precision)
        self.raw_model = unwrap_model(model)
        is_ddp = isinstance(model, nn.parallel.DistributedDataParallel)
        self.model = (
            model if is_ddp else wrap_ddp(model, self.ctx, self.device, **(ddp_kwargs or {}))
        )
        step: Any = getattr(task, "training_step", None)
        self.step_fn: Callable[[nn.Module, Any], StepOutput] = (
            step if callable(step) else cast(Callable[[nn.Module, Any], StepOutput], task)
        )
        if not isinstance(loader.sampler, ResumableSampler) or loader.batch_size is None:
            raise TypeError(
                "the loader needs a ResumableSampler and a batch_size (make_train_loader)"
            )
        self.loader = loader
        self.sampler: ResumableSampler = loader.sampler
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = make_grad_scaler(self.device, cfg.precision)
        self.steps_per_epoch = steps_per_epoch(self.sampler, loader.batch_size, cfg.accum_steps)
        self.global_batch = loader.batch_size * cfg.accum_steps * self.ctx.world_size
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if scheduler.lr.total_steps != self.total_steps:
            raise ValueError(
                f"the lr schedule spans {scheduler.lr.total_steps} steps but the run has "
                f"{self.total_steps} ({cfg.epochs} epochs x {self.steps_per_epoch}); build it with "
                "build_schedules(cfg, steps_per_epoch(...), lr)"
            )
        self.task = task
        self.evaluate = evaluate
        self.evaluate_every_epochs = evaluate_every_epochs
        self.run_config = run_config
        self.out = Path(cfg.output_dir)
        self.checkpoints = CheckpointManager(self.out / "checkpoints", cfg.keep_last)
        self.global_step = 0
        self._saved_step: int | None = None
        self._last_path: Path | None = None

    # ----------------------------------------------------------------------------------- run

    def fit(self) -> TrainResult:
        """Train from scratch or from the checkpoint ``cfg.resume`` selects, to the end (or
        ``cfg.max_steps``); save a checkpoint at the end."""
        self._start()
        if self.ctx.is_main and self.run_config is not None:
            save_config(self.run_config, self.out / CONFIG_FILENAME)
        metrics = MetricsLog(
            self.out / LOG_FILENAME, enabled=self.ctx.is_main, start_step=self.global_step
        )
        stop = min(self.total_steps, self.cfg.max_steps or self.total_steps)
        last: dict[str, float] = {}
        evaluations: list[dict[str, float]] = []
        resumed_at = self.global_step
        self.model.train()
        try:
            missed = self._missed_evaluation(stop)
            if missed is not None:
                # stopped after the checkpoint of an epoch's end but before its evaluation
                evaluations.append(self._evaluate(missed, metrics))
            while self.global_step < stop:
                epoch, first = divmod(self.global_step, self.steps_per_epoch)
                last = self._run_epoch(epoch, first, stop, metrics) or last
                if self._evaluation_due(epoch, stop):
                    evaluations.append(self._evaluate(epoch, metrics))
            if self._saved_step != self.global_step:
                self.save()
        finally:
            metrics.close()
        if not last:
            last = self._last_logged()
        return TrainResult(
            self.global_step,
            last,
            self._last_path,
            self.global_step - resumed_at,
            evaluations,
        )

    def _missed_evaluation(self, stop: int) -> int | None:
        """The epoch whose evaluation a resumed run must make up, or None: the run starts
        where an evaluation was due but the log holds none (it stopped between the checkpoint
        and the evaluation). Rank 0 reads the log; every rank gets its answer, since evaluating
        is collective."""
        if self.global_step == 0 or self.evaluate is None:
            return None
        epoch = (self.global_step - 1) // self.steps_per_epoch
        whole = self.global_step % self.steps_per_epoch == 0
        if not (whole or self.global_step >= stop) or not self._evaluation_due(epoch, stop):
            return None
        missed = False
        if self.ctx.is_main:
            path = self.out / LOG_FILENAME
            rows = read_log(path) if path.is_file() else []
            missed = not any(r.get("step") == self.global_step and "eval_s" in r for r in rows)
        return epoch if broadcast_object(missed, self.ctx) else None

    def _evaluation_due(self, epoch: int, stop: int) -> bool:
        """An evaluation is due now: at the end of the run, or after an N-th whole epoch."""
        if self.evaluate is None:
            return False
        if self.global_step >= stop:
            return True
        every = self.evaluate_every_epochs
        whole = self.global_step % self.steps_per_epoch == 0
        return whole and every > 0 and (epoch + 1) % every == 0

    def _evaluate(self, epoch: int, metrics: MetricsLog) -> dict[str, float]:
        """Run ``evaluate`` (eval mode, no gradients) and log its values."""
        assert self.evaluate is not None
        t0 = time.perf_counter()
        self.model.eval()
        try:
            with torch.no_grad():
                values = {k: float(v) for k, v in self.evaluate().items()}
        finally:
            self.model.train()
        row = {"step": self.global_step, "epoch": epoch, **values}
        row["eval_s"] = time.perf_counter() - t0
        metrics.write(row)
        log.info(
            "step %d: %s",
            self.global_step,
            ", ".join(f"{k} {v:.4g}" for k, v in values.items()) or "evaluated",
        )
        return row

    def _last_logged(self) -> dict[str, float]:
        """The numeric values of the log's line of the current step (empty without one)."""
        path = self.out / LOG_FILENAME
        if not path.is_file():
            return {}
        rows = [r for r in read_log(path) if r.get("step") == self.global_step and "loss" in r]
        if not rows:
            return {}
        skip = ("step", "epoch", "epoch_step", "time", "samples_per_s")
        return {
            k: float(v)
            for k, v in rows[-1].items()
            if k not in skip and isinstance(v, int | float) and not isinstance(v, bool)
        }

    def _run_epoch(
        self, epoch: int, first: int, stop: int, metrics: MetricsLog
    ) -> dict[str, float]:
        cfg, spe = self.cfg, self.steps_per_epoch
        batches = self._batches(epoch, first)
        bar = self._progress(epoch, first)
        stats: dict[str, float] = {}
        losses: list[float] = []
        t_log, since_log = time.perf_counter(), 0
        for s in range(first, spe):
            if self.global_step >= stop:
                break
            stats = self.train_step(batches, epoch, s)
            self.global_step += 1
            since_log += 1
            losses.append(stats["loss"])
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.4g}", lr=f"{stats['lr']:.3g}", refresh=False)
            final = self.global_step == stop
            if self.global_step % cfg.log_every == 0 or final:
                now = time.perf_counter()
                rate = self.global_batch * since_log / max(now - t_log, 1e-9)
                metrics.write(
                    {"step": self.global_step, "epoch": epoch, "epoch_step": s + 1, **stats}
                    | {"samples_per_s": rate, "time": time.time()}
                )
                t_log, since_log = now, 0
            if final or self._save_due(epoch, end_of_epoch=s + 1 == spe):
                self.save()
        bar.close()
        del batches  # stops the loader's workers
        if losses:
            log.info(
                "epoch %d: steps %d-%d, mean loss %.6g",
                epoch,
                first + 1,
                first + len(losses),
                sum(losses) / len(losses),
            )
        return stats

    def _save_due(self, epoch: int, end_of_epoch: bool) -> bool:
        """A checkpoint is due after this step (every N steps, or every N epochs)."""
        every_steps, every_epochs = self.cfg.save_every_steps, self.cfg.save_every_epochs
        if every_steps and self.global_step % every_steps == 0:
            return True
        return end_of_epoch and every_epochs > 0 and (epoch + 1) % every_epochs == 0

    def train_step(
        self, batches: Iterator[Any], epoch: int = 0, step_in_epoch: int = 0
    ) -> dict[str, float]:
        """One optimizer step over ``accum_steps`` micro-batches from ``batches``.

        Returns:
            ``loss``, ``lr``, ``wd``, ``grad_norm`` (before clipping), ``loss_scale`` (fp16)
            and the task's values, each averaged over micro-batches and ranks.

        Raises:
            NonFiniteLossError: the averaged loss is NaN or infinite (weights untouched).
        """
        accum = self.cfg.accum_steps
        lr, wd = self.scheduler.apply(self.global_step)
        self.optimizer.zero_grad(set_to_none=True)
        micro: list[torch.Tensor] = []
        sums: dict[str, Any] = {}
        ddp = self.model if isinstance(self.model, nn.parallel.DistributedDataParallel) else None
        for i in range(accum):
            batch = to_device(next(batches), self.device, non_blocking=self.device.type == "cuda")
            sync: Any = (
                ddp.no_sync() if ddp is not None and i < accum - 1 else contextlib.nullcontext()
            )
            with sync:
                with autocast(self.device, self.cfg.precision):
                    loss, logs = self.step_fn(self.model, batch)
                scaled = loss / accum
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            micro.append(loss.detach().float())
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + (
                    v.detach().float() if isinstance(v, torch.Tensor) else float(v)
                )
        micro_values = torch.stack(micro).tolist()
        local = {"loss": math.fsum(micro_values) / accum} | {
            k: float(v) / accum for k, v in sums.items()
        }
        means = all_reduce_mean(local, self.ctx)
        if not math.isfinite(means["loss"]):
            raise NonFiniteLossError(
                f"non-finite loss {means['loss']} at optimizer step {self.global_step + 1} (epoch "
                f"{epoch}, step {step_in_epoch + 1} of {self.steps_per_epoch}); micro-batch losses "
                f"on rank {self.ctx.rank}: {micro_values}; logged values: {means}; stopped before "
                f"the update: the weights are those after step {self.global_step}, last "
                f"checkpoint: {self.checkpoints.latest() or 'none'}"
            )
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_grad or math.inf)
        # fp16's scaler skips such a step itself; otherwise one NaN gradient (the loss can be
        # finite) would turn every weight NaN. Gradients are already reduced: ranks agree.
        if self.scaler is None and not math.isfinite(float(norm)):
            raise NonFiniteLossError(
                f"non-finite gradient norm {float(norm)} at optimizer step "
                f"{self.global_step + 1} (epoch {epoch}, step {step_in_epoch + 1} of "
                f"{self.steps_per_epoch}) with a finite loss ({means}); stopped before the "
                f"update: the weights are those after step {self.global_step}, last "
                f"checkpoint: {self.checkpoints.latest() or 'none'}"
            )
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if wd is None:
            wd = max((g["weight_decay"] for g in self.optimizer.param_groups), default=0.0)
        stats = means | {"lr": lr, "wd": float(wd), "grad_norm": float(norm)}
        if self.scaler is not None:
            stats["loss_scale"] = float(self.scaler.get_scale())
        return stats

    def _batches(self, epoch: int, first: int) -> Iterator[Any]:
        """The epoch's batches from step ``first`` on; the global RNG is left untouched."""
        self.sampler.set_epoch(epoch, consumed=first * self.global_batch)
        generator = self.loader.generator
        if generator is not None:
            generator.manual_seed(derive_seed(self.cfg.seed, epoch, self.ctx.rank))
            return iter(self.loader)
        with torch.random.fork_rng(devices=[]):  # iter() draws worker seeds from the global RNG
            return iter(self.loader)

    def _progress(self, epoch: int, first: int) -> Any:
        from tqdm import tqdm

        return tqdm(
            total=self.steps_per_epoch,
            initial=first,
            desc=f"epoch {epoch}",
            disable=not (self.ctx.is_main and self.cfg.progress),
            dynamic_ncols=True,
            leave=False,
        )

    # --------------------------------------------------------------------------- checkpoints

    def _config_dict(self) -> Any:
        """The run config as stored in checkpoints (a dict when it is a config dataclass)."""
        cfg = self.run_config
        if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
            return config_to_dict(cfg)
        return cfg

    def state_dict(
        self, rng: list[Any] | None, task_states: list[Any] | None = None
    ) -> dict[str, Any]:
        """Everything a checkpoint holds (see :mod:`esam.train.checkpointing`); ``rng`` and
        ``task_states`` hold one entry per process."""
        epoch, step_in_epoch = divmod(self.global_step, self.steps_per_epoch)
        cfg = self._config_dict()
        return {
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng,
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "global_step": self.global_step,
            "global_batch": self.global_batch,
            "steps_per_epoch": self.steps_per_epoch,
            "dataset_len": self.sampler.dataset_len,
            "world_size": self.ctx.world_size,
            "seed": self.cfg.seed,
            "config": cfg,
            "task": task_states,
        }

    def save(self) -> Path | None:
        """Save a checkpoint of the current step (every rank calls this; rank 0 writes).

        A failure on rank 0 stops every rank with its message.
        """
        rng = gather_to_main(capture_rng_state(), self.ctx)
        get_state = getattr(self.task, "state_dict", None)  # the same task type on every rank
        task_states = gather_to_main(get_state(), self.ctx) if callable(get_state) else None

        def work() -> Path | None:
            if not self.ctx.is_main:
                return None
            return self.checkpoints.save(self.state_dict(rng, task_states), self.global_step)

        path = run_collectively(work, self.ctx)
        self._saved_step = self.global_step
        self._last_path = path
        return path

    def _resume_path(self) -> Path | None:
        choice = self.cfg.resume
        if choice is None:
            existing = self.checkpoints.latest()
            if existing is not None:
                raise ResumeError(
                    f"{self.out} holds checkpoints already ({existing.name}); set resume=auto to "
                    "continue that run, or choose another output_dir"
                )
            return None
        if choice == "auto":
            latest = self.checkpoints.latest()
            if latest is None:
                log.info(
                    "resume=auto: no checkpoint in %s, starting a new run",
                    self.checkpoints.directory,
                )
            return latest
        path = Path(choice)
        if not path.is_file():
            raise ResumeError(f"resume checkpoint {path} not found")
        return path

    def _start(self) -> None:
        """Seed a fresh run, or restore everything from the checkpoint to resume from."""
        path = self._resume_path()
        if path is None:
            seed_everything(self.cfg.seed, self.ctx.rank)
            self.global_step = 0
            return
        state = load_checkpoint(path)
        for key, now in (
            ("global_batch", self.global_batch),
            ("steps_per_epoch", self.steps_per_epoch),
            # the sampler's permutation depends on it: another length is another data order
            ("dataset_len", self.sampler.dataset_len),
            ("seed", self.cfg.seed),  # sets the data order: another one is another run
        ):
            if key not in state and key == "dataset_len":
                continue  # checkpoints written before it was recorded
            if state[key] != now:
                raise ResumeError(
                    f"{path} was written with {key}={state[key]}, this run has {now}; resume "
                    "with the same global batch, dataset and seed"
                )
        try:
            self.raw_model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            changes = config_changes(state.get("config"), self._config_dict())
            why = f"; its config differs from this run's in {'; '.join(changes)}" if changes else ""
            moved = group_changes(state.get("optimizer"), self.optimizer)
            if moved:
                why += (
                    f"; parameters sit in other optimizer groups than in the checkpoint "
                    f"({'; '.join(moved[:5])}{'; ...' if len(moved) > 5 else ''}): weight-decay "
                    "exemptions or learning-rate scales changed since it was written, so the "
                    "run must start again (or resume with the esam version that wrote it)"
                )
            raise TrainCheckpointError(
                f"{path} does not fit this model / optimizer: {e}{why}"
            ) from e
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.global_step = int(state["global_step"])
        self._restore_task(state.get("task"), path)
        rngs = state["rng"]
        if isinstance(rngs, list) and len(rngs) == self.ctx.world_size:
            restore_rng_state(rngs[self.ctx.rank])
        else:
            log.warning(
                "%s holds RNG states of %d process(es), this run has %d: reseeding from (seed, "
                "step, rank); the run continues reproducibly but not bitwise like the original",
                path,
                len(rngs) if isinstance(rngs, list) else 0,
                self.ctx.world_size,
            )
            seed_everything(derive_seed(self.cfg.seed, self.global_step), self.ctx.rank)
        self._saved_step = self.global_step
        self._last_path = path if self.ctx.is_main else None
        log.info("resumed from %s after step %d", path, self.global_step)

    def _restore_task(self, saved: Any, path: Path) -> None:
        """Hand this rank its share of the saved task states (see :class:`StatefulTask`)."""
        load = getattr(self.task, "load_state_dict", None)
        if not callable(load):
            return
        if saved is None:
            raise ResumeError(
                f"{path} holds no task state, which this task keeps (its counts would restart "
                "from zero); resume from a checkpoint this version of esam wrote"
            )
        load(list(saved[self.ctx.rank :: self.ctx.world_size]))


#: Config keys that differ between a run and its resumption by design.
_RESUME_KEYS = frozenset({"train.resume", "resume"})


def group_changes(saved: Any, optimizer: torch.optim.Optimizer) -> list[str]:
    """``"name: weight_decay 0.1 -> 0.0"`` for each parameter whose group settings differ
    between a saved optimizer state and ``optimizer`` (both from :func:`param_groups`, whose
    groups carry ``param_names``); empty when the names are not recorded."""

    def settings(groups: Any) -> dict[str, tuple[float, float]]:
        out: dict[str, tuple[float, float]] = {}
        for g in groups or []:
            for name in g.get("param_names") or []:
                out[name] = (float(g.get("weight_decay", 0.0)), float(g.get("lr_scale", 1.0)))
        return out

    before = settings(saved.get("param_groups") if isinstance(saved, dict) else None)
    now = settings(optimizer.param_groups)
    changed = []
    for name in sorted(before.keys() & now.keys()):
        (wd0, lr0), (wd1, lr1) = before[name], now[name]
        if wd0 != wd1:
            changed.append(f"{name}: weight_decay {wd0:g} -> {wd1:g}")
        elif lr0 != lr1:
            changed.append(f"{name}: lr_scale {lr0:g} -> {lr1:g}")
    return changed


def config_changes(saved: Any, now: Any, limit: int = 8) -> list[str]:
    """The keys whose values differ between two nested config dicts, as
    ``"key (A there, B here)"`` lines (at most ``limit``, then a count); [] when either is not
    a dict."""
    if not isinstance(saved, Mapping) or not isinstance(now, Mapping):
        return []
    flat_saved, flat_now = _flatten(saved), _flatten(now)
    keys = sorted(k for k in flat_saved.keys() | flat_now.keys() if k not in _RESUME_KEYS)
    missing = object()
    lines = []
    for key in keys:
        a, b = flat_saved.get(key, missing), flat_now.get(key, missing)
        if a != b:
            there = "unset" if a is missing else repr(a)
            here = "unset" if b is missing else repr(b)
            lines.append(f"{key} ({there} there, {here} here)")
    if len(lines) > limit:
        lines = [*lines[:limit], f"and {len(lines) - limit} more"]
    return lines


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
