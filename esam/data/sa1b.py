"""SA-1B read in place: tar shards or folders of ``sa_<id>.jpg`` + ``sa_<id>.json`` pairs.

SA-1B's layout: every image ``sa_<id>.jpg`` has a ``sa_<id>.json`` beside it holding
``{"image": {"image_id", "width", "height", "file_name"}, "annotations": [{"id",
"segmentation": {"size": [h, w], "counts": "<compressed RLE>"}, "bbox": [x, y, w, h], "area",
"predicted_iou", "point_coords", "crop_box", "stability_score"}, ...]}``, and the pairs ship as
uncompressed tar shards (``sa_000000.tar``, ...).

:class:`SA1BDataset` is a map-style dataset over the images of any mix of shards and folders.
Building it lists the pairs only (a shard's headers are scanned once, see
:mod:`esam.data.tarshards`); a json is parsed when its :meth:`~SA1BDataset.record` is asked
for, an image decoded by :meth:`~SA1BDataset.read_image`, and a mask decoded only by
:meth:`~SA1BDataset.decode_mask`. The dataset holds no open file, so it pickles into DataLoader
workers, which open shards lazily (one table of handles per process).

Order: the containers (shards, and folders holding pairs) sorted by path, then the pairs of
each container sorted by name (plain string order: ``sa_10`` before ``sa_2``). Index ``i`` is
the same image in every process, so sharding across ranks and DataLoader workers is by index,
e.g. with :class:`esam.data.samplers.ResumableSampler`.

Bad input (``docs/data.md`` has the table):

* a shard that is not an uncompressed tar, or is damaged: :class:`CorruptShardError` on
  construction, naming the shard and the last member read intact;
* a jpg without its json, or a json without its jpg: not in the dataset, counted in
  :attr:`SA1BDataset.skips` (``image_without_json``, ``json_without_image``); other files are
  counted as ``ignored_file``;
* a json that does not parse or lacks its ``image`` block: :class:`SA1BFormatError` from
  :meth:`~SA1BDataset.record`, naming the shard and member;
* a json with no annotations: the image is kept with zero masks and counted
  (``image_without_annotations``);
* an annotation without a segmentation, whose RLE does not decode to the image's size, or
  without an integer id: left out of the record and counted (``no_segmentation``,
  ``invalid_rle``, ``annotation_without_id``);
* an image that cannot be decoded: :class:`~esam.data.images.ImageReadError` from
  :meth:`~SA1BDataset.read_image` (the caller decides; :meth:`~SA1BDataset.try_read_image`
  counts it and returns None).

Counts made while reading records and images accumulate in :attr:`SA1BDataset.skips` of the
process that reads them; each :class:`SA1BRecord` also carries its own counts, so DataLoader
workers can hand them back with the sample.
"""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from esam.data.images import ImageReadError, decode_image
from esam.data.masks import decode_mask as _decode_segmentation
from esam.data.masks import encode_mask, rle_problem
from esam.data.skips import (
    SKIP_BAD_RLE,
    SKIP_IMAGE_CORRUPT,
    SKIP_IMAGE_MISSING,
    SKIP_NO_SEGMENTATION,
)
from esam.data.tarshards import MEMBER_SEP, CorruptShardError, member_path, read_at, scan_tar
from esam.errors import InputError
from esam.utils.deps import require

#: A jpg without its json (not in the dataset).
SKIP_IMAGE_WITHOUT_JSON = "image_without_json"
#: A json without its jpg (not in the dataset unless ``require_image=False``).
SKIP_JSON_WITHOUT_IMAGE = "json_without_image"
#: A file or tar member that is neither a jpg, a json nor (in folders) a tar shard.
SKIP_IGNORED_FILE = "ignored_file"
#: A json listing no annotations: the image is kept with zero masks (a count, not a skip).
COUNT_NO_ANNOTATIONS = "image_without_annotations"
#: An annotation without an integer ``id`` (left out).
SKIP_ANNOTATION_NO_ID = "annotation_without_id"

IMAGE_SUFFIXES = (".jpg", ".jpeg")
JSON_SUFFIX = ".json"
TAR_SUFFIX = ".tar"
#: Compressed archives that cannot be read in place: refused, never passed over silently.
COMPRESSED_TAR_SUFFIXES = (
    ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz", ".tar.zst", ".tzst",
    ".tar.lz4", ".tar.lzma", ".tlz", ".tar.lz", ".tar.z",
)  # fmt: skip
_GLOB_CHARS = "*?["

