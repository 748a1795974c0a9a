"""Teacher-feature cache: K fixed augmented views per image, features in fp16 shards.

Running SAM's ViT-H online costs far more than the student's step, so the teacher's features
can be computed once for K fixed views of every image and read back during training.

Layout of a cache folder::

    index.json                         merged index (what the reader opens)
    index.r000-of-004.json ...         one part per rank, written by that rank
    shard-r000-00000.npy ...           float16 arrays, items x N x D (.npy, memory-mapped)

Writing is sharded across ranks: image ``i`` belongs to rank ``i % world_size``, which
renders its K views, runs the teacher and writes its own shards and index part
(:func:`write_cache_part`). When every rank has finished (after a barrier), one process merges
the parts into ``index.json`` (:func:`merge_cache_index`); :func:`build_teacher_cache` does
both in a single process. Shards are written under a temporary name and renamed when complete.

The index (JSON) records the format version, the teacher (name, checkpoint SHA-256, input
size, feature kind), the image paths (relative to an image root when given) and each image
file's size in bytes and a digest of its bytes (``null`` for images that could not be read),
the seed and augmentation
settings, the feature shape and dtype, and per shard its file name, shape,
byte size, SHA-256 and items: ``[image, view, top, left, height, width, flip]`` rows, so each
view's parameters are stored beside its features. View ``v`` of image ``i`` is drawn from
:func:`esam.data.views.view_rng` ``(seed, i, v)``, so the parameters can also be redrawn.

:class:`TeacherCache` reads it: ``cache[i, v]`` gives ``(ViewParams, NxD float16 array)`` by
two table look-ups and a memory-map slice. On opening it checks that every shard exists, has
the recorded size and the recorded array header, that the folder holds no shard the index
does not list, that every (image, view) pair is present once, and (when given) that the image
list matches and that every image file still has the size it had when its features were
computed (an image replaced after caching would otherwise be trained against another image's
features). A replacement of exactly the same size passes that check; the training data set
catches it when it reads the image, against the recorded digest (:meth:`TeacherCache.check_image`,
no extra read). With ``verify_checksums`` (default) each shard's SHA-256 is checked the first
time it is read. Each failure is a named :class:`CacheError` subclass.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from esam.data.imagefolder import read_rgb
from esam.data.images import ImageReadError, read_image_bytes
from esam.data.views import (
    DEFAULT_RATIO,
    DEFAULT_SCALE,
    ViewParams,
    apply_view,
    sample_view,
    view_rng,
)
from esam.errors import InputError
from esam.runtime.precision import autocast, check_precision
from esam.sami.teacher import Teacher
from esam.utils.io import sha256_file, write_text_atomic

log = logging.getLogger(__name__)

CACHE_FORMAT = "esam-teacher-cache"
CACHE_VERSION = 1
INDEX_NAME = "index.json"
FEATURE_DTYPE = "float16"


class CacheError(InputError):
    """A teacher-feature cache cannot be read as it is."""


class MissingShardError(CacheError):
    """A shard the index lists is not in the cache folder."""


class CorruptShardError(CacheError):
    """A shard's size or checksum differs from the index (truncated or damaged file)."""


class IndexMismatchError(CacheError):
    """The index does not describe the data beside it (another run, another image list)."""


def part_name(rank: int, world_size: int) -> str:
    """File name of rank ``rank``'s index part."""
    return f"index.r{rank:03d}-of-{world_size:03d}.json"


def failure_name(rank: int, world_size: int) -> str:
    """File name of the note a rank leaves when its part failed (:func:`mark_part_failed`)."""
    return f"index.r{rank:03d}-of-{world_size:03d}.failed"


def mark_part_failed(
    out_dir: str | os.PathLike[str], rank: int, world_size: int, error: str
) -> None:
    """Leave a note that rank ``rank`` could not write its part, for :func:`wait_for_parts`."""
    write_text_atomic(Path(out_dir) / failure_name(rank, world_size), error + "\n")


