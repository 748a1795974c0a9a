"""Muon for a model's weight matrices and kernels and AdamW for the rest, as one optimizer.

Muon (``torch.optim.Muon``: Nesterov momentum whose update is orthogonalised by a few
Newton-Schulz iterations) is defined for matrices; a convolution's kernel is one too, its
output channels by the rest (a linear layer over each receptive field), as Muon's own speed
runs treat it. :func:`matrix_params` gives Muon the weights of the linear and convolution
layers and leaves embeddings, norms and biases to AdamW. :class:`MuonWithAdamW` runs both
behind one :class:`torch.optim.Optimizer`, so the engine, the schedulers (which set
``group["lr"]`` and ``group["weight_decay"]``), the fp16 grad scaler and checkpoints see a
single optimizer. Muon's step is scaled to AdamW's update size (``adjust_lr_fn=
"match_rms_adamw"``), so the same learning rate and weight decay serve both.

PyTorch runs the Newton-Schulz iterations in bfloat16, which GPUs multiply fast; a CPU without
bfloat16 matrix units multiplies these small matrices 10 to 20 times slower than in float32,
enough to double the step of a small model (``benchmarks/bench_muon.py``). :class:`Muon`
computes PyTorch's update with the iterations in a chosen dtype: by default bfloat16 on GPUs
that compute in it natively, float32 elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from esam.errors import InputError
from esam.runtime.precision import supports_bf16
from esam.train.config import MuonNsDtype

#: Muon's step scaled to match AdamW's update RMS, so one learning rate serves both.
ADJUST_LR = "match_rms_adamw"


NS_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
#: PyTorch's (and Keller Jordan's) quintic Newton-Schulz coefficients.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def ns_dtype_for(setting: MuonNsDtype, device: torch.device) -> torch.dtype:
    """The dtype of the Newton-Schulz iterations for a weight on ``device``: ``auto`` is
    bfloat16 on a GPU that computes in it natively, float32 elsewhere (even CPUs with bfloat16
    units ran these small products faster in float32)."""
    if setting == "auto":
        native = device.type == "cuda" and supports_bf16(device)
        return torch.bfloat16 if native else torch.float32
    return NS_DTYPES[setting]


def orthogonalise(
    update: torch.Tensor,
    coefficients: tuple[float, float, float],
    steps: int,
    eps: float,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Muon's quintic Newton-Schulz iteration, as PyTorch's, computed in ``dtype``.

    Args:
        update: AxB momentum-smoothed gradient (left untouched).

    Returns:
        AxB in ``dtype``: roughly U V^T of the update's SVD U S V^T (singular values pushed
        into about 0.7-1.2, not exactly to 1; the iteration's coefficients trade that for speed).
    """
    a, b, c = coefficients
    x = update.to(dtype, copy=True)
    tall = update.size(0) > update.size(1)
    if tall:  # iterate on the smaller Gram matrix
        x = x.T
    x.div_(x.norm().clamp(min=eps))  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, poly, x, beta=a)
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """PyTorch's Muon (``torch.optim.Muon``) with AdamW-matched update size, for weight
    matrices and convolution kernels, its Newton-Schulz iterations in ``ns_dtype``
    (:func:`ns_dtype_for`).

    The update is PyTorch's (decoupled weight decay, Nesterov momentum, the same param-group
    keys and state ``momentum_buffer``, so checkpoints of either load into the other; in
    bfloat16 the same bits, which a test checks), with two additions: a kernel of shape
    ``out x in x k...`` (a transposed convolution's: ``in x out x k...``) is orthogonalised as
    the matrix of its first dimension by the rest, as for a linear layer over its receptive
    field; and the iterations work on a copy even when the update already has their dtype
    (PyTorch's normalise a bfloat16 momentum buffer in place when Nesterov is off).
    """

    def __init__(
        self,
        params: Any,
        *,
        lr: float = 1e-3,
        momentum: float = 0.95,
        ns_dtype: MuonNsDtype = "auto",
    ) -> None:
        if ns_dtype != "auto" and ns_dtype not in NS_DTYPES:
            raise InputError(
                f"Muon's Newton-Schulz dtype must be auto, float32 or bfloat16, got {ns_dtype!r}"
            )
        if lr < 0 or momentum < 0:
            raise InputError(f"Muon needs lr >= 0 and momentum >= 0, got {lr} and {momentum}")
        defaults = {  # torch.optim.Muon's group keys and defaults
            "lr": lr,
            "weight_decay": 0.1,
            "momentum": momentum,
            "nesterov": True,
            "ns_coefficients": NS_COEFFICIENTS,
            "eps": 1e-7,
            "ns_steps": 5,
            "adjust_lr_fn": ADJUST_LR,
        }
        super().__init__(params, defaults)
        bad = [tuple(p.shape) for g in self.param_groups for p in g["params"] if p.ndim < 2]
        if bad:
            raise InputError(f"Muon updates matrices and kernels only; got shapes {bad[:3]}")
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, decay, momentum = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(
                        p.grad, memory_format=torch.preserve_format
                    )
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                rows, cols = p.shape[0], p[0].numel()
                ortho = orthogonalise(
                    update.reshape(rows, cols),
                    group["ns_coefficients"],
                    group["ns_steps"],
                    group["eps"],
                    ns_dtype_for(self.ns_dtype, p.device),
                )
                p.mul_(1 - lr * decay)
                # match_rms_adamw: an orthogonal AxB update has RMS 1/sqrt(max(A, B))
                p.add_(ortho.reshape_as(p), alpha=-(lr * (0.2 * math.sqrt(max(rows, cols)))))
        return loss


