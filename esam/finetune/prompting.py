"""SAM's simulated interactive prompting, batched over the masks of an image.

The recipe (Segment Anything, appendix A, "Training algorithm"), as done here:

1. **First prompt.** With probability ``box_prob`` (SAM: 1/2) the mask's bounding box, each
   coordinate jittered by Gaussian noise of standard deviation 10 % of the box side (width for
   x, height for y) but at most 20 px (:func:`box_prompts`); otherwise one foreground point
   drawn uniformly from the mask's pixels (:func:`point_prompts`). :func:`first_prompts` mixes
   the two in one tensor. The paper states a standard deviation, which is what is drawn here;
   SAM 2's released training code draws uniformly within +-min(10 % of the side, 20 px)
   instead. The 20 px refer to SAM's 1024 px input: for masks in another frame pass
   ``max_noise = 20 * side / 1024``.
2. **Corrective rounds.** Each new click is drawn uniformly from the error region of the
   previous prediction, ``pred XOR gt``; it is positive (label 1) on a false negative and
   negative (label 0) on a false positive (:func:`corrective_points`). Drawing uniformly from
   the whole region is the paper's rule, and it picks the false-negative or the
   false-positive side with probability proportional to its area. The previous prediction is
   the output with the highest predicted IoU (:func:`select_best`), thresholded at 0. A query
   whose prediction has no error left gets a padding click, which changes nothing.
3. **No mask prompt.** SAM also feeds the previous round's low-resolution logits back as a
   dense prompt, and adds two rounds with no new click so the model learns to refine its own
   mask. EfficientSAM's decoder has no dense-prompt input: the corrective rounds add clicks
   only, and the two click-free rounds are left out (with nothing new in the input they would
   repeat the previous round exactly).
4. **Slot limit.** EfficientSAM reads at most ``decoder_max_num_input_points`` prompt slots
   per query (6; a box takes 2). :func:`append_points` keeps the first prompt (box corners, or
   the first click) and the newest clicks once the slots are full (``at_limit="slide"``), or
   stops adding (``at_limit="stop"``).

Conventions:

* Masks are ``QxHxW`` bool tensors at whatever resolution the caller samples in (the image,
  the 1024 px encoder input, or the decoder's low-resolution frame); every coordinate is in
  pixels of that frame. Give the model ``input_h, input_w = H, W`` and it maps them to its
  encoder input itself (``EfficientSam.get_rescaled_pts``), or move prompts between frames
  with :func:`scale_points` (the same plain ratio the model applies).
* Points are (x, y) **pixel indices**: a click on the pixel at row i, column j is (j, i), the
  convention of :mod:`esam.data.prompts`; EfficientSAM's prompt encoder adds 0.5 to reach the
  pixel's centre. Boxes are (x0, y0, x1, y1) in **pixel-edge** coordinates: x1 is the last
  column + 1, as :func:`esam.data.prompts.box_from_mask`, clipped to [0, W] x [0, H].
* Labels (int64): 1 positive, 0 negative, 2/3 box top-left / bottom-right corner, -1 padding
  at the point (-1, -1) (what EfficientSAM pads every query to its 6 slots with, so padding
  never changes a prediction). An empty mask gets padding
  prompts; no function here reads a value back to the host, so none checks for empty masks.
* Randomness comes only from the ``torch.Generator`` passed in. Its draws are made on the
  generator's device and are few (a handful of numbers per mask), then moved to the masks'
  device: the same seed gives the same prompts on a CPU and on a GPU. Nothing loops over
  masks in Python.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from esam.data.prompts import PAD_LABEL, PAD_POINT
from esam.errors import InputError

NEGATIVE = 0
POSITIVE = 1
BOX_TOP_LEFT = 2
BOX_BOTTOM_RIGHT = 3
#: Upper end of the integers drawn to pick a pixel (their remainder by the pixel count is the
#: pick; the bias of the remainder is below 2**-40 for any mask that fits in memory).
_INT_RANGE = 2**62
AT_LIMIT = ("slide", "stop")

__all__ = [
    "AT_LIMIT",
    "BOX_BOTTOM_RIGHT",
    "BOX_TOP_LEFT",
    "NEGATIVE",
    "POSITIVE",
    "append_points",
    "box_prompts",
    "check_masks",
    "corrective_points",
    "first_prompts",
    "point_prompts",
    "scale_points",
    "select_best",
    "tight_boxes",
    "to_encoder_frame",
]


# -- checks (shapes and dtypes only: no device synchronisation) --------------------------------


def check_masks(masks: object, name: str = "masks") -> Tensor:
    """A QxHxW bool tensor (shape and dtype only)."""
    if not isinstance(masks, Tensor):
        raise InputError(
            f"{name} must be a torch.Tensor of shape QxHxW, got {type(masks).__name__}"
        )
    if masks.dtype != torch.bool:
        raise InputError(f"{name} must be a bool tensor (threshold logits at 0), got {masks.dtype}")
    if masks.ndim != 3 or masks.shape[1] < 1 or masks.shape[2] < 1:
        raise InputError(f"{name} must have shape QxHxW with H, W >= 1, got {tuple(masks.shape)}")
    return masks


def _check_generator(generator: object) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise InputError(
            f"generator must be a torch.Generator (seeded by the caller), got {type(generator).__name__}"
        )
    return generator


def _check_prompts(points: object, labels: object, name: str) -> tuple[Tensor, Tensor]:
    if not isinstance(points, Tensor) or points.ndim != 3 or points.shape[-1] != 2:
        shape = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise InputError(f"{name} points must be a tensor of shape QxNx2 (x, y), got {shape}")
    if not isinstance(labels, Tensor) or tuple(labels.shape) != tuple(points.shape[:2]):
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise InputError(
            f"{name} labels must be a tensor of shape QxN = {tuple(points.shape[:2])}, got {shape}"
        )
    return points, labels


# -- random draws -------------------------------------------------------------------------------


def _uniform(generator: torch.Generator, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """Uniform [0, 1) float32 of ``shape``, drawn on the generator's device, moved to ``device``."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _normal(generator: torch.Generator, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """Standard normal float32 of ``shape``, drawn on the generator's device."""
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def _integers(generator: torch.Generator, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """Uniform int64 in [0, 2**62) of ``shape``, drawn on the generator's device."""
    return torch.randint(
        0, _INT_RANGE, shape, generator=generator, device=generator.device, dtype=torch.int64
    ).to(device)