__all__ = [
    "COUNT_NO_ANNOTATIONS",
    "CorruptShardError",
    "SA1BDataset",
    "SA1BFormatError",
    "SA1BRecord",
    "decode_annotation_mask",
    "resolve_sources",
]


class SA1BFormatError(InputError):
    """A json member that is not a valid SA-1B record; ``location`` names the shard and member
    (``<shard>.tar::<member>``) or the file."""

    def __init__(self, location: str, message: str) -> None:
        super().__init__(f"{location}: {message}")
        self.location = location


@dataclass(frozen=True)
class SA1BRecord:
    """One image's json, checked (no pixels).

    Attributes:
        index: position in the dataset.
        image_id: ``image.image_id``.
        file_name: ``image.file_name`` (the jpg's name when the json has none).
        height, width: the image size the json declares.
        annotations: the usable annotations as stored (dicts with ``id``, ``segmentation`` (an
            RLE dict whose ``size`` is [height, width]), ``bbox`` [x, y, w, h], ``area``, ...),
            in file order.
        image_location: the jpg (a path, or ``<shard>.tar::<member>``), None when missing.
        json_location: the json, likewise.
        skips: annotations left out of this record (and ``image_without_annotations``), by
            reason.
    """

    index: int
    image_id: int
    file_name: str
    height: int
    width: int
    annotations: tuple[dict[str, Any], ...] = field(repr=False)
    image_location: str | None
    json_location: str
    skips: Counter[str] = field(default_factory=Counter)


def decode_annotation_mask(annotation: dict[str, Any], height: int, width: int) -> np.ndarray:
    """The HxW bool mask of an SA-1B annotation (its ``segmentation`` RLE, via pycocotools).

    Raises:
        InputError: no segmentation, or an RLE that does not decode to ``height`` x ``width``.
    """
    seg = annotation.get("segmentation") if isinstance(annotation, dict) else None
    if not isinstance(seg, dict):
        raise InputError(f"annotation {annotation.get('id')!r} has no RLE segmentation")
    return _decode_segmentation(seg, height, width)


def _has_glob(text: str) -> bool:
    return any(c in text for c in _GLOB_CHARS)


