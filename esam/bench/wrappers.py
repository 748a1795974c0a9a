"""The benchmarked model kinds: esam's EfficientSAM, segment-anything style SAM, and adapters.

See :mod:`esam.bench.models` for the interface and the names that select each kind.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from esam.bench.models import REFERENCE_SUFFIX, BenchModel, box_prompts, images_to_tensor


def load_sam_style_weights(model: nn.Module, checkpoint: str) -> None:
    """Strictly load a SAM-style state dict file (the zero-shot harness's loader when present)."""
    try:
        from esam.adapters.sam import SAM_WEIGHTS_HINT, load_state_dict_file, load_strict
    except ImportError:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint file not found: {checkpoint}") from None
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        return
    load_strict(model, load_state_dict_file(checkpoint, SAM_WEIGHTS_HINT), checkpoint)


class EsamBenchModel(BenchModel):
    """esam's EfficientSAM, fast path or official-style reference mode.

    Untrained models get esam's deterministic stand-in weights (:mod:`esam.standin`), so masks
    are non-trivial and identical across processes.
    """

    family = "efficientsam"

    def __init__(
        self,
        base_name: str,
        device: str,
        reference: bool = False,
        checkpoint: str | None = None,
        overrides: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        import esam
        from esam.standin import load_standin_weights

        super().__init__(device)
        self.base_name = base_name
        self.reference = reference
        self.name = base_name + (REFERENCE_SUFFIX if reference else "")
        self.mode = "reference" if reference else "fast"
        self.overrides = dict(overrides or {})
        model = esam.build_model(base_name, checkpoint=checkpoint, **self.overrides)
        if checkpoint is None:
            load_standin_weights(model, seed=seed)
            self.weights_init = f"esam.standin stand-in weights, seed {seed}"
            self.weights = f"standin (seed {seed})"
        else:
            self.checkpoint = str(checkpoint)
            # a checkpoint recognised as stand-in weights says so (the report then marks it)
            info = getattr(model, "weights_info", None) or {}
            self.weights = str(info.get("weights") or checkpoint)
        esam.set_reference_mode(model, reference)
        self.model = model.to(torch.device(device)).eval()

    @property
    def image_size(self) -> int:
        return int(self.model.img_size)

    def module(self) -> nn.Module:
        return self.model

    def components(self) -> dict[str, nn.Module]:
        m = self.model
        return {
            "image_encoder": m.image_encoder,
            "prompt_encoder": m.prompt_encoder,
            "mask_decoder": m.mask_decoder,
        }

    def make_inputs(self, images: np.ndarray, boxes: np.ndarray) -> dict[str, Any]:
        pts, labels = box_prompts(boxes, self.device)
        return {
            "images": images_to_tensor(images, self.device, 1.0 / 255.0),
            "points": pts,
            "labels": labels,
        }

    def encode(self, inputs: dict[str, Any]) -> torch.Tensor:
        m = self.model
        return m.image_encoder(m.preprocess(inputs["images"]))

    def decode(
        self, embeddings: torch.Tensor, inputs: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        s = self.image_size
        sparse = m.encode_prompts(inputs["points"], inputs["labels"], s, s)
        return m.mask_decoder(embeddings, m.prompt_encoder.get_dense_pe(), sparse, True)

    def end_to_end(self, inputs: dict[str, Any]) -> torch.Tensor:
        low, _ = self.decode(self.encode(inputs), inputs)
        b, q, k = low.shape[:3]
        h, w = inputs["images"].shape[-2:]
        up = F.interpolate(low.flatten(0, 2).unsqueeze(1), (h, w), mode="bicubic").reshape(
            b, q, k, h, w
        )
        if self.reference:
            return up  # full-resolution float logits, as the official forward returns
        return up > self.model.mask_threshold

    def masks_numpy(self, output: torch.Tensor) -> np.ndarray:
        if output.dtype != torch.bool:
            output = output > self.model.mask_threshold
        return output.cpu().numpy()

    def compile(self, mode: str) -> None:
        # The decoder's per-chunk ``predict_masks`` is compiled rather than its ``forward``: the
        # fast path calls it once per image and prompt chunk with identical shapes, so one graph
        # serves every call instead of a graph unrolled over the batch.
        self.model.image_encoder.compile(mode=mode)
        dec: Any = self.model.mask_decoder
        dec.predict_masks = torch.compile(dec.predict_masks, mode=mode)

    def describe(self) -> dict[str, Any]:
        s = self.image_size
        out: dict[str, Any] = {
            "code_path": (
                "official-style reference mode: explicit attention, per-prompt tiled embedding, all prompts at once"
                if self.reference
                else "esam fast path: fused attention (blocked explicit attention for bf16 on CPU), shared image embedding, chunked decoding"
            ),
            "encoder": "image_encoder(preprocess(images)); preprocess = ImageNet normalisation",
            "decoder": "encode_prompts + mask_decoder (multimask), 256x256 logits",
            "end_to_end_output": (
                f"float logits BxQx3x{s}x{s} (bicubic)"
                if self.reference
                else f"bool masks BxQx3x{s}x{s} (bicubic, > 0)"
            ),
            "compile_targets": "image_encoder (module), mask_decoder.predict_masks (per-chunk decode)",
        }
        if self.overrides:
            out["overrides"] = dict(self.overrides)
        return out


class SamStyleBenchModel(BenchModel):
    """A segment-anything style ``Sam`` module timed through its own code path.

    Images are given in SAM's expected 0-255 range at 1024x1024, so ``preprocess`` only
    normalises (no padding happens); boxes are already in the input frame.
    """

    family = "sam"
    mode = "official"

    def __init__(self, name: str, sam: nn.Module, device: str) -> None:
        super().__init__(device)
        self.name = name
        self.sam = sam.to(torch.device(device)).eval()

    @property
    def image_size(self) -> int:
        return int(self.sam.image_encoder.img_size)  # type: ignore[union-attr,arg-type]

    def module(self) -> nn.Module:
        return self.sam

    def components(self) -> dict[str, nn.Module]:
        s: Any = self.sam
        return {
            "image_encoder": s.image_encoder,
            "prompt_encoder": s.prompt_encoder,
            "mask_decoder": s.mask_decoder,
        }

    def make_inputs(self, images: np.ndarray, boxes: np.ndarray) -> dict[str, Any]:
        return {
            "images": images_to_tensor(images, self.device, 1.0),
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).to(self.device),
        }

    def encode(self, inputs: dict[str, Any]) -> torch.Tensor:
        s: Any = self.sam
        return s.image_encoder(s.preprocess(inputs["images"]))

    def decode(
        self, embeddings: torch.Tensor, inputs: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s: Any = self.sam
        pe = s.prompt_encoder.get_dense_pe()
        lows, ious = [], []
        for i in range(embeddings.shape[0]):  # segment-anything decodes one image at a time
            sparse, dense = s.prompt_encoder(points=None, boxes=inputs["boxes"][i], masks=None)
            low, iou = s.mask_decoder(
                image_embeddings=embeddings[i : i + 1],
                image_pe=pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
            lows.append(low)
            ious.append(iou)
        return torch.stack(lows), torch.stack(ious)

    def end_to_end(self, inputs: dict[str, Any]) -> torch.Tensor:
        s: Any = self.sam
        low, _ = self.decode(self.encode(inputs), inputs)
        b, q = low.shape[:2]
        h, w = inputs["images"].shape[-2:]
        up = s.postprocess_masks(low.flatten(0, 1), (h, w), (h, w))
        return (up > s.mask_threshold).reshape(b, q, -1, h, w)

    def masks_numpy(self, output: torch.Tensor) -> np.ndarray:
        return output.bool().cpu().numpy()

    def compile(self, mode: str) -> None:
        s: Any = self.sam
        s.image_encoder.compile(mode=mode)
        s.mask_decoder.compile(mode=mode)

    def describe(self) -> dict[str, Any]:
        return {
            "code_path": "segment-anything Sam: preprocess, image_encoder, prompt_encoder + mask_decoder per image, postprocess_masks",
            "encoder": "image_encoder(preprocess(images)); images 0-255 at 1024x1024, so no padding",
            "decoder": "prompt_encoder(boxes) + mask_decoder (multimask) per image, 256x256 logits",
            "end_to_end_output": "bool masks (bilinear postprocess_masks, > 0)",
        }


class AdapterBenchModel(BenchModel):
    """A zero-shot harness adapter timed through its own interface (host arrays, one image at a time)."""

    family = "adapter"
    mode = "adapter"
    inputs_on_device = False
    supports_compile = False

    def __init__(self, name: str, adapter: Any, device: str, image_size: int = 1024) -> None:
        super().__init__(device)
        self.name = name
        self.adapter = adapter
        self._size = image_size

    @property
    def image_size(self) -> int:
        return self._size

    def _torch_module(self) -> nn.Module:
        for path in ("model", "predictor.model"):
            obj: Any = self.adapter
            for attr in path.split("."):
                obj = getattr(obj, attr, None)
            if isinstance(obj, nn.Module):
                return obj
        return nn.Module()

    def module(self) -> nn.Module:
        return self._torch_module()

    def components(self) -> dict[str, nn.Module]:
        m = self._torch_module()
        return {
            n: getattr(m, n)
            for n in ("image_encoder", "prompt_encoder", "mask_decoder")
            if isinstance(getattr(m, n, None), nn.Module)
        }

    def make_inputs(self, images: np.ndarray, boxes: np.ndarray) -> dict[str, Any]:
        from esam.adapters.base import Prompts

        return {
            "images": [np.ascontiguousarray(im) for im in images],
            "prompts": [Prompts(boxes=np.asarray(b, dtype=np.float32)) for b in boxes],
        }

    def encode(self, inputs: dict[str, Any]) -> None:
        for im in inputs["images"]:
            self.adapter.set_image(im)

    def decode(self, embeddings: Any, inputs: dict[str, Any]) -> list[Any]:
        # the adapter holds one image: every prompt set is decoded against the last image set
        return [self.adapter.predict(p, multimask_output=True) for p in inputs["prompts"]]

    def end_to_end(self, inputs: dict[str, Any]) -> list[np.ndarray]:
        out = []
        for im, p in zip(inputs["images"], inputs["prompts"], strict=True):
            self.adapter.set_image(im)
            out.append(self.adapter.predict(p, multimask_output=True).masks)
        return out

    def masks_numpy(self, output: list[np.ndarray]) -> np.ndarray:
        return np.stack([np.asarray(m, dtype=bool) for m in output])

    def describe(self) -> dict[str, Any]:
        info = {
            "code_path": "zero-shot harness adapter: set_image then predict, one image at a time",
            "inputs": "host numpy arrays (the adapter interface); outputs copied to the host",
        }
        with contextlib.suppress(Exception):  # an adapter's describe() is informative only
            info.update({f"adapter_{k}": v for k, v in self.adapter.describe().items()})
        return info
