"""Training checkpoints: atomic files, the newest k kept, a ``last`` pointer, safe loading.

Layout of ``<output_dir>/checkpoints/``::

    checkpoint-00001000.pt    one file per save, named by global step
    checkpoint-00002000.pt
    last                      text: the file name of the newest complete checkpoint

A checkpoint is written to a temporary file in the same folder and renamed into place, then
``last`` is rewritten the same way, then checkpoints beyond the newest ``keep_last`` are
deleted; a crash at any point leaves every listed file complete and ``last`` pointing at one.

Contents (only tensors, numbers, strings, None, lists, tuples and dicts, so
``torch.load(weights_only=True)`` reads it; :func:`check_plain` enforces this before writing):

* ``model``: state dict of the unwrapped model; ``optimizer``; ``scheduler`` (schedule
  definitions); ``scaler`` (fp16 GradScaler state or None);
* ``rng``: one RNG state per rank (:func:`esam.runtime.seeding.capture_rng_state`), index =
  rank. Every rank's state is kept because ranks draw different streams (e.g. masks) that do
  not derive from the seed at a given step; resuming on the same number of processes restores
  each rank's own, bitwise. On another number of processes ranks are reseeded from
  (seed, global step, rank) and the run continues, reproducibly but not bitwise;
* ``epoch``, ``step_in_epoch`` (the position of the next step), ``global_step`` (optimizer
  steps done), ``global_batch``, ``steps_per_epoch``, ``dataset_len``, ``world_size``;
* ``config``: the run's resolved config as a plain dict.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from esam.errors import InputError, UserError
from esam.utils.io import atomic_output, write_text_atomic

log = logging.getLogger(__name__)

FORMAT = "esam-train"
VERSION = 1
POINTER = "last"
_NAME = re.compile(r"^checkpoint-(\d+)\.pt$")


class TrainCheckpointError(UserError, ValueError):
    """A training checkpoint cannot be read or does not fit this run."""


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint after ``step`` optimizer steps."""
    return f"checkpoint-{step:08d}.pt"


def check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Raise TypeError unless ``obj`` holds only what ``torch.load(weights_only=True)`` reads.

    Allowed: tensors, bool, int, float, str, None, torch.dtype / torch.Size, and lists, tuples
    and dicts (str or int keys) of these.
    """
    if obj is None or isinstance(obj, bool | int | float | str | torch.Tensor | torch.dtype):
        return
    if isinstance(obj, torch.Size):
        return
    if isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str | int):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}, not str or int")
            check_plain(v, f"{where}.{k}")
        return
    raise TypeError(
        f"{where} is a {type(obj).__name__}; checkpoints hold only tensors, numbers, strings, "
        "None and lists / dicts of them"
    )


def save_atomic(obj: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """``torch.save`` into a temporary file beside ``path``, fsync, rename into place.

    A failure (disk full, a non-serialisable value, an interrupt) removes the temporary file
    and leaves any previous ``path`` untouched.
    """
    check_plain(dict(obj))
    with atomic_output(path) as f:
        torch.save(dict(obj), f)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training checkpoint (``weights_only=True``, onto the CPU).

    Raises:
        TrainCheckpointError: unreadable, or not an esam training checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise TrainCheckpointError(f"checkpoint {p} not found")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError, ...
        raise TrainCheckpointError(f"{p}: cannot be read with weights_only=True: {e}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TrainCheckpointError(f"{p} is not an esam training checkpoint")
    if state.get("version") != VERSION:
        raise TrainCheckpointError(f"{p}: checkpoint version {state.get('version')} != {VERSION}")
    return state


class CheckpointManager:
    """Saves numbered checkpoints into one folder, keeps the newest ``keep_last``.

    Args:
        directory: the checkpoint folder (created on the first save).
        keep_last: how many checkpoints to keep (>= 1).
    """

    def __init__(self, directory: str | os.PathLike[str], keep_last: int = 3) -> None:
        if keep_last < 1:
            raise InputError(f"keep_last must be >= 1, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of every complete checkpoint in the folder, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for p in self.directory.iterdir():
            m = _NAME.match(p.name)
            if m and p.is_file():
                found.append((int(m.group(1)), p))
        return sorted(found)

    def latest(self) -> Path | None:
        """The checkpoint ``last`` points to; the newest file if the pointer is missing or
        stale (logged); None when there is none."""
        pointer = self.directory / POINTER
        if pointer.is_file():
            target = self.directory / pointer.read_text(encoding="utf-8").strip()
            if target.is_file():
                return target
            log.warning("%s points to %s, which is missing; using the newest file", pointer, target)
        found = self.checkpoints()
        return found[-1][1] if found else None

    def save(self, state: Mapping[str, Any], step: int) -> Path:
        """Write the checkpoint of ``step``, point ``last`` at it, delete the oldest extras."""
        path = save_atomic(
            {"format": FORMAT, "version": VERSION, **state}, self.directory / checkpoint_name(step)
        )
        write_text_atomic(self.directory / POINTER, path.name + "\n")
        for _, old in self.checkpoints()[: -self.keep_last]:
            if old != path:
                old.unlink(missing_ok=True)
        log.info("saved checkpoint %s", path)
        return path


def find_run_checkpoint(run_dir: str | os.PathLike[str], command: str) -> Path:
    """The newest checkpoint of a run folder (or the file itself when a file is given).

    Args:
        run_dir: a run folder (its ``checkpoints/``) or a checkpoint file.
        command: the command that writes such runs, for the error message
            (``esam pretrain``).

    Raises:
        FileNotFoundError: no such folder or file, or a run folder without checkpoints.
    """
    path = Path(run_dir)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"run folder not found: {path}")
    latest = CheckpointManager(path / "checkpoints").latest()
    if latest is None:
        raise FileNotFoundError(
            f"{path} holds no checkpoint (checkpoints/ is empty or missing): train first with "
            f"{command} --output RUN_DIR"
        )
    return latest