def remove_stale_parts(out_dir: str | os.PathLike[str], world_size: int) -> None:
    """Delete every rank's index part and failure note left by an earlier run; call it on one
    process before any rank starts writing (then a barrier), so no waiter reads an old one."""
    for r in range(world_size):
        _remove_rank_files(Path(out_dir), r, world_size)


def _remove_rank_files(folder: Path, rank: int, world_size: int) -> None:
    """Delete rank ``rank``'s index part and failure note, where they exist."""
    for name in (part_name(rank, world_size), failure_name(rank, world_size)):
        (folder / name).unlink(missing_ok=True)


def wait_for_parts(
    out_dir: str | os.PathLike[str],
    world_size: int,
    *,
    poll_s: float = 10.0,
    report_s: float = 600.0,
) -> None:
    """Wait, without a timeout, until every rank has written its index part.

    Writing a part can take hours per rank (the teacher over every view of its images), and
    ranks finish minutes apart; a process-group collective would give up after its timeout and
    lose the work, so the ranks wait on the files instead. A rank that failed leaves a note
    (:func:`mark_part_failed`) and the waiters stop with its message; a process that dies is
    noticed by ``torchrun``, which stops the others.

    Raises:
        CacheError: a rank left a failure note.
    """
    import time

    folder = Path(out_dir)
    start = last_report = time.monotonic()
    while True:
        failed = [r for r in range(world_size) if (folder / failure_name(r, world_size)).is_file()]
        if failed:
            note = (folder / failure_name(failed[0], world_size)).read_text().strip()
            raise CacheError(f"{folder}: rank {failed[0]} could not write its part: {note}")
        waiting = [
            r for r in range(world_size) if not (folder / part_name(r, world_size)).is_file()
        ]
        if not waiting:
            return
        now = time.monotonic()
        if now - last_report >= report_s:
            log.info("waiting %.0f s for the index parts of ranks %s", now - start, waiting[:16])
            last_report = now
        time.sleep(poll_s)


def shard_name(rank: int, number: int) -> str:
    """File name of rank ``rank``'s shard ``number``."""
    return f"shard-r{rank:03d}-{number:05d}.npy"


def load_rgb(path: Path) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB.

    Raises:
        ImageReadError: missing or undecodable (the writer counts and skips such images).
    """
    return read_rgb(path)


def image_digest(data: bytes) -> str:
    """The digest the index records of an image file's bytes (BLAKE2b, 128 bits, hex)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _file_digest(path: Path) -> str | None:
    """:func:`image_digest` of a file, or None when it cannot be read as a file (a loader
    that does not read files; such images are never checked)."""
    try:
        return image_digest(read_image_bytes(str(path)))
    except ImageReadError:
        return None


def _relative(path: str | os.PathLike[str], root: Path | None) -> str:
    """An image path as stored: relative to ``root`` (absolute paths must lie under it)."""
    p = Path(path)
    if root is not None and p.is_absolute():
        try:
            return p.relative_to(root).as_posix()
        except ValueError as e:
            raise InputError(f"image {p} is not under image_root {root}") from e
    return p.as_posix()


def _header(
    teacher: Teacher,
    images: list[str],
    image_root: Path | None,
    views_per_image: int,
    seed: int,
    view_size: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    flip_prob: float,
    world_size: int,
) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "teacher": teacher.describe(),
        "images": images,
        "image_root": image_root.as_posix() if image_root is not None else None,
        "views_per_image": views_per_image,
        "seed": seed,
        "view_size": view_size,
        "augment": {"scale": list(scale), "ratio": list(ratio), "flip_prob": flip_prob},
        "feature_shape": [teacher.num_tokens, teacher.feature_dim],
        "dtype": FEATURE_DTYPE,
        "world_size": world_size,
    }


