"""The training engine on tiny models: accumulation, clipping, non-finite stop, exact resume,
checkpoints (keep-last-k, atomic), log.jsonl.

Tolerances of the equivalence tests are worst-case float32 rounding bounds computed from the
data (:func:`rounding_bounds`), not tuned constants.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from esam.errors import InputError, UserError
from esam.runtime.distributed import DistContext
from esam.train import (
    NonFiniteLossError,
    OptimConfig,
    ResumeError,
    ScheduleConfig,
    TrainConfig,
    Trainer,
    build_optimization,
    make_train_loader,
    steps_per_epoch,
)
from esam.train.checkpointing import (
    CheckpointManager,
    TrainCheckpointError,
    check_plain,
    load_checkpoint,
)
from esam.train.engine import config_changes
from esam.train.metrics import loss_curve, read_log
from esam.train.task_state import KeepsUnreadable

EPS = torch.finfo(torch.float32).eps
N_SAMPLES, DIM = 32, 4


class IndexedData(Dataset):
    """``(index, x, y)`` with x of shape (DIM,) and a scalar y, fixed by the seed."""

    def __init__(self, n: int = N_SAMPLES, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, DIM, generator=g)
        self.y = torch.randn(n, generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        return i, self.x[i], self.y[i]


class MseTask:
    """Mean squared error of a 1-output model; remembers the sample indices it saw."""

    def __init__(self) -> None:
        self.seen: list[list[int]] = []

    def training_step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        idx, x, y = batch
        self.seen.append(idx.tolist())
        r = model(x).squeeze(-1) - y
        loss = (r**2).mean()
        return loss, {"abs_err": float(r.detach().abs().mean())}


def config(tmp: Path, **kw: Any) -> TrainConfig:
    base = TrainConfig(
        output_dir=str(tmp),
        device="cpu",
        epochs=1,
        batch_size=8,
        num_workers=0,
        log_every=1,
        save_every_epochs=0,
        progress=False,
        optim=OptimConfig(name="sgd", lr=0.1, momentum=0.0, weight_decay=0.0),
        schedule=ScheduleConfig(kind="constant"),
    )
    return replace(base, **kw)


def build(
    cfg: TrainConfig,
    task: Any,
    model: nn.Module | None = None,
    data: Dataset | None = None,
    ctx: DistContext | None = None,
) -> Trainer:
    ctx = ctx or DistContext()
    if model is None:
        torch.manual_seed(0)
        model = nn.Linear(DIM, 1)
    loader = make_train_loader(data if data is not None else IndexedData(), cfg, ctx)
    spe = steps_per_epoch(loader.sampler, cfg.batch_size, cfg.accum_steps)  # type: ignore[arg-type]
    global_batch = cfg.batch_size * cfg.accum_steps * ctx.world_size
    optimizer, scheduler = build_optimization(model, cfg, spe, global_batch)
    return Trainer(model, task, loader, optimizer, scheduler, cfg, ctx=ctx, run_config=cfg)


def rounding_bounds(
    x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Worst-case float32 error of the loss and gradients of ``mean((x w^T + b - y)^2)``.

    Any summation of n terms in float32 is within n * eps * sum|terms| of the exact sum
    (Higham's gamma_n bound with u = eps / 2, rounded up); a residual r_i = x_i . w + b - y_i
    is within (DIM + 2) * eps * (|x_i| . |w| + |b| + |y_i|). Computed in float64 to first order.

    Args:
        x: NxD samples; y: N targets; w: 1xD weight; b: (1,) bias.

    Returns:
        (loss bound, 1xD weight-gradient bound, (1,) bias-gradient bound).
    """
    x, y, w, b = (t.double() for t in (x, y, w, b))
    n, d = x.shape
    r = x @ w.T + b - y[:, None]
    dr = (d + 2) * EPS * (x.abs() @ w.abs().T + b.abs() + y.abs()[:, None])
    loss_tol = float(n * EPS * (r**2).mean() + (2 * r.abs() * dr).mean())
    g = 2 * r / n  # d loss / d r_i
    dg = 2 * (dr + 2 * EPS * r.abs()) / n
    gw_tol = dg.T @ x.abs() + n * EPS * (g.abs().T @ x.abs())
    gb_tol = dg.sum(0) + n * EPS * g.abs().sum(0)
    return loss_tol, gw_tol, gb_tol


