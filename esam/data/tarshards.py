"""Uncompressed tar shards read in place: an index of the members, then reads by offset.

A shard is scanned once (its headers only: tarfile seeks over the data) into the name, data
offset and size of every regular member; a member is then read with one positional read
(``os.pread``) at that offset, without extracting anything. Open file handles live in a small
per-process table that is rebuilt after a ``fork`` and never pickled, so objects that hold an
index (datasets) can be sent to DataLoader workers and read there.

A member can be named by one string, ``<shard>.tar::<member>``: :func:`split_member_path`
recognises it and :func:`read_member_path` reads it (the shard's index is cached per process).

Writing: :func:`write_tar_atomic` writes members to a temporary file beside the shard and
renames it into place, with fixed metadata (mtime 0, uid/gid 0, mode 0644), so the same members
give the same bytes.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from esam.errors import InputError
from esam.utils.io import atomic_output

#: Separator between a shard path and a member name in one location string.
MEMBER_SEP = "::"
_BLOCK = tarfile.BLOCKSIZE  # 512
#: Open shard files kept per process (least recently used ones are closed).
MAX_OPEN_SHARDS = 64


class CorruptShardError(InputError):
    """A shard that is not an uncompressed tar, or whose headers or data are damaged.

    Attributes:
        shard: the shard's path.
        member: the member concerned (the last one read intact when the damage follows it), or
            None when the shard cannot be opened as a tar at all.
    """

    def __init__(self, shard: str, member: str | None, message: str) -> None:
        super().__init__(message)
        self.shard = shard
        self.member = member


@dataclass(frozen=True)
class TarMember:
    """A regular file inside a shard.

    Attributes:
        name: the member's name in the archive.
        offset: byte offset of its data in the shard.
        size: its size in bytes.
    """

    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class ShardScan:
    """What a scan of one shard found.

    Attributes:
        path: the shard.
        members: its regular members, in archive order.
        n_other: members that are not regular files or folders (links, devices): ignored.
    """

    path: str
    members: tuple[TarMember, ...]
    n_other: int


def scan_tar(path: str | os.PathLike[str]) -> ShardScan:
    """Index an uncompressed tar: every regular member's name, data offset and size.

    Raises:
        FileNotFoundError: the file does not exist.
        CorruptShardError: the file is not an uncompressed tar (compressed archives cannot be
            read by offset), a header is damaged, a member's data runs past the end of the file,
            a member name occurs twice, or non-zero bytes follow the last member (a damaged
            header there ends ``tarfile``'s listing early, which would lose members silently).
    """
    shard = str(path)
    if not os.path.isfile(shard):
        raise FileNotFoundError(f"tar shard not found: {shard}")
    file_size = os.path.getsize(shard)
    members: list[TarMember] = []
    seen: set[str] = set()
    n_other = 0
    end = 0
    last: str | None = None
    try:
        with tarfile.open(shard, mode="r:") as tf:
            for info in tf:
                end = max(end, info.offset_data + _padded(info.size))
                if info.isdir():
                    continue
                if not info.isreg():
                    n_other += 1
                    continue
                if info.name in seen:
                    raise CorruptShardError(
                        shard, info.name, f"{shard}: member {info.name} occurs twice in the tar"
                    )
                if info.offset_data + info.size > file_size:
                    raise CorruptShardError(
                        shard,
                        info.name,
                        f"{shard}: member {info.name} is truncated (its data ends at byte "
                        f"{info.offset_data + info.size}, the file at {file_size})",
                    )
                seen.add(info.name)
                members.append(TarMember(info.name, info.offset_data, info.size))
                last = info.name
    except tarfile.TarError as e:
        where = f" after member {last}" if last is not None else ""
        what = "a damaged header" if last is not None else "not an uncompressed tar archive"
        raise CorruptShardError(
            shard,
            last,
            f"{shard}: {what}{where} ({e}); shards must be plain .tar files (compressed archives "
            "cannot be read in place)",
        ) from e
    bad = _first_nonzero(shard, end)
    if bad is not None:
        where = f"after member {last}" if last is not None else "before any member"
        raise CorruptShardError(
            shard,
            last,
            f"{shard}: damaged tar header at byte {bad} {where}: the members from there on "
            "cannot be listed",
        )
    return ShardScan(shard, tuple(members), n_other)


def _padded(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


def _first_nonzero(path: str, start: int, chunk: int = 1 << 16) -> int | None:
    """Offset of the first non-zero byte at or after ``start``, or None (end-of-archive blocks
    and record padding are zeros)."""
    with open(path, "rb") as f:
        f.seek(start)
        pos = start
        while block := f.read(chunk):
            stripped = block.lstrip(b"\0")
            if stripped:
                return pos + len(block) - len(stripped)
            pos += len(block)
    return None


class _Handles:
    """Open shard files of this process, reopened after a fork, least recently used closed."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.files: OrderedDict[str, int] = OrderedDict()

    def fd(self, path: str) -> int:
        if self.pid != os.getpid():  # a forked child: the parent's descriptors are not ours
            self.files = OrderedDict()
            self.pid = os.getpid()
        fd = self.files.get(path)
        if fd is not None:
            self.files.move_to_end(path)
            return fd
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self.files[path] = fd
        while len(self.files) > MAX_OPEN_SHARDS:
            _, old = self.files.popitem(last=False)
            os.close(old)
        return fd


_HANDLES = _Handles()


def read_at(path: str, offset: int, size: int) -> bytes:
    """``size`` bytes of file ``path`` from ``offset`` (one positional read, no shared seek).

    Raises:
        OSError: the file cannot be opened or read.
        CorruptShardError: fewer bytes than asked for (the file shrank since it was indexed).
    """
    fd = _HANDLES.fd(path)
    if hasattr(os, "pread"):
        data = os.pread(fd, size, offset)
    else:  # pragma: no cover - platforms without pread
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
    if len(data) != size:
        raise CorruptShardError(
            path, None, f"{path}: {size} bytes expected at byte {offset}, got {len(data)}"
        )
    return data


_MEMBER_MARKER = re.compile(re.escape(".tar" + MEMBER_SEP), re.IGNORECASE)


def split_member_path(location: str) -> tuple[str, str] | None:
    """``("dir/sa_000000.tar", "sa_1.jpg")`` for ``"dir/sa_000000.tar::sa_1.jpg"``, None for a
    plain path (or for an existing file whose name happens to contain the separator)."""
    # shards are found by suffix case-insensitively; a regex keeps offsets into the string
    # itself (lower() may change its length: "İ" becomes two characters)
    match = _MEMBER_MARKER.search(location)
    if match is None or os.path.exists(location):
        return None
    return location[: match.start() + 4], location[match.end() :]


def member_path(shard: str | os.PathLike[str], member: str) -> str:
    """The location string of a member: ``<shard>::<member>``."""
    return f"{os.fspath(shard)}{MEMBER_SEP}{member}"


@lru_cache(maxsize=MAX_OPEN_SHARDS)
def _cached_index(shard: str, size: int, mtime_ns: int) -> dict[str, TarMember]:
    return {m.name: m for m in scan_tar(shard).members}


def read_member_path(location: str) -> bytes:
    """The bytes of the member named by ``<shard>.tar::<member>``.

    The shard is scanned on first use in each process and its index kept (for the
    :data:`MAX_OPEN_SHARDS` most recent shards; a changed file is scanned again).

    Raises:
        FileNotFoundError: the shard does not exist or has no such member.
        CorruptShardError: the shard is damaged (see :func:`scan_tar`).
    """
    parts = split_member_path(location)
    if parts is None:
        raise InputError(f"{location}: not a <shard>.tar{MEMBER_SEP}<member> location")
    shard, name = parts
    try:
        st = os.stat(shard)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"tar shard not found: {shard}") from e
    index = _cached_index(shard, st.st_size, st.st_mtime_ns)
    member = index.get(name)
    if member is None:
        raise FileNotFoundError(f"{shard} has no member {name}")
    return read_at(shard, member.offset, member.size)


def write_tar_atomic(path: str | os.PathLike[str], members: Iterable[tuple[str, bytes]]) -> Path:
    """Write ``(name, data)`` members as an uncompressed tar at ``path``, atomically.

    The tar is written to a temporary file in the same folder and renamed into place, so a
    crash never leaves a partial shard under the final name. Metadata is fixed (mtime 0,
    uid/gid 0, mode 0644, no user names), so the same members give the same bytes.
    """
    with (
        atomic_output(path) as f,
        tarfile.open(fileobj=f, mode="w", format=tarfile.GNU_FORMAT) as tf,
    ):
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tf.addfile(info, io.BytesIO(data))
    return Path(path)