class _ShardWriter:
    """Fills one .npy shard of ``rows`` items through a memory map, then seals it."""

    def __init__(self, folder: Path, name: str, rows: int, shape: tuple[int, int]) -> None:
        self.path = folder / name
        self.tmp = folder / f".{name}.tmp"
        self.array = np.lib.format.open_memmap(
            self.tmp, mode="w+", dtype=np.float16, shape=(rows, *shape)
        )
        self.items: list[list[int]] = []

    def add(self, features: np.ndarray, item: list[int]) -> None:
        self.array[len(self.items)] = features
        self.items.append(item)

    @property
    def full(self) -> bool:
        return len(self.items) == self.array.shape[0]

    def _shrink(self, rows: int) -> None:
        """Keep the first ``rows`` rows (images that could not be read left the rest unfilled)."""
        old = self.tmp.with_name(self.tmp.name + ".full")
        self.array.flush()
        del self.array
        os.replace(self.tmp, old)
        source = np.load(old, mmap_mode="r")
        self.array = np.lib.format.open_memmap(
            self.tmp, mode="w+", dtype=np.float16, shape=(rows, *source.shape[1:])
        )
        for start in range(0, rows, 256):  # a shard may not fit in memory twice
            stop = min(rows, start + 256)
            self.array[start:stop] = source[start:stop]
        del source
        old.unlink()

    def seal(self) -> dict[str, Any]:
        n = len(self.items)
        if n < self.array.shape[0]:
            self._shrink(n)
        shape = list(self.array.shape)
        self.array.flush()
        del self.array
        digest = sha256_file(self.tmp)
        os.replace(self.tmp, self.path)
        return {
            "name": self.path.name,
            "shape": shape,
            "dtype": FEATURE_DTYPE,
            "bytes": self.path.stat().st_size,
            "sha256": digest,
            "items": self.items,
        }


def write_cache_part(
    out_dir: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]],
    teacher: Teacher,
    *,
    views_per_image: int,
    seed: int = 0,
    view_size: int = 224,
    image_root: str | os.PathLike[str] | None = None,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 32,
    shard_size: int = 1024,
    scale: tuple[float, float] = DEFAULT_SCALE,
    ratio: tuple[float, float] = DEFAULT_RATIO,
    flip_prob: float = 0.5,
    load_image: Callable[[Path], np.ndarray] = load_rgb,
    progress: bool = True,
    precision: str = "fp32",
) -> Path:
    """Compute and store this rank's share of the teacher features.

    Args:
        out_dir: the cache folder (created).
        images: every image of the data set, in a fixed order (the index is its position);
            paths are opened relative to ``image_root`` when they are relative.
        teacher: the frozen teacher; views are rendered at ``teacher.input_size``.
        views_per_image: K fixed views per image.
        seed: the views' seed (view v of image i comes from ``view_rng(seed, i, v)``).
        view_size: the student's input side, recorded for the reader.
        image_root: folder the stored image paths are relative to.
        rank, world_size: this process's share (images with ``i % world_size == rank``).
        batch_size: views per teacher call.
        shard_size: views per shard file.
        scale, ratio, flip_prob: the random-resized-crop and flip settings.
        load_image: reads a path into HxWx3 uint8 RGB.
        progress: show a tqdm bar.
        precision: autocast precision of the teacher (``fp32``, ``bf16``, ``fp16``); recorded
            in the index. Features are stored in fp16 whatever it is.

    Returns:
        The path of this rank's index part.
    """
    if views_per_image < 1:
        raise InputError(f"views_per_image must be >= 1, got {views_per_image}")
    if not 0 <= rank < world_size:
        raise InputError(f"rank must be in [0, {world_size}), got {rank}")
    if batch_size < 1 or shard_size < 1:
        raise InputError(f"batch_size and shard_size must be >= 1, got {batch_size}, {shard_size}")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_rank_files(folder, rank, world_size)  # an earlier run's: the waiters read these
    root = Path(image_root) if image_root is not None else None
    names = [_relative(p, root) for p in images]
    header = _header(
        teacher,
        names,
        root,
        views_per_image,
        seed,
        view_size,
        scale,
        ratio,
        flip_prob,
        world_size,
    )
    device = next(teacher.parameters()).device
    check_precision(device, precision)
    header["teacher"] = {**header["teacher"], "precision": precision}
    mine = list(range(rank, len(names), world_size))
    total = len(mine) * views_per_image
    feat_shape = (teacher.num_tokens, teacher.feature_dim)
    shards: list[dict[str, Any]] = []
    writer: _ShardWriter | None = None
    pending: list[tuple[torch.Tensor, list[int]]] = []
    written = 0

    def flush() -> None:
        nonlocal writer, written
        if not pending:
            return
        with autocast(device, precision):
            out = teacher(torch.stack([x for x, _ in pending]))
        feats = out.cpu().numpy().astype(np.float16)
        for f, item in zip(feats, (it for _, it in pending), strict=True):
            if writer is None:
                rows = min(shard_size, total - written)
                writer = _ShardWriter(folder, shard_name(rank, len(shards)), rows, feat_shape)
            writer.add(f, item)
            written += 1
            if writer.full:
                shards.append(writer.seal())
                writer = None
        pending.clear()

    bar = tqdm(total=total, disable=not progress, desc=f"teacher features, rank {rank}")
    unreadable: list[list[Any]] = []
    image_bytes: list[list[int]] = []
    image_digests: list[list[Any]] = []
    for i in mine:
        path = Path(names[i]) if root is None else root / names[i]
        try:
            image = load_image(path)
        except ImageReadError as e:
            log.warning("%s: skipped, not cached (%s)", path, e)
            unreadable.append([i, names[i], e.reason])
            bar.update(views_per_image)
            continue
        image_bytes.append([i, _file_size(path)])
        image_digests.append([i, _file_digest(path)])
        h, w = image.shape[:2]
        for v in range(views_per_image):
            params = sample_view(view_rng(seed, i, v), h, w, scale, ratio, flip_prob)
            pending.append(
                (apply_view(image, params, teacher.input_size), [i, v, *params.to_list()])
            )
            if len(pending) == batch_size:
                flush()
                bar.update(batch_size)
    remaining = len(pending)
    flush()
    if writer is not None:  # sized for views of images that could not be read
        shards.append(writer.seal())
    bar.update(remaining)
    bar.close()
    if unreadable:
        log.warning("%d image(s) could not be read and have no features", len(unreadable))
    part = {
        **header,
        "rank": rank,
        "shards": shards,
        "unreadable": unreadable,
        "image_bytes": image_bytes,
        "image_digests": image_digests,
    }
    return _write_json(folder / part_name(rank, world_size), part)