def sgd_update_bound(
    lr: float, grad_tol: torch.Tensor, w0: torch.Tensor, grad: torch.Tensor
) -> torch.Tensor:
    """Bound on |w1 - exact w1| for ``w1 = w0 - lr * g`` with g off by at most ``grad_tol``
    (plus one rounding of the product and one of the difference)."""
    return lr * grad_tol + EPS * (w0.double().abs() + 2 * lr * grad.double().abs())


def exact_grads(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> tuple:
    x, y, w, b = (t.double() for t in (x, y, w, b))
    r = x @ w.T + b - y[:, None]
    return (2 * r.T @ x / len(y)), (2 * r.sum(0) / len(y))


def _lines(path: Path) -> list[dict[str, Any]]:
    return read_log(path / "log.jsonl")


def _without_timing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("samples_per_s", "time")} for r in rows]


# --------------------------------------------------------------------------------- tests


def test_accumulation_equals_one_big_batch(tmp_path: Path) -> None:
    """accum 2 x batch 4 takes the step of batch 8: same samples, loss and update."""
    results = {}
    for name, bs, accum in (("big", 8, 1), ("accum", 4, 2)):
        task = MseTask()
        cfg = config(tmp_path / name, batch_size=bs, accum_steps=accum, max_steps=1)
        trainer = build(cfg, task)
        w0 = [p.detach().clone() for p in trainer.raw_model.parameters()]
        trainer.fit()
        w1 = [p.detach().clone() for p in trainer.raw_model.parameters()]
        seen = sorted(i for batch in task.seen for i in batch)
        results[name] = (seen, _lines(tmp_path / name)[0]["loss"], w0, w1)
    (seen_a, loss_a, w0, w1_a), (seen_b, loss_b, w0_b, w1_b) = results["big"], results["accum"]
    assert seen_a == seen_b and len(seen_a) == 8
    assert all(torch.equal(p, q) for p, q in zip(w0, w0_b, strict=True))
    data = IndexedData()
    x, y = data.x[seen_a], data.y[seen_a]
    loss_tol, gw_tol, gb_tol = rounding_bounds(x, y, w0[0], w0[1])
    assert abs(loss_a - loss_b) <= 2 * loss_tol, (loss_a, loss_b, loss_tol)
    gw, gb = exact_grads(x, y, w0[0], w0[1])
    for got_a, got_b, tol in (
        (w1_a[0], w1_b[0], sgd_update_bound(0.1, gw_tol, w0[0], gw)),
        (w1_a[1], w1_b[1], sgd_update_bound(0.1, gb_tol, w0[1], gb)),
    ):
        assert ((got_a.double() - got_b.double()).abs() <= 2 * tol).all()


def test_gradient_clipping_records_the_norm(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        max_steps=1,
        clip_grad=1e-3,
        optim=OptimConfig(name="sgd", lr=1.0, momentum=0.0, weight_decay=0.0),
    )
    trainer = build(cfg, MseTask())
    w0 = torch.cat([p.detach().flatten() for p in trainer.raw_model.parameters()])
    result = trainer.fit()
    w1 = torch.cat([p.detach().flatten() for p in trainer.raw_model.parameters()])
    seen = sorted(trainer.sampler.order(0)[:8].tolist())
    data = IndexedData()
    params = list(trainer.raw_model.parameters())
    gw, gb = exact_grads(data.x[seen], data.y[seen], w0[:DIM].view(1, DIM), w0[DIM:])
    norm = float(torch.cat([gw.flatten(), gb.flatten()]).norm())
    assert result.last["grad_norm"] == pytest.approx(norm, rel=1e-5)
    assert norm > 1e-3 and float((w1 - w0).norm()) == pytest.approx(1e-3, rel=1e-4)
    assert len(params) == 2


