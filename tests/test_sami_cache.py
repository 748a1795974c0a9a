"""Teacher-feature cache: round trip, rank sharding, and named errors for damaged caches."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import esam
from esam.data.views import apply_view, sample_view, view_rng
from esam.sami.cache import (
    CorruptShardError,
    IndexMismatchError,
    MissingShardError,
    TeacherCache,
    build_teacher_cache,
    merge_cache_index,
    write_cache_part,
)
from esam.sami.teacher import Teacher
from esam.standin import load_standin_weights
from tests.numerics import network_tolerance

SIZES = [(40, 60), (50, 50), (64, 48)]


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    model = load_standin_weights(
        esam.build_model("efficientsam_vitt", img_size=32, encoder_depth=1)
    )
    return Teacher.from_efficientsam_encoder(
        model.image_encoder, name="efficientsam_vitt", input_size=32, output_grid=2
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate(SIZES):
        p = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def _build(out: Path, images: list[Path], teacher: Teacher) -> Path:
    return build_teacher_cache(
        out, images, teacher, views_per_image=2, seed=3, view_size=32,
        image_root=images[0].parent, batch_size=4, shard_size=4, progress=False,
    )  # fmt: skip


def test_round_trip(tmp_path: Path, images: list[Path], teacher: Teacher) -> None:
    index_path = _build(tmp_path, images, teacher)
    index = json.loads(index_path.read_text())
    assert index["teacher"]["name"] == "efficientsam_vitt"
    assert index["images"] == ["img0.png", "img1.png", "img2.png"]
    assert [s["shape"] for s in index["shards"]] == [[4, 4, 256], [2, 4, 256]]
    assert all(len(s["sha256"]) == 64 for s in index["shards"])
    cache = TeacherCache(tmp_path, images=[p.name for p in images])
    assert len(cache) == 6 and cache.feature_shape == (4, 256)
    for i, (h, w) in enumerate(SIZES):
        image = np.asarray(Image.open(images[i]).convert("RGB"))
        for v in range(2):
            params, feats = cache[i, v]
            assert params == sample_view(view_rng(3, i, v), h, w)
            assert feats.dtype == np.float16 and feats.shape == (4, 256)
            assert isinstance(feats.base, np.memmap) or isinstance(feats, np.memmap)
            want = teacher(apply_view(image, params, 32)[None])[0].numpy()
            np.testing.assert_allclose(feats.astype(np.float32), want, rtol=2e-3, atol=2e-3)
    # a reader pickles without its mapped data (data-loader workers reopen the shards)
    assert len(pickle.dumps(cache)) < 20_000
    with pytest.raises(IndexError, match="outside the cache"):
        cache[3, 0]


def test_ranks_write_their_share_and_merge(
    tmp_path: Path, images: list[Path], teacher: Teacher
) -> None:
    single = TeacherCache(_build(tmp_path / "one", images, teacher).parent)
    out = tmp_path / "two"

    def part(rank: int, seed: int = 3) -> None:
        write_cache_part(
            out, images, teacher, views_per_image=2, seed=seed, view_size=32,
            image_root=images[0].parent, rank=rank, world_size=2, shard_size=4, progress=False,
        )  # fmt: skip

    part(0)
    with pytest.raises(IndexMismatchError, match="rank 1 has not written"):
        merge_cache_index(out, 2)
    part(1, seed=4)
    with pytest.raises(IndexMismatchError, match=r"disagrees with rank 0 on \['seed'\]"):
        merge_cache_index(out, 2)
    part(1)
    merge_cache_index(out, 2)
    both = TeacherCache(out)
    names = sorted(s["name"] for s in both.index["shards"])
    assert names == ["shard-r000-00000.npy", "shard-r001-00000.npy"]  # images 0, 2 | image 1
    for i in range(3):
        for v in range(2):
            assert both.view_params(i, v) == single.view_params(i, v)
            np.testing.assert_allclose(
                both.features(i, v).astype(np.float32),
                single.features(i, v).astype(np.float32),
                rtol=2e-3,
                atol=2e-3,
            )


def test_named_errors(tmp_path: Path, images: list[Path], teacher: Teacher) -> None:
    _build(tmp_path, images, teacher)
    shard = tmp_path / "shard-r000-00000.npy"
    data = bytearray(shard.read_bytes())
    # same size, damaged content: only the checksum can tell
    data[-10:] = bytes(10)
    shard.write_bytes(bytes(data))
    cache = TeacherCache(tmp_path)
    with pytest.raises(CorruptShardError, match="SHA-256"):
        cache.features(0, 0)
    cache.features(2, 1)  # the other shard is intact
    with pytest.raises(CorruptShardError, match="SHA-256"):
        cache.verify()
    assert TeacherCache(tmp_path, verify_checksums=False).features(0, 0).shape == (4, 256)
    # truncated
    shard.write_bytes(bytes(data[:-100]))
    with pytest.raises(CorruptShardError, match="truncated"):
        TeacherCache(tmp_path)
    # missing
    shard.unlink()
    with pytest.raises(MissingShardError, match="missing"):
        TeacherCache(tmp_path)
    # a shard the index does not list (another run's leftovers)
    shard.write_bytes(bytes(data))
    (tmp_path / "shard-r005-00000.npy").write_bytes(b"x")
    with pytest.raises(IndexMismatchError, match="does not list"):
        TeacherCache(tmp_path)
    (tmp_path / "shard-r005-00000.npy").unlink()
    # another image list
    with pytest.raises(IndexMismatchError, match="another image list"):
        TeacherCache(tmp_path, images=["img0.png", "img1.png"])
    # a shard whose array does not match the index
    np.save(tmp_path / "shard-r000-00001.npy", np.zeros((2, 4, 128), dtype=np.float16))
    index = json.loads((tmp_path / "index.json").read_text())
    index["shards"][1]["bytes"] = (tmp_path / "shard-r000-00001.npy").stat().st_size
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(IndexMismatchError, match=r"the index describes float16 \(2, 4, 256\)"):
        TeacherCache(tmp_path)


def test_teacher_features_are_deterministic(images: list[Path], teacher: Teacher) -> None:
    image = np.asarray(Image.open(images[0]).convert("RGB"))
    params = sample_view(view_rng(0, 0, 0), *image.shape[:2])
    a = teacher(apply_view(image, params, 32)[None])
    b = teacher(apply_view(image, params, 32)[None])
    assert torch.equal(a, b)


def test_an_unreadable_image_leaves_every_shard_complete(
    tmp_path: Path, images: list[Path], teacher: Teacher
) -> None:
    # the last image cannot be read: the last shard, sized for its views, holds fewer rows
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    index_path = build_teacher_cache(
        tmp_path / "cache", [*images, bad], teacher, views_per_image=2, seed=3, view_size=32,
        batch_size=4, shard_size=4, progress=False,
    )  # fmt: skip
    index = json.loads(index_path.read_text())
    assert [s["shape"][0] for s in index["shards"]] == [4, 2]
    assert [u[0] for u in index["unreadable"]] == [3]
    assert not list((tmp_path / "cache").glob(".*tmp*"))
    cache = TeacherCache(tmp_path / "cache")
    cache.verify_shards()
    assert cache.unreadable == {3}
    for i in range(3):
        for v in range(2):
            params, feats = cache[i, v]
            assert feats.shape == (4, 256) and np.isfinite(feats.astype(np.float32)).all()
    assert index["image_bytes"][3] is None  # no features, nothing to compare later
    assert index["image_digests"][3] is None


def test_an_image_changed_after_caching_is_refused(
    tmp_path: Path, images: list[Path], teacher: Teacher
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    copies = [Path(shutil.copy(p, folder / p.name)) for p in images]
    _build(tmp_path / "cache", copies, teacher)
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["image_bytes"] == [p.stat().st_size for p in images]
    TeacherCache(tmp_path / "cache", images=copies)  # unchanged: opens
    # another picture under the same name
    Image.fromarray(np.zeros((50, 50, 3), dtype=np.uint8)).save(copies[1])
    with pytest.raises(IndexMismatchError, match=r"1 image\(s\) changed .*img1\.png"):
        TeacherCache(tmp_path / "cache", images=copies)
    # an image missing now is the data set's counted skip, not a cache error
    copies[1].unlink()
    TeacherCache(tmp_path / "cache", images=copies)


def test_a_same_size_replacement_is_caught_when_the_training_set_reads_it(
    tmp_path: Path, teacher: Teacher
) -> None:
    from esam.data.imagefolder import scan_image_folder
    from esam.sami.cache import image_digest
    from esam.sami.data import PretrainViews, ViewSettings

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):  # uncompressed PNG: the size depends on the pixel count only
        pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png", compress_level=0)
    images = scan_image_folder(folder)
    paths = [images.path(i) for i in range(len(images))]
    _build(tmp_path / "cache", paths, teacher)
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["image_digests"] == [image_digest(Path(p).read_bytes()) for p in paths]
    cache = TeacherCache(tmp_path / "cache", images=paths)
    views = PretrainViews(images, ViewSettings(size=32), 4, seed=0, cache=cache)
    assert views[1]["index"] == 1  # unchanged: read and checked
    size = Path(paths[1]).stat().st_size
    other = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(other).save(paths[1], compress_level=0)
    assert Path(paths[1]).stat().st_size == size
    cache = TeacherCache(tmp_path / "cache", images=paths)  # same size: opens
    assert views[0]["index"] == 0
    with pytest.raises(IndexMismatchError, match=r"img1\.png: differs from the file its teacher"):
        PretrainViews(images, ViewSettings(size=32), 4, seed=0, cache=cache)[1]


def test_ranks_wait_on_the_part_files_and_stop_on_a_failure_note(
    tmp_path: Path, images: list[Path], teacher: Teacher
) -> None:
    import threading

    from esam.sami.cache import CacheError, mark_part_failed, part_name, wait_for_parts

    out = tmp_path / "cache"
    out.mkdir()
    (out / part_name(1, 2)).write_text("{}")  # a stale part of an earlier run...
    mark_part_failed(out, 0, 2, "OSError: disk full")  # ...and a stale failure note
    done = threading.Event()

    def wait() -> None:
        wait_for_parts(out, 2, poll_s=0.01)
        done.set()

    kw = dict(views_per_image=1, seed=3, view_size=32, world_size=2, progress=False)
    write_cache_part(out, images, teacher, rank=0, **kw)  # removes rank 0's own stale note
    assert not (out / "index.r000-of-002.failed").exists()
    write_cache_part(out, images, teacher, rank=1, **kw)  # replaces the stale part
    waiter = threading.Thread(target=wait)
    waiter.start()
    waiter.join(timeout=10)
    assert done.is_set()
    merge_cache_index(out, 2)
    assert TeacherCache(out).num_images == 3
    # a rank that failed: the others stop with its message instead of waiting
    mark_part_failed(out, 1, 3, "RuntimeError: CUDA out of memory")
    with pytest.raises(CacheError, match="rank 1 could not write its part: RuntimeError: CUDA"):
        wait_for_parts(out, 3, poll_s=0.01)


def test_the_teacher_precision_is_applied_and_recorded(
    tmp_path: Path, images: list[Path], teacher: Teacher
) -> None:
    kw = dict(views_per_image=1, seed=3, view_size=32, progress=False)
    build_teacher_cache(tmp_path / "fp32", images, teacher, **kw)
    build_teacher_cache(tmp_path / "bf16", images, teacher, precision="bf16", **kw)
    a, b = TeacherCache(tmp_path / "fp32"), TeacherCache(tmp_path / "bf16")
    assert a.teacher["precision"] == "fp32" and b.teacher["precision"] == "bf16"
    x, y = a.features(0, 0).astype(np.float32), b.features(0, 0).astype(np.float32)
    assert not np.array_equal(x, y)  # bf16 arithmetic did run
    # a bf16 network differs by its own rounding (8 mantissa bits), not by a different result
    scale = float(np.abs(x).max())
    assert float(np.abs(x - y).max()) <= network_tolerance(torch.bfloat16, 192, 2) * scale


def test_stale_parts_are_removed_for_the_run_world_size(tmp_path: Path) -> None:
    from esam.sami.cache import failure_name, part_name, remove_stale_parts

    for r in range(3):
        (tmp_path / part_name(r, 3)).write_text("{}")
        (tmp_path / failure_name(r, 3)).write_text("x")
    (tmp_path / part_name(0, 2)).write_text("{}")  # another world size: not this run's
    remove_stale_parts(tmp_path, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [part_name(0, 2)]