#: The layers whose weight Muon updates: linear layers and convolutions (kernels as matrices).
MUON_LAYERS = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def matrix_params(model: nn.Module) -> set[int]:
    """``id`` of the weight of every linear and convolution layer in ``model`` (Muon's share,
    :data:`MUON_LAYERS`)."""
    return {id(m.weight) for m in model.modules() if isinstance(m, MUON_LAYERS)}


def split_groups(
    groups: list[dict[str, Any]], matrices: set[int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each param group split into its ``matrices`` (for Muon) and the rest (for AdamW); both
    halves keep the group's other settings (weight decay, lr scale, ...) and the names of their
    own tensors (``param_names``). Empty halves are dropped."""
    muon: list[dict[str, Any]] = []
    adamw: list[dict[str, Any]] = []
    for group in groups:
        rest = {k: v for k, v in group.items() if k not in ("params", "param_names")}
        params = list(group["params"])
        names = group.get("param_names")
        for half, mine in ((muon, True), (adamw, False)):
            keep = [i for i, p in enumerate(params) if (id(p) in matrices) == mine]
            if not keep:
                continue
            part = {**rest, "params": [params[i] for i in keep]}
            if names is not None:  # PyTorch's own key, one name per tensor
                part["param_names"] = [names[i] for i in keep]
            half.append(part)
    return muon, adamw


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon over ``muon_groups`` and AdamW over ``adamw_groups``.

    ``param_groups`` holds the groups of both (the same dicts the two optimizers step with),
    Muon's first. The state dict holds both optimizers' state dicts.

    Args:
        muon_groups: param groups of matrices and kernels (2 or more dimensions) only.
        adamw_groups: param groups of every other tensor.
        lr: initial learning rate of both (schedulers set it per step).
        betas, eps: AdamW's.
        momentum: Muon's (Nesterov) momentum.
        ns_dtype: dtype of Muon's Newton-Schulz iterations (:func:`ns_dtype_for`).
    """

    def __init__(
        self,
        muon_groups: list[dict[str, Any]],
        adamw_groups: list[dict[str, Any]],
        *,
        lr: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        momentum: float = 0.95,
        ns_dtype: MuonNsDtype = "auto",
    ) -> None:
        self.muon = (
            Muon(muon_groups, lr=lr, momentum=momentum, ns_dtype=ns_dtype) if muon_groups else None
        )
        self.adamw = (
            torch.optim.AdamW(adamw_groups, lr=lr, betas=betas, eps=eps) if adamw_groups else None
        )
        inner = [o for o in (self.muon, self.adamw) if o is not None]
        if not inner:
            raise InputError("the optimizer has no parameter to train")
        super().__init__([g for o in inner for g in o.param_groups], {})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for o in (self.muon, self.adamw):
            if o is not None:
                o.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {
            "muon": None if self.muon is None else self.muon.state_dict(),
            "adamw": None if self.adamw is None else self.adamw.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if set(state_dict) != {"muon", "adamw"}:
            raise ValueError(
                "not the state of a Muon + AdamW optimizer (keys "
                f"{sorted(state_dict)}); was the checkpoint written with another optim.name?"
            )
        for name, o in (("muon", self.muon), ("adamw", self.adamw)):
            saved = state_dict[name]
            if (o is None) != (saved is None):
                raise ValueError(f"the checkpoint's {name} part does not fit this model's")
            if o is not None:
                o.load_state_dict(saved)
        # loading gives the inner optimizers new group dicts: share them again, so that what a
        # scheduler writes into param_groups reaches them
        self.param_groups = [
            g for o in (self.muon, self.adamw) if o is not None for g in o.param_groups
        ]