def _sample_pixels(masks: Tensor, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` pixels per mask, each uniform over the mask's pixels (independent draws).

    Two-level search, so no QxHxW temporary beyond the masks: pick the k-th true pixel of a
    mask (k uniform below its pixel count) by finding its row in the cumulative row counts
    (QxH), then its column in the cumulative count of that row (QxnxW).

    Args:
        masks: QxHxW bool.
        n: pixels per mask.
        generator: source of the draws.

    Returns:
        points Qxnx2 float32 (x, y) pixel indices, and ``valid`` Q bool (mask not empty);
        empty masks get (-1, -1).
    """
    q, h, w = masks.shape
    row_counts = masks.sum(dim=2, dtype=torch.int64)  # QxH
    row_cum = row_counts.cumsum(dim=1)
    total = row_cum[:, -1]
    k = _integers(generator, (q, n), masks.device) % total.clamp(min=1)[:, None]  # Qxn
    rows = torch.searchsorted(row_cum, k, right=True).clamp(max=h - 1)
    offset = k - (row_cum.gather(1, rows) - row_counts.gather(1, rows))  # rank within the row
    picked_rows = masks[torch.arange(q, device=masks.device)[:, None], rows]  # QxnxW
    col_cum = picked_rows.cumsum(dim=2)
    cols = torch.searchsorted(col_cum, offset[..., None], right=True)[..., 0].clamp(max=w - 1)
    valid = total > 0
    points = torch.stack([cols, rows], dim=-1).to(torch.float32)
    return torch.where(valid[:, None, None], points, PAD_POINT[0]), valid


# -- first prompts ------------------------------------------------------------------------------


def tight_boxes(masks: Tensor) -> Tensor:
    """The tight box of each mask.

    Args:
        masks: QxHxW bool.

    Returns:
        Qx4 float32 (x0, y0, x1, y1) in pixel-edge coordinates (x1 = last column + 1, as
        :func:`esam.data.prompts.box_from_mask`); (-1, -1, -1, -1) for an empty mask.
    """
    check_masks(masks)
    _, h, w = masks.shape
    rows = masks.any(dim=2).to(torch.float32)  # QxH
    cols = masks.any(dim=1).to(torch.float32)  # QxW
    # argmax returns the first maximum: the first true row / column from either end.
    x0 = cols.argmax(dim=1)
    y0 = rows.argmax(dim=1)
    x1 = w - cols.flip(1).argmax(dim=1)
    y1 = h - rows.flip(1).argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).to(torch.float32)
    return torch.where(rows.amax(dim=1, keepdim=True) > 0, boxes, PAD_POINT[0])


def box_prompts(
    masks: Tensor,
    generator: torch.Generator,
    noise_frac: float = 0.1,
    max_noise: float = 20.0,
) -> Tensor:
    """Jittered bounding boxes, SAM's box prompt.

    Each coordinate of the tight box gets independent Gaussian noise of standard deviation
    ``min(noise_frac * side, max_noise)``, side being the box width for x0, x1 and its height
    for y0, y1; the result is clipped to the image, [0, W] x [0, H], and its corners ordered
    (x0 <= x1, y0 <= y1).

    Args:
        masks: QxHxW bool.
        generator: source of the noise (4 normals per mask).
        noise_frac: noise standard deviation as a fraction of the box side (SAM: 0.1).
        max_noise: largest standard deviation in pixels of the mask frame (SAM: 20 at 1024 px).

    Returns:
        Qx4 float32 (x0, y0, x1, y1), pixel-edge coordinates; (-1, -1, -1, -1) for an empty
        mask.
    """
    check_masks(masks)
    _check_generator(generator)
    if noise_frac < 0 or max_noise < 0:
        raise InputError(
            f"noise_frac and max_noise must be >= 0, got noise_frac={noise_frac}, max_noise={max_noise}"
        )
    q, h, w = masks.shape
    tight = tight_boxes(masks)
    sides = (tight[:, 2:] - tight[:, :2]).repeat(1, 2)  # (w, h, w, h)
    std = (noise_frac * sides).clamp(max=max_noise)
    noisy = tight + _normal(generator, (q, 4), masks.device) * std
    limit = torch.tensor([w, h], dtype=torch.float32, device=masks.device)
    lo = torch.minimum(noisy[:, :2], noisy[:, 2:]).clamp(min=0.0).minimum(limit)
    hi = torch.maximum(noisy[:, :2], noisy[:, 2:]).clamp(min=0.0).minimum(limit)
    boxes = torch.cat([lo, hi], dim=1)
    return torch.where(tight[:, :1] >= 0, boxes, PAD_POINT[0])


def point_prompts(masks: Tensor, generator: torch.Generator, n: int = 1) -> tuple[Tensor, Tensor]:
    """Foreground clicks drawn uniformly from each mask's pixels, SAM's point prompt.

    Args:
        masks: QxHxW bool.
        generator: source of the draws (``n`` integers per mask).
        n: clicks per mask, drawn independently (with replacement).

    Returns:
        points Qxnx2 float32 (x, y) pixel indices and labels Qxn int64 (1; for an empty mask
        the padding point (-1, -1) with label -1).
    """
    check_masks(masks)
    _check_generator(generator)
    if n < 1:
        raise InputError(f"n (clicks per mask) must be >= 1, got {n}")
    points, valid = _sample_pixels(masks, n, generator)
    labels = torch.where(valid, POSITIVE, PAD_LABEL)[:, None].expand(-1, n)
    return points, labels.to(torch.int64).contiguous()


def first_prompts(
    masks: Tensor,
    generator: torch.Generator,
    box_prob: float = 0.5,
    noise_frac: float = 0.1,
    max_noise: float = 20.0,
) -> tuple[Tensor, Tensor]:
    """Each mask's first prompt: a jittered box with probability ``box_prob``, else one click.

    Every draw is made for every mask (choice, box noise, click) so the prompts of a mask do
    not depend on the others' choices.

    Args:
        masks: QxHxW bool.
        generator: source of the draws.
        box_prob: probability of a box (SAM: 0.5).
        noise_frac, max_noise: box jitter, see :func:`box_prompts`.

    Returns:
        points QxNx2 float32 and labels QxN int64, N = 2 (N = 1 when ``box_prob`` is 0): a box
        is its two corners (labels 2, 3), a click is label 1 followed by padding ((-1, -1),
        label -1). An empty mask gets padding only.
    """
    check_masks(masks)
    _check_generator(generator)
    if not 0.0 <= box_prob <= 1.0:
        raise InputError(f"box_prob must be in [0, 1], got {box_prob}")
    q = masks.shape[0]
    device = masks.device
    use_box = _uniform(generator, (q,), device) < box_prob
    boxes = box_prompts(masks, generator, noise_frac, max_noise)
    clicks, click_labels = point_prompts(masks, generator, n=1)
    if box_prob == 0.0:
        return clicks, click_labels
    pad_points = torch.full_like(clicks, PAD_POINT[0])
    pad_labels = torch.full_like(click_labels, PAD_LABEL)
    click_points = torch.cat([clicks, pad_points], dim=1)  # Qx2x2
    click_labels = torch.cat([click_labels, pad_labels], dim=1)
    box_labels = torch.tensor([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], dtype=torch.int64, device=device)
    box_labels = torch.where(boxes[:, :1] >= 0, box_labels, PAD_LABEL)
    points = torch.where(use_box[:, None, None], boxes.view(q, 2, 2), click_points)
    labels = torch.where(use_box[:, None], box_labels, click_labels)
    return points, labels


# -- corrective rounds --------------------------------------------------------------------------


def select_best(logits: Tensor, iou_pred: Tensor) -> Tensor:
    """The output with the highest predicted IoU of each query (SAM's choice for the next round).

    Args:
        logits: QxMxhxw mask logits.
        iou_pred: QxM predicted IoU.

    Returns:
        Qxhxw logits of the chosen output.
    """
    if logits.ndim != 4 or tuple(iou_pred.shape) != tuple(logits.shape[:2]):
        raise InputError(
            f"logits must be QxMxhxw and iou_pred QxM, got {tuple(logits.shape)} and "
            f"{tuple(iou_pred.shape)}"
        )
    best = iou_pred.argmax(dim=1)
    return logits[torch.arange(logits.shape[0], device=logits.device), best]


def corrective_points(
    pred: Tensor, gt: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """One click per query, uniform over the error region of the previous prediction.

    The error region is ``pred XOR gt``; a click on a false negative (in ``gt``, not in
    ``pred``) is positive, on a false positive negative. Uniform over the whole region, as the
    SAM paper says, so the false-negative side is chosen with probability |FN| / (|FN| + |FP|).

    Args:
        pred: QxHxW bool previous prediction (the best output's logits > 0).
        gt: QxHxW bool ground truth, same frame.
        generator: source of the draws (one integer per query).

    Returns:
        points Qx1x2 float32 (x, y) pixel indices and labels Qx1 int64 (1, 0, or for a query
        with no error the padding point (-1, -1) with label -1).
    """
    check_masks(pred, "pred")
    check_masks(gt, "gt")
    _check_generator(generator)
    if pred.shape != gt.shape:
        raise InputError(
            f"pred and gt must have the same shape, got {tuple(pred.shape)} and {tuple(gt.shape)}"
        )
    points, valid = _sample_pixels(pred ^ gt, 1, generator)
    q = gt.shape[0]
    idx = points.to(torch.int64).clamp(min=0)  # padding reads pixel (0, 0), then is masked
    in_gt = gt[torch.arange(q, device=gt.device), idx[:, 0, 1], idx[:, 0, 0]]
    labels = torch.where(in_gt, POSITIVE, NEGATIVE)
    labels = torch.where(valid, labels, PAD_LABEL).to(torch.int64)
    return points, labels[:, None]


def append_points(
    points: Tensor,
    labels: Tensor,
    new_points: Tensor,
    new_labels: Tensor,
    max_slots: int,
    at_limit: Literal["slide", "stop"] = "slide",
) -> tuple[Tensor, Tensor]:
    """Add a round's clicks to each query's prompts, within the decoder's slot limit.

    Padding slots are moved behind the prompts (the decoder's prompt tokens carry no order, so
    this changes no output) and the new clicks follow the old prompts. Padding clicks (label
    -1, from queries with no error left) add nothing. When a query has more than ``max_slots``
    prompts:

    * ``slide`` (default): its first prompt (box corners, labels 2/3, and the first slot, the
      first click of a query that began with one) is kept, and the oldest other clicks are
      dropped, so the newest click is always seen;
    * ``stop``: the prompts already there are kept and the new clicks dropped.

    Args:
        points: QxNx2 float32 prompts so far.
        labels: QxN int64.
        new_points: QxKx2 new clicks (K = 1 from :func:`corrective_points`).
        new_labels: QxK.
        max_slots: prompt slots per query (``model.decoder_max_num_input_points``, 6); at
            least 3 (a box and one click).
        at_limit: ``slide`` or ``stop``.

    Returns:
        points QxN'x2 and labels QxN', N' = min(N + K, max_slots), padded with (-1, -1) / -1.
    """
    _check_prompts(points, labels, "old")
    _check_prompts(new_points, new_labels, "new")
    if new_points.shape[0] != points.shape[0]:
        raise InputError(
            f"new prompts have {new_points.shape[0]} queries, the old ones {points.shape[0]}"
        )
    if max_slots < 3:
        raise InputError(f"max_slots must be >= 3 (a box and one click), got {max_slots}")
    if at_limit not in AT_LIMIT:
        raise InputError(f"at_limit must be one of {AT_LIMIT}, got {at_limit!r}")
    pts = torch.cat([points.to(torch.float32), new_points.to(points.device, torch.float32)], 1)
    lab = torch.cat([labels.to(torch.int64), new_labels.to(labels.device, torch.int64)], 1)
    pts, lab = _compact(pts, lab)
    if at_limit == "slide":
        pts, lab = _compact(*_drop_oldest_clicks(pts, lab, max_slots))
    width = min(pts.shape[1], max_slots)
    return pts[:, :width].contiguous(), lab[:, :width].contiguous()


def _compact(points: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Move padding slots behind the prompts, keeping the prompts' order."""
    order = torch.sort((labels == PAD_LABEL).to(torch.int32), dim=1, stable=True).indices
    return points.gather(1, order[..., None].expand_as(points)), labels.gather(1, order)


def _drop_oldest_clicks(points: Tensor, labels: Tensor, max_slots: int) -> tuple[Tensor, Tensor]:
    """Turn the oldest droppable clicks of over-full queries into padding (compacted input)."""
    valid = labels != PAD_LABEL
    first = torch.zeros_like(valid)
    first[:, 0] = True
    keep = (labels == BOX_TOP_LEFT) | (labels == BOX_BOTTOM_RIGHT) | first
    droppable = valid & ~keep
    excess = (valid.sum(dim=1) - max_slots).clamp(min=0)
    rank = droppable.cumsum(dim=1) - 1  # age rank among droppable clicks, oldest first
    drop = droppable & (rank < excess[:, None])
    points = torch.where(drop[..., None], PAD_POINT[0], points)
    labels = torch.where(drop, PAD_LABEL, labels)
    return points, labels


# -- frames -------------------------------------------------------------------------------------


def _frame_ratio(
    src_size: tuple[int, int], dst_size: tuple[int, int], device: torch.device
) -> Tensor:
    """(dst_w / src_w, dst_h / src_h) as a float32 tensor: what x and y are multiplied by."""
    if min(*src_size, *dst_size) <= 0:
        raise InputError(f"frame sizes must be positive, got {src_size} and {dst_size}")
    return torch.tensor(
        [dst_size[1] / src_size[1], dst_size[0] / src_size[0]], dtype=torch.float32, device=device
    )


def scale_points(points: Tensor, src_size: tuple[int, int], dst_size: tuple[int, int]) -> Tensor:
    """Move (x, y) coordinates from a frame of ``src_size`` (h, w) to one of ``dst_size``.

    The plain ratio the model applies to its inputs (``EfficientSam.get_rescaled_pts``):
    x * dst_w / src_w, y * dst_h / src_h; negative coordinates (padding) become -1. Works for
    points (...x2) and for boxes viewed as corner pairs (``boxes.view(-1, 2, 2)``).

    Args:
        points: ...x2 float (x, y).
        src_size: (h, w) of the frame the coordinates are in.
        dst_size: (h, w) of the frame to move them to.

    Returns:
        ...x2 float32 in the destination frame.
    """
    if points.shape[-1:] != (2,):
        raise InputError(f"points must have shape ...x2 (x, y), got {tuple(points.shape)}")
    ratio = _frame_ratio(src_size, dst_size, points.device)
    p = points.to(torch.float32)
    return torch.where(p >= 0, p * ratio, PAD_POINT[0])


def to_encoder_frame(
    points: Tensor, labels: Tensor, src_size: tuple[int, int], dst_size: tuple[int, int]
) -> Tensor:
    """Move prompts sampled in a frame of ``src_size`` (h, w) to the encoder input's frame.

    Clicks (labels 0 and 1) are pixel indices: the centre of pixel j of the source frame, at
    (j + 0.5) * ratio in the destination, becomes the index (j + 0.5) * ratio - 0.5 there, so
    that the prompt encoder (which adds 0.5) sees the click at the centre of the source pixel.
    The plain ratio of :func:`scale_points` would put it 0.5 * (ratio - 1) pixels up and left
    of that centre: 1.5 px at 1024 px for a click sampled in the 256 px low-res frame. Box
    corners are pixel edges and scale by the plain ratio; padding stays (-1, -1).

    Args:
        points: ...xNx2 float (x, y) in the source frame.
        labels: ...xN int64 prompt labels.
        src_size: (h, w) of the frame the prompts were sampled in.
        dst_size: (h, w) of the encoder input; pass ``input_h, input_w = dst_size`` to the
            model so that it leaves them as they are.

    Returns:
        ...xNx2 float32 in the destination frame.
    """
    if tuple(labels.shape) != tuple(points.shape[:-1]):
        raise InputError(
            f"labels must have the shape of points without its last axis, got "
            f"{tuple(labels.shape)} and {tuple(points.shape)}"
        )
    scaled = scale_points(points, src_size, dst_size)
    ratio = _frame_ratio(src_size, dst_size, points.device)
    click = ((labels == POSITIVE) | (labels == NEGATIVE))[..., None]
    return torch.where(click, scaled + 0.5 * (ratio - 1), scaled)
