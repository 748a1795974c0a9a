"""Regenerate tests/fixtures/regression_vitt_standin.npz (run only after a verified change).

The values come from esam's EfficientSAM-Ti with stand-in weights, whose computation matches the
official implementation on the golden cases; the regression test guards that on any machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import esam
from esam.standin import load_standin_weights

OUT = Path(__file__).parent / "fixtures" / "regression_vitt_standin.npz"


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A deterministic 90x120 image and three queries (box, two points, point + negative)."""
    h, w = 90, 120
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 2, yy * 2, (xx + yy)], axis=-1).astype(np.uint8)
    img[20:60, 15:55] = (230, 40, 40)
    img[((yy - 45) ** 2 + (xx - 90) ** 2) < 15**2] = (30, 200, 60)
    images = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
    points = torch.tensor(
        [[[[15.0, 20.0], [55.0, 60.0]], [[30.0, 40.0], [40.0, 30.0]], [[90.0, 45.0], [30.0, 40.0]]]]
    )
    labels = torch.tensor([[[2, 3], [1, 1], [1, 0]]])
    return images, points, labels


def compute() -> dict[str, np.ndarray]:
    model = load_standin_weights(esam.build_model("efficientsam_vitt")).eval()
    images, points, labels = inputs()
    with torch.no_grad():
        emb = model.get_image_embeddings(images)
        low, iou = model.predict_masks(emb, points, labels, True, 90, 120)
        full, _ = model(images, points, labels)
    return {
        "embeddings_sub": emb[:, ::8, ::4, ::4].numpy(),
        "low_res_sub": low[..., ::8, ::8].numpy(),
        "iou": iou.numpy(),
        "full_res_masks": (full > 0).numpy(),
    }


if __name__ == "__main__":
    np.savez_compressed(OUT, **compute())
    print(f"wrote {OUT}")