def merge_cache_index(out_dir: str | os.PathLike[str], world_size: int) -> Path:
    """Merge every rank's index part into ``index.json`` (run once, after all ranks wrote).

    Raises:
        IndexMismatchError: a part is missing or the parts disagree (another run's leftovers).
    """
    folder = Path(out_dir)
    parts = []
    for r in range(world_size):
        p = folder / part_name(r, world_size)
        if not p.is_file():
            raise IndexMismatchError(
                f"{folder}: rank {r} has not written its index part {p.name}; merge after every rank has finished"
            )
        parts.append(json.loads(p.read_text()))
    skip = ("rank", "shards", "unreadable", "image_bytes", "image_digests")
    first = {k: v for k, v in parts[0].items() if k not in skip}
    for r, part in enumerate(parts[1:], start=1):
        other = {k: v for k, v in part.items() if k not in skip}
        if other != first:
            diff = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
            raise IndexMismatchError(
                f"{folder}: index part of rank {r} disagrees with rank 0 on {diff}; the parts come from different runs"
            )
    sizes: list[int | None] = [None] * len(first["images"])
    digests: list[str | None] = [None] * len(first["images"])
    for part in parts:
        for i, size in part.get("image_bytes", []):
            sizes[i] = size
        for i, digest in part.get("image_digests", []):
            digests[i] = digest
    index = {
        **first,
        "image_bytes": sizes,
        "image_digests": digests,
        "shards": [s for part in parts for s in part["shards"]],
        "unreadable": sorted(
            (u for part in parts for u in part.get("unreadable", [])), key=lambda u: u[0]
        ),
    }
    return _write_json(folder / INDEX_NAME, index)


