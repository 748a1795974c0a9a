"""``EfficientSamAutomaticMaskGenerator``: segment everything in an image with bounded memory.

The algorithm is segment-anything's ``SamAutomaticMaskGenerator`` (a grid of single-point
prompts per crop, predicted-IoU and stability filters, box NMS within and across crops), built
from segment-anything's own utilities (``segment_anything.utils.amg``) so that records, boxes,
RLEs and crop boxes mean exactly what they mean there. What differs is where memory goes:

* each crop is encoded once, and its grid is decoded ``points_per_batch`` points at a time;
* the predicted-IoU filter runs before anything is upsampled: it depends on the IoU head only,
  so applying it first is exact;
* the stability score and the box need full-resolution logits (thresholding does not commute
  with bicubic upsampling), so only the masks that passed the IoU filter are upsampled,
  ``upsample_batch`` at a time, and each chunk is reduced to candidates before the next one;
* a candidate (a mask that passed every filter) keeps its mask as a packed bitmap of its box
  (``np.packbits``, one bit per pixel: at most ``ceil(h * w / 8)`` bytes for a crop of h x w,
  whatever the mask looks like), not as an RLE, whose size grows with the number of runs (up
  to one Python list entry, 8 bytes or more, per pixel for a noisy mask);
* RLEs are encoded only for the masks that survive box NMS within and across crops, one at a
  time.

Peak memory is therefore one decoder batch of 256x256 logits, plus ``upsample_batch``
full-resolution masks, plus at most ``ceil(H * W / 8)`` + :data:`CANDIDATE_OVERHEAD_BYTES`
bytes per candidate (270,000 + 300 for a 1200x1800 image), plus the output; nothing else grows
with the number of grid points. segment-anything upsamples every mask of a decoder batch
(``points_per_batch`` x 3) at once and keeps every candidate as an RLE until NMS.

segment-anything (the ``sam`` extra) and, for ``output_mode="coco_rle"``, pycocotools (the
``eval`` extra) are imported when the generator is constructed, not when ``esam`` is.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from esam.data.images import as_rgb_uint8
from esam.errors import InputError
from esam.modeling.efficient_sam import EfficientSam
from esam.utils.deps import MissingDependencyError, require

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")

#: Record keys, in segment-anything's order.
RECORD_KEYS = (
    "segmentation",
    "area",
    "bbox",
    "predicted_iou",
    "point_coords",
    "stability_score",
    "crop_box",
)

#: Bytes a candidate takes besides its packed mask, at most: the NumPy array object holding the
#: bits, its slot in a list, and its rows of predicted IoU, point, stability score, box and crop
#: box (checked by ``tests/test_everything.py``).
CANDIDATE_OVERHEAD_BYTES = 300


def pack_masks(masks: torch.Tensor, boxes: torch.Tensor) -> list[np.ndarray]:
    """Each mask's pixels inside its box as a packed bitmap (``np.packbits``, row-major).

    Args:
        masks: KxHxW bool masks.
        boxes: Kx4 (x0, y0, x1, y1) boxes of the masks, inclusive, as
            ``segment_anything.utils.amg.batched_mask_to_box`` gives them (an empty mask's box
            is (0, 0, 0, 0)).

    Returns:
        K uint8 arrays of ``ceil((y1 - y0 + 1) * (x1 - x0 + 1) / 8)`` bytes, never more than
        ``ceil(H * W / 8)``; :func:`unpack_mask` inverts it.
    """
    packed = []
    for mask, box in zip(masks, boxes.tolist(), strict=True):
        x0, y0, x1, y1 = (int(v) for v in box)
        inside = mask[y0 : y1 + 1, x0 : x1 + 1].cpu().numpy()
        packed.append(np.packbits(inside.ravel()))
    return packed


def unpack_mask(packed: np.ndarray, box: list[float], size: tuple[int, int]) -> torch.Tensor:
    """The HxW bool mask whose box ``box`` (x0, y0, x1, y1, inclusive) ``packed`` holds.

    The box may hold floats of whole numbers: segment-anything's ``batched_mask_to_box`` gives
    an empty batch float zeros, and joining it with the other batches' integer boxes makes
    every box float.
    """
    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = y1 - y0 + 1, x1 - x0 + 1
    mask = torch.zeros(size, dtype=torch.bool)
    bits = np.unpackbits(packed, count=h * w).reshape(h, w)
    mask[y0 : y1 + 1, x0 : x1 + 1] = torch.from_numpy(bits.view(np.bool_))
    return mask


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise InputError(f"{name} must be in [{lo:g}, {hi:g}], got {value!r}")


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def concat_mask_data(amg: Any, parts: list[Any]) -> Any:
    """Join segment-anything ``MaskData`` parts in order, as ``MaskData.cat`` would.

    ``MaskData.cat`` deep-copies every list it appends (the RLEs: one list of run lengths per
    mask), so appending chunk after chunk copies the RLEs again and again; here each part's
    lists are joined once, without copies (the parts are fresh and not used afterwards).

    Args:
        amg: ``segment_anything.utils.amg``.
        parts: ``MaskData`` objects with the same keys (at least one).
    """
    joined: dict[str, Any] = {}
    for key, first in parts[0].items():
        values = [part[key] for part in parts]
        if isinstance(first, torch.Tensor):
            joined[key] = torch.cat(values, dim=0)
        elif isinstance(first, np.ndarray):
            joined[key] = np.concatenate(values, axis=0)
        else:
            joined[key] = list(itertools.chain.from_iterable(values))
    return amg.MaskData(**joined)


class EfficientSamAutomaticMaskGenerator:
    """Generate masks for everything in an image with an EfficientSAM model.

    Settings have the names, defaults and meaning of segment-anything's
    ``SamAutomaticMaskGenerator``, so code written for SAM runs unchanged.

    Args:
        model: an :class:`EfficientSam` (put on the desired device first).
        points_per_side: grid points along each side of the image (``n x n`` points per crop
            of layer 0), or None when ``point_grids`` is given.
        points_per_batch: point prompts decoded in one decoder call.
        pred_iou_thresh: keep masks whose predicted IoU is above this (0 disables).
        stability_score_thresh: keep masks whose stability score is at least this (0 disables).
        stability_score_offset: logit offset of the stability score's two thresholds.
        box_nms_thresh: box IoU above which a mask of the same crop is a duplicate.
        crop_n_layers: extra crop layers; layer i has ``(2**i)**2`` crops.
        crop_nms_thresh: box IoU above which masks of different crops are duplicates (the one
            from the smaller crop is kept).
        crop_overlap_ratio: overlap of neighbouring crops as a fraction of the image side.
        crop_n_points_downscale_factor: layer i uses ``points_per_side / factor**i`` points
            per side.
        point_grids: explicit Nx2 grids in [0, 1] (x, y), one per crop layer.
        min_mask_region_area: if > 0, remove holes and islands smaller than this many pixels
            (needs OpenCV), then run box NMS again.
        output_mode: ``binary_mask`` (HxW bool arrays), ``uncompressed_rle`` or ``coco_rle``.
        upsample_batch: masks upsampled to full resolution at once (esam only; bounds memory
            at about ``upsample_batch x H x W x 6`` bytes).

    Memory: one decoder batch, ``upsample_batch`` full-resolution masks, and per candidate (a
    mask that passed the filters, held until NMS) at most ``ceil(h * w / 8)`` bytes of packed
    mask for a crop of h x w plus :data:`CANDIDATE_OVERHEAD_BYTES`; RLEs and binary masks are
    made only for the masks that survive NMS.

    Raises:
        InputError: a setting out of range (named in the message).
        MissingDependencyError: segment-anything, torchvision, pycocotools (for ``coco_rle``)
            or OpenCV (for ``min_mask_region_area``) is not installed.
    """

    def __init__(
        self,
        model: EfficientSam,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        upsample_batch: int = 16,
    ) -> None:
        self._amg = require("segment_anything.utils.amg", extra="sam")
        self._ops = require("torchvision.ops", extra="sam")
        if (points_per_side is None) == (point_grids is None):
            raise InputError("give exactly one of points_per_side and point_grids")
        self.crop_n_layers = _check_int("crop_n_layers", crop_n_layers, 0)
        self.crop_n_points_downscale_factor = _check_int(
            "crop_n_points_downscale_factor", crop_n_points_downscale_factor, 1
        )
        if points_per_side is not None:
            n = _check_int("points_per_side", points_per_side, 1)
            self.point_grids: list[np.ndarray] = self._amg.build_all_layer_point_grids(
                n, self.crop_n_layers, self.crop_n_points_downscale_factor
            )
        else:
            assert point_grids is not None
            self.point_grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
            if len(self.point_grids) != self.crop_n_layers + 1:
                raise InputError(
                    f"point_grids needs one grid per crop layer ({self.crop_n_layers + 1}), "
                    f"got {len(self.point_grids)}"
                )
            for g in self.point_grids:
                if g.ndim != 2 or g.shape[1] != 2 or g.shape[0] < 1:
                    raise InputError(f"each point grid must be Nx2 with N >= 1, got {g.shape}")
                if not (np.all(np.isfinite(g)) and g.min() >= 0 and g.max() <= 1):
                    raise InputError("point grids must hold (x, y) values in [0, 1]")
        self.points_per_batch = _check_int("points_per_batch", points_per_batch, 1)
        self.upsample_batch = _check_int("upsample_batch", upsample_batch, 1)
        _check_range("pred_iou_thresh", pred_iou_thresh, -np.inf, np.inf)
        _check_range("stability_score_thresh", stability_score_thresh, 0.0, 1.0)
        _check_range("stability_score_offset", stability_score_offset, 0.0, np.inf)
        _check_range("box_nms_thresh", box_nms_thresh, 0.0, 1.0)
        _check_range("crop_nms_thresh", crop_nms_thresh, 0.0, 1.0)
        _check_range("crop_overlap_ratio", crop_overlap_ratio, 0.0, 1.0)
        self.min_mask_region_area = _check_int("min_mask_region_area", min_mask_region_area, 0)
        if output_mode not in OUTPUT_MODES:
            raise InputError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        if output_mode == "coco_rle":
            require("pycocotools.mask", extra="eval")
        if self.min_mask_region_area > 0:
            try:
                require("cv2")
            except MissingDependencyError as e:
                raise MissingDependencyError(
                    "min_mask_region_area > 0 needs OpenCV: pip install opencv-python-headless",
                    name="cv2",
                ) from e

        self.model = model.eval()
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.box_nms_thresh = float(box_nms_thresh)
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.output_mode = output_mode

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Masks of everything in ``image``.

        Args:
            image: HxWx3 uint8 RGB (grey, RGBA and 16-bit images are converted, see
                :func:`~esam.data.images.as_rgb_uint8`).

        Returns:
            One record per mask, with segment-anything's keys in its order:
            ``segmentation`` (HxW bool array, or an RLE dict per ``output_mode``), ``area``
            (pixels), ``bbox`` (x, y, w, h), ``predicted_iou``, ``point_coords`` ([[x, y]], the
            prompt in image pixels), ``stability_score``, ``crop_box`` (x, y, w, h). Empty
            when no mask passes the filters.
        """
        amg = self._amg
        image = as_rgb_uint8(image)
        data = self._generate_masks(image)
        if self.min_mask_region_area > 0 and len(data["rles"]) > 0:
            data = self._remove_small_regions(
                data, self.min_mask_region_area, max(self.box_nms_thresh, self.crop_nms_thresh)
            )
        rles = data["rles"]
        if self.output_mode == "coco_rle":
            segmentations: list[Any] = [amg.coco_encode_rle(r) for r in rles]
        elif self.output_mode == "binary_mask":
            segmentations = [amg.rle_to_mask(r) for r in rles]
        else:
            segmentations = list(rles)
        records = []
        for i, seg in enumerate(segmentations):
            values = (
                seg,
                amg.area_from_rle(rles[i]),
                amg.box_xyxy_to_xywh(data["boxes"][i]).tolist(),
                data["iou_preds"][i].item(),
                [data["points"][i].tolist()],
                data["stability_score"][i].item(),
                amg.box_xyxy_to_xywh(data["crop_boxes"][i]).tolist(),
            )
            records.append(dict(zip(RECORD_KEYS, values, strict=True)))
        return records

    def _remove_small_regions(self, data: Any, min_area: int, nms_thresh: float) -> Any:
        """segment-anything's ``postprocess_small_regions``, one mask at a time.

        Holes, then islands, smaller than ``min_area`` pixels are removed from each mask; box
        NMS then prefers the masks that needed no change, and the RLE and box of a changed mask
        that survives are replaced. segment-anything decodes every mask at once (N x H x W
        bytes, twice over); here one mask is decoded at a time and a changed mask is
        re-encoded right away, so memory holds one mask plus the RLEs.
        """
        amg = self._amg
        boxes, scores, changed_rles = [], [], {}
        for i, rle in enumerate(data["rles"]):
            mask = amg.rle_to_mask(rle)
            mask, holes = amg.remove_small_regions(mask, min_area, mode="holes")
            mask, islands = amg.remove_small_regions(mask, min_area, mode="islands")
            as_tensor = torch.as_tensor(mask).unsqueeze(0)
            boxes.append(amg.batched_mask_to_box(as_tensor)[0])
            unchanged = not holes and not islands
            scores.append(float(unchanged))
            if not unchanged:
                changed_rles[i] = amg.mask_to_rle_pytorch(as_tensor)[0]
            del mask, as_tensor
        box_tensor = torch.stack(boxes)
        keep = self._ops.batched_nms(
            box_tensor.float(),
            torch.as_tensor(scores),
            torch.zeros(len(boxes)),
            iou_threshold=nms_thresh,
        )
        for i in keep.tolist():
            if i in changed_rles:
                data["rles"][i] = changed_rles[i]
                data["boxes"][i] = box_tensor[i]
        data.filter(keep)
        return data

    def _generate_masks(self, image: np.ndarray) -> Any:
        """All crops' masks, duplicates across crops removed; a ``MaskData`` of numpy arrays.

        Candidates hold packed bitmaps (:func:`pack_masks`) until the NMS within and across
        crops has run; the returned masks are RLEs in image size (``rles``).
        """
        amg = self._amg
        orig_size = (int(image.shape[0]), int(image.shape[1]))
        crop_boxes, layer_idxs = amg.generate_crop_boxes(
            orig_size, self.crop_n_layers, self.crop_overlap_ratio
        )
        # on an image a few pixels tall or wide, crop layers give empty crops (segment-anything
        # then fails resizing them); they hold nothing, so they are left out
        kept = [
            (b, i)
            for b, i in zip(crop_boxes, layer_idxs, strict=True)
            if b[2] > b[0] and b[3] > b[1]
        ]
        crop_boxes, layer_idxs = [b for b, _ in kept], [i for _, i in kept]
        data = concat_mask_data(
            amg,
            [
                self._process_crop(image, crop_box, layer_idx, orig_size)
                for crop_box, layer_idx in zip(crop_boxes, layer_idxs, strict=True)
            ],
        )
        if len(crop_boxes) > 1 and len(data["packed"]) > 0:
            # prefer masks from smaller crops
            boxes = data["boxes"].float()
            scores = 1 / self._ops.box_area(data["crop_boxes"].float()).to(boxes.device)
            keep = self._ops.batched_nms(
                boxes, scores, torch.zeros_like(scores), iou_threshold=self.crop_nms_thresh
            )
            data.filter(keep)
        # only now, for the survivors, the RLEs (one mask at a time, its bits freed after it)
        packed, rles = data["packed"], []
        for i, box in enumerate(data["boxes"].tolist()):
            rles += amg.mask_to_rle_pytorch(unpack_mask(packed[i], box, orig_size)[None])
            packed[i] = None
        del data["packed"]
        data["rles"] = rles
        data.to_numpy()
        return data

    def _process_crop(
        self,
        image: np.ndarray,
        crop_box: list[int],
        layer_idx: int,
        orig_size: tuple[int, int],
    ) -> Any:
        """Masks of one crop in image coordinates, duplicates within the crop removed.

        Returns:
            ``MaskData`` as :meth:`_process_batch`'s, with ``boxes`` and ``points`` in image
            pixels and ``crop_boxes`` (Kx4, xyxy) added.
        """
        amg = self._amg
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        crop_size = (int(crop.shape[0]), int(crop.shape[1]))
        pixels = torch.tensor(crop).permute(2, 0, 1)[None]  # a copy: crop may be read-only
        embedding = self.model.get_image_embeddings(
            pixels.to(self.device, dtype=torch.float32) / 255.0
        )
        points_for_crop = self.point_grids[layer_idx] * np.array(crop_size)[None, ::-1]

        data = concat_mask_data(
            amg,
            [
                self._process_batch(embedding, points, crop_size, crop_box, orig_size)
                for (points,) in amg.batch_iterator(self.points_per_batch, points_for_crop)
            ],
        )
        del embedding

        if len(data["packed"]) > 0:
            keep = self._ops.batched_nms(
                data["boxes"].float(),
                data["iou_preds"],
                torch.zeros_like(data["iou_preds"]),
                iou_threshold=self.box_nms_thresh,
            )
            data.filter(keep)
        data["boxes"] = amg.uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = amg.uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = torch.tensor(crop_box, dtype=torch.int64).repeat(
            len(data["packed"]), 1
        )
        return data

    def _process_batch(
        self,
        embedding: torch.Tensor,
        points: np.ndarray,
        crop_size: tuple[int, int],
        crop_box: list[int],
        orig_size: tuple[int, int],
    ) -> Any:
        """Decode one batch of point prompts and keep the masks that pass every filter.

        Args:
            embedding: 1x256x64x64 embedding of the crop.
            points: Px2 (x, y) prompts in crop pixels.
            crop_size: (h, w) of the crop.
            crop_box: (x0, y0, x1, y1) of the crop in the image.
            orig_size: (H, W) of the image.

        Returns:
            ``MaskData`` with ``iou_preds`` K, ``points`` Kx2 (crop pixels), ``stability_score``
            K, ``boxes`` Kx4 (crop pixels, xyxy, inclusive) and ``packed`` (K masks as
            :func:`pack_masks` packs them, each at most ``ceil(h * w / 8)`` bytes), rows in
            point-major, mask-minor order as segment-anything's.
        """
        amg = self._amg
        h, w = crop_size
        dev = self.device
        pts = torch.as_tensor(points, dtype=torch.float32, device=dev)[None, :, None]  # 1xPx1x2
        labels = torch.ones(pts.shape[:3], dtype=torch.int64, device=dev)
        low_res, iou = self.model.predict_masks(embedding, pts, labels, True, h, w)
        low_res = low_res[0].flatten(0, 1).float()  # (P*3)x256x256
        iou = iou[0].flatten(0, 1).float()
        m = low_res.shape[0] // len(points)
        point_rows = torch.as_tensor(np.repeat(points, m, axis=0))

        if self.pred_iou_thresh > 0.0:
            keep = iou > self.pred_iou_thresh
            low_res, iou, point_rows = low_res[keep], iou[keep], point_rows[keep.cpu()]

        parts = [
            amg.MaskData(
                iou_preds=iou[:0],
                points=point_rows[:0],
                stability_score=iou[:0],
                boxes=torch.zeros((0, 4), dtype=torch.int64, device=dev),
                packed=[],
            )
        ]
        threshold = self.model.mask_threshold
        orig_h, orig_w = orig_size
        for start in range(0, low_res.shape[0], self.upsample_batch):
            part = slice(start, start + self.upsample_batch)
            logits = F.interpolate(low_res[part, None], (h, w), mode="bicubic")[:, 0]
            chunk = amg.MaskData(
                iou_preds=iou[part],
                points=point_rows[part],
                stability_score=amg.calculate_stability_score(
                    logits, threshold, self.stability_score_offset
                ),
            )
            if self.stability_score_thresh > 0.0:
                keep = chunk["stability_score"] >= self.stability_score_thresh
                chunk.filter(keep)
                logits = logits[keep]
            masks = logits > threshold
            del logits
            chunk["boxes"] = amg.batched_mask_to_box(masks)
            keep = ~amg.is_box_near_crop_edge(chunk["boxes"], crop_box, [0, 0, orig_w, orig_h])
            if not torch.all(keep):
                chunk.filter(keep)
                masks = masks[keep]
            chunk["packed"] = pack_masks(masks, chunk["boxes"])
            del masks
            parts.append(chunk)
        return concat_mask_data(amg, parts)
