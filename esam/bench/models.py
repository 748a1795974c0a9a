"""What is timed: every benchmarked model behind one interface.

A :class:`BenchModel` turns a batch of uint8 images (at the model's input size) and box
prompts into device inputs once, outside the timed region, and then offers the three timed
calls: :meth:`~BenchModel.encode` (image encoder incl. normalisation), :meth:`~BenchModel.decode`
(prompt encoder + mask decoder to low-resolution logits, all prompts of all images) and
:meth:`~BenchModel.end_to_end` (both, plus upsampling to the image size, i.e. the masks a user
gets). Every model produces 3 masks per prompt (multimask output), as the official EfficientSAM
``forward`` does. Argument validation of the public model methods (which reads tensors back to
the host) is not part of the timed computation; everything else is.

Names:

* ``efficientsam_vitt`` / ``_vits`` / ``_vitb``: esam's fast path (fused attention, shared image
  embedding across prompts, chunked decoding); end to end yields boolean masks.
* ``<efficientsam name>:reference``: the same weights in the official-style reference mode
  (explicit attention, per-prompt tiled embedding, all prompts at once); end to end yields
  full-resolution float logits, as the official ``forward`` does. The baseline for speed ratios.
* ``sam_vit_b`` / ``_l`` / ``_h``: SAM through ``segment-anything``, its own code path
  (``preprocess``, ``image_encoder``, ``prompt_encoder``, ``mask_decoder`` per image,
  ``postprocess_masks``; masks = logits > 0).
* any other name of the zero-shot harness's adapter registry (:mod:`esam.adapters`):
  models whose predictor wraps a segment-anything style ``Sam`` module are timed like SAM on
  device tensors; others through the adapter interface itself (host numpy in and out, images
  one at a time, no compile).
"""

from __future__ import annotations

import abc
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from esam.errors import InputError

log = logging.getLogger(__name__)

REFERENCE_SUFFIX = ":reference"
SAM_NAMES: dict[str, str] = {"sam_vit_b": "vit_b", "sam_vit_l": "vit_l", "sam_vit_h": "vit_h"}
#: Adapter names the benchmark cannot time (they need ground truth).
_UNTIMEABLE_ADAPTERS = ("oracle",)


def _esam_names() -> list[str]:
    from esam.build import model_registry

    return sorted(model_registry)


def available_models() -> dict[str, str]:
    """Every name :func:`build_bench_model` accepts, with a one-line description."""
    out: dict[str, str] = {}
    for n in _esam_names():
        out[n] = "esam EfficientSAM, fast path"
        out[n + REFERENCE_SUFFIX] = "esam EfficientSAM, official-style reference mode"
    for n in SAM_NAMES:
        out[n] = "SAM via segment-anything"
    try:
        from esam.adapters import available_adapters
    except ImportError:
        return out
    for n in available_adapters():
        if n not in out and n not in _UNTIMEABLE_ADAPTERS:
            out[n] = "zero-shot harness adapter"
    return out


def check_model_name(name: str) -> str:
    """``name`` is benchmarkable (raises ValueError listing the available names otherwise)."""
    known = available_models()
    if name not in known:
        raise InputError(f"--model: unknown model {name!r}; available: {', '.join(known)}")
    return name


