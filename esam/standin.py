"""Deterministic stand-in weights for demos and tests.

Real checkpoints cannot be shipped with the project, so the demo and the always-on regression
tests use weights that are a pure function of each parameter's name and shape (NumPy's PCG64
seeded with a hash of the name), independent of torch's RNG and of module construction order.
They produce non-trivial, reproducible masks; they are not a trained model.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import nn


def standin_tensor(key: str, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """The stand-in value of one parameter, float32 of ``shape``."""
    rng = np.random.Generator(np.random.PCG64([seed, zlib.crc32(key.encode())]))
    x = rng.standard_normal(shape)
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
    return torch.from_numpy(x.astype(np.float32))


def standin_state_dict(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Stand-in values for every entry of ``model.state_dict()``."""
    return {k: standin_tensor(k, tuple(v.shape), seed) for k, v in model.state_dict().items()}


def load_standin_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fill ``model`` with stand-in weights in place and return it."""
    model.load_state_dict(standin_state_dict(model, seed), strict=True)
    return model
