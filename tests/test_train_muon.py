"""``optim.name=muon``: Muon for linear weights and AdamW for the rest, as one optimizer."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from esam.errors import InputError
from esam.train import OptimConfig, ScheduleConfig, TrainConfig, build_optimization
from esam.train.muon import MuonWithAdamW, matrix_params, ns_dtype_for, orthogonalise, split_groups
from esam.train.param_groups import param_groups
from tests.test_train_engine import IndexedData, MseTask, build


class Net(nn.Module):
    """Linear layers and a conv (Muon's weights), an embedding and a norm (AdamW's)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(3, 4)
        self.conv = nn.Conv1d(1, 1, 3, padding=1)
        self.fc1 = nn.Linear(4, 8)
        self.norm = nn.LayerNorm(8)
        self.fc2 = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.embed.weight[0] + self.conv(x[:, None])[:, 0]
        return self.fc2(self.norm(self.fc1(x).relu()))


def _loss(model: nn.Module, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)
    return ((model(x) - y) ** 2).mean()


def test_the_split_gives_muon_the_linear_and_convolution_weights_only() -> None:
    net = Net()
    muon, adamw = split_groups(param_groups(net, weight_decay=0.1), matrix_params(net))
    names = {id(p): n for n, p in net.named_parameters()}
    weights = ["conv.weight", "fc1.weight", "fc2.weight"]
    assert sorted(names[id(p)] for g in muon for p in g["params"]) == weights
    others = sorted(names[id(p)] for g in adamw for p in g["params"])
    assert others == sorted(set(names.values()) - set(weights))
    # the embedding table and the norm and bias vectors stay with AdamW
    assert others == [
        "conv.bias",
        "embed.weight",
        "fc1.bias",
        "fc2.bias",
        "norm.bias",
        "norm.weight",
    ]
    # each half keeps its group's weight decay, and the names of its own tensors
    assert {g["weight_decay"] for g in muon} == {0.1}
    for g in muon + adamw:
        assert g["param_names"] == [names[id(p)] for p in g["params"]]


def test_each_part_steps_as_its_own_torch_optimizer() -> None:
    """With its Newton-Schulz iterations in bfloat16 (PyTorch's choice), the Muon part is
    PyTorch's Muon bit for bit (on the linear weights: PyTorch's takes matrices only)."""
    torch.manual_seed(0)
    net = Net()
    ref = copy.deepcopy(net)

    def linear(model: nn.Module) -> set[int]:
        return {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}

    groups = param_groups(net, weight_decay=0.1)
    opt = MuonWithAdamW(
        *split_groups(groups, linear(net)),
        betas=(0.9, 0.95),
        momentum=0.9,
        ns_dtype="bfloat16",
    )
    ref_muon, ref_adamw = split_groups(param_groups(ref, weight_decay=0.1), linear(ref))
    ref_opts = [
        torch.optim.Muon(ref_muon, lr=0.0, momentum=0.9, adjust_lr_fn="match_rms_adamw"),
        torch.optim.AdamW(ref_adamw, lr=0.0, betas=(0.9, 0.95)),
    ]
    for step in range(3):
        for g in opt.param_groups:  # a scheduler sets the lr of every group
            g["lr"] = 0.01 * (step + 1)
        for o in ref_opts:
            for g in o.param_groups:
                g["lr"] = 0.01 * (step + 1)
        for model, optims in ((net, [opt]), (ref, ref_opts)):
            for o in optims:
                o.zero_grad()
            _loss(model, step).backward()
            for o in optims:
                o.step()
    for (name, a), b in zip(net.named_parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert not torch.equal(net.fc1.weight, Net().fc1.weight)
    # the two keep the same state: a checkpoint of PyTorch's Muon loads (runs resume across)
    assert opt.muon is not None
    saved = ref_opts[0].state_dict()
    opt.muon.load_state_dict(saved)
    assert opt.muon.state_dict()["param_groups"] == saved["param_groups"]


NS = (3.4445, -4.7750, 2.0315)  # PyTorch's (and Keller Jordan's) quintic coefficients


@pytest.mark.parametrize("shape", [(8, 24), (24, 8), (16, 16)])
def test_float32_iterations_orthogonalise_in_float32(shape: tuple[int, int]) -> None:
    """A matrix of known SVD U S V^T (singular values over two decades) comes out as
    U S' V^T: the same singular vectors, S' inside the band five iterations of these
    coefficients reach (about 0.68-1.14), computed in float32; the input is untouched."""
    g = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(shape[0], shape[0], generator=g))[0]
    v = torch.linalg.qr(torch.randn(shape[1], shape[1], generator=g))[0]
    r = min(shape)
    u, v = u[:, :r], v[:, :r]
    s = torch.logspace(-2, 0, r) * 5
    a = u @ torch.diag(s) @ v.T
    before = a.clone()
    out = orthogonalise(a, NS, 5, 1e-7, torch.float32)
    assert out.dtype == torch.float32 and out.shape == a.shape
    assert torch.equal(a, before)
    core = u.T @ out @ v  # diagonal: S'
    diag = torch.diagonal(core)
    # rounding of 5 iterations x 3 products of inner size <= max(shape), in float32
    tol = 5 * 3 * max(shape) * torch.finfo(torch.float32).eps
    assert (core - torch.diag(diag)).abs().max() < tol
    assert diag.min() > 0.6 and diag.max() < 1.2
    # bfloat16 computes the same map to within its own rounding (8 bits of mantissa)
    half = orthogonalise(a, NS, 5, 1e-7, torch.bfloat16)
    assert half.dtype == torch.bfloat16
    rel = (half.float() - out).norm() / out.norm()
    assert 0 < rel < 5 * 3 * torch.finfo(torch.bfloat16).eps


