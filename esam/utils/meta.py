"""Run metadata recorded in every results file: versions, git commit, hardware, time.

Every results JSON that esam writes carries a ``meta`` block built here, so a number can be
traced to the code, software stack and machine that produced it, including whether the
installed packages are those of the checkout's lock file (``requirements/constraints.txt``).
"""

from __future__ import annotations

import copy
import datetime as _dt
import functools
import hashlib
import importlib.metadata as _md
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

RESULTS_SCHEMA = "esam.results/1"

LOCK_FILE = "requirements/constraints.txt"
"""The lock file of the tested environment, relative to the root of an esam checkout."""
LOCK_FILE_ENV = "ESAM_LOCK_FILE"
"""Environment variable naming a lock file to compare with instead of the checkout's."""

_TRACKED_PACKAGES = (
    "esam",
    "torch",
    "torchvision",
    "numpy",
    "pycocotools",
    "lvis",
    "segment-anything",
    "timm",
    "mmdet",
    "mmsegmentation",
    "pandas",
    "matplotlib",
)


def utc_now() -> str:
    """Current UTC time as an ISO 8601 string with seconds precision."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def package_versions(names: tuple[str, ...] = _TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that influence results (absent ones omitted)."""
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = _md.version(name)
        except _md.PackageNotFoundError:
            continue
    out["python"] = platform.python_version()
    return out


def git_commit(path: str | os.PathLike[str] | None = None) -> str | None:
    """Commit hash of the esam source tree, with ``-dirty`` when the code differs from it.

    Dirty means the code that ran is not exactly the commit's: modified or untracked files
    under ``esam/`` or ``benchmarks/``, or a modified ``pyproject.toml``. Results files and
    other data written into the checkout do not count. Returns ``None`` when esam is
    not run from its own git checkout (e.g. an installed wheel).
    """
    root = Path(path) if path is not None else Path(__file__).resolve().parents[2]
    if not (root / "esam" / "__init__.py").is_file() or not (root / ".git").exists():
        return None

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        code = ("esam", "benchmarks", "pyproject.toml")
        modified = git("status", "--porcelain", "--untracked-files=no", "--", *code)
        untracked = git("ls-files", "--others", "--exclude-standard", "--", *code)
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if modified or untracked else sha