def box_prompts(boxes: np.ndarray, device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """BxQx4 boxes -> points BxQx2x2 (corners) and labels BxQx2 (2 = top-left, 3 = bottom-right)."""
    b, q, _ = boxes.shape
    pts = torch.as_tensor(boxes, dtype=torch.float32).reshape(b, q, 2, 2).to(device)
    labels = torch.tensor([2, 3], dtype=torch.int64).repeat(b, q, 1).to(device)
    return pts, labels


def images_to_tensor(images: np.ndarray, device: str | torch.device, scale: float) -> torch.Tensor:
    """BxHxWx3 uint8 -> Bx3xHxW float32 on ``device``, multiplied by ``scale``."""
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return (t * scale).contiguous().to(device)


class BenchModel(abc.ABC):
    """A model as the benchmark sees it (see module docstring)."""

    name: str = "model"
    family: str = ""
    mode: str = ""
    #: The inputs of the timed calls live on the device (False: host arrays).
    inputs_on_device: bool = True
    supports_compile: bool = True

    def __init__(self, device: str) -> None:
        self.device = str(device)
        self.checkpoint: str | None = None
        self.weights = "untrained"
        self.weights_init = ""

    @property
    @abc.abstractmethod
    def image_size(self) -> int:
        """Side of the square images the model is fed (no resizing happens at this size)."""

    @abc.abstractmethod
    def module(self) -> nn.Module:
        """The whole torch model (for parameter counts)."""

    @abc.abstractmethod
    def components(self) -> dict[str, nn.Module]:
        """Named parts partitioning the parameters (image_encoder, prompt_encoder, mask_decoder)."""

    @abc.abstractmethod
    def make_inputs(self, images: np.ndarray, boxes: np.ndarray) -> dict[str, Any]:
        """Device inputs for BxSxSx3 uint8 images and BxQx4 boxes (done before timing)."""

    @abc.abstractmethod
    def encode(self, inputs: dict[str, Any]) -> Any:
        """Image embeddings of the batch."""

    @abc.abstractmethod
    def decode(self, embeddings: Any, inputs: dict[str, Any]) -> Any:
        """Low-resolution mask logits (and IoU) of every prompt of every image."""

    @abc.abstractmethod
    def end_to_end(self, inputs: dict[str, Any]) -> Any:
        """Masks at the image size for every prompt: encode, decode, upsample."""

    @abc.abstractmethod
    def masks_numpy(self, output: Any) -> np.ndarray:
        """BxQxMxHxW bool masks on the host from an :meth:`end_to_end` output."""

    def compile(self, mode: str) -> None:
        """Compile the heavy modules with ``torch.compile`` (in place)."""
        raise InputError(f"model {self.name!r} does not support --compile")

    def describe(self) -> dict[str, Any]:
        """Facts recorded in the results (code path, output kind, ...)."""
        return {}


def _is_sam_module(obj: Any) -> bool:
    return all(
        hasattr(obj, a)
        for a in (
            "image_encoder",
            "prompt_encoder",
            "mask_decoder",
            "preprocess",
            "postprocess_masks",
        )
    ) and hasattr(getattr(obj, "image_encoder", None), "img_size")


def build_bench_model(
    name: str,
    device: str = "cpu",
    checkpoint: str | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
) -> BenchModel:
    """Build the benchmark model ``name`` on ``device`` (see module docstring for names).

    Raises:
        ValueError: unknown name, overrides for a model that takes none, or a missing
            optional package.
        FileNotFoundError: ``checkpoint`` does not exist.
    """
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"--checkpoint file not found: {checkpoint}")
    base, reference = (
        (name[: -len(REFERENCE_SUFFIX)], True) if name.endswith(REFERENCE_SUFFIX) else (name, False)
    )
    from esam.bench.wrappers import (
        AdapterBenchModel,
        EsamBenchModel,
        SamStyleBenchModel,
        load_sam_style_weights,
    )

    torch.manual_seed(seed)
    if base in _esam_names():
        return EsamBenchModel(base, device, reference, checkpoint, overrides, seed)
    if reference:
        raise InputError(
            f"--model {name!r}: the {REFERENCE_SUFFIX} mode exists only for {', '.join(_esam_names())}"
        )
    check_model_name(name)
    if overrides:
        raise InputError(f"--override applies to esam EfficientSAM models only, not {name!r}")
    if name in SAM_NAMES:
        try:
            from segment_anything import sam_model_registry
        except ImportError:
            raise InputError(
                f"--model {name}: needs the segment-anything package (pip install 'esam[sam]')"
            ) from None
        with torch.device(device):  # initialise on the device: fast even for ViT-H
            sam = sam_model_registry[SAM_NAMES[name]](checkpoint=None)
        bm = SamStyleBenchModel(name, sam, device)
        if checkpoint is not None:
            load_sam_style_weights(bm.sam, checkpoint)
            bm.checkpoint = bm.weights = str(checkpoint)
        else:
            bm.weights_init = f"segment-anything default initialisation, torch seed {seed}"
        return bm
    from esam.adapters import build_adapter

    adapter = build_adapter(name, checkpoint=checkpoint, device=device)
    inner = getattr(getattr(adapter, "predictor", None), "model", None)
    bm2: BenchModel
    if inner is not None and _is_sam_module(inner):
        bm2 = SamStyleBenchModel(name, inner, device)
        bm2.family = "sam-style adapter"
    else:
        bm2 = AdapterBenchModel(name, adapter, device)
    if checkpoint is not None:
        bm2.checkpoint = str(checkpoint)
        bm2.weights = str(getattr(adapter, "weights_note", None) or checkpoint)
    return bm2
