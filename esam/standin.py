"""Deterministic stand-in weights for demos and tests, and their detection.

Real checkpoints cannot be shipped with the project, so the demo and the always-on regression
tests use weights that are a pure function of each parameter's name and shape (NumPy's PCG64
seeded with a hash of the name), independent of torch's RNG and of module construction order.
They produce non-trivial, reproducible masks; they are not a trained model.

Checkpoints in the official layout used to check parity with the official implementation are
filled the same way from a torch generator instead (``torch.Generator().manual_seed(seed ^
crc32(name))``, float64 normals, the same scaling): :func:`torch_standin_tensor`.

Because both are deterministic, a checkpoint holding them is recognised from a few of its
tensors (:func:`detect_standin`), and its loader records ``weights="standin (seed N)"`` so that
results computed with it are flagged as not meaningful.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

#: Seeds :func:`identify_standin` tries for each generator, besides :data:`FIXTURE_SEED`.
DETECT_SEEDS: range = range(256)
#: Seed of the official-layout parity fixtures (torch generator).
FIXTURE_SEED = 20240613
#: Tensors compared against the stand-in values before a state dict counts as stand-in.
N_PROBES = 3


def _crc(key: str) -> int:
    return zlib.crc32(key.encode())


def _scale(x: np.ndarray, key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Stand-in values from standard normals ``x`` (float64): norm scales near one, biases and
    position embeddings small, random Fourier features as drawn, other weights by fan-in."""
    leaf = key.rsplit(".", 1)[-1]
    if len(shape) == 1 and leaf == "weight":  # norm scales
        x = 1.0 + 0.1 * x
    elif leaf == "bias" or "pos_embed" in key or len(shape) == 1:
        x = 0.02 * x
    elif "gaussian_matrix" in key:
        pass
    else:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        x = x / max(fan_in, 1) ** 0.5
    return torch.from_numpy(np.asarray(x, dtype=np.float64).astype(np.float32))


def standin_tensor(key: str, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """The stand-in value of one parameter, float32 of ``shape``."""
    rng = np.random.Generator(np.random.PCG64([seed, _crc(key)]))
    return _scale(rng.standard_normal(shape), key, shape)


def torch_standin_tensor(
    key: str, shape: tuple[int, ...], seed: int = FIXTURE_SEED
) -> torch.Tensor:
    """The value of one parameter in the official-layout parity fixtures, float32 of ``shape``."""
    generator = torch.Generator().manual_seed(seed ^ _crc(key))
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    return _scale(x.numpy(), key, shape)


def standin_state_dict(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Stand-in values for every entry of ``model.state_dict()``."""
    return {k: standin_tensor(k, tuple(v.shape), seed) for k, v in model.state_dict().items()}


def load_standin_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fill ``model`` with stand-in weights in place and return it."""
    model.load_state_dict(standin_state_dict(model, seed), strict=True)
    return model


#: Stand-in generators by name: ``numpy`` (:func:`standin_tensor`) and ``torch``
#: (:func:`torch_standin_tensor`), each with the seed it tries first.
GENERATORS: dict[str, tuple[Callable[[str, tuple[int, ...], int], torch.Tensor], int]] = {
    "numpy": (standin_tensor, 0),
    "torch": (torch_standin_tensor, FIXTURE_SEED),
}


@dataclass(frozen=True)
class StandinMatch:
    """Which stand-in weights a state dict holds.

    Attributes:
        seed: the seed they were drawn with.
        generator: ``numpy`` (esam's stand-ins) or ``torch`` (the parity fixtures).
    """

    seed: int
    generator: str

    @property
    def label(self) -> str:
        """``standin (seed N)``; the parity fixtures' generator is named after the seed."""
        if self.generator == "numpy":
            return f"standin (seed {self.seed})"
        return f"standin (seed {self.seed}, {self.generator} generator)"


def _probes(state: Mapping[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """The :data:`N_PROBES` smallest floating-point tensors (ties by name): cheap to redraw."""
    floats = [
        (k, v)
        for k, v in state.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel() > 0
    ]
    floats.sort(key=lambda kv: (kv[1].numel(), kv[0]))
    return floats[:N_PROBES]


def _values(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float32).numpy()


def _equal(actual: np.ndarray, expected: torch.Tensor) -> bool:
    """``actual`` holds ``expected`` to float32 precision."""
    values = expected.numpy()
    return actual.shape == values.shape and bool(np.allclose(actual, values, rtol=1e-6, atol=1e-7))


def identify_standin(
    state: Mapping[str, torch.Tensor], seeds: Iterable[int] = DETECT_SEEDS
) -> StandinMatch | None:
    """Whether ``state`` holds stand-in weights, and which.

    The smallest tensor is compared with its stand-in value under every generator and seed
    (the generator's usual seed first, then ``seeds``); on a match the next
    :data:`N_PROBES` - 1 smallest tensors must match too. Trained weights are never mistaken
    for stand-ins: the values are compared to float32 precision.

    Returns:
        The generator and seed, or ``None`` (no match, or no floating-point tensor).
    """
    probes = _probes(state)
    if not probes:
        return None
    seed_list = list(seeds)
    values = [(k, tuple(v.shape), _values(v)) for k, v in probes]
    (first_key, first_shape, first), rest = values[0], values[1:]
    for name, (make, usual) in GENERATORS.items():
        for seed in dict.fromkeys([usual, *seed_list]):
            if not _equal(first, make(first_key, first_shape, seed)):
                continue
            if all(_equal(v, make(k, shape, seed)) for k, shape, v in rest):
                return StandinMatch(seed=seed, generator=name)
    return None


def detect_standin(
    state: Mapping[str, torch.Tensor], seeds: Iterable[int] = DETECT_SEEDS
) -> int | None:
    """The seed of the stand-in weights ``state`` holds, or ``None`` for other weights.

    See :func:`identify_standin` (which also says which generator drew them).
    """
    match = identify_standin(state, seeds)
    return None if match is None else match.seed
