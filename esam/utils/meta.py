"""Run metadata recorded in every results file: versions, git commit, hardware, time.

Every results JSON that esam writes carries a ``meta`` block built here, so a number can be
traced to the code, software stack and machine that produced it.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as _md
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

RESULTS_SCHEMA = "esam.results/1"

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


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_info(device: str = "cpu") -> dict[str, Any]:
    """CPU model and core count, and the GPU name, driver and CUDA version when ``device`` is CUDA."""
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
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
        "hardware": hardware_info(device),
        "device": device,
        "dtype": dtype,
        "start_time": start_time or utc_now(),
        "end_time": utc_now(),
    }