def build_teacher_cache(
    out_dir: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]],
    teacher: Teacher,
    **kwargs: Any,
) -> Path:
    """Single-process cache: :func:`write_cache_part` for rank 0 of 1, then the merge.

    Keyword arguments are those of :func:`write_cache_part` (``rank`` and ``world_size``
    excepted). Returns the path of ``index.json``.
    """
    if "rank" in kwargs or "world_size" in kwargs:
        raise InputError("build_teacher_cache runs one process; use write_cache_part per rank")
    write_cache_part(out_dir, images, teacher, **kwargs)
    return merge_cache_index(out_dir, 1)


def _file_size(path: Path) -> int:
    """Size of an image file in bytes (-1 when it cannot be stat'ed: a loader that does not
    read files; such images are never checked)."""
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _digest_table(digests: list[str | None] | None, n: int) -> np.ndarray | None:
    """The index's image digests as an n-row array of 16-byte strings (b'' where none is
    recorded): compact, and shared by forked loader workers without copying."""
    if digests is None:
        return None
    if len(digests) != n:
        raise IndexMismatchError(
            f"the index records {len(digests)} image digests for {n} images; it is damaged"
        )
    try:
        return np.array([bytes.fromhex(d) if d else b"" for d in digests], dtype="S16")
    except (TypeError, ValueError) as e:
        raise IndexMismatchError(f"the index holds a malformed image digest: {e}") from e


