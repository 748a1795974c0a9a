"""Segment everything: records as segment-anything's, known shapes recovered, bounded upsampling.

Two models: the tiny stand-in EfficientSAM (real encoder and decoder code, masks without
meaning) for the comparisons with segment-anything's generator, and an oracle with the same
interface whose masks are the flat-coloured regions of the image under each point, so the
right answer is known.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esam.errors import InputError

pytest.importorskip("segment_anything")
pytest.importorskip("torchvision")

KEYS = [
    "segmentation",
    "area",
    "bbox",
    "predicted_iou",
    "point_coords",
    "stability_score",
    "crop_box",
]
# permissive settings, so the stand-in model's masks survive the filters
LOOSE = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
SHAPES_H, SHAPES_W = 96, 128


class OracleSam(nn.Module):
    """Model interface of EfficientSam whose masks are the colour regions under the prompts.

    The "embedding" is the image at 256x256 (nearest); the first and second candidate of a
    point are the pixels of exactly its colour (logits +-8, predicted IoU 0.97 and 0.93), the
    third the whole image (predicted IoU 0.5).
    """

    mask_threshold = 0.0

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.image_encoder = SimpleNamespace(img_size=256)  # read by SamPredictor's constructor

    def get_image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        return F.interpolate(images, (256, 256), mode="nearest")

    def predict_masks(
        self,
        emb: torch.Tensor,
        points: torch.Tensor,
        labels: torch.Tensor,
        multimask_output: bool,
        input_h: int,
        input_w: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pts = points[0, :, 0]  # Qx2
        ix = (pts[:, 0] * 256 / input_w).long().clamp(0, 255)
        iy = (pts[:, 1] * 256 / input_h).long().clamp(0, 255)
        colours = emb[0][:, iy, ix].T  # Qx3
        same = (emb[0][None] - colours[:, :, None, None]).abs().amax(1) < 1e-4  # Qx256x256
        region = torch.where(same, 8.0, -8.0)
        logits = torch.stack([region, region, torch.full_like(region, 8.0)], 1)[None]
        iou = torch.tensor([0.97, 0.93, 0.5]).expand(1, len(pts), 3)
        return logits, iou.clone()


def shapes_image() -> tuple[np.ndarray, list[np.ndarray]]:
    """A 96x128 RGB image: three flat shapes on a flat background, and their masks."""
    yy, xx = np.mgrid[0:SHAPES_H, 0:SHAPES_W]
    img = np.full((SHAPES_H, SHAPES_W, 3), (200, 200, 200), np.uint8)
    masks = [
        (yy >= 24) & (yy < 60) & (xx >= 28) & (xx < 52),
        (yy - 60) ** 2 + (xx - 92) ** 2 < 16**2,
        (yy >= 70) & (yy < 86) & (xx >= 30) & (xx < 70),
    ]
    for m, c in zip(masks, [(220, 30, 30), (30, 160, 40), (40, 40, 210)], strict=True):
        img[m] = c
    return img, masks


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def generate(model: Any, image: np.ndarray, **kw: Any) -> list[dict[str, Any]]:
    from esam.everything import EfficientSamAutomaticMaskGenerator

    return EfficientSamAutomaticMaskGenerator(model, **kw).generate(image)


def reference(model: Any, image: np.ndarray, **kw: Any) -> list[dict[str, Any]]:
    from esam.everything.sam_compat import sam_generator

    return sam_generator(model, **kw).generate(image)


def assert_same_records(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert list(a) == list(b) == KEYS
        for key in KEYS:
            assert type(a[key]) is type(b[key]), key
            if isinstance(a[key], np.ndarray):
                assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
            else:
                assert a[key] == b[key], key


@pytest.mark.parametrize("mode", ["binary_mask", "uncompressed_rle", "coco_rle"])
def test_records_equal_segment_anything_on_the_same_model(
    tiny_model: nn.Module, rgb_image: np.ndarray, mode: str
) -> None:
    if mode == "coco_rle":
        pytest.importorskip("pycocotools")
    kw = dict(points_per_side=6, points_per_batch=10, output_mode=mode, **LOOSE)
    ours = generate(tiny_model, rgb_image, **kw)
    assert len(ours) >= 3  # several masks survive: the comparison is not vacuous
    assert_same_records(ours, reference(tiny_model, rgb_image, **kw))


def test_crop_layers_equal_segment_anything(tiny_model: nn.Module, rgb_image: np.ndarray) -> None:
    kw = dict(points_per_side=4, points_per_batch=8, crop_n_layers=1, **LOOSE)
    ours = generate(tiny_model, rgb_image, **kw)
    assert ours
    assert_same_records(ours, reference(tiny_model, rgb_image, **kw))


def test_oracle_shapes_recovered_with_exact_records() -> None:
    image, masks = shapes_image()
    records = generate(OracleSam(), image, points_per_side=8)
    # three shapes and the background, each once (the duplicate candidate lost the NMS)
    assert len(records) == 4
    for gt in masks:
        hits = [r for r in records if mask_iou(r["segmentation"], gt) > 0.9]
        assert len(hits) == 1
        r = hits[0]
        seg = r["segmentation"]
        assert r["area"] == int(seg.sum())
        ys, xs = np.nonzero(seg)
        assert r["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
        assert r["predicted_iou"] == pytest.approx(0.97)
        x, y = r["point_coords"][0]
        assert gt[int(y), int(x)]  # the prompt lies on the shape it produced
        assert r["crop_box"] == [0, 0, SHAPES_W, SHAPES_H]
    # +-8 logits are stable under the +-1 offset except at the bicubic transition band
    assert all(r["stability_score"] > 0.9 for r in records)


def test_crop_layers_merge_without_duplicates() -> None:
    # 256x256: layer 1 has four crops of about 172x172
    yy, xx = np.mgrid[0:256, 0:256]
    image = np.full((256, 256, 3), 200, np.uint8)
    corner = (yy - 48) ** 2 + (xx - 48) ** 2 < 15**2  # inside the top-left crop only
    centre = (yy >= 112) & (yy < 145) & (xx >= 110) & (xx < 146)  # inside all four crops
    image[corner], image[centre] = (220, 30, 30), (30, 30, 220)
    kw = dict(points_per_side=8, crop_n_layers=1)
    records = generate(OracleSam(), image, **kw)
    assert len(records) == 3  # background, disc, rectangle
    for gt in (corner, centre):
        hits = [r for r in records if mask_iou(r["segmentation"], gt) > 0.5]
        assert len(hits) == 1  # found by the full image and by crops, kept once
        assert mask_iou(hits[0]["segmentation"], gt) > 0.95
        assert hits[0]["crop_box"] != [0, 0, 256, 256]  # the smaller crop's mask wins
    for i, a in enumerate(records):
        for b in records[i + 1 :]:
            assert mask_iou(a["segmentation"], b["segmentation"]) < 0.5
    assert_same_records(records, reference(OracleSam(), image, **kw))
    # without the cross-crop NMS the centre shape comes from the image and all four crops
    unmerged = generate(OracleSam(), image, crop_nms_thresh=1.0, **kw)
    assert sum(mask_iou(r["segmentation"], centre) > 0.5 for r in unmerged) == 5


def test_rle_outputs_round_trip() -> None:
    mask_utils = pytest.importorskip("pycocotools.mask")
    from segment_anything.utils.amg import rle_to_mask

    image, _ = shapes_image()
    binary = generate(OracleSam(), image, points_per_side=8)
    coco = generate(OracleSam(), image, points_per_side=8, output_mode="coco_rle")
    raw = generate(OracleSam(), image, points_per_side=8, output_mode="uncompressed_rle")
    assert len(binary) == len(coco) == len(raw) == 4
    for b, c, u in zip(binary, coco, raw, strict=True):
        assert c["segmentation"]["size"] == u["segmentation"]["size"] == [SHAPES_H, SHAPES_W]
        assert isinstance(c["segmentation"]["counts"], str)  # JSON-ready
        assert np.array_equal(mask_utils.decode(c["segmentation"]).astype(bool), b["segmentation"])
        assert np.array_equal(rle_to_mask(u["segmentation"]), b["segmentation"])
        assert int(mask_utils.area(c["segmentation"])) == b["area"]
        assert {k: v for k, v in c.items() if k != "segmentation"} == {
            k: v for k, v in b.items() if k != "segmentation"
        }


def test_only_iou_survivors_are_upsampled_in_bounded_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from esam.everything import generator as gen_module

    calls: list[tuple[int, ...]] = []
    real = F.interpolate

    def spy(x: torch.Tensor, size: Any, **kw: Any) -> torch.Tensor:
        if tuple(size) == (SHAPES_H, SHAPES_W):  # not the oracle's own 256x256 resize
            calls.append(tuple(x.shape))
        return real(x, size, **kw)

    monkeypatch.setattr(gen_module.F, "interpolate", spy)
    image, _ = shapes_image()
    records = generate(OracleSam(), image, points_per_side=8, points_per_batch=64, upsample_batch=5)
    assert len(records) == 4
    # 64 points x 3 candidates decoded; the whole-image candidates (IoU 0.5) never upsampled
    assert sum(s[0] for s in calls) == 64 * 2
    assert max(s[0] for s in calls) == 5
    assert all(s[1:] == (1, 256, 256) for s in calls)  # low-res logits, one mask per channel


def test_image_formats_give_the_same_masks() -> None:
    image, _ = shapes_image()
    grey = image.mean(axis=2).astype(np.uint8)
    base = generate(OracleSam(), np.repeat(grey[:, :, None], 3, axis=2), points_per_side=8)
    assert len(base) == 4
    rgba = np.concatenate([image, np.full((*image.shape[:2], 1), 7, np.uint8)], axis=2)
    deep = image.astype(np.uint16) * 257  # 16-bit with the same colours
    for variant, expected in [
        (grey, base),
        (grey[:, :, None], base),
        (deep.mean(axis=2).astype(np.uint16), None),
        (rgba, generate(OracleSam(), image, points_per_side=8)),
        (deep, generate(OracleSam(), image, points_per_side=8)),
    ]:
        records = generate(OracleSam(), variant, points_per_side=8)
        if expected is not None:
            assert_same_records(records, expected)
        else:
            assert len(records) == 4


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((8, 8, 3), np.float32), "dtype uint8"),
        (np.zeros((8, 8, 2), np.uint8), "HxWx4"),
        (np.zeros((0, 8, 3), np.uint8), "non-empty"),
        ([[1, 2]], "numpy array"),
    ],
)
def test_bad_images_are_named(image: Any, match: str) -> None:
    with pytest.raises(InputError, match=match):
        generate(OracleSam(), image, points_per_side=2)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(points_per_side=0), "points_per_side must be an integer >= 1"),
        (dict(points_per_side=-3), "points_per_side"),
        (dict(points_per_side=None), "exactly one of points_per_side and point_grids"),
        (dict(points_per_batch=0), "points_per_batch"),
        (dict(output_mode="png"), "output_mode"),
        (dict(stability_score_thresh=1.5), "stability_score_thresh"),
        (dict(crop_n_layers=-1), "crop_n_layers"),
        (dict(points_per_side=None, point_grids=[np.zeros((2, 3))]), "Nx2"),
    ],
)
def test_bad_settings_are_named(kw: dict[str, Any], match: str) -> None:
    from esam.everything import EfficientSamAutomaticMaskGenerator

    with pytest.raises(InputError, match=match):
        EfficientSamAutomaticMaskGenerator(OracleSam(), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("crop_n_layers", [0, 1])
def test_no_mask_passing_the_filters_gives_an_empty_list(crop_n_layers: int) -> None:
    image, _ = shapes_image()
    # predicted IoU never exceeds 0.97; segment-anything itself fails here with crop layers
    records = generate(
        OracleSam(), image, points_per_side=4, pred_iou_thresh=0.99, crop_n_layers=crop_n_layers
    )
    assert records == []


@pytest.mark.parametrize("shape", [(1, 300), (1, 1), (300, 2)])
def test_images_a_pixel_or_two_wide_run_with_crop_layers(shape: tuple[int, int]) -> None:
    """Crop layers give such images zero-sized crops (segment-anything fails resizing them)."""
    image = np.full((*shape, 3), 9, np.uint8)
    plain = generate(OracleSam(), image, points_per_side=2, crop_n_layers=0, **LOOSE)
    cropped = generate(OracleSam(), image, points_per_side=2, crop_n_layers=1, **LOOSE)
    assert plain and cropped
    assert all(r["segmentation"].shape == shape for r in cropped)
    assert plain[0]["area"] == shape[0] * shape[1]


def test_flat_image_gives_one_mask_of_everything() -> None:
    records = generate(OracleSam(), np.full((40, 50, 3), 9, np.uint8), points_per_side=3)
    assert len(records) == 1
    assert records[0]["area"] == 40 * 50 and records[0]["bbox"] == [0, 0, 49, 39]


def test_mask_data_parts_join_as_segment_anything_cat_joins_them():
    amg = pytest.importorskip("segment_anything.utils.amg")
    from esam.everything.generator import concat_mask_data

    def part(start: int, n: int) -> object:
        return amg.MaskData(
            iou_preds=torch.arange(start, start + n, dtype=torch.float32),
            points=np.arange(2 * start, 2 * (start + n)).reshape(n, 2),
            rles=[{"size": [2, 2], "counts": [i, 4 - i]} for i in range(start, start + n)],
        )

    parts = [part(0, 3), part(3, 0), part(3, 2)]
    expected = amg.MaskData()
    for p in parts:
        expected.cat(p)
    joined = concat_mask_data(amg, parts)
    assert torch.equal(joined["iou_preds"], expected["iou_preds"])
    assert np.array_equal(joined["points"], expected["points"])
    assert joined["rles"] == expected["rles"] and len(joined["rles"]) == 5


def test_packed_masks_are_bounded_whatever_the_mask_and_unpack_exactly() -> None:
    from esam.everything.generator import pack_masks, unpack_mask

    amg = pytest.importorskip("segment_anything.utils.amg")
    h, w = 37, 53
    rng = np.random.default_rng(0)
    masks = torch.zeros((4, h, w), dtype=torch.bool)
    masks[0] = torch.from_numpy(rng.uniform(size=(h, w)) < 0.5)  # noise: the worst RLE
    masks[1, 5:9, 40:52] = True  # a small box
    masks[2, 36, 0] = True  # one pixel in a corner
    boxes = amg.batched_mask_to_box(masks)  # masks[3] is empty: box (0, 0, 0, 0)
    packed = pack_masks(masks, boxes)
    bound = -(-h * w // 8)
    assert [p.dtype for p in packed] == [np.uint8] * 4
    assert [p.nbytes for p in packed] == [bound, -(-4 * 12 // 8), 1, 1]
    # the noise mask's uncompressed RLE holds about one run per two pixels
    assert len(amg.mask_to_rle_pytorch(masks[:1])[0]["counts"]) > h * w // 4
    for mask, p, box in zip(masks, packed, boxes.tolist(), strict=True):
        assert torch.equal(unpack_mask(p, box, (h, w)), mask)
    # a decoder batch whose masks all fail a filter has float boxes (batched_mask_to_box of no
    # masks), and joining it with the others makes every box float: same bits either way
    empty = amg.batched_mask_to_box(masks[:0])
    joined = torch.cat([empty, boxes])
    assert joined.dtype.is_floating_point
    assert [p.tobytes() for p in pack_masks(masks, joined)] == [p.tobytes() for p in packed]
    for mask, p, box in zip(masks, packed, joined.tolist(), strict=True):
        assert torch.equal(unpack_mask(p, box, (h, w)), mask)


def test_candidate_storage_is_bounded_and_only_survivors_are_encoded(
    tiny_model: nn.Module, rgb_image: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    amg = pytest.importorskip("segment_anything.utils.amg")
    from esam.everything import EfficientSamAutomaticMaskGenerator
    from esam.everything.generator import CANDIDATE_OVERHEAD_BYTES

    kw = dict(points_per_side=6, points_per_batch=10, output_mode="uncompressed_rle")
    gen = EfficientSamAutomaticMaskGenerator(tiny_model, **{**kw, **LOOSE, "box_nms_thresh": 0.7})
    batches: list[Any] = []
    process_batch = gen._process_batch

    def spy_batch(*args: Any) -> Any:
        data = process_batch(*args)
        batches.append(data)
        return data

    encoded: list[int] = []
    mask_to_rle = amg.mask_to_rle_pytorch

    def spy_rle(masks: torch.Tensor) -> list[dict[str, Any]]:
        encoded.append(masks.shape[0])
        return mask_to_rle(masks)

    monkeypatch.setattr(gen, "_process_batch", spy_batch)
    monkeypatch.setattr(amg, "mask_to_rle_pytorch", spy_rle)
    records = gen.generate(rgb_image)

    h, w = rgb_image.shape[:2]
    assert len(batches) == 4  # 36 points, 10 per batch
    n = 0
    for data in batches:
        assert "rles" not in dict(data.items())
        assert len(data["packed"]) == len(data["iou_preds"])
        for i, p in enumerate(data["packed"]):
            assert isinstance(p, np.ndarray) and p.dtype == np.uint8
            assert p.nbytes <= -(-h * w // 8)
            rows = sum(v[i].nbytes for v in dict(data.items()).values() if torch.is_tensor(v))
            crop_box_row = 4 * 8  # int64 xyxy, added per crop
            overhead = sys.getsizeof(p) - p.nbytes + 8 + rows + crop_box_row
            assert overhead <= CANDIDATE_OVERHEAD_BYTES  # array object, list slot, rows
        n += len(data["packed"])
    # the NMS removed candidates, and only the survivors were run-length encoded
    assert 0 < len(records) < n
    assert sum(encoded) == len(records) and max(encoded) == 1


def test_small_region_removal_equals_segment_anything(
    tiny_model: nn.Module, rgb_image: np.ndarray
) -> None:
    pytest.importorskip("cv2")
    kw = dict(points_per_side=4, points_per_batch=8, min_mask_region_area=30, **LOOSE)
    ours = generate(tiny_model, rgb_image, **kw)
    assert ours
    assert_same_records(ours, reference(tiny_model, rgb_image, **kw))


def test_small_regions_are_removed_one_decoded_mask_at_a_time(
    tiny_model: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changed masks lose to unchanged duplicates in NMS, changed survivors get new RLEs and
    boxes, exactly as segment-anything's post-processing does; yet no more than one decoded
    mask is alive at any time."""
    import copy
    import gc
    import weakref

    pytest.importorskip("cv2")
    from segment_anything.automatic_mask_generator import SamAutomaticMaskGenerator
    from segment_anything.utils import amg

    from esam import EfficientSamAutomaticMaskGenerator

    h, w = 60, 80
    holed = np.zeros((h, w), dtype=bool)
    holed[10:40, 10:50] = True
    filled = holed.copy()
    holed[20:22, 20:22] = False  # a 4-pixel hole: changed, then a duplicate of `filled`
    islanded = np.zeros((h, w), dtype=bool)
    islanded[45:58, 55:78] = True
    islanded[2:4, 70:72] = True  # a 4-pixel island far away: changed, survives
    masks = torch.from_numpy(np.stack([holed, filled, islanded]))
    data = amg.MaskData(
        rles=amg.mask_to_rle_pytorch(masks),
        boxes=amg.batched_mask_to_box(masks).numpy(),
        iou_preds=np.array([0.9, 0.8, 0.7], dtype=np.float32),
    )
    want = SamAutomaticMaskGenerator.postprocess_small_regions(copy.deepcopy(data), 10, 0.7)
    assert len(want["rles"]) == 2

    live: list[weakref.ref] = []
    peak = 0
    decode = amg.rle_to_mask

    def counting(rle: dict[str, Any]) -> np.ndarray:
        nonlocal peak
        gc.collect()
        out = decode(rle)
        live[:] = [r for r in live if r() is not None] + [weakref.ref(out)]
        peak = max(peak, len(live))
        return out

    generator = EfficientSamAutomaticMaskGenerator(tiny_model, min_mask_region_area=10)
    monkeypatch.setattr(generator._amg, "rle_to_mask", counting)
    got = generator._remove_small_regions(data, 10, 0.7)
    assert peak == 1
    assert [amg.rle_to_mask(r).tolist() for r in got["rles"]] == [
        amg.rle_to_mask(r).tolist() for r in want["rles"]
    ]
    np.testing.assert_array_equal(got["boxes"], want["boxes"])
    np.testing.assert_array_equal(got["iou_preds"], want["iou_preds"])
    assert not amg.rle_to_mask(got["rles"][1])[2:4, 70:72].any()  # the island is gone