#: CPU flags that decide how fast matrix products run in each dtype (a CPU without
#: ``avx512_bf16`` or ``amx_bf16`` multiplies bfloat16 many times slower than float32).
MATRIX_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
)


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """The first processor of a ``/proc/cpuinfo`` text: ``cpu_model`` (its model name),
    ``cpu_id`` (vendor, family, model and stepping: "AMD EPYC" names several generations) and
    ``cpu_matrix_flags`` (those of :data:`MATRIX_FLAGS` it has). Fields the text lacks are
    left out."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # end of the first processor's block
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    out: dict[str, Any] = {}
    if fields.get("model name"):
        out["cpu_model"] = fields["model name"]
    parts = [
        f"{label} {fields[key]}"
        for key, label in (("cpu family", "family"), ("model", "model"), ("stepping", "stepping"))
        if fields.get(key)
    ]
    if fields.get("vendor_id") and parts:
        out["cpu_id"] = f"{fields['vendor_id']} {' '.join(parts)}"
    if "flags" in fields:
        flags = set(fields["flags"].split())
        out["cpu_matrix_flags"] = [f for f in MATRIX_FLAGS if f in flags]
    return out


def cpu_fields() -> dict[str, Any]:
    """:func:`parse_cpuinfo` of this machine's ``/proc/cpuinfo``; elsewhere only ``cpu_model``,
    from :mod:`platform`."""
    try:
        fields = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        fields = {}
    fields.setdefault("cpu_model", platform.processor() or platform.machine())
    return fields


def hardware_info(device: str = "cpu") -> dict[str, Any]:
    """CPU model, identity (:func:`parse_cpuinfo`) and core count, and the GPU name, driver and
    CUDA version when ``device`` is CUDA."""
    cpu = cpu_fields()
    info: dict[str, Any] = {
        "cpu_model": cpu.pop("cpu_model"),
        **cpu,
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if str(device).startswith("cuda") and torch.cuda.is_available():
            idx = torch.device(device).index or 0
            props = torch.cuda.get_device_properties(idx)
            info["gpu_name"] = props.name
            info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
            info["cuda_version"] = torch.version.cuda
            info["cudnn_version"] = torch.backends.cudnn.version()
            try:
                drv = (
                    subprocess.run(
                        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                        capture_output=True,
                        text=True,
                        timeout=10,
                        check=True,
                    )
                    .stdout.strip()
                    .splitlines()
                )
                info["gpu_driver"] = drv[idx] if idx < len(drv) else (drv[0] if drv else None)
            except (OSError, subprocess.SubprocessError):
                info["gpu_driver"] = None
    except ImportError:
        pass
    return info


class LockFileError(ValueError):
    """A lock file is not where it is said to be, or a line of it is not an exact pin."""


_PIN = re.compile(
    r"(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==(?P<version>[^\s;,=<>!~]+)"
)
_INCLUDES = ("-r", "--requirement", "-c", "--constraint", "-e", "--editable")


def canonical_name(name: str) -> str:
    """A distribution name in its normalized form (PEP 503): ``PyYAML`` -> ``pyyaml``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """``(first line number, text)`` of each requirement: comments cut, continuations joined."""
    lines: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        part = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not pending:
            start = number
        if part.endswith("\\"):
            pending += part[:-1] + " "
            continue
        joined, pending = (pending + part).strip(), ""
        if joined:
            lines.append((start, joined))
    if pending.strip():
        lines.append((start, pending.strip()))
    return lines


def parse_lock(text: str, source: str = "<lock>") -> dict[str, str]:
    """The pins of a pip lock/constraints file's text, ``{normalized name: version}``.

    Comments, blank lines and global options (``--index-url``, ...) are skipped; every other
    line must pin one package exactly, ``name==version``, optionally with extras (dropped, as
    pip does for a constraint), ``--hash`` options and line continuations.

    Raises:
        LockFileError: naming ``source`` and the line of anything else: a range, an environment
            marker, a URL, an include (``-r``/``-c``) or editable, a package pinned twice.
    """
    pins: dict[str, str] = {}
    for number, line in _logical_lines(text):
        if line.split()[0].split("=")[0] in _INCLUDES:
            raise LockFileError(f"{source}:{number}: includes and editables are not pins: {line!r}")
        if line.startswith("-"):
            continue
        requirement = re.sub(r"\[[^\]]*\]", "", line.split(" --hash", 1)[0]).replace(" ", "")
        match = _PIN.fullmatch(requirement)
        if match is None:
            raise LockFileError(
                f"{source}:{number}: not an exact pin 'name==version' without markers: {line!r}"
            )
        name = canonical_name(match["name"])
        if name in pins:
            raise LockFileError(f"{source}:{number}: {name} is pinned twice")
        pins[name] = match["version"]
    return pins


def read_lock(path: str | os.PathLike[str]) -> dict[str, str]:
    """The pins of the lock file at ``path`` (see :func:`parse_lock`)."""
    return parse_lock(Path(path).read_text(encoding="utf-8"), str(path))