def test_non_finite_loss_stops_before_the_update(tmp_path: Path) -> None:
    reference = build(config(tmp_path / "ref", max_steps=2), MseTask())
    reference.fit()

    class NanAtThirdStep(MseTask):
        def training_step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict]:
            loss, logs = super().training_step(model, batch)
            return (loss * float("nan"), logs) if len(self.seen) == 3 else (loss, logs)

    trainer = build(config(tmp_path / "nan"), NanAtThirdStep())
    with pytest.raises(NonFiniteLossError) as e:
        trainer.fit()
    text = str(e.value)
    assert "non-finite loss nan at optimizer step 3 (epoch 0, step 3 of 4)" in text
    assert "micro-batch losses on rank 0: [nan]" in text and "abs_err" in text
    assert isinstance(e.value, UserError)
    for p, q in zip(trainer.raw_model.parameters(), reference.raw_model.parameters(), strict=True):
        assert torch.equal(p, q)  # the weights after step 2: the bad step changed nothing
    assert [r["step"] for r in _lines(tmp_path / "nan")] == [1, 2]


def test_a_non_finite_gradient_under_a_finite_loss_stops_before_the_update(
    tmp_path: Path,
) -> None:
    reference = build(config(tmp_path / "ref", max_steps=2), MseTask())
    reference.fit()

    class NanGradientAtThirdStep(MseTask):
        def training_step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict]:
            loss, logs = super().training_step(model, batch)
            if len(self.seen) == 3:  # sqrt'(0) is inf, times the zero inner gradient: nan
                loss = loss + torch.sqrt((model.bias * 0).sum())
            return loss, logs

    trainer = build(config(tmp_path / "nan", save_every_steps=1), NanGradientAtThirdStep())
    with pytest.raises(
        NonFiniteLossError, match="non-finite gradient norm nan at optimizer step 3"
    ):
        trainer.fit()
    for p, q in zip(trainer.raw_model.parameters(), reference.raw_model.parameters(), strict=True):
        assert torch.equal(p, q) and torch.isfinite(p).all()
    assert [r["step"] for r in _lines(tmp_path / "nan")] == [1, 2]
    latest = trainer.checkpoints.latest()
    assert latest is not None and latest.name == "checkpoint-00000002.pt"


class Killed(Exception):
    pass


class NoisyTask:
    """Uses every RNG (torch via dropout and noise, NumPy, python) and can be killed."""

    def __init__(self, kill_at_call: int | None = None) -> None:
        self.calls = 0
        self.kill_at_call = kill_at_call

    def training_step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        self.calls += 1
        if self.calls == self.kill_at_call:
            raise Killed
        _, x, y = batch
        x = x + 0.1 * torch.randn_like(x) * float(np.random.rand()) * random.random()
        r = model(x).squeeze(-1) - y
        return (r**2).mean(), {"noise": float(np.random.rand())}


def _noisy_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(DIM, 16), nn.GELU(), nn.Dropout(0.2), nn.Linear(16, 1))


