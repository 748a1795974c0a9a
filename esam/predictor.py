"""``EfficientSamPredictor``: encode an image once, then prompt it many times.

Mirrors segment-anything's ``SamPredictor``: ``set_image`` runs the image encoder,
``predict`` decodes one object, ``predict_batch`` decodes many prompts in one decoder call.
Coordinates are (x, y) pixels of the image passed to ``set_image``. Masks follow the official
EfficientSAM post-processing: 256x256 logits upsampled bicubically to the image size, mask =
logits > 0.

Every input is checked here, on the host, before anything reaches the device (a uint8 image is
in range by construction; prompt values are checked as numpy arrays), so the model's forward
paths only check shapes and never synchronise with the device to validate values.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from esam.errors import InputError
from esam.modeling.efficient_sam import EfficientSam
from esam.validation import (
    check_boxes,
    check_image_array,
    check_points_and_labels,
    check_prompt_count,
)


class EfficientSamPredictor:
    """Stateful predictor over one image.

    Args:
        model: an :class:`EfficientSam` (put on the desired device first).
        upsample_chunk: prompts whose logits are upsampled to image size at once; bounds the
            float temporaries of the full-resolution step.
    """

    def __init__(self, model: EfficientSam, upsample_chunk: int = 8) -> None:
        self.model = model.eval()
        self.upsample_chunk = upsample_chunk
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def reset_image(self) -> None:
        """Forget the current image."""
        self.features: torch.Tensor | None = None
        self.original_size: tuple[int, int] | None = None

    @property
    def is_image_set(self) -> bool:
        return self.features is not None

    @torch.inference_mode()
    def set_image(self, image: np.ndarray) -> None:
        """Encode an HxWx3 uint8 RGB image; the embedding is kept for later prompts."""
        check_image_array(image)
        t = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None]
        t = t.to(self.device, dtype=torch.float32) / 255.0
        self.features = self.model.get_image_embeddings(t)
        self.original_size = (int(image.shape[0]), int(image.shape[1]))

    def set_embedding(self, embedding: torch.Tensor, original_size: tuple[int, int]) -> None:
        """Use a precomputed 1x256x64x64 embedding of an image of ``original_size`` (h, w)."""
        if embedding.ndim != 4 or embedding.shape[0] != 1:
            raise InputError(f"embedding must have shape 1xCxhxw, got {tuple(embedding.shape)}")
        self.features = embedding.to(self.device)
        self.original_size = (int(original_size[0]), int(original_size[1]))

    def _require_image(self) -> tuple[torch.Tensor, tuple[int, int]]:
        if self.features is None or self.original_size is None:
            raise RuntimeError("no image set: call set_image(image) before predict")
        return self.features, self.original_size

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        multimask_output: bool = True,
        best_only: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Segment one object.

        Args:
            point_coords: Nx2 (x, y) pixels, or None.
            point_labels: N labels (1 positive, 0 negative), or None.
            box: (x0, y0, x1, y1) pixels, or None.
            multimask_output: 3 candidate masks (sorted by predicted IoU) if True, else 1.
            best_only: return only the candidate with the highest predicted IoU (M = 1); only
                that one is upsampled to full resolution.

        Returns:
            masks MxHxW bool, predicted IoU M, low-res logits Mx256x256 float32.

        Raises:
            InputError: a point or box corner outside the image, ``[0, W] x [0, H]`` (the
                model reads a negative coordinate as padding, so it would be dropped, not
                clamped; :meth:`predict_batch` passes prompts as given, for benchmark
                protocols that decide themselves).
        """
        _, (h, w) = self._require_image()
        coords = labels = boxes = None
        if point_coords is not None or point_labels is not None:
            coords, labels = check_points_and_labels(point_coords, point_labels, single=True)
            _check_inside(coords, h, w, "point_coords")
            coords, labels = coords[None], labels[None]
        if box is not None:
            boxes = check_boxes(box, "box", single=True)
            _check_inside(boxes.reshape(-1, 2), h, w, "box")
        masks, iou, low = self.predict_batch(coords, labels, boxes, multimask_output, best_only)
        return masks[0], iou[0], low[0]

    @torch.inference_mode()
    def predict_batch(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        multimask_output: bool = True,
        best_only: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Segment Q objects of the current image in one decoder call.

        Each query combines its box (if any, as two corner prompts) and its points; all queries
        must have the same number of points (pad with label -1).

        Args:
            point_coords: QxNx2 (x, y) pixels, or None.
            point_labels: QxN, or None.
            boxes: Qx4 (x0, y0, x1, y1) pixels, or None.
            multimask_output: 3 masks per query (sorted by predicted IoU) if True, else 1.
            best_only: keep only each query's highest-IoU mask (M = 1); only those are
                upsampled, which saves time and two thirds of the output memory.

        Returns:
            masks QxMxHxW bool, predicted IoU QxM float32, low-res logits QxMx256x256 float32.
        """
        features, (h, w) = self._require_image()
        pts, lbl = self._assemble(point_coords, point_labels, boxes)
        dev = self.device
        points_t = torch.as_tensor(pts, dtype=torch.float32, device=dev)[None]
        labels_t = torch.as_tensor(lbl, dtype=torch.int64, device=dev)[None]
        low, iou = self.model.predict_masks(features, points_t, labels_t, multimask_output, h, w)
        low, iou = low[0], iou[0]  # QxMx256x256, QxM
        if multimask_output:
            order = torch.argsort(iou, dim=1, descending=True)
            iou = torch.gather(iou, 1, order)
            low = torch.gather(low, 1, order[:, :, None, None].expand_as(low))
        if best_only:
            iou, low = iou[:, :1], low[:, :1]
        masks = self._upsample_to_bool(low, (h, w))
        return masks, iou.float().cpu().numpy(), low.float().cpu().numpy()

    def _assemble(
        self, point_coords: object, point_labels: object, boxes: object
    ) -> tuple[np.ndarray, np.ndarray]:
        parts_p, parts_l = [], []
        q = None
        if boxes is not None:
            b = check_boxes(boxes, "boxes")
            q = b.shape[0]
            parts_p.append(b.reshape(q, 2, 2))
            parts_l.append(np.tile(np.array([[2, 3]]), (q, 1)))
        if point_coords is not None or point_labels is not None:
            c, lab = check_points_and_labels(point_coords, point_labels)
            if q is not None and c.shape[0] != q:
                raise InputError(
                    f"boxes has {q} queries but point_coords has {c.shape[0]}; they must match"
                )
            q = c.shape[0]
            parts_p.append(c)
            parts_l.append(lab)
        if q is None or q == 0:
            raise InputError("no prompt given: pass point_coords/point_labels, boxes, or both")
        pts = np.concatenate(parts_p, axis=1)
        lbl = np.concatenate(parts_l, axis=1)
        check_prompt_count(int(pts.shape[1]))
        if np.all(lbl == -1, axis=1).any():
            raise InputError(
                "every query needs at least one prompt point that is not padding (label -1)"
            )
        return pts, lbl

    def _upsample_to_bool(self, low: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """QxMx256x256 logits -> QxMxHxW bool, a few queries at a time."""
        q, m = low.shape[:2]
        out = np.empty((q, m, *size), dtype=bool)
        step = max(1, self.upsample_chunk)
        for i in range(0, q, step):
            part = F.interpolate(low[i : i + step].flatten(0, 1)[:, None], size, mode="bicubic")
            out[i : i + step] = (
                (part > self.model.mask_threshold).reshape(-1, m, *size).cpu().numpy()
            )
        return out


def _check_inside(xy: np.ndarray, h: int, w: int, name: str) -> None:
    """Raise :class:`InputError` naming the first (x, y) of the Kx2 ``xy`` outside
    ``[0, w] x [0, h]``."""
    outside = (xy[:, 0] < 0) | (xy[:, 0] > w) | (xy[:, 1] < 0) | (xy[:, 1] > h)
    if outside.any():
        x, y = xy[int(np.argmax(outside))].tolist()
        raise InputError(
            f"{name}: ({x:g}, {y:g}) lies outside the {w}x{h} image ([0, {w}] x [0, {h}]); "
            "clip it to the image first"
        )