@pytest.mark.parametrize("native", [True, False])
def test_auto_iterates_in_bfloat16_on_bfloat16_gpus_only(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("esam.train.muon.supports_bf16", lambda device: native)
    assert ns_dtype_for("auto", torch.device("cpu")) == torch.float32
    gpu = torch.bfloat16 if native else torch.float32
    assert ns_dtype_for("auto", torch.device("cuda", 0)) == gpu
    assert ns_dtype_for("bfloat16", torch.device("cpu")) == torch.bfloat16
    assert ns_dtype_for("float32", torch.device("cuda")) == torch.float32


def test_an_unknown_iteration_dtype_is_refused_when_built() -> None:
    with pytest.raises(InputError, match="float32 or bfloat16, got 'bf16'"):
        MuonWithAdamW([{"params": [Net().fc1.weight]}], [], ns_dtype="bf16")  # type: ignore[arg-type]


def test_a_zero_gradient_only_decays_the_weights() -> None:
    """The norm clamp keeps an all-zero update finite: the step is the weight decay alone."""
    net = Net()
    before = net.fc1.weight.detach().clone()
    opt = MuonWithAdamW([{"params": [net.fc1.weight], "weight_decay": 0.5}], [], lr=0.1)
    net.fc1.weight.grad = torch.zeros_like(net.fc1.weight)
    opt.step()
    assert torch.equal(net.fc1.weight.detach(), before * (1 - 0.1 * 0.5))


def test_float32_muon_takes_the_same_steps_within_bfloat16_rounding() -> None:
    """The default on a CPU (float32 iterations) and PyTorch's bfloat16 ones update the
    weights alike: after 3 steps the two nets differ by far less than they moved."""
    torch.manual_seed(0)
    nets = [Net(), None]
    nets[1] = copy.deepcopy(nets[0])
    start = copy.deepcopy(nets[0])
    for net, dtype in zip(nets, ("float32", "bfloat16"), strict=True):
        groups = split_groups(param_groups(net, weight_decay=0.1), matrix_params(net))
        opt = MuonWithAdamW(*groups, lr=0.01, momentum=0.9, ns_dtype=dtype)
        assert opt.muon is not None and opt.muon.ns_dtype == dtype
        for step in range(3):
            opt.zero_grad()
            _loss(net, step).backward()
            opt.step()
    for name in ("fc1.weight", "fc2.weight"):
        a, b, w0 = (dict(m.named_parameters())[name] for m in (*nets, start))
        moved = (a - w0).norm()
        assert 0 < (a - b).norm() < 0.1 * moved, name


def test_muon_rejects_tensors_that_are_not_matrices() -> None:
    net = Net()
    with pytest.raises(InputError, match=r"matrices and kernels only; got shapes \[\(8,\)\]"):
        MuonWithAdamW([{"params": [net.fc1.bias]}], [])


@pytest.mark.parametrize(
    "layer", [nn.Conv2d(3, 5, 3), nn.ConvTranspose2d(6, 4, 2, stride=2), nn.Conv1d(4, 7, 1)]
)
def test_a_kernel_steps_as_the_matrix_of_its_first_dimension_by_the_rest(layer: nn.Module) -> None:
    """A convolution's kernel is updated exactly as a linear weight holding its
    first-dimension-by-rest matrix, with the same gradients, would be."""
    torch.manual_seed(0)
    kernel = layer.weight
    start = kernel.detach().clone()
    matrix = nn.Parameter(kernel.detach().flatten(1).clone())
    opts = [
        MuonWithAdamW([{"params": [w], "weight_decay": 0.1}], [], lr=0.05) for w in (kernel, matrix)
    ]
    for step in range(3):
        grad = torch.randn(kernel.shape, generator=torch.Generator().manual_seed(step))
        kernel.grad, matrix.grad = grad.clone(), grad.flatten(1).clone()
        for opt in opts:
            opt.step()
    assert torch.equal(kernel.detach().flatten(1), matrix.detach())
    assert not torch.equal(kernel.detach(), start)


def test_a_muon_run_resumes_bitwise(tmp_path: Path) -> None:
    cfg = TrainConfig(
        output_dir=str(tmp_path / "full"), device="cpu", epochs=2, batch_size=8,
        num_workers=0, log_every=1, save_every_epochs=0, progress=False,
        optim=OptimConfig(name="muon", lr=0.02, weight_decay=0.05),
        schedule=ScheduleConfig(kind="linear", warmup_steps=2),
    )  # fmt: skip

    def model() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))

    full = build(cfg, MseTask(), model=model(), data=IndexedData())
    assert isinstance(full.optimizer, MuonWithAdamW)
    full.fit()
    split_cfg = replace(cfg, output_dir=str(tmp_path / "split"), save_every_steps=3)
    build(replace(split_cfg, max_steps=3), MseTask(), model=model()).fit()
    resumed = build(replace(split_cfg, resume="auto"), MseTask(), model=model())
    resumed.fit()
    for a, b in zip(full.raw_model.parameters(), resumed.raw_model.parameters(), strict=True):
        assert torch.equal(a, b)
    # an AdamW checkpoint does not fit a Muon run: a named error
    adamw_cfg = replace(cfg, output_dir=str(tmp_path / "adamw"), max_steps=1)
    build(
        replace(adamw_cfg, optim=replace(cfg.optim, name="adamw")), MseTask(), model=model()
    ).fit()
    with pytest.raises(Exception, match="another optim.name"):
        build(replace(adamw_cfg, max_steps=None, resume="auto"), MseTask(), model=model()).fit()


def test_build_optimization_builds_muon_from_the_config() -> None:
    cfg = TrainConfig(optim=OptimConfig(name="muon", lr=0.01, muon_momentum=0.9))
    opt, _ = build_optimization(Net(), cfg, steps_per_epoch=4, global_batch=8)
    assert isinstance(opt, MuonWithAdamW) and opt.muon is not None
    assert {g["momentum"] for g in opt.muon.param_groups} == {0.9}
    assert opt.muon.ns_dtype == "auto"
    cfg = TrainConfig(optim=OptimConfig(name="muon", muon_ns_dtype="bfloat16"))
    opt, _ = build_optimization(Net(), cfg, steps_per_epoch=4, global_batch=8)
    assert isinstance(opt, MuonWithAdamW) and opt.muon is not None
    assert opt.muon.ns_dtype == "bfloat16"
