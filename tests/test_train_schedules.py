"""Per-step lr / wd schedules: exact values at known steps, per-group scales, config wiring."""

from __future__ import annotations

import math

import pytest
import torch

from esam.train.config import OptimConfig, ScheduleConfig, TrainConfig
from esam.train.schedules import ParamScheduler, Schedule, build_schedules, peak_lr, scaled_lr


def test_warmup_then_each_decay_at_known_steps() -> None:
    cos = Schedule("cosine", peak=1.0, total_steps=110, warmup_steps=10, end=0.1)
    assert [cos(s) for s in (0, 5, 10)] == [0.0, 0.5, 1.0]
    assert cos(60) == pytest.approx(0.55, abs=1e-15)  # half-way: mean of peak and end
    assert cos(110) == pytest.approx(0.1, abs=1e-15) and cos(500) == cos(110)
    assert cos(35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)), abs=1e-15)
    lin = Schedule("linear", peak=2.0, total_steps=10, end=0.0)
    assert [lin(s) for s in (0, 5, 10)] == [2.0, 1.0, 0.0]
    poly = Schedule("poly", peak=1.0, total_steps=10, power=2.0)
    assert poly(5) == 0.25 and poly(10) == 0.0
    step = Schedule("step", peak=1.0, total_steps=100, milestones=(30, 60), gamma=0.1)
    assert [step(s) for s in (29, 30, 59)] == [1.0, 0.1, 0.1] and step(60) == pytest.approx(0.01)
    const = Schedule("constant", peak=0.3, total_steps=5, warmup_steps=2, warmup_start=0.1)
    assert [const(s) for s in (0, 1, 2, 4)] == [0.1, 0.2, 0.3, 0.3]
    with pytest.raises(ValueError, match="unknown schedule"):
        Schedule("exp", peak=1.0, total_steps=1)
    assert Schedule.from_dict(step.to_dict()) == step


def test_lr_scaling_rule() -> None:
    assert scaled_lr(1.5e-4, 4096) == pytest.approx(2.4e-3)
    assert peak_lr(OptimConfig(base_lr=1e-3), 512) == 2e-3
    assert peak_lr(OptimConfig(lr=0.5), 512) == 0.5


def test_scheduler_respects_group_scales() -> None:
    w, b = torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW(
        [
            {"params": [w], "weight_decay": 0.05, "wd_scale": 1.0, "lr_scale": 0.5},
            {"params": [b], "weight_decay": 0.0, "wd_scale": 0.0, "lr_scale": 1.0},
        ]
    )
    lr = Schedule("linear", peak=1.0, total_steps=4, end=0.0)
    wd = Schedule("linear", peak=0.04, total_steps=4, end=0.2)
    sched = ParamScheduler(opt, lr, wd)
    assert sched.apply(1) == (0.75, pytest.approx(0.08))
    assert [g["lr"] for g in opt.param_groups] == [0.375, 0.75]
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.08)
    assert opt.param_groups[1]["weight_decay"] == 0.0
    without_wd = ParamScheduler(opt, lr)
    without_wd.apply(0)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.08)  # left as it was


def test_build_schedules_converts_epochs_to_steps() -> None:
    cfg = TrainConfig(
        epochs=10,
        optim=OptimConfig(min_lr=1e-6, weight_decay=0.04, weight_decay_end=0.4),
        schedule=ScheduleConfig(warmup_epochs=1.5, milestones=(5.0,), kind="cosine"),
    )
    lr, wd = build_schedules(cfg, steps_per_epoch=20, lr=1e-3)
    assert (lr.total_steps, lr.warmup_steps, lr.end, lr.peak) == (200, 30, 1e-6, 1e-3)
    assert lr.milestones == (100,)
    assert wd is not None and wd(0) == 0.04 and wd(200) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="longer than the run"):
        build_schedules(TrainConfig(epochs=1, schedule=ScheduleConfig(warmup_steps=50)), 20, 1.0)
