"""The SA-1B reader and the synthetic SA-1B generator: round trips, workers, bad input."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from esam.cli.main import main
from esam.data.images import ImageReadError, read_image
from esam.data.masks import encode_mask
from esam.data.sa1b import (
    COUNT_NO_ANNOTATIONS,
    SA1BDataset,
    SA1BFormatError,
    record_json,
    resolve_sources,
)
from esam.data.samplers import ResumableSampler
from esam.data.synth_sa1b import encode_jpeg, make_sa1b_image, write_synthetic_sa1b
from esam.data.tarshards import CorruptShardError, scan_tar, write_tar_atomic
from esam.errors import InputError

SEED, N, H, W = 5, 7, 64, 96


@pytest.fixture(scope="module")
def forms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 7 synthetic images (64x96, 3 per shard) as tar shards and as folders."""
    root = tmp_path_factory.mktemp("sa1b")
    out = {}
    for layout in ("tar", "folder"):
        write_synthetic_sa1b(
            root / layout, N, seed=SEED, height=H, width=W, shard_size=3, layout=layout
        )
        out[layout] = root / layout
    return out


def _decoded_jpeg(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(encode_jpeg(image))).convert("RGB"))


@pytest.mark.parametrize("layout", ["tar", "folder"])
def test_round_trip_gives_the_generated_masks_and_pixels(
    forms: dict[str, Path], layout: str
) -> None:
    ds = SA1BDataset(forms[layout])
    assert len(ds) == N and ds.skips == Counter()
    assert len(ds.sources) == 3  # 3 + 3 + 1 images
    for i in range(N):
        rec = ds.record(i)
        synth = make_sa1b_image(SEED, i, H, W)
        assert (rec.image_id, rec.file_name, rec.height, rec.width) == (
            i + 1,
            f"sa_{i + 1}.jpg",
            H,
            W,
        )
        assert rec.skips == Counter()
        assert len(rec.annotations) == len(synth.masks) > 3
        for ann, mask in zip(rec.annotations, synth.masks, strict=True):
            assert np.array_equal(ds.decode_mask(ann, H, W), mask)
            assert ann["segmentation"] == encode_mask(mask)
        image = ds.read_image(i)
        assert image.shape == (H, W, 3) and image.dtype == np.uint8
        assert np.array_equal(image, _decoded_jpeg(synth.image))  # the JPEG of the painting
        assert np.abs(image.astype(int) - synth.image).mean() < 10  # JPEG noise only
        same, pixels = ds[i]
        assert same == rec and np.array_equal(pixels, image)


def test_tar_and_folder_forms_read_identically(forms: dict[str, Path]) -> None:
    tars, folders = SA1BDataset(forms["tar"]), SA1BDataset(forms["folder"])
    for i in range(N):
        a, b = tars.record(i), folders.record(i)
        assert a.annotations == b.annotations and a.image_id == b.image_id
        assert tars.json_bytes(i) == folders.json_bytes(i)
        assert np.array_equal(tars.read_image(i), folders.read_image(i))
    assert tars.locations(0)[0] == f"{forms['tar'] / 'sa_000000.tar'}::sa_1.jpg"
    assert folders.locations(0)[1] == str(forms["folder"] / "sa_000000" / "sa_1.json")
    # a member location reads through the common image reader too
    loc = tars.locations(4)[0]
    assert loc is not None and np.array_equal(read_image(loc), tars.read_image(4))


def test_sources_lists_globs_folders_and_mixtures(forms: dict[str, Path]) -> None:
    tar_dir = forms["tar"]
    shards = sorted(tar_dir.glob("*.tar"))
    by_list = SA1BDataset(",".join(str(p) for p in reversed(shards)))
    by_glob = SA1BDataset(str(tar_dir / "sa_00000*.tar"))
    assert by_list.sources == by_glob.sources == resolve_sources(tar_dir)
    mixed = SA1BDataset([shards[0], forms["folder"] / "sa_000001", str(shards[2])])
    # containers sorted by path: .../folder/sa_000001 comes before .../tar/sa_00000*.tar
    assert [mixed.record(i).image_id for i in range(len(mixed))] == [4, 5, 6, 1, 2, 3, 7]
    with pytest.raises(FileNotFoundError, match="no file matches"):
        SA1BDataset(str(tar_dir / "nothing_*.tar"))
    with pytest.raises(FileNotFoundError, match="not found"):
        SA1BDataset(tar_dir / "missing")
    (tar_dir.parent / "empty").mkdir()
    with pytest.raises(InputError, match="no SA-1B data"):
        SA1BDataset(tar_dir.parent / "empty")
    # a shard and the folder it was extracted to: every image would be read twice
    with pytest.raises(InputError, match=r"3 json name\(s\) .* first sa_1.json in .*sa_000000"):
        SA1BDataset([forms["folder"] / "sa_000000", shards[0]])
    with pytest.raises(InputError, match="either the tar shards or the folders"):
        SA1BDataset([forms["folder"], forms["tar"]])


