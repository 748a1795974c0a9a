"""mmengine checkpoints under torch.load(weights_only=True), and nothing beyond them."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch

pytest.importorskip("mmengine")
from esam_downstream.runtime import allow_mmengine_checkpoints  # noqa: E402
from mmengine.logging import HistoryBuffer, MessageHub  # noqa: E402


def _saved(obj: object) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_message_hub_and_numpy_meta_load_weights_only() -> None:
    hub = MessageHub.get_instance("esam_downstream_test")
    hub.update_scalar("train/loss", 1.5)
    hub.update_scalar("train/lr", np.float64(0.1))
    ckpt = {"meta": {"seed": np.int64(3), "hist": np.zeros(3)}, "message_hub": hub.state_dict()}
    allow_mmengine_checkpoints()
    loaded = torch.load(_saved(ckpt), map_location="cpu", weights_only=True)
    assert loaded["message_hub"]["log_scalars"]["train/loss"].mean() == 1.5
    assert loaded["meta"]["seed"] == 3


class _Sneaky:
    """Pickles as getattr(HistoryBuffer, '__init__'): outside what a checkpoint needs."""

    def __reduce__(self) -> tuple:
        return (getattr, (HistoryBuffer, "__init__"))


def test_getattr_stand_in_refuses_other_names() -> None:
    allow_mmengine_checkpoints()
    with pytest.raises(pickle.UnpicklingError, match="only HistoryBuffer's statistics"):
        torch.load(_saved({"x": _Sneaky()}), map_location="cpu", weights_only=True)
