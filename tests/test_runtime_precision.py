"""Precision names, autocast per device, the fp16 scaler."""

from __future__ import annotations

import pytest
import torch

from esam.errors import UserError
from esam.runtime.precision import (
    PRECISIONS,
    PrecisionError,
    autocast,
    make_grad_scaler,
    parse_precision,
    precision_name,
    supports_bf16,
)


def test_one_map_with_aliases() -> None:
    assert parse_precision("fp32") is parse_precision("float32") is torch.float32
    assert parse_precision("BF16") is parse_precision("bfloat16") is torch.bfloat16
    assert parse_precision("fp16") is parse_precision("float16") is torch.float16
    assert parse_precision(torch.bfloat16) is torch.bfloat16
    assert precision_name("bfloat16") == "bf16" and set(PRECISIONS) >= {"fp32", "bf16", "fp16"}


def test_unknown_names_are_named_errors() -> None:
    with pytest.raises(PrecisionError, match="unknown precision 'fp8'; choose from fp32") as e:
        parse_precision("fp8")
    assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)
    with pytest.raises(PrecisionError, match="unsupported precision dtype"):
        parse_precision(torch.int8)


def test_autocast_per_device_and_precision() -> None:
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
        assert (a @ b).dtype == torch.float32
    with autocast("cpu", "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with pytest.raises(PrecisionError, match="fp16 needs a CUDA device"), autocast("cpu", "fp16"):
        pass


def test_grad_scaler_only_for_fp16_on_cuda() -> None:
    assert make_grad_scaler("cpu", "fp32") is None
    assert make_grad_scaler("cpu", "bf16") is None
    with pytest.raises(PrecisionError):
        make_grad_scaler("cpu", "fp16")
    if torch.cuda.is_available():
        assert make_grad_scaler("cuda", "fp16") is not None
        assert make_grad_scaler("cuda", "bf16") is None


def test_supports_bf16() -> None:
    assert supports_bf16("cpu") is True
    if not torch.cuda.is_available():
        assert supports_bf16("cuda") is False