def test_exact_resume_reproduces_the_uninterrupted_run_bitwise(tmp_path: Path) -> None:
    """Killed during step 10, resumed from the step-8 checkpoint (mid-epoch): same losses,
    bitwise-identical final weights, log.jsonl holding every step once."""
    cfg_kw: dict[str, Any] = dict(
        epochs=2,
        batch_size=2,
        accum_steps=2,
        clip_grad=1.0,
        save_every_steps=4,
        save_every_epochs=1,
        keep_last=2,
        optim=OptimConfig(lr=1e-2, weight_decay=0.05),
        schedule=ScheduleConfig(kind="cosine", warmup_steps=3),
    )
    data = IndexedData(24)  # 6 steps per epoch, 12 in all
    full = build(config(tmp_path / "full", **cfg_kw), NoisyTask(), _noisy_model(0), data)
    full.fit()

    run = tmp_path / "killed"
    killed = build(config(run, **cfg_kw), NoisyTask(kill_at_call=9 * 2 + 1), _noisy_model(0), data)
    with pytest.raises(Killed):
        killed.fit()
    assert [r["step"] for r in _lines(run)] == list(range(1, 10))
    assert (
        CheckpointManager(run / "checkpoints").latest()
        == run / "checkpoints" / "checkpoint-00000008.pt"
    )
    # a new process: another initialisation, RNGs elsewhere; everything comes from the checkpoint
    random.seed(5)
    np.random.seed(5)
    resumed = build(config(run, **cfg_kw), NoisyTask(), _noisy_model(123), data)
    result = resumed.fit()
    assert result.global_step == 12
    for p, q in zip(resumed.raw_model.parameters(), full.raw_model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert _without_timing(_lines(run)) == _without_timing(_lines(tmp_path / "full"))
    state = load_checkpoint(run / "checkpoints" / "checkpoint-00000012.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (2, 0, 12)
    assert state["config"]["optim"]["weight_decay"] == 0.05 and len(state["rng"]) == 1


class CountingTask(MseTask):
    """Counts the samples it saw; the counts are its checkpointed state."""

    def __init__(self, kill_at_call: int | None = None) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}
        self.calls = 0
        self.kill_at_call = kill_at_call
        self.loaded: list[list[dict[str, Any]]] = []

    def training_step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        self.calls += 1
        if self.calls == self.kill_at_call:
            raise Killed
        for i in batch[0].tolist():
            self.counts[str(i % 3)] = self.counts.get(str(i % 3), 0) + 1
        return super().training_step(model, batch)

    def state_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts)}

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        self.loaded.append(states)
        for state in states:
            for k, v in state["counts"].items():
                self.counts[k] = self.counts.get(k, 0) + v


def test_a_task_state_survives_a_resume_and_a_finished_run_runs_no_step(tmp_path: Path) -> None:
    cfg = config(tmp_path / "run", epochs=2, save_every_steps=2)  # 4 steps per epoch
    full = CountingTask()
    build(config(tmp_path / "full", epochs=2), full).fit()
    assert sum(full.counts.values()) == 2 * N_SAMPLES
    with pytest.raises(Killed):
        build(cfg, CountingTask(kill_at_call=6)).fit()  # killed in step 6: resumes after 4
    resumed = CountingTask()
    result = build(cfg, resumed).fit()
    assert resumed.loaded == [
        [{"counts": {"0": 11, "1": 11, "2": 10}}]
    ]  # the 32 samples of 4 steps
    assert resumed.counts == full.counts
    assert (result.global_step, result.steps_run) == (8, 4)
    assert load_checkpoint(CheckpointManager(cfg.output_dir + "/checkpoints").latest())["task"] == [
        {"counts": full.counts}
    ]
    # resuming the finished run: no step, the last values come from the log
    again = build(cfg, CountingTask())
    done = again.fit()
    assert (done.global_step, done.steps_run) == (8, 0)
    last_row = _lines(tmp_path / "run")[-1]
    assert done.last["loss"] == last_row["loss"] and done.last["abs_err"] == last_row["abs_err"]
    # another seed is another data order: refused
    with pytest.raises(ResumeError, match="seed=0, this run has 1"):
        build(replace(cfg, seed=1), CountingTask()).fit()
    # so is another dataset length with the same steps per epoch (another permutation)
    with pytest.raises(ResumeError, match=f"dataset_len={N_SAMPLES}, this run has {N_SAMPLES + 1}"):
        build(cfg, CountingTask(), data=IndexedData(N_SAMPLES + 1)).fit()
    # a task that keeps a state refuses a checkpoint written without one
    plain = config(tmp_path / "plain", epochs=2, max_steps=2)
    build(plain, MseTask()).fit()
    with pytest.raises(ResumeError, match="holds no task state"):
        build(replace(plain, max_steps=None, resume="auto"), CountingTask()).fit()