def _first(batch: list[Any]) -> Any:
    return batch[0]


def test_dataloader_workers_read_the_shards(forms: dict[str, Path]) -> None:
    ds = SA1BDataset(forms["tar"])
    ds.read_image(0)  # open a handle in this process before the workers start
    loader = DataLoader(ds, batch_size=1, num_workers=2, collate_fn=_first)
    seen = [(rec.image_id, image) for rec, image in loader]
    assert [i for i, _ in seen] == list(range(1, N + 1))
    for i, (_, image) in enumerate(seen):
        assert np.array_equal(image, ds.read_image(i))
    clone = pickle.loads(pickle.dumps(ds))  # no open file travels with it
    assert np.array_equal(clone.read_image(6), ds.read_image(6))


def test_resumable_sampler_shards_by_index(forms: dict[str, Path]) -> None:
    ds = SA1BDataset(forms["tar"])
    ranks = [list(ResumableSampler(ds, rank=r, world_size=2, seed=3)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 4  # 7 padded to 8
    ids = [ds.record(i).image_id for shard in ranks for i in shard]
    assert set(ids) == set(range(1, N + 1)) and len(ids) == 8
    again = [list(ResumableSampler(ds, rank=r, world_size=2, seed=3)) for r in range(2)]
    assert again == ranks


def test_generator_is_seeded(tmp_path: Path) -> None:
    a = write_synthetic_sa1b(tmp_path / "a", 3, seed=1, height=48, width=40, shard_size=2)
    b = write_synthetic_sa1b(tmp_path / "b", 3, seed=1, height=48, width=40, shard_size=2)
    c = write_synthetic_sa1b(tmp_path / "c", 3, seed=2, height=48, width=40, shard_size=2)
    for pa, pb in zip(a.files, b.files, strict=True):
        assert pa.read_bytes() == pb.read_bytes()
    da, dc = SA1BDataset(a.out), SA1BDataset(c.out)
    assert all(da.json_bytes(i) != dc.json_bytes(i) for i in range(3))
    assert a.as_dict()["n_images"] == 3 and a.n_masks == sum(
        len(da.record(i).annotations) for i in range(3)
    )
    with pytest.raises(InputError, match="not empty"):
        write_synthetic_sa1b(tmp_path / "a", 1)


def test_masks_are_the_disjoint_visible_parts() -> None:
    from scipy import ndimage

    split_shapes = 0
    for index in range(6):
        synth = make_sa1b_image(11, index, 80, 80)
        masks = synth.masks
        assert masks.sum(axis=0).max() == 1  # disjoint: later shapes hide earlier ones
        for ann, mask in zip(synth.record["annotations"], masks, strict=True):
            assert ann["area"] == mask.sum() >= 16
            rows, cols = np.nonzero(mask)
            x, y, w, h = ann["bbox"]
            assert (x, y, w, h) == (cols.min(), rows.min(), np.ptp(cols) + 1, np.ptp(rows) + 1)
            px, py = ann["point_coords"][0]
            assert mask[int(py), int(px)]
            assert ndimage.label(mask, structure=np.ones((3, 3)))[1] == 1  # one connected part
            assert ann["predicted_iou"] == ann["stability_score"] == 1.0
        for k in set(synth.shapes):
            parts = [m for m, s in zip(masks, synth.shapes, strict=True) if s == k]
            if len(parts) > 1:  # a shape cut in two by an occluder: one mask per part
                split_shapes += 1
                together = ndimage.label(np.any(parts, axis=0), structure=np.ones((3, 3)))[1]
                assert together == len(parts)
        assert set(synth.kinds) <= {"ellipse", "rectangle", "triangle", "polygon", "ring"}
    assert split_shapes > 0


def _pair(image_id: int, h: int = 8, w: int = 10, **record: Any) -> list[tuple[str, bytes]]:
    """A valid jpg + json pair with one mask, json fields overridable."""
    mask = np.zeros((h, w), dtype=bool)
    mask[2:5, 3:7] = True
    jpg = encode_jpeg(np.full((h, w, 3), 120, dtype=np.uint8))
    data = json.loads(
        record_json(
            image_id,
            h,
            w,
            [{"id": 1, "segmentation": encode_mask(mask), "bbox": [3, 2, 4, 3], "area": 12}],
        )
    )
    data.update(record)
    return [(f"sa_{image_id}.jpg", jpg), (f"sa_{image_id}.json", json.dumps(data).encode())]


def test_a_file_that_is_not_a_tar_is_a_named_error(tmp_path: Path) -> None:
    bad = tmp_path / "sa_000000.tar"
    bad.write_bytes(b"this is not a tar archive at all" * 40)
    with pytest.raises(CorruptShardError, match="not an uncompressed tar") as e:
        SA1BDataset(bad)
    assert e.value.shard == str(bad.resolve()) and e.value.member is None
    gz = tmp_path / "gz" / "sa_000001.tar"
    gz.parent.mkdir()
    with tarfile.open(gz, "w:gz") as tf:
        info = tarfile.TarInfo("sa_1.jpg")
        tf.addfile(info, io.BytesIO(b""))
    with pytest.raises(CorruptShardError, match="compressed"):
        SA1BDataset(gz)


def test_damaged_and_truncated_shards_name_the_member(tmp_path: Path) -> None:
    members = _pair(1) + _pair(2) + _pair(3)
    shard = write_tar_atomic(tmp_path / "a" / "sa_000000.tar", members)
    scan = scan_tar(shard)
    assert [m.name for m in scan.members] == [n for n, _ in members]
    raw = shard.read_bytes()
    # a damaged header (of sa_2.jpg): tarfile stops listing silently there; the reader does not
    header = scan.members[2].offset - 512
    damaged = tmp_path / "b" / "sa_000000.tar"
    damaged.parent.mkdir()
    damaged.write_bytes(raw[:header] + b"\xff" * 512 + raw[header + 512 :])
    with pytest.raises(CorruptShardError, match="damaged tar header") as e:
        SA1BDataset(damaged)
    assert e.value.member == "sa_1.json"
    # cut inside the data of sa_2.json
    truncated = tmp_path / "c" / "sa_000000.tar"
    truncated.parent.mkdir()
    truncated.write_bytes(raw[: scan.members[3].offset + 5])
    with pytest.raises(CorruptShardError, match="sa_2.json is truncated"):
        SA1BDataset(truncated)
    # the same member twice
    with pytest.raises(CorruptShardError, match="occurs twice"):
        SA1BDataset(write_tar_atomic(tmp_path / "d" / "x.tar", _pair(1) + _pair(1)))


def test_bad_json_members_are_named_errors(tmp_path: Path) -> None:
    members = _pair(1) + [("sa_2.jpg", _pair(2)[0][1]), ("sa_2.json", b"{not json")]
    members += _pair(3, image={"width": 10})
    ds = SA1BDataset(write_tar_atomic(tmp_path / "s.tar", members))
    assert ds.record(0).image_id == 1
    with pytest.raises(SA1BFormatError, match=r"s\.tar::sa_2\.json: not valid JSON") as e:
        ds.record(1)
    assert e.value.location.endswith("s.tar::sa_2.json")
    with pytest.raises(SA1BFormatError, match=r"sa_3\.json: image\.image_id is None"):
        ds.record(2)


def test_empty_annotations_and_wrong_rle_size_are_counted(tmp_path: Path) -> None:
    wrong = encode_mask(np.ones((9, 10), dtype=bool))  # 9x10 RLE on an 8x10 image
    good = json.loads(_pair(2)[1][1])["annotations"][0]
    members = _pair(1, annotations=[]) + _pair(
        2,
        annotations=[
            good,
            {"id": 2, "segmentation": wrong},
            {"id": 3},
            {"segmentation": good["segmentation"]},
        ],
    )
    ds = SA1BDataset(write_tar_atomic(tmp_path / "s.tar", members))
    empty, image = ds[0]
    assert empty.annotations == () and image.shape == (8, 10, 3)
    assert empty.skips == Counter({COUNT_NO_ANNOTATIONS: 1})
    rec = ds.record(1)
    assert [a["id"] for a in rec.annotations] == [1]
    assert rec.skips == Counter(
        {"invalid_rle": 1, "no_segmentation": 1, "annotation_without_id": 1}
    )
    assert ds.skips == empty.skips + rec.skips
    with pytest.raises(InputError, match="decode"):
        ds.decode_mask({"id": 2, "segmentation": wrong}, 8, 10)


def test_without_the_full_rle_check_a_corrupt_mask_fails_when_decoded(tmp_path: Path) -> None:
    good = json.loads(_pair(1)[1][1])["annotations"][0]
    corrupt = {"id": 2, "segmentation": {"size": [8, 10], "counts": "0;:"}}  # runs != 80
    wrong = {"id": 3, "segmentation": encode_mask(np.ones((9, 10), dtype=bool))}
    shard = write_tar_atomic(tmp_path / "s.tar", _pair(1, annotations=[good, corrupt, wrong]))
    assert [a["id"] for a in SA1BDataset(shard).record(0).annotations] == [1]
    quick = SA1BDataset(shard, check_rle=False)
    rec = quick.record(0)
    assert [a["id"] for a in rec.annotations] == [1, 2]  # the size is still checked
    assert rec.skips == Counter({"invalid_rle": 1})
    assert quick.decode_mask(rec.annotations[0], 8, 10).sum() == 12
    with pytest.raises(InputError, match="does not decode"):
        quick.decode_mask(rec.annotations[1], 8, 10)


def test_unpaired_files_are_counted(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    for name, data in _pair(1) + _pair(2):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / "sa_9.jpg").write_bytes(_pair(9)[0][1])  # no json
    (folder / "sa_10.json").write_bytes(_pair(10)[1][1])  # no jpg
    (folder / "README.txt").write_text("x")
    ds = SA1BDataset(folder)
    assert len(ds) == 2
    assert ds.skips == Counter(
        {"image_without_json": 1, "json_without_image": 1, "ignored_file": 1}
    )
    with_orphans = SA1BDataset(folder, require_image=False)
    assert [with_orphans.record(i).image_id for i in range(3)] == [1, 10, 2]  # sorted by name
    assert with_orphans.record(1).image_location is None
    assert with_orphans.skips == Counter({"image_without_json": 1, "ignored_file": 1})
    with pytest.raises(ImageReadError) as e:
        with_orphans.read_image(1)
    assert e.value.reason == "image_missing"


def test_unreadable_image_is_an_image_read_error(tmp_path: Path) -> None:
    members = [("sa_1.jpg", b"\xff\xd8 not really a jpeg"), _pair(1)[1]] + _pair(2)
    ds = SA1BDataset(write_tar_atomic(tmp_path / "s.tar", members))
    with pytest.raises(ImageReadError, match=r"s\.tar::sa_1\.jpg: cannot be decoded") as e:
        ds.read_image(0)
    assert e.value.reason == "image_corrupt"
    with pytest.raises(ImageReadError):
        ds[0]
    skips: Counter[str] = Counter()
    assert ds.try_read_image(0, skips=skips) is None and skips == Counter({"image_corrupt": 1})
    assert ds.try_read_image(1) is not None
    with pytest.raises(ImageReadError) as e:
        ds.read_image(1, expected_hw=(9, 10))
    assert e.value.reason == "image_size_mismatch"
    with pytest.raises(ImageReadError) as e:
        read_image(f"{tmp_path / 's.tar'}::sa_7.jpg")
    assert e.value.reason == "image_missing"


def test_synth_command_writes_a_readable_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["data", "synth-sa1b", "--out", str(tmp_path / "s"), "--images", "3", "--seed", "4"]
    assert (
        main([*argv, "--size", "40x32", "--shard-size", "2", "--format", "folder", "--no-progress"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["files"] == ["sa_000000", "sa_000001"] and summary["n_images"] == 3
    ds = SA1BDataset(tmp_path / "s")
    rec = ds.record(2)
    assert (rec.width, rec.height) == (40, 32) and ds.read_image(2).shape == (32, 40, 3)


def test_synth_command_rejects_bad_sizes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit):
        main(["data", "synth-sa1b", "--out", str(tmp_path), "--images", "2", "--size", "0x5"])
    assert "expected PX or WxH" in capsys.readouterr().err
    assert (
        main(["data", "synth-sa1b", "--out", str(tmp_path / "t"), "--images", "1", "--size", "8"])
        == 2
    )
    assert "at least 16x16" in capsys.readouterr().err


def test_fewer_shapes_give_fewer_larger_parts_and_min_area_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dense = [make_sa1b_image(5, i, 96, 96) for i in range(8)]
    sparse = [make_sa1b_image(5, i, 96, 96, shapes=(2, 4), min_area=40) for i in range(8)]
    assert all(len(set(s.shapes)) <= 4 for s in sparse)
    n_dense, n_sparse = sum(len(s.masks) for s in dense), sum(len(s.masks) for s in sparse)
    assert n_sparse < n_dense
    mean_dense = np.mean([m.sum() for s in dense for m in s.masks])
    mean_sparse = np.mean([m.sum() for s in sparse for m in s.masks])
    assert mean_sparse > mean_dense
    assert all(m.sum() >= 40 for s in sparse for m in s.masks)
    # the defaults are the documented range: the same bytes as before the option existed
    assert make_sa1b_image(5, 0, 96, 96, shapes=(10, 21)).record == dense[0].record
    argv = ["data", "synth-sa1b", "--out", str(tmp_path / "s"), "--images", "2", "--size", "64"]
    assert main([*argv, "--shapes", "2", "3", "--min-area", "30", "--no-progress"]) == 0
    ds = SA1BDataset(tmp_path / "s")
    assert all(a["area"] >= 30 for i in range(2) for a in ds.record(i).annotations)
    capsys.readouterr()
    bad = ["data", "synth-sa1b", "--out", str(tmp_path / "t"), "--images", "1", "--no-progress"]
    assert main([*bad, "--shapes", "5", "2"]) == 2
    assert "fewest <= most" in capsys.readouterr().err


def test_shards_named_in_upper_case_are_read_by_the_benchmark_loader(tmp_path: Path) -> None:
    from esam.data.coco import load_annotation_set
    from esam.data.image_tasks import ImageTaskDataset

    write_tar_atomic(tmp_path / "d" / "SA_000000.TAR", _pair(1) + _pair(2))
    aset = load_annotation_set("sa1b", tmp_path / "d", tmp_path / "d")
    loaded = ImageTaskDataset(aset.images)
    images = [loaded[i] for i in range(len(loaded))]
    assert len(images) == 2 and all(im.image is not None for im in images), images


def test_a_file_source_must_be_a_tar_and_compressed_shards_are_refused(tmp_path: Path) -> None:
    plain = tmp_path / "sa_000000"
    write_tar_atomic(tmp_path / "x.tar", _pair(1)).rename(plain)
    with pytest.raises(InputError, match=r"sa_000000: not a \.tar shard"):
        resolve_sources(plain)
    folder = tmp_path / "mixed"
    write_tar_atomic(folder / "sa_000000.tar", _pair(1))
    (folder / "sa_000001.tar.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(InputError, match=r"1 compressed tar file.*sa_000001\.tar\.gz"):
        resolve_sources(folder)


def test_symlinked_folders_are_followed_once(tmp_path: Path) -> None:
    write_tar_atomic(tmp_path / "real" / "sa_000000.tar", _pair(1))
    write_tar_atomic(tmp_path / "elsewhere" / "sa_000001.tar", _pair(2))
    (tmp_path / "real" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "real" / "loop").symlink_to(tmp_path / "real", target_is_directory=True)
    ds = SA1BDataset(tmp_path / "real")
    assert len(ds) == 2 and ds.skips == Counter()


def test_the_same_image_twice_in_one_tar_is_refused(tmp_path: Path) -> None:
    members = _pair(1) + [(f"copy/{n}", b) for n, b in _pair(1)] + _pair(2)
    shard = write_tar_atomic(tmp_path / "sa_000000.tar", members)
    with pytest.raises(
        InputError, match=r"more than once in .*first sa_1\.json as copy/sa_1\.json and"
    ):
        SA1BDataset(shard)


def test_a_shard_damaged_after_indexing_is_a_counted_image_skip(tmp_path: Path) -> None:
    shard = write_tar_atomic(tmp_path / "sa_000000.tar", _pair(1) + _pair(2))
    ds = SA1BDataset(shard)
    raw = shard.read_bytes()
    shard.write_bytes(raw[: scan_tar(shard).members[0].offset + 4])  # cut inside sa_1.jpg
    skips: Counter[str] = Counter()
    assert ds.try_read_image(0, skips=skips) is None
    assert skips == Counter({"image_corrupt": 1})


def test_member_locations_split_at_the_marker_in_any_case_and_script() -> None:
    from esam.data.tarshards import split_member_path

    assert split_member_path("/data/İstanbul/SA_000000.TAR::sa_1.jpg") == (
        "/data/İstanbul/SA_000000.TAR",
        "sa_1.jpg",
    )
    assert split_member_path("/data/plain/sa_1.jpg") is None