def _expand(sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Paths named by a comma-separated string, a glob, a path, or a list of those."""
    items: list[str | os.PathLike[str]]
    if isinstance(sources, str):
        items = [s.strip() for s in sources.split(",") if s.strip()]
    elif isinstance(sources, os.PathLike):
        items = [sources]
    else:
        items = list(sources)
    if not items:
        raise InputError("no SA-1B source given (a folder, tar shards, or a glob)")
    paths: list[Path] = []
    for item in items:
        text = os.fspath(item)
        if isinstance(item, str) and _has_glob(text):
            matches = sorted(glob.glob(text))
            if not matches:
                raise FileNotFoundError(f"no file matches {text}")
            paths.extend(Path(m) for m in matches)
        else:
            path = Path(text)
            if not path.exists():
                raise FileNotFoundError(f"SA-1B source not found: {path}")
            paths.append(path)
    return paths


def resolve_sources(
    sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> tuple[Path, ...]:
    """The containers named by ``sources``: tar shards and folders that directly hold pairs.

    ``sources`` is a path, a glob, a comma-separated string of those, or a list. A file is a
    tar shard (its name must end in ``.tar``); a folder is searched recursively (hidden entries
    skipped, symlinked folders followed) for ``*.tar`` shards and for folders holding ``.jpg``
    / ``.json`` files. Returns them sorted by path, each once.

    Raises:
        FileNotFoundError: a path does not exist or a glob matches nothing.
        InputError: nothing to read was found, a file named is not a ``.tar``, or a folder
            holds compressed tar files (which cannot be read in place).
    """
    found: set[Path] = set()
    compressed: list[Path] = []
    for path in _expand(sources):
        if path.is_file():
            if not path.name.lower().endswith(TAR_SUFFIX):
                raise InputError(
                    f"{path}: not a .tar shard; SA-1B data is read from uncompressed .tar "
                    "shards or from folders of .jpg + .json pairs (decompress a .tar.gz first)"
                )
            found.add(path.resolve())
            continue
        visited: set[Path] = set()
        # symlinked folders are followed (datasets are often assembled from links); a link
        # back up the tree is walked once
        for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
            here = Path(dirpath).resolve()
            if here in visited:
                dirnames[:] = []
                continue
            visited.add(here)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            names = [f for f in filenames if not f.startswith(".")]
            for name in names:
                low = name.lower()
                if low.endswith(TAR_SUFFIX):
                    found.add(here / name)
                elif low.endswith(COMPRESSED_TAR_SUFFIXES):
                    compressed.append(here / name)
            if any(_kind(name) is not None for name in names):
                found.add(here)
    if compressed:
        raise InputError(
            f"{len(compressed)} compressed tar file(s) among the SA-1B sources, first "
            f"{compressed[0]}: shards are read in place, so they must be uncompressed .tar "
            "files (decompress them, or move them out of the folder)"
        )
    if not found:
        raise InputError(
            f"no SA-1B data in {sources} (looked for *.tar shards and folders of .jpg + .json)"
        )
    return tuple(sorted(found, key=str))


def _kind(name: str) -> str | None:
    low = name.lower()
    if low.endswith(IMAGE_SUFFIXES):
        return "image"
    if low.endswith(JSON_SUFFIX):
        return "json"
    return None


def _stem(name: str) -> str:
    return name[: name.rfind(".")]


@dataclass
class _Container:
    """The pairs of one shard or folder, as compact arrays (no per-pair Python objects, so
    forked DataLoader workers share them instead of copying them on access).

    ``image`` / ``json`` hold member or file names (utf-8, ``b""`` when absent); for a shard,
    ``offsets`` is an Nx4 int64 array (image offset, image size, json offset, json size).
    """

    path: str
    is_tar: bool
    image: np.ndarray
    json: np.ndarray
    offsets: np.ndarray | None

    def __len__(self) -> int:
        return len(self.json)


def _count(skips: Counter[str], reason: str, n: int) -> None:
    """Add ``n`` to a count, leaving zero counts out of ``skips``."""
    if n:
        skips[reason] += n


def _encode(names: Iterable[str]) -> np.ndarray:
    arr = [n.encode("utf-8", "surrogateescape") for n in names]
    return np.array(arr, dtype=np.bytes_) if arr else np.zeros(0, dtype="S1")


def _decode(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


def _pair(
    where: str, entries: Iterable[tuple[str, Any]], require_image: bool, skips: Counter[str]
) -> list[tuple[str, tuple[str, Any] | None, tuple[str, Any]]]:
    """(stem, (image name, ref) or None, (json name, ref)) sorted by stem; unpaired counted."""
    images: dict[str, tuple[str, Any]] = {}
    jsons: dict[str, tuple[str, Any]] = {}
    for name, ref in entries:
        kind = _kind(name)
        if kind is None:
            skips[SKIP_IGNORED_FILE] += 1
            continue
        table = images if kind == "image" else jsons
        stem = _stem(name)
        if stem in table:
            raise CorruptShardError(
                where, name, f"{where}: {table[stem][0]} and {name} are both the {kind} of {stem}"
            )
        table[stem] = (name, ref)
    _count(skips, SKIP_IMAGE_WITHOUT_JSON, sum(1 for s in images if s not in jsons))
    out = []
    for stem in sorted(jsons):
        img = images.get(stem)
        if img is None and require_image:
            skips[SKIP_JSON_WITHOUT_IMAGE] += 1
            continue
        out.append((stem, img, jsons[stem]))
    return out


def _index_tar(path: Path, require_image: bool, skips: Counter[str]) -> _Container:
    scan = scan_tar(path)
    _count(skips, SKIP_IGNORED_FILE, scan.n_other)
    pairs = _pair(
        str(path), ((m.name, (m.offset, m.size)) for m in scan.members), require_image, skips
    )
    offsets = np.full((len(pairs), 4), -1, dtype=np.int64)
    for k, (_, img, js) in enumerate(pairs):
        if img is not None:
            offsets[k, :2] = img[1]
        offsets[k, 2:] = js[1]
    return _Container(
        str(path),
        True,
        _encode(img[0] if img else "" for _, img, _ in pairs),
        _encode(js[0] for _, _, js in pairs),
        offsets,
    )


def _index_folder(path: Path, require_image: bool, skips: Counter[str]) -> _Container:
    names = sorted(
        p.name
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and not p.name.lower().endswith(TAR_SUFFIX)
    )
    pairs = _pair(str(path), ((n, None) for n in names), require_image, skips)
    return _Container(
        str(path),
        False,
        _encode(img[0] if img else "" for _, img, _ in pairs),
        _encode(js[0] for _, _, js in pairs),
        None,
    )


def _check_unique_names(containers: list[_Container]) -> None:
    """Refuse a json file name found twice, in two containers or in two folders of one tar
    (names are SA-1B's image ids)."""
    if not containers:
        return
    base = [np.char.rpartition(c.json, b"/")[:, 2] for c in containers]
    names, counts = np.unique(np.concatenate(base), return_counts=True)
    if not (counts > 1).any():
        return
    repeated = names[counts > 1]
    first = repeated[0]
    holders = [(c, b) for c, b in zip(containers, base, strict=True) if (b == first).any()]
    where = [c.path for c, _ in holders]
    if len(holders) == 1:
        c, b = holders[0]
        members = [_decode(m) for m in c.json[b == first]]
        raise InputError(
            f"{len(repeated)} json name(s) appear more than once in {where[0]}, first "
            f"{_decode(first)} as {' and '.join(members)}: each such image would be read twice"
        )
    raise InputError(
        f"{len(repeated)} json name(s) appear in more than one SA-1B source, first "
        f"{_decode(first)} in {' and '.join(where)}: each image would be read twice; pass "
        "either the tar shards or the folders they were extracted to, not both"
    )


#: Threads that list shards and folders at once.
INDEX_THREADS = 8


class SA1BDataset(Dataset[tuple[SA1BRecord, np.ndarray]]):
    """The images of SA-1B tar shards and folders, in a fixed order.

    ``dataset[i]`` is ``(record(i), read_image(i))`` with the image size checked against the
    json; use :meth:`record`, :meth:`read_image` and :meth:`decode_mask` to read only what is
    needed.

    Args:
        sources: a folder, a tar shard, a glob, a comma-separated string of those, or a list
            (see :func:`resolve_sources`).
        require_image: leave out jsons without their jpg (counted). With False they stay in
            (not counted), with ``image_location`` None, and :meth:`read_image` raises
            ``ImageReadError`` (``image_missing``) for them.
        progress: show a progress bar while shards are scanned.
        check_rle: check every RLE's run lengths when a record is read (pure Python, about
            0.7 ms per 1,000-character RLE, so a full SA-1B json of ~100 masks costs ~70 ms).
            With False only the RLE's declared size is checked on reading; the runs of each
            mask are still checked when it is decoded (:meth:`decode_mask` raises
            ``InputError`` for a corrupt one), so only masks never decoded go unchecked.

    Attributes:
        sources: the containers read (tar shards and folders of pairs), sorted.
        skips: counts by reason (see the module docstring): those of the listing, then those of
            the records and images read by this process.

    Raises:
        FileNotFoundError: a source does not exist.
        CorruptShardError: a shard is not an uncompressed tar or is damaged.
        InputError: no pair was found, or two containers hold a json of the same name (a
            folder holding a shard and its extracted files would train on each image twice).
    """

    def __init__(
        self,
        sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        require_image: bool = True,
        progress: bool = False,
        check_rle: bool = True,
    ) -> None:
        from tqdm import tqdm

        self.sources = resolve_sources(sources)
        self.require_image = require_image
        self.check_rle = check_rle
        self.skips: Counter[str] = Counter()

        # listing a shard reads one header per member (22k seeks for an SA-1B shard): on
        # network storage that waits on I/O, so shards are listed by several threads
        def index(path: Path) -> tuple[_Container, Counter[str]]:
            counts: Counter[str] = Counter()
            if path.is_file():
                return _index_tar(path, require_image, counts), counts
            return _index_folder(path, require_image, counts), counts

        workers = max(1, min(INDEX_THREADS, len(self.sources)))
        listed: list[tuple[_Container, Counter[str]]] = []
        with ThreadPoolExecutor(workers, thread_name_prefix="sa1b-index") as pool:
            futures = [pool.submit(index, path) for path in self.sources]
            bar = tqdm(total=len(futures), unit="shard", disable=not progress, desc="index")
            try:
                for future in futures:  # in order: the error raised is the first source's
                    listed.append(future.result())
                    bar.update(1)
            except BaseException:
                for future in futures:
                    future.cancel()  # the shards not started yet; a failed listing stops now
                raise
            finally:
                bar.close()
        for _, counts in listed:
            self.skips.update(counts)
        self._containers = [c for c, _ in listed if len(c)]
        _check_unique_names(self._containers)
        self._ends = np.cumsum([len(c) for c in self._containers], dtype=np.int64)
        if not len(self):
            raise InputError(
                f"no image with its json found in {', '.join(map(str, self.sources))} "
                f"(counts: {dict(self.skips)})"
            )

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def _locate(self, index: int) -> tuple[_Container, int]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index %= n
        k = int(np.searchsorted(self._ends, index, side="right"))
        start = int(self._ends[k - 1]) if k else 0
        return self._containers[k], index - start

    def _location(self, c: _Container, name: bytes) -> str:
        text = _decode(name)
        return member_path(c.path, text) if c.is_tar else os.path.join(c.path, text)

    def locations(self, index: int) -> tuple[str | None, str]:
        """(jpg, json) of image ``index``: file paths, or ``<shard>.tar::<member>``; the jpg is
        None when missing (``require_image=False``)."""
        c, j = self._locate(index)
        image = self._location(c, c.image[j]) if c.image[j] else None
        return image, self._location(c, c.json[j])

    def _read(self, c: _Container, j: int, which: int) -> bytes:
        """Bytes of the image (``which`` 0) or json (1) of pair ``j`` of ``c``."""
        if c.offsets is not None:
            offset, size = (int(v) for v in c.offsets[j, 2 * which : 2 * which + 2])
            return read_at(c.path, offset, size)
        name = (c.image, c.json)[which][j]
        with open(os.path.join(c.path, _decode(name)), "rb") as f:
            return f.read()

    def json_bytes(self, index: int) -> bytes:
        """The json of image ``index`` as stored."""
        c, j = self._locate(index)
        return self._read(c, j, 1)

    def record(self, index: int) -> SA1BRecord:
        """The json of image ``index``, checked; unusable annotations are left out and counted.

        Raises:
            SA1BFormatError: the json does not parse, is not an object, or lacks an ``image``
                block with integer ``image_id``, ``width`` and ``height``.
        """
        return self.parse_record(index, self.json_bytes(index))

    def parse_image_id(self, index: int, raw: bytes) -> int:
        """The ``image_id`` of image ``index`` from its json bytes (nothing else is checked
        or counted).

        Raises:
            SA1BFormatError: as :meth:`record`.
        """
        return int(_parse(raw, self.locations(index)[1])["image"]["image_id"])

    def parse_record(self, index: int, raw: bytes) -> SA1BRecord:
        """:meth:`record` from the json bytes of image ``index`` already read."""
        image_loc, json_loc = self.locations(index)
        data = _parse(raw, json_loc)
        img = data["image"]
        h, w, image_id = int(img["height"]), int(img["width"]), int(img["image_id"])
        default_name = os.path.basename(image_loc.split(MEMBER_SEP)[-1]) if image_loc else ""
        file_name = str(img.get("file_name") or default_name)
        anns = data.get("annotations")
        if anns is None:
            anns = []
        if not isinstance(anns, list):
            raise SA1BFormatError(json_loc, "'annotations' is not a list")
        skips: Counter[str] = Counter()
        kept: list[dict[str, Any]] = []
        for ann in anns:
            problem = _annotation_problem(ann, h, w, self.check_rle)
            if problem is not None:
                skips[problem] += 1
            else:
                kept.append(ann)
        if not anns:
            skips[COUNT_NO_ANNOTATIONS] += 1
        self.skips.update(skips)
        return SA1BRecord(index, image_id, file_name, h, w, tuple(kept), image_loc, json_loc, skips)

    def read_image(self, index: int, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
        """Image ``index`` as HxWx3 uint8 RGB (pixels as stored).

        Raises:
            ImageReadError: the jpg is missing, cannot be read or decoded, or is not
                ``expected_hw`` in size; ``reason`` is the skip reason.
        """
        image_loc, _ = self.locations(index)
        if image_loc is None:
            raise ImageReadError(SKIP_IMAGE_MISSING, f"image {index}: no jpg beside its json")
        c, j = self._locate(index)
        try:
            data = self._read(c, j, 0)
        except FileNotFoundError as e:
            raise ImageReadError(SKIP_IMAGE_MISSING, f"{image_loc}: file not found") from e
        except (CorruptShardError, OSError) as e:
            raise ImageReadError(SKIP_IMAGE_CORRUPT, f"{image_loc}: cannot be read ({e})") from e
        return decode_image(data, image_loc, expected_hw)

    def try_read_image(
        self,
        index: int,
        expected_hw: tuple[int, int] | None = None,
        skips: Counter[str] | None = None,
    ) -> np.ndarray | None:
        """:meth:`read_image`, or None for an unusable image, counted under its reason in
        ``skips`` (default: :attr:`skips`)."""
        try:
            return self.read_image(index, expected_hw)
        except ImageReadError as e:
            (self.skips if skips is None else skips)[e.reason] += 1
            return None

    @staticmethod
    def decode_mask(annotation: dict[str, Any], height: int, width: int) -> np.ndarray:
        """The HxW bool mask of one annotation (see :func:`decode_annotation_mask`)."""
        return decode_annotation_mask(annotation, height, width)

    def __getitem__(self, index: int) -> tuple[SA1BRecord, np.ndarray]:
        rec = self.record(index)
        return rec, self.read_image(index, (rec.height, rec.width))


def _parse(raw: bytes, where: str) -> dict[str, Any]:
    """A json member parsed and its ``image`` block checked."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise SA1BFormatError(where, f"not valid JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("image"), dict):
        raise SA1BFormatError(where, "not an SA-1B record (needs an 'image' object)")
    img = data["image"]
    for key in ("image_id", "width", "height"):
        v = img.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or (key != "image_id" and v < 1):
            kind = "an integer" if key == "image_id" else "a positive integer"
            raise SA1BFormatError(where, f"image.{key} is {v!r}, expected {kind}")
    return data


def _annotation_problem(ann: Any, height: int, width: int, check_runs: bool) -> str | None:
    """Why an annotation is left out of a record, or None."""
    if not isinstance(ann, dict) or not isinstance(ann.get("segmentation"), dict):
        return SKIP_NO_SEGMENTATION
    ann_id = ann.get("id")
    if isinstance(ann_id, bool) or not isinstance(ann_id, int):
        return SKIP_ANNOTATION_NO_ID
    seg = ann["segmentation"]
    if check_runs:
        return rle_problem(seg, height, width)
    size = seg.get("size")
    if not isinstance(size, list | tuple) or list(size) != [height, width]:
        return SKIP_BAD_RLE
    if not isinstance(seg.get("counts"), str | bytes | list):
        return SKIP_BAD_RLE
    return None


def mask_annotation(ann_id: int, mask: np.ndarray) -> dict[str, Any]:
    """The SA-1B annotation of an HxW bool mask (non-empty), as esam writes it.

    ``segmentation`` is the compressed COCO RLE (``counts`` a str), ``bbox`` [x, y, w, h] and
    ``area`` (pixels) come from the mask, ``point_coords`` is ``[[column, row]]`` of the mask
    pixel farthest from its border, ``crop_box`` the whole image, and ``predicted_iou`` and
    ``stability_score`` are 1.0 (the mask is given, not predicted).
    """
    mask_utils = require("pycocotools.mask")
    ndimage = require("scipy.ndimage")
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        raise InputError(f"annotation {ann_id}: empty mask")
    r0, c0 = int(rows[0]), int(cols[0])
    crop = mask[r0 : int(rows[-1]) + 1, c0 : int(cols[-1]) + 1]
    dist = ndimage.distance_transform_edt(np.pad(crop, 1))
    r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
    rle = encode_mask(mask)
    box = mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
    h, w = mask.shape
    return {
        "id": int(ann_id),
        "segmentation": rle,
        "bbox": [float(v) for v in box],
        "area": int(np.count_nonzero(crop)),
        "predicted_iou": 1.0,
        "point_coords": [[float(c0 + c - 1), float(r0 + r - 1)]],
        "crop_box": [0.0, 0.0, float(w), float(h)],
        "stability_score": 1.0,
    }


def record_json(image_id: int, height: int, width: int, annotations: list[dict[str, Any]]) -> bytes:
    """An SA-1B json (``image`` block naming ``sa_<image_id>.jpg``, then the annotations),
    compact, keys in SA-1B's order."""
    record = {
        "image": {
            "image_id": int(image_id),
            "width": int(width),
            "height": int(height),
            "file_name": f"sa_{image_id}.jpg",
        },
        "annotations": annotations,
    }
    return json.dumps(record, separators=(",", ":"), allow_nan=False).encode("utf-8")


def shard_name(k: int) -> str:
    """``sa_000000`` for shard 0 (the stem of a tar, or the name of a shard folder)."""
    return f"sa_{k:06d}"


def check_output_folder(out: str | os.PathLike[str]) -> Path:
    """``out`` as a Path, checked to be new or empty (shards of another run must not mix in).

    Raises:
        InputError: ``out`` is a file or a folder that holds (non-hidden) entries.
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"output {folder} is a file, not a folder")
    if folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir()):
        raise InputError(f"output folder {folder} is not empty; pass a new or empty folder")
    return folder