def test_keep_last_k_and_the_last_pointer(tmp_path: Path) -> None:
    cfg = config(tmp_path, save_every_steps=1, keep_last=2)
    build(cfg, MseTask()).fit()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["checkpoint-00000003.pt", "checkpoint-00000004.pt", "last"]
    assert (tmp_path / "checkpoints" / "last").read_text() == "checkpoint-00000004.pt\n"
    assert load_checkpoint(tmp_path / "checkpoints" / "checkpoint-00000004.pt")["global_step"] == 4
    with pytest.raises(ResumeError, match="holds checkpoints already"):
        build(replace(cfg, resume=None), MseTask()).fit()
    explicit = build(
        replace(cfg, resume=str(tmp_path / "checkpoints" / "checkpoint-00000003.pt")), MseTask()
    )
    assert explicit.fit().global_step == 4


def test_a_failed_save_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import esam.train.checkpointing as ckpt

    manager = CheckpointManager(tmp_path, keep_last=3)
    first = manager.save({"model": {"w": torch.ones(2)}}, 1)
    real_save = torch.save

    def broken(obj: Any, f: Any, *a: Any, **kw: Any) -> None:
        f.write(b"partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", broken)
    with pytest.raises(OSError, match="No space left"):
        manager.save({"model": {"w": torch.zeros(2)}}, 2)
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name, "last"]
    assert manager.latest() == first and torch.equal(
        load_checkpoint(first)["model"]["w"], torch.ones(2)
    )
    with pytest.raises(TypeError, match=r"checkpoint.config.path is a PosixPath"):
        manager.save({"config": {"path": tmp_path}}, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name, "last"]


def test_log_jsonl_content(tmp_path: Path) -> None:
    cfg = config(tmp_path, epochs=2, log_every=3)  # 8 steps: lines at 3, 6 and the last
    build(cfg, MseTask()).fit()
    rows = _lines(tmp_path)
    assert [(r["step"], r["epoch"], r["epoch_step"]) for r in rows] == [
        (3, 0, 3),
        (6, 1, 2),
        (8, 1, 4),
    ]
    for r in rows:
        assert {"loss", "lr", "wd", "grad_norm", "samples_per_s", "time", "abs_err"} <= set(r)
        assert r["lr"] == 0.1 and r["samples_per_s"] > 0
    assert json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])["step"] == 3
    assert (tmp_path / "config.yaml").is_file()


def test_loss_curve_keeps_training_lines_evenly_spaced() -> None:
    rows: list[dict[str, Any]] = [
        {"step": s, "loss": 1.0 / s, "lr": 0.1, "dice": 0.5} for s in range(1, 11)
    ]
    rows.insert(5, {"step": 5, "epoch": 0, "val_box_miou": 50.0})  # a validation's line
    rows[2]["loss"] = None  # a non-finite loss is logged as null
    assert loss_curve(rows)[:3] == [
        {"step": 1, "loss": 1.0, "lr": 0.1},
        {"step": 2, "loss": 0.5, "lr": 0.1},
        {"step": 3, "loss": None, "lr": 0.1},
    ]
    assert len(loss_curve(rows)) == 10
    assert [r["step"] for r in loss_curve(rows, points=4)] == [1, 4, 7, 10]
    assert loss_curve(rows, ("dice", "absent"), points=2) == [
        {"step": 1, "dice": 0.5},
        {"step": 10, "dice": 0.5},
    ]