def _write_json(path: Path, obj: dict[str, Any]) -> Path:
    """Compact JSON (the item lists make indentation costly), written atomically."""
    return write_text_atomic(path, json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n")


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    return tuple(shape), dtype


class TeacherCache:
    """Read access to a teacher-feature cache written by :func:`build_teacher_cache`.

    Args:
        root: the cache folder.
        images: the image list the caller trains on; when given, it must equal the index's
            (as stored: relative to ``image_root`` when one was recorded), and each file that
            exists must have the size the index records (one ``stat`` per image).
        verify_checksums: check each shard's SHA-256 the first time it is read (one full
            read of the shard per process); sizes and headers are always checked at opening.

    ``cache[i, v]`` returns ``(ViewParams, features NxD float16)`` for view ``v`` of image
    ``i``; the array is a read-only view into the memory-mapped shard. ``index`` holds the
    parsed index (teacher, images, settings, shard table) without the per-shard item lists,
    which are moved into NumPy look-up tables on opening.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        images: Sequence[str | os.PathLike[str]] | None = None,
        verify_checksums: bool = True,
    ) -> None:
        self.root = Path(root)
        self.verify_checksums = verify_checksums
        index_path = self.root / INDEX_NAME
        if not index_path.is_file():
            raise CacheError(
                f"{self.root}: no {INDEX_NAME}; build the cache (and merge the rank parts) first"
            )
        try:
            index = json.loads(index_path.read_text())
        except (OSError, ValueError) as e:
            raise CacheError(f"{index_path}: cannot be read as JSON: {e}") from e
        if index.get("format") != CACHE_FORMAT or index.get("version") != CACHE_VERSION:
            raise CacheError(
                f"{index_path}: not an esam teacher cache of version {CACHE_VERSION} "
                f"(format {index.get('format')!r}, version {index.get('version')!r})"
            )
        self.index = index
        self.images: list[str] = list(index["images"])
        self.views_per_image = int(index["views_per_image"])
        self.feature_shape = tuple(int(x) for x in index["feature_shape"])
        self.teacher: dict[str, Any] = index["teacher"]
        self.view_size = int(index["view_size"])
        #: Images the writer could not read: they have no features.
        self.unreadable: set[int] = {int(u[0]) for u in index.get("unreadable", [])}
        if images is not None:
            root_dir = index.get("image_root")
            given = [_relative(p, Path(root_dir) if root_dir else None) for p in images]
            if given != self.images:
                first = next(
                    (i for i, (a, b) in enumerate(zip(given, self.images, strict=False)) if a != b),
                    min(len(given), len(self.images)),
                )
                raise IndexMismatchError(
                    f"{index_path}: the cache was built for another image list "
                    f"({len(self.images)} images, {len(given)} given; first difference at index {first})"
                )
            base = Path(root_dir) if root_dir else None
            self._check_image_sizes([base / n if base else Path(n) for n in self.images])
        self._check_files()
        self._build_tables()
        self._digests = _digest_table(index.pop("image_digests", None), len(self.images))
        self._arrays: dict[int, np.ndarray] = {}

    def _check_image_sizes(self, paths: list[Path]) -> None:
        recorded = self.index.get("image_bytes")
        if recorded is None:
            log.warning(
                "%s: the index records no image sizes (written by an older esam); "
                "images changed since caching cannot be detected",
                self.root,
            )
            return
        if len(recorded) != len(paths):
            raise IndexMismatchError(
                f"{self.root / INDEX_NAME}: records {len(recorded)} image sizes for "
                f"{len(paths)} images; the index is damaged"
            )
        changed = []
        for path, want in zip(paths, recorded, strict=True):
            if want is None or want < 0:
                continue  # unreadable when cached, or not a file: nothing to compare
            try:
                size = path.stat().st_size
            except OSError:
                continue  # unreadable now: the data set skips it and counts the skip
            if size != want:
                changed.append((path, size, want))
        if changed:
            path, size, want = changed[0]
            raise IndexMismatchError(
                f"{self.root}: {len(changed)} image(s) changed since their features were "
                f"cached, first {path} ({size} bytes, cached at {want}); rebuild the cache "
                "(esam pretrain cache-teacher)"
            )

    def _check_files(self) -> None:
        listed = {s["name"] for s in self.index["shards"]}
        on_disk = {p.name for p in self.root.glob("shard-*.npy")}
        extra = sorted(on_disk - listed)
        if extra:
            raise IndexMismatchError(
                f"{self.root}: holds shards the index does not list ({', '.join(extra[:5])}"
                f"{', ...' if len(extra) > 5 else ''}); the index is from another run"
            )
        for s in self.index["shards"]:
            path = self.root / s["name"]
            if not path.is_file():
                raise MissingShardError(f"{path}: shard listed in the index is missing")
            size = path.stat().st_size
            if size != int(s["bytes"]):
                raise CorruptShardError(
                    f"{path}: {size} bytes, the index records {s['bytes']}; the shard is truncated or damaged"
                )
            try:
                shape, dtype = _npy_header(path)
            except ValueError as e:
                raise CorruptShardError(f"{path}: damaged .npy header: {e}") from e
            want = (len(s["items"]), *self.feature_shape)  # checked before the items are dropped
            if shape != tuple(s["shape"]) or shape != want or dtype != np.dtype(FEATURE_DTYPE):
                raise IndexMismatchError(
                    f"{path}: holds {dtype} {shape}, the index describes {FEATURE_DTYPE} {want}"
                )

    def _build_tables(self) -> None:
        n, k = len(self.images), self.views_per_image
        self._shard = np.full((n, k), -1, dtype=np.int32)
        self._row = np.full((n, k), -1, dtype=np.int64)
        self._params = np.zeros((n, k, 5), dtype=np.int64)
        for si, s in enumerate(self.index["shards"]):
            for row, item in enumerate(s["items"]):
                i, v = int(item[0]), int(item[1])
                if not (0 <= i < n and 0 <= v < k):
                    raise IndexMismatchError(
                        f"{self.root}: shard {s['name']} lists view {v} of image {i}, outside {n} images x {k} views"
                    )
                if self._shard[i, v] >= 0:
                    raise IndexMismatchError(
                        f"{self.root}: view {v} of image {i} is listed twice in the index"
                    )
                self._shard[i, v], self._row[i, v] = si, row
                self._params[i, v] = item[2:7]
            del s["items"]  # now in the tables; the JSON lists would cost far more memory
        missing = np.argwhere(self._shard < 0)
        missing = missing[[int(i) not in self.unreadable for i in missing[:, 0]]]
        if len(missing):
            i, v = (int(x) for x in missing[0])
            raise IndexMismatchError(
                f"{self.root}: the index has no features for view {v} of image {i} "
                f"({len(missing)} views missing); a rank's part was not merged"
            )

    def __getstate__(self) -> dict[str, Any]:
        # Data-loader workers reopen the memory maps themselves (never pickle mapped data).
        state = self.__dict__.copy()
        state["_arrays"] = {}
        return state

    def __len__(self) -> int:
        """Number of cached views (images x views per image)."""
        return len(self.images) * self.views_per_image

    @property
    def num_images(self) -> int:
        return len(self.images)

    def _shard_path(self, si: int) -> Path:
        path = self.root / self.index["shards"][si]["name"]
        if not path.is_file():
            raise MissingShardError(f"{path}: shard listed in the index is missing")
        return path

    def verify_shards(self, rank: int = 0, world_size: int = 1) -> None:
        """Check the SHA-256 of every ``world_size``-th shard from ``rank`` (all shards in one
        process), so a run can check the cache once instead of in every loader worker.

        Raises:
            CorruptShardError: a shard's digest differs from the index's (the shard named).
        """
        for si in range(rank, len(self.index["shards"]), world_size):
            self._verify_shard(si)

    def _verify_shard(self, si: int) -> None:
        path, want = self._shard_path(si), self.index["shards"][si]["sha256"]
        digest = sha256_file(path)
        if digest != want:
            raise CorruptShardError(
                f"{path}: SHA-256 {digest[:12]}... differs from the index's {want[:12]}...; the shard is damaged"
            )

    def _array(self, si: int) -> np.ndarray:
        arr = self._arrays.get(si)
        if arr is None:
            if self.verify_checksums:
                self._verify_shard(si)
            arr = np.load(self._shard_path(si), mmap_mode="r")
            self._arrays[si] = arr
        return arr

    def view_params(self, image: int, view: int) -> ViewParams:
        """The stored parameters of view ``view`` of image ``image``."""
        self._check_key(image, view)
        return ViewParams.from_list(self._params[image, view].tolist())

    def features(self, image: int, view: int) -> np.ndarray:
        """NxD float16 teacher features of view ``view`` of image ``image`` (read-only)."""
        self._check_key(image, view)
        return self._array(int(self._shard[image, view]))[int(self._row[image, view])]

    def __getitem__(self, key: tuple[int, int]) -> tuple[ViewParams, np.ndarray]:
        image, view = key
        return self.view_params(image, view), self.features(image, view)

    def _check_key(self, image: int, view: int) -> None:
        if not (0 <= image < len(self.images) and 0 <= view < self.views_per_image):
            raise IndexError(
                f"view {view} of image {image} is outside the cache ({len(self.images)} images x {self.views_per_image} views)"
            )

    @property
    def records_digests(self) -> bool:
        """Whether the index records the images' digests (older indexes do not)."""
        return self._digests is not None

    def check_image(self, image: int, data: bytes, name: str) -> None:
        """Check the bytes of image ``image``, as read now, against the recorded digest.

        A file replaced by another of exactly the same size since caching passes the size
        check at opening; this catches it when the training set reads it. Images with no
        recorded digest (unreadable when cached, or an index without digests) pass.

        Raises:
            IndexMismatchError: the bytes differ from those the features were computed from.
        """
        if self._digests is None or not self._digests[image]:
            return
        got = image_digest(data)
        if bytes.fromhex(got) != self._digests[image]:
            raise IndexMismatchError(
                f"{name}: differs from the file its teacher features were computed from "
                f"(digest {got[:12]}..., cached {self._digests[image].hex()[:12]}...); "
                "rebuild the cache (esam pretrain cache-teacher)"
            )

    def verify(self) -> None:
        """Check every shard's SHA-256 now (reads the whole cache once)."""
        for si in range(len(self.index["shards"])):
            self._verify_shard(si)
