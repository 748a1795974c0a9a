"""The composite EfficientSAM model, call-compatible with the official implementation.

The forward paths check only what needs no device synchronisation (types, dtypes, shapes), so
a training step or a compiled graph never waits for a value read back from the accelerator.
Value checks (images in [0, 1], labels in {-1, 0, 1, 2, 3}) read tensors back to the host and
live in :meth:`EfficientSam.validate_inputs`, for code that hands the model tensors it got from
outside; the predictor (and so the command line) checks its numpy inputs on the host before
anything reaches the device.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esam.errors import InputError
from esam.modeling.image_encoder import ImageEncoderViT
from esam.modeling.mask_decoder import MaskDecoder
from esam.modeling.prompt_encoder import PromptEncoder
from esam.modeling.transformer import TwoWayAttention
from esam.modeling.vit import Attention
from esam.validation import check_image_batch, check_point_batch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_image_shape(images: object, name: str = "images") -> Tensor:
    """A Bx3xHxW floating-point tensor; shape and dtype only (no device synchronisation)."""
    if not isinstance(images, Tensor):
        raise InputError(
            f"{name} must be a torch.Tensor of shape Bx3xHxW, got {type(images).__name__}"
        )
    if not images.is_floating_point():
        raise InputError(
            f"{name} must be floating point with values in [0, 1] (uint8 / 255), got {images.dtype}"
        )
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"{name} must have shape Bx3xHxW, got {tuple(images.shape)}")
    return images


def check_prompt_shapes(points: object, labels: object) -> None:
    """Points BxQxNx2 and labels BxQxN tensors; shapes only (no device synchronisation)."""
    if not isinstance(points, Tensor) or points.ndim != 4 or points.shape[-1] != 2:
        shape = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise InputError(f"points must be a tensor of shape BxQxNx2 (x, y pixels), got {shape}")
    if not isinstance(labels, Tensor) or tuple(labels.shape) != tuple(points.shape[:3]):
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise InputError(
            f"labels must be a tensor of shape BxQxN = {tuple(points.shape[:3])}, got {shape}"
        )


class EfficientSam(nn.Module):
    """SAMI-pretrained ViT encoder + EfficientSAM prompt encoder and mask decoder.

    The public methods keep the official signatures so code written for the official
    ``EfficientSam`` runs unchanged: ``forward``, ``get_image_embeddings`` and
    ``predict_masks``. Preprocessing is the official one: the image is stretched (bilinear, no
    padding) to the encoder's square input and normalised with ImageNet mean/std; the 256x256
    logits are upsampled bicubically to the requested output size.

    ``forward``, ``get_image_embeddings`` and ``predict_masks`` check argument types and
    shapes only; call :meth:`validate_inputs` once at a boundary to check values too.
    """

    mask_threshold: float = 0.0
    image_format: str = "RGB"
    pixel_mean: Tensor
    pixel_std: Tensor
    config: Any = None
    """The architecture config the model was built from (set by the builders)."""
    model_name: str | None = None
    """Registry name, when built through the registry."""
    weights_info: dict[str, Any] | None = None
    """Where the loaded weights came from (checkpoint format, name, weights note)."""

    def __init__(
        self,
        image_encoder: ImageEncoderViT,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        decoder_max_num_input_points: int = 6,
        pixel_mean: tuple[float, float, float] = IMAGENET_MEAN,
        pixel_std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.decoder_max_num_input_points = decoder_max_num_input_points
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False
        )

    @staticmethod
    def validate_inputs(
        batched_images: Tensor | None = None,
        batched_points: Tensor | None = None,
        batched_point_labels: Tensor | None = None,
    ) -> None:
        """Full argument checks, values included, for inputs from outside the library.

        Reads the tensors back to the host (a device synchronisation), which is why the forward
        paths do not do it: call this once where inputs enter, not inside a training step.

        Args:
            batched_images: Bx3xHxW floats that must lie in [0, 1], or None.
            batched_points: BxQxNx2 (x, y) pixels, or None (then labels must be None too).
            batched_point_labels: BxQxN, each in {-1, 0, 1, 2, 3}, or None.

        Raises:
            InputError: naming the argument, what was received and the expected form.
        """
        if batched_images is not None:
            check_image_batch(batched_images, "batched_images")
        if batched_points is not None or batched_point_labels is not None:
            check_point_batch(batched_points, batched_point_labels)

    @property
    def img_size(self) -> int:
        """Side of the square encoder input in pixels (1024)."""
        return self.image_encoder.img_size

    def preprocess(self, x: Tensor) -> Tensor:
        """Bx3xHxW in [0, 1] -> Bx3xSxS normalised (bilinear stretch, no padding).

        The result has the model's dtype (that of ``pixel_mean``), so a model cast to bfloat16
        or float16 takes float32 images.
        """
        s = self.img_size
        if x.shape[2] != s or x.shape[3] != s:
            x = F.interpolate(x, (s, s), mode="bilinear")
        return ((x - self.pixel_mean) / self.pixel_std).to(self.pixel_mean.dtype)

    def get_image_embeddings(self, batched_images: Tensor) -> Tensor:
        """Encode images: Bx3xHxW floats in [0, 1] (RGB) -> Bx256x64x64."""
        check_image_shape(batched_images, "batched_images")
        return self.image_encoder(self.preprocess(batched_images))

    def get_rescaled_pts(self, batched_points: Tensor, input_h: int, input_w: int) -> Tensor:
        """Map input-image pixels to encoder-input pixels; negative coordinates become -1."""
        s = self.img_size
        x = torch.where(batched_points[..., 0] >= 0, batched_points[..., 0] * s / input_w, -1.0)
        y = torch.where(batched_points[..., 1] >= 0, batched_points[..., 1] * s / input_h, -1.0)
        return torch.stack([x, y], dim=-1)

    def encode_prompts(
        self, batched_points: Tensor, batched_point_labels: Tensor, input_h: int, input_w: int
    ) -> Tensor:
        """Sparse embeddings BxQxPxC for points BxQxNx2 (input pixels) and labels BxQxN.

        Prompts are padded with label -1 (or truncated, as the official model does) to
        ``decoder_max_num_input_points`` = P slots.
        """
        b, q, n, _ = batched_points.shape
        p = self.decoder_max_num_input_points
        pts = self.get_rescaled_pts(batched_points, input_h, input_w)
        labels = batched_point_labels
        if n > p:
            warnings.warn(
                f"{n} prompt points per query given; the model reads the first {p} (as the official model does)",
                stacklevel=3,
            )
            pts, labels = pts[:, :, :p], labels[:, :, :p]
        elif n < p:
            pts = F.pad(pts, (0, 0, 0, p - n), value=-1.0)
            labels = F.pad(labels, (0, p - n), value=-1)
        emb = self.prompt_encoder(pts.reshape(b * q, p, 2), labels.reshape(b * q, p))
        return emb.reshape(b, q, p, -1)

    def predict_masks(
        self,
        image_embeddings: Tensor,
        batched_points: Tensor,
        batched_point_labels: Tensor,
        multimask_output: bool,
        input_h: int,
        input_w: int,
        output_h: int = -1,
        output_w: int = -1,
    ) -> tuple[Tensor, Tensor]:
        """Decode prompts against precomputed embeddings.

        Args:
            image_embeddings: Bx256x64x64 from :meth:`get_image_embeddings`.
            batched_points: BxQxNx2 (x, y) in input-image pixels.
            batched_point_labels: BxQxN; -1 padding, 0 negative, 1 positive, 2/3 box corners.
            multimask_output: 3 masks per query if True, else 1.
            input_h, input_w: size of the image the points refer to.
            output_h, output_w: upsample (bicubic) the logits to this size; -1 keeps 256x256.

        Returns:
            logits BxQxMxHoxWo and predicted IoU BxQxM.
        """
        check_prompt_shapes(batched_points, batched_point_labels)
        sparse = self.encode_prompts(batched_points, batched_point_labels, input_h, input_w)
        low_res, iou = self.mask_decoder(
            image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, multimask_output
        )
        if output_h > 0 and output_w > 0:
            b, q, m = low_res.shape[:3]
            up = F.interpolate(
                low_res.flatten(0, 2).unsqueeze(1), (output_h, output_w), mode="bicubic"
            )
            low_res = up.reshape(b, q, m, output_h, output_w)
        return low_res, iou

    def forward(
        self,
        batched_images: Tensor,
        batched_points: Tensor,
        batched_point_labels: Tensor,
        scale_to_original_image_size: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """Encode images and decode prompts end to end (3 masks per query).

        Args:
            batched_images: Bx3xHxW floats in [0, 1] (RGB).
            batched_points: BxQxNx2 (x, y) in image pixels.
            batched_point_labels: BxQxN.
            scale_to_original_image_size: return HxW logits (else 256x256).

        Returns:
            logits BxQx3xHxW (or 256x256) and predicted IoU BxQx3.
        """
        check_image_shape(batched_images, "batched_images")
        _, _, h, w = batched_images.shape
        embeddings = self.get_image_embeddings(batched_images)
        out_h, out_w = (h, w) if scale_to_original_image_size else (-1, -1)
        return self.predict_masks(
            embeddings, batched_points, batched_point_labels, True, h, w, out_h, out_w
        )


def set_reference_mode(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch a model between esam's fast path and the official computation.

    Reference mode computes attention with explicit matmuls and decodes all prompts at once on
    per-prompt copies of the image embedding, as the official implementation does. Outputs
    agree to float rounding; benchmarks use it as the baseline.
    """
    for m in model.modules():
        if isinstance(m, (Attention, TwoWayAttention)):
            m.fast_attention = not enabled
        if isinstance(m, MaskDecoder):
            m.reference_mode = enabled
    return model
