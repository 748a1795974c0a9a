"""Per-rank seeding, and capture / restore of every random number generator.

:func:`seed_everything` seeds Python's ``random``, NumPy's global generator and torch (CPU and
every CUDA device) from ``(seed, rank)``, so each process of a run draws its own stream (e.g.
different masks per GPU) and the whole run is reproducible.

:func:`capture_rng_state` returns the state of all of them as tensors, ints, floats, None and
plain dicts / lists, which ``torch.save`` writes and ``torch.load(weights_only=True)`` reads
back; :func:`restore_rng_state` puts it back, so a resumed run draws exactly the numbers the
uninterrupted one would have drawn.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


def derive_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from integers (NumPy's ``SeedSequence``), e.g. (seed, rank)."""
    state = np.random.SeedSequence([int(v) % (1 << 64) for v in values]).generate_state(
        2, dtype=np.uint32
    )
    return (int(state[0]) << 31) ^ int(state[1])


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed python ``random``, NumPy's global generator and torch (CPU, all CUDA devices).

    The seed used is :func:`derive_seed` of ``(seed, rank)``, so ranks differ and a given
    (seed, rank) always gives the same streams.

    Returns:
        The derived seed given to torch.
    """
    derived = derive_seed(seed, rank)
    random.seed(derived)
    np.random.seed(derived % (1 << 32))
    torch.manual_seed(derived)  # seeds every CUDA device too (lazily when not yet initialised)
    return derived


def capture_rng_state() -> dict[str, Any]:
    """The state of every generator, loadable with ``torch.load(weights_only=True)``.

    Keys: ``python`` (version, 625-word state as an int64 tensor, gauss_next), ``numpy`` (the
    MT19937 key as an int64 tensor of 624 words, position, has_gauss, cached_gaussian),
    ``torch`` (the CPU generator, uint8 tensor), ``cuda`` (one uint8 tensor per visible CUDA
    device; empty without CUDA).
    """
    version, words, gauss = random.getstate()
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)  # legacy=True always gives the tuple form
    name, keys, pos, has_gauss, cached = np_state
    if name != "MT19937":
        raise RuntimeError(f"unexpected NumPy bit generator {name!r}")
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {
        "python": {
            "version": int(version),
            "state": torch.tensor(words, dtype=torch.int64),
            "gauss_next": gauss,
        },
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back the generators captured by :func:`capture_rng_state`.

    CUDA states are restored for the devices present in both the capture and this machine; a
    different device count is logged as a warning (the run is then not bitwise reproducible).
    """
    py = state["python"]
    random.setstate(
        (int(py["version"]), tuple(int(w) for w in py["state"].tolist()), py["gauss_next"])
    )
    npst = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npst["keys"].numpy().astype(np.uint32),
            int(npst["pos"]),
            int(npst["has_gauss"]),
            float(npst["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"])
    cuda = list(state.get("cuda", []))
    if torch.cuda.is_available():
        here = torch.cuda.device_count()
        if cuda and len(cuda) != here:
            log.warning(
                "RNG state holds %d CUDA generator(s) but %d device(s) are visible; restoring "
                "the first %d",
                len(cuda),
                here,
                min(len(cuda), here),
            )
        for index, s in enumerate(cuda[:here]):
            torch.cuda.set_rng_state(s, index)
    elif cuda:
        log.warning("RNG state holds CUDA generators but CUDA is not available; not restored")