def find_lock_file(root: str | os.PathLike[str] | None = None) -> Path | None:
    """The lock file to compare the installed packages with.

    ``$ESAM_LOCK_FILE`` when set; else ``requirements/constraints.txt`` of the esam checkout
    this code runs from (``root``, by default the folder above the ``esam`` package); ``None``
    when there is none (esam installed from a wheel, or a checkout without a lock file).

    Raises:
        LockFileError: when ``$ESAM_LOCK_FILE`` is set but is not a file.
    """
    named = os.environ.get(LOCK_FILE_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise LockFileError(f"{LOCK_FILE_ENV}={named}: no such file")
        return path
    base = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    candidate = base / LOCK_FILE
    if (base / "esam" / "__init__.py").is_file() and candidate.is_file():
        return candidate
    return None


@functools.lru_cache(maxsize=1)
def installed_versions() -> dict[str, str]:
    """``{normalized name: version}`` of the installed distributions, read once per process.

    Where a name is installed twice, the one found first on ``sys.path`` counts (the one that
    imports), as for :func:`importlib.metadata.version`.
    """
    out: dict[str, str] = {}
    for dist in _md.distributions():
        name = dist.metadata["Name"]
        if name:
            out.setdefault(canonical_name(name), dist.version)
    return out


def _same_version(installed: str, locked: str) -> bool:
    """``installed`` satisfies ``==locked``; a local label (``+cpu``) matches a pin without one."""
    if installed == locked:
        return True
    return "+" not in locked and installed.split("+", 1)[0] == locked


def compare_with_lock(pins: dict[str, str], installed: dict[str, str]) -> dict[str, list[str]]:
    """``{name: [installed, locked]}`` for each locked package installed at another version.

    Locked packages that are not installed are not mismatches: the lock also pins tools that
    an environment may leave out (tox, pip-tools).
    """
    return {
        name: [installed[name], version]
        for name, version in sorted(pins.items())
        if name in installed and not _same_version(installed[name], version)
    }


@functools.lru_cache(maxsize=8)
def _mismatches(text: str, source: str) -> dict[str, list[str]]:
    """:func:`compare_with_lock` for a lock file's text, once per process and content."""
    return compare_with_lock(parse_lock(text, source), installed_versions())


def environment_info(root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The ``environment`` block of ``meta``: the lock file and whether this environment matches it.

    ``lock_file`` is ``requirements/constraints.txt`` for the checkout's own lock file and the
    absolute path of one named by ``$ESAM_LOCK_FILE``; ``lock_sha256`` is the file's SHA-256;
    ``mismatches`` maps each locked package installed at another version to
    ``[installed, locked]``; ``matches_lock`` is true when there is none. Without a lock file
    (esam installed from a wheel) every field is ``None``. A lock file that is missing where
    ``$ESAM_LOCK_FILE`` says, unreadable or malformed gives ``None`` fields and an ``error``
    naming the problem, so that a long run still writes its results.
    """
    info: dict[str, Any] = {
        "lock_file": None,
        "lock_sha256": None,
        "matches_lock": None,
        "mismatches": None,
    }
    try:
        path = find_lock_file(root)
        if path is None:
            return info
        data = path.read_bytes()
        shown = str(path.resolve()) if os.environ.get(LOCK_FILE_ENV) else LOCK_FILE
        mismatches = _mismatches(data.decode("utf-8"), str(path))
    except (LockFileError, OSError, UnicodeDecodeError) as exc:
        return {**info, "error": f"{type(exc).__name__}: {exc}"}
    return {
        "lock_file": shown,
        "lock_sha256": hashlib.sha256(data).hexdigest(),
        "matches_lock": not mismatches,
        "mismatches": copy.deepcopy(mismatches),
    }


def run_metadata(
    device: str = "cpu", dtype: str = "fp32", start_time: str | None = None
) -> dict[str, Any]:
    """The ``meta`` block of a results file.

    Args:
        device: torch device string the work ran on.
        dtype: numeric precision of the run (``fp32``, ``bf16``, ``fp16``).
        start_time: ISO time the run started; ``end_time`` is taken now.
    """
    return {
        "esam_version": package_versions(("esam",)).get("esam"),
        "git_commit": git_commit(),
        "versions": package_versions(),
        "environment": environment_info(),
        "hardware": hardware_info(device),
        "device": device,
        "dtype": dtype,
        "start_time": start_time or utc_now(),
        "end_time": utc_now(),
    }
