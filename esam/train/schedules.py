"""Per-optimizer-step learning-rate and weight-decay schedules.

A :class:`Schedule` is a pure function of the optimizer step (0-based: the value used by the
step about to be taken): a linear warm-up from ``warmup_start`` to ``peak`` over
``warmup_steps``, then one of

* ``cosine``: ``end + (peak - end) * (1 + cos(pi * t)) / 2``,
* ``linear``: ``peak + (end - peak) * t``,
* ``poly``: ``end + (peak - end) * (1 - t) ** power``,
* ``step``: ``peak * gamma ** (number of milestones <= step)``,
* ``constant``: ``peak``,

where ``t = (step - warmup_steps) / (total_steps - warmup_steps)``, clamped to [0, 1].
Because it depends on the step alone, a resumed run recomputes it exactly; nothing but the
definition needs saving.

:class:`ParamScheduler` writes the values into the optimizer before each step, respecting the
per-group factors set by :func:`esam.train.param_groups.param_groups`: ``lr_scale`` (layer
decay) and ``wd_scale`` (0 for parameters without weight decay).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

from torch.optim import Optimizer

from esam.errors import InputError
from esam.train.config import OptimConfig, ScheduleKind, TrainConfig

log = logging.getLogger(__name__)

#: Batch size the ``base_lr`` of a config refers to (MAE's convention).
REFERENCE_BATCH = 256

_KINDS = ("cosine", "linear", "poly", "step", "constant")


def scaled_lr(base_lr: float, global_batch: int, reference: int = REFERENCE_BATCH) -> float:
    """The linear scaling rule: ``base_lr * global_batch / reference``."""
    return base_lr * global_batch / reference


def peak_lr(optim: OptimConfig, global_batch: int) -> float:
    """The run's peak lr: ``optim.lr`` when set, else ``base_lr`` scaled to the global batch."""
    return optim.lr if optim.lr is not None else scaled_lr(optim.base_lr, global_batch)


@dataclass(frozen=True)
class Schedule:
    """A value per optimizer step: linear warm-up, then a decay (see the module docstring).

    Attributes:
        kind: ``cosine``, ``linear``, ``poly``, ``step`` or ``constant``.
        peak: value at the end of the warm-up.
        total_steps: steps of the whole run (the decay ends here).
        warmup_steps: steps of the linear warm-up.
        warmup_start: value at step 0 of the warm-up.
        end: value at ``total_steps`` (cosine, linear, poly).
        power: exponent of ``poly``.
        milestones: steps at which ``step`` multiplies by ``gamma``.
        gamma: factor of ``step``.
    """

    kind: str
    peak: float
    total_steps: int
    warmup_steps: int = 0
    warmup_start: float = 0.0
    end: float = 0.0
    power: float = 1.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise InputError(f"unknown schedule {self.kind!r}; choose from {', '.join(_KINDS)}")
        if self.total_steps < 1 or not 0 <= self.warmup_steps <= self.total_steps:
            raise InputError(
                f"need 0 <= warmup_steps ({self.warmup_steps}) <= total_steps ({self.total_steps})"
                " and total_steps >= 1"
            )

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_start + (self.peak - self.warmup_start) * step / self.warmup_steps
        if self.kind == "constant":
            return self.peak
        if self.kind == "step":
            return self.peak * self.gamma ** sum(1 for m in self.milestones if step >= m)
        span = self.total_steps - self.warmup_steps
        t = min(max((step - self.warmup_steps) / span, 0.0), 1.0) if span > 0 else 1.0
        if t == 0.0:  # exactly the peak (and exactly the end at t = 1 below)
            return self.peak
        if self.kind == "cosine":
            return self.end + (self.peak - self.end) * 0.5 * (1.0 + math.cos(math.pi * t))
        if self.kind == "linear":
            return (1.0 - t) * self.peak + t * self.end
        return self.end + (self.peak - self.end) * (1.0 - t) ** self.power  # poly

    def to_dict(self) -> dict[str, Any]:
        """Plain values (milestones as a list), for checkpoints."""
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Schedule:
        return cls(**{**d, "milestones": tuple(d.get("milestones", ()))})


def build_schedules(
    cfg: TrainConfig, steps_per_epoch: int, lr: float
) -> tuple[Schedule, Schedule | None]:
    """The lr schedule (peak ``lr``) and, if ``optim.weight_decay_end`` is set, the wd schedule.

    Warm-up and milestones given in epochs are rounded to whole optimizer steps. The weight
    decay follows the lr schedule's shape without warm-up, from ``weight_decay`` to
    ``weight_decay_end``; without ``weight_decay_end`` it stays constant (no wd schedule).
    """
    sc, oc = cfg.schedule, cfg.optim
    total = cfg.epochs * steps_per_epoch
    warmup = (
        sc.warmup_steps
        if sc.warmup_steps is not None
        else round(sc.warmup_epochs * steps_per_epoch)
    )
    if warmup > total:
        raise InputError(f"warm-up of {warmup} steps is longer than the run ({total} steps)")
    kind: ScheduleKind = sc.kind
    lr_s = Schedule(
        kind=kind,
        peak=lr,
        total_steps=total,
        warmup_steps=warmup,
        end=oc.min_lr,
        power=sc.power,
        milestones=tuple(round(m * steps_per_epoch) for m in sc.milestones),
        gamma=sc.gamma,
    )
    wd_s = None
    if oc.weight_decay_end is not None:
        wd_kind = kind if kind in ("cosine", "linear", "poly") else "linear"
        wd_s = Schedule(
            kind=wd_kind,
            peak=oc.weight_decay,
            total_steps=total,
            end=oc.weight_decay_end,
            power=sc.power,
        )
    return lr_s, wd_s


class ParamScheduler:
    """Sets every param group's lr and weight decay for an optimizer step.

    ``group["lr"] = lr(step) * group.get("lr_scale", 1)`` and, with a wd schedule,
    ``group["weight_decay"] = wd(step) * group.get("wd_scale", 1)``; without one, weight decay
    is left as the param groups set it.

    Args:
        optimizer: the optimizer whose groups are driven.
        lr: the learning-rate schedule.
        wd: the weight-decay schedule, or None.
    """

    def __init__(self, optimizer: Optimizer, lr: Schedule, wd: Schedule | None = None) -> None:
        self.optimizer = optimizer
        self.lr = lr
        self.wd = wd

    def apply(self, step: int) -> tuple[float, float | None]:
        """Set the groups for optimizer step ``step``; return the unscaled (lr, wd)."""
        lr = self.lr(step)
        wd = self.wd(step) if self.wd is not None else None
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
            if wd is not None:
                group["weight_decay"] = wd * group.get("wd_scale", 1.0)
        return lr, wd

    def state_dict(self) -> dict[str, Any]:
        """The schedules' definitions (they have no other state)."""
        return {"lr": self.lr.to_dict(), "wd": self.wd.to_dict() if self.wd is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Keep the current definitions (they come from the run's config); warn if they differ
        from the saved ones, since the resumed run then follows another schedule."""
        if state != self.state_dict():
            log.warning(
                "the lr / wd schedule differs from the checkpoint's; continuing with the current "
                "configuration's schedule (saved: %s; now: %s)",
                state,
                self.state_dict(),
            )
