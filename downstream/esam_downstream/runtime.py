"""Running the configs with mmengine on this stack: CPU adaptation, checkpoint loading, runners.

Known pitfalls handled here:

* ``AmpOptimWrapper`` asserts a GPU: :func:`cpu_safe` swaps it for ``OptimWrapper`` (and
  ``SyncBN`` for ``BN``) when CUDA is absent, and says what it changed.
* mmengine 0.10 calls ``torch.load`` without ``weights_only``, which torch >= 2.6 turns into
  ``weights_only=True``; its own checkpoints hold a few non-tensor objects (the message hub's
  history buffers, numpy scalars and arrays). :func:`allow_mmengine_checkpoints` adds exactly
  those to torch's safe globals, so loading stays ``weights_only``.

Other pitfalls are pinned in the environment (``downstream/constraints.txt``): OpenCV < 5,
setuptools < 82 (mmcv's build and mmengine use ``pkg_resources``), torch 2.13 (mmcv 2.1.0's
C++17 build). The ``lvis`` package (its evaluator uses the removed ``np.float``) is not needed
by these tasks and not installed.
"""

from __future__ import annotations

import codecs
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

#: Config files shipped with the package.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def config_path(name: str) -> Path:
    """Path of a shipped config by file name (``.py`` optional)."""
    path = CONFIG_DIR / (name if name.endswith(".py") else f"{name}.py")
    if not path.is_file():
        known = sorted(p.name for p in CONFIG_DIR.glob("*.py"))
        raise FileNotFoundError(f"no shipped config {name!r}; shipped: {known}")
    return path


def _replace_types(node: Any, old: str, new: str, where: str, changes: list[str]) -> None:
    if isinstance(node, dict):
        if node.get("type") == old:
            node["type"] = new
            changes.append(f"{where}: {old} -> {new}")
        for key, value in node.items():
            _replace_types(value, old, new, f"{where}.{key}" if where else str(key), changes)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _replace_types(value, old, new, f"{where}[{i}]", changes)


def cpu_safe(cfg: Any) -> list[str]:
    """Adapt an mmengine ``Config`` (in place) to a machine without CUDA.

    Returns the list of changes (empty when CUDA is available or nothing needed changing).
    """
    if torch.cuda.is_available():
        return []
    changes: list[str] = []
    wrapper = cfg.get("optim_wrapper")
    if isinstance(wrapper, dict) and wrapper.get("type") == "AmpOptimWrapper":
        wrapper["type"] = "OptimWrapper"
        for key in ("loss_scale", "dtype", "use_fsdp"):
            wrapper.pop(key, None)
        changes.append("optim_wrapper: AmpOptimWrapper -> OptimWrapper (no CUDA)")
    _replace_types(cfg.get("model"), "SyncBN", "BN", "model", changes)
    return changes


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` read mmengine runner checkpoints.

    Adds to torch's safe globals only what such checkpoints hold besides tensors: mmengine's
    ``HistoryBuffer`` and the numpy pieces that pickle arrays and scalars. A history buffer's
    state names its statistics methods as ``getattr(HistoryBuffer, "mean")``; ``getattr`` is
    not allowed in general, only a stand-in that resolves exactly those names.
    """
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    core = np._core if hasattr(np, "_core") else np.core
    # the class fills its statistics table (min, max, current, mean, ...) on first instantiation
    allowed = frozenset(HistoryBuffer()._statistics_methods)

    def history_buffer_method(owner: Any, name: str) -> Any:
        if owner is HistoryBuffer and name in allowed:
            return getattr(owner, name)
        raise pickle.UnpicklingError(
            f"checkpoint asks for getattr({owner!r}, {name!r}); only HistoryBuffer's "
            f"statistics methods {sorted(allowed)} are allowed"
        )

    safe: list[Any] = [
        HistoryBuffer,
        np.ndarray,
        np.dtype,
        core.multiarray._reconstruct,
        core.multiarray.scalar,
        codecs.encode,
        (history_buffer_method, "builtins.getattr"),
    ]
    safe += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    torch.serialization.add_safe_globals(safe)


def build_runner(
    config: str | os.PathLike[str],
    work_dir: str | os.PathLike[str],
    cfg_options: dict[str, Any] | None = None,
    backbone: str | os.PathLike[str] | None = None,
    extra_hooks: Sequence[Any] = (),
) -> Any:
    """An mmengine ``Runner`` for a config file, adapted with :func:`cpu_safe`.

    Args:
        config: config file (see :func:`config_path` for shipped ones).
        work_dir: the run's folder.
        cfg_options: dotted keys -> values merged into the config (``--cfg-options``).
        backbone: an esam backbone checkpoint for ``model.backbone.checkpoint``.
        extra_hooks: hook objects registered on the runner after it is built.
    """
    from mmengine.config import Config
    from mmengine.logging import print_log
    from mmengine.runner import Runner

    allow_mmengine_checkpoints()
    cfg = Config.fromfile(str(config))
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    if backbone is not None:
        cfg.merge_from_dict({"model.backbone.checkpoint": str(backbone)})
    cfg.work_dir = str(work_dir)
    for change in cpu_safe(cfg):
        print_log(f"no CUDA: {change}", logger="current")
    runner = Runner.from_cfg(cfg)
    for hook in extra_hooks:
        runner.register_hook(hook)
    return runner
