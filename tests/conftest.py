"""Shared test fixtures: where ../shared is, tiny models, generated images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """The shared material folder (ESAM_SHARED or ../shared beside the repo), if present."""
    env = os.environ.get("ESAM_SHARED")
    path = Path(env) if env else REPO.parent / "shared"
    return path if path.is_dir() else None


def require_shared(*parts: str) -> Path:
    """Path under the shared folder, or skip the test with the reason."""
    root = shared_dir()
    if root is None:
        pytest.skip(
            "shared material not found (set ESAM_SHARED or place it at ../shared beside the repo)"
        )
    path = root.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared material lacks {path}")
    return path


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_model():
    """A Ti-shaped EfficientSAM at 128 px input with 2 encoder blocks and stand-in weights."""
    import esam
    from esam.standin import load_standin_weights

    model = esam.build_model("efficientsam_vitt", img_size=128, encoder_depth=2)
    return load_standin_weights(model).eval()


@pytest.fixture
def rgb_image() -> np.ndarray:
    """A 90x120 RGB uint8 image with a bright rectangle and a disc on a gradient."""
    h, w = 90, 120
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 2, yy * 2, (xx + yy)], axis=-1).astype(np.uint8)
    img[20:60, 15:55] = (230, 40, 40)
    img[((yy - 45) ** 2 + (xx - 90) ** 2) < 15**2] = (30, 200, 60)
    return img