def test_evaluate_runs_after_every_nth_epoch_and_at_the_end(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(DIM, 1)
    seen: list[tuple[bool, bool, float]] = []

    def evaluate() -> dict[str, float]:
        seen.append((model.training, torch.is_grad_enabled(), float(model.weight.sum())))
        return {"val_w": float(model.weight.sum())}

    cfg = config(tmp_path / "run", epochs=5, log_every=4)  # 4 steps per epoch
    trainer = build(cfg, MseTask(), model=model)
    trainer.evaluate, trainer.evaluate_every_epochs = evaluate, 2
    result = trainer.fit()
    # after epochs 2 and 4, then the end (epoch 5); in eval mode, without gradients, on the
    # weights of that step
    assert [r["step"] for r in result.evaluations] == [8, 16, 20]
    assert [(training, grad) for training, grad, _ in seen] == [(False, False)] * 3
    assert result.evaluations[-1]["val_w"] == float(model.weight.detach().sum())
    assert model.training
    rows = _lines(tmp_path / "run")
    evals = [r for r in rows if "val_w" in r]
    assert [(r["step"], r["epoch"]) for r in evals] == [(8, 1), (16, 3), (20, 4)]
    assert all(r["eval_s"] >= 0 and "loss" not in r for r in evals)
    # the training lines are those of a run without evaluation
    plain = build(config(tmp_path / "plain", epochs=5, log_every=4), MseTask()).fit()
    assert [r["loss"] for r in rows if "loss" in r] == [
        r["loss"] for r in _lines(tmp_path / "plain")
    ]
    assert plain.evaluations == []
    # stopped early by max_steps: evaluated where it stops; 0 = only at the end
    stopped = build(config(tmp_path / "stop", epochs=5, max_steps=6), MseTask(), model=model)
    stopped.evaluate, stopped.evaluate_every_epochs = evaluate, 0
    assert [r["step"] for r in stopped.fit().evaluations] == [6]
    # a resumed run that is complete already runs no step and no evaluation, and its last
    # values are the last training line's, not the evaluation's
    again = build(replace(cfg, resume="auto"), MseTask(), model=model)
    again.evaluate = evaluate
    done = again.fit()
    assert (
        done.evaluations == [] and done.last["loss"] == [r for r in rows if "loss" in r][-1]["loss"]
    )


@pytest.mark.parametrize("kill_at", [1, 3])  # the evaluation after epoch 2, the final one
def test_an_evaluation_cut_off_after_its_checkpoint_runs_on_resume(
    tmp_path: Path, kill_at: int
) -> None:
    calls: list[int] = []

    def evaluate() -> dict[str, float]:
        calls.append(len(calls) + 1)
        if len(calls) == kill_at:
            raise Killed
        return {"val": 1.0}

    cfg = config(tmp_path / "run", epochs=5, log_every=4, save_every_epochs=1)
    first = build(cfg, MseTask())
    first.evaluate, first.evaluate_every_epochs = evaluate, 2
    with pytest.raises(Killed):
        first.fit()
    resumed = build(replace(cfg, resume="auto"), MseTask())
    resumed.evaluate, resumed.evaluate_every_epochs = evaluate, 2
    result = resumed.fit()
    done = [8, 16, 20][kill_at - 1 :]
    assert [r["step"] for r in result.evaluations] == done
    evals = [r["step"] for r in _lines(tmp_path / "run") if "val" in r]
    assert evals == [8, 16, 20]  # each once, in order
    # resuming the complete run evaluates nothing more
    again = build(replace(cfg, resume="auto"), MseTask())
    again.evaluate, again.evaluate_every_epochs = evaluate, 2
    assert again.fit().evaluations == []


def test_bf16_autocast_on_cpu(tmp_path: Path) -> None:
    cfg = config(tmp_path, precision="bf16", max_steps=2)
    result = build(cfg, MseTask()).fit()
    assert result.global_step == 2 and np.isfinite(result.last["loss"])


def test_grad_scaler_path_is_checkpointed_and_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fp16 code path (scale, unscale before clipping, scaler step, scaler state in the
    checkpoint) run on the CPU with a CPU GradScaler standing in for the CUDA one."""
    import esam.train.engine as engine

    monkeypatch.setattr(
        engine, "make_grad_scaler", lambda device, precision: torch.amp.GradScaler("cpu", 2.0**10)
    )
    cfg_kw: dict[str, Any] = dict(epochs=2, clip_grad=0.5, save_every_steps=3)
    full = build(config(tmp_path / "full", **cfg_kw), NoisyTask(), _noisy_model(0))
    assert full.fit().last["loss_scale"] == 2.0**10
    run = tmp_path / "killed"
    with pytest.raises(Killed):
        build(config(run, **cfg_kw), NoisyTask(kill_at_call=5), _noisy_model(0)).fit()
    assert (
        load_checkpoint(run / "checkpoints" / "checkpoint-00000003.pt")["scaler"]["scale"]
        == 2.0**10
    )
    resumed = build(config(run, **cfg_kw), NoisyTask(), _noisy_model(1))
    resumed.fit()
    for p, q in zip(resumed.raw_model.parameters(), full.raw_model.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_mixed_precision_trains_and_resumes(tmp_path: Path, precision: str) -> None:
    """fp16 goes through the GradScaler (its state is checkpointed); a resumed run ends with
    the uninterrupted run's weights."""
    cfg_kw: dict[str, Any] = dict(device="cuda", precision=precision, epochs=2, save_every_steps=3)
    full = build(config(tmp_path / "full", **cfg_kw), NoisyTask(), _noisy_model(0).cuda())
    result = full.fit()
    assert result.global_step == 8 and np.isfinite(result.last["loss"])
    assert ("loss_scale" in result.last) == (precision == "fp16")
    state = load_checkpoint(tmp_path / "full" / "checkpoints" / "checkpoint-00000008.pt")
    assert (state["scaler"] is not None) == (precision == "fp16") and len(
        state["rng"][0]["cuda"]
    ) >= 1
    run = tmp_path / "killed"
    killed = build(config(run, **cfg_kw), NoisyTask(kill_at_call=5), _noisy_model(0).cuda())
    with pytest.raises(Killed):
        killed.fit()
    resumed = build(config(run, **cfg_kw), NoisyTask(), _noisy_model(1).cuda())
    resumed.fit()
    for p, q in zip(resumed.raw_model.parameters(), full.raw_model.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_unreadable_names_round_trip_and_merge_across_processes() -> None:
    @dataclass
    class Task(KeepsUnreadable):
        unreadable: set[str] = field(default_factory=set)

    rank0, rank1 = Task({"b.jpg", "a.jpg"}), Task({"c.jpg", "a.jpg"})
    states = [rank0.state_dict(), rank1.state_dict()]
    assert states[0] == {"unreadable": ["a.jpg", "b.jpg"]}
    check_plain(states)  # fits a weights_only checkpoint
    resumed = Task()
    resumed.load_state_dict(states)  # two processes resumed as one
    assert resumed.unreadable == {"a.jpg", "b.jpg", "c.jpg"}


def test_config_changes_name_each_differing_key() -> None:
    saved = {"model": {"freeze": ["image_encoder"], "img_size": 128}, "train": {"resume": None}}
    now = {"model": {"freeze": [], "img_size": 128}, "train": {"resume": "auto", "seed": 1}}
    assert config_changes(saved, now) == [
        "model.freeze (['image_encoder'] there, [] here)",
        "train.seed (unset there, 1 here)",
    ]
    assert config_changes(saved, saved) == [] and config_changes(None, now) == []
    many = config_changes({f"k{i}": i for i in range(10)}, {}, limit=3)
    assert many == [f"k{i} ({i} there, unset here)" for i in (0, 1, 2)] + ["and 7 more"]


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("seed", -1, "seed must be >= 0, got -1"),
        ("epochs", 0, "epochs must be >= 1, got 0"),
        ("num_workers", -2, "num_workers must be >= 0, got -2"),
    ],
)
def test_bad_loop_settings_are_named(tmp_path: Path, field: str, value: int, match: str) -> None:
    with pytest.raises(InputError, match=match):
        config(tmp_path, **{field: value})


def test_a_checkpoint_of_other_weight_decay_groups_is_named(tmp_path: Path) -> None:
    """Weight-decay exemptions that changed since a checkpoint was written (here: the weight
    newly declared exempt) make its optimizer state unloadable: the error says which."""
    optim = OptimConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=0.1)
    cfg = config(tmp_path / "run", max_steps=2, save_every_steps=1, optim=optim)
    build(cfg, MseTask()).fit()

    class Exempt(nn.Linear):
        def no_weight_decay(self) -> set[str]:
            return {"weight"}

    torch.manual_seed(0)
    resumed = build(replace(cfg, resume="auto", max_steps=3), MseTask(), model=Exempt(DIM, 1))
    with pytest.raises(TrainCheckpointError, match=r"weight: weight_decay 0\.1 -> 0.*start again"):
        resumed.fit()
