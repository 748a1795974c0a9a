"""EfficientSAM mask decoder: prompt tokens + image embedding -> low-res masks and IoU scores.

Differs from SAM's: GELU everywhere, GroupNorm(1, C) between the two transposed convolutions,
no dense prompt, and an IoU head of two hidden layers.

Memory: every prompt updates its own copy of the 256x64x64 image embedding inside the two-way
transformer, and the upscaled features are 32x256x256 per prompt. The official code processes
all prompts at once after tiling the embedding for each of them; here prompts are decoded in
chunks of at most ``max_queries_per_pass`` so the peak stays bounded however many prompts an
image has. ``reference_mode`` restores the official behaviour (for benchmarks).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from esam.modeling.common import MLPBlock
from esam.modeling.transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Predict masks from an image embedding and sparse prompt embeddings.

    Args:
        transformer_dim: width C of tokens and image embedding (256).
        transformer: the two-way transformer.
        num_multimask_outputs: masks in multimask mode (3); a 4th token gives the single mask.
        activation: activation of upscaling and MLPs (GELU).
        iou_head_depth: hidden layers of the IoU MLP (2).
        iou_head_hidden_dim: IoU MLP width (256).
        upscaling_layer_dims: channels after each 2x transposed convolution ([64, 32]).
        max_queries_per_pass: prompts decoded at once (None: all).
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 2,
        iou_head_hidden_dim: int = 256,
        upscaling_layer_dims: tuple[int, ...] = (64, 32),
        max_queries_per_pass: int | None = 8,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1 if num_multimask_outputs > 1 else 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        layers = []
        in_dim = transformer_dim
        for i, out_dim in enumerate(upscaling_layer_dims):
            last = i == len(upscaling_layer_dims) - 1
            layers.append(
                nn.Sequential(
                    nn.ConvTranspose2d(in_dim, out_dim, kernel_size=2, stride=2),
                    nn.Identity() if last else nn.GroupNorm(1, out_dim),
                    activation(),
                )
            )
            in_dim = out_dim
        self.final_output_upscaling_layers = nn.ModuleList(layers)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLPBlock(transformer_dim, transformer_dim, in_dim, 2, activation)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLPBlock(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth, activation
        )
        self.max_queries_per_pass = max_queries_per_pass
        self.reference_mode = False
        #: when each image has one prompt, decode images together: "auto" (on CUDA only; on
        #: CPU the per-image loop measured faster), "always" or "never"
        self.batch_single_prompt_images = "auto"
        #: images decoded together in that case
        self.images_per_pass = 32

    def _batch_images(self, image_embeddings: Tensor) -> bool:
        mode = self.batch_single_prompt_images
        if mode not in ("auto", "always", "never"):
            raise ValueError(
                f"batch_single_prompt_images must be auto, always or never, got {mode!r}"
            )
        return mode == "always" or (mode == "auto" and image_embeddings.is_cuda)

    def _output_slice(self, multimask_output: bool) -> slice:
        if multimask_output and self.num_multimask_outputs > 1:
            return slice(1, self.num_mask_tokens)
        return slice(0, 1)

    def forward(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        multimask_output: bool,
    ) -> tuple[Tensor, Tensor]:
        """Decode every prompt of every image.

        Args:
            image_embeddings: BxCxhxw.
            image_pe: 1xCxhxw position encoding of the grid.
            sparse_prompt_embeddings: BxQxNxC, Q prompts per image of N tokens each.
            multimask_output: 3 masks per prompt if True, else the single-mask output.

        Returns:
            masks BxQxMx(4h)x(4w) logits and iou BxQxM (M = 3 or 1).
        """
        b, q, n, c = sparse_prompt_embeddings.shape
        out_slice = self._output_slice(multimask_output)
        if self.reference_mode:
            # Official behaviour: one copy of the image embedding per prompt, all at once.
            tiled = torch.tile(image_embeddings[:, None], [1, q, 1, 1, 1]).flatten(0, 1)
            masks, iou = self.predict_masks(
                tiled, image_pe, sparse_prompt_embeddings.reshape(b * q, n, c), out_slice
            )
            return masks.unflatten(0, (b, q)), iou.unflatten(0, (b, q))
        step = self.max_queries_per_pass or q
        if q == 1 and self._batch_images(image_embeddings):
            # One prompt per image: images decode together (no embedding copy is needed), which
            # on GPU saves a kernel launch sequence per image.
            parts = [
                self.predict_masks(
                    image_embeddings[i : i + self.images_per_pass],
                    image_pe,
                    sparse_prompt_embeddings[i : i + self.images_per_pass, 0],
                    out_slice,
                )
                for i in range(0, b, self.images_per_pass)
            ]
            masks = torch.cat([p[0] for p in parts])
            iou = torch.cat([p[1] for p in parts])
            return masks.unsqueeze(1), iou.unsqueeze(1)
        mask_rows, iou_rows = [], []
        for i in range(b):
            parts = [
                self.predict_masks(
                    image_embeddings[i : i + 1],
                    image_pe,
                    sparse_prompt_embeddings[i, j : j + step],
                    out_slice,
                )
                for j in range(0, q, step)
            ]
            mask_rows.append(torch.cat([p[0] for p in parts]))
            iou_rows.append(torch.cat([p[1] for p in parts]))
        return torch.stack(mask_rows), torch.stack(iou_rows)

    def predict_masks(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        out_slice: slice,
    ) -> tuple[Tensor, Tensor]:
        """Decode Q prompts against one image embedding (batch 1, shared) or Q copies.

        Args:
            image_embeddings: (1 or Q)xCxhxw.
            image_pe: 1xCxhxw.
            sparse_prompt_embeddings: QxNxC.
            out_slice: which mask tokens to return.

        Returns:
            masks QxMx(4h)x(4w), iou QxM.
        """
        q = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat(
            [output_tokens.unsqueeze(0).expand(q, -1, -1), sparse_prompt_embeddings], dim=1
        )
        _, c, h, w = image_embeddings.shape
        hs, src = self.transformer(image_embeddings, image_pe, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        upscaled = src.transpose(1, 2).reshape(q, c, h, w)
        for layer in self.final_output_upscaling_layers:
            upscaled = layer(upscaled)
        idx = range(self.num_mask_tokens)[out_slice]
        hyper_in = torch.stack(
            [self.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in idx], dim=1
        )
        _, uc, uh, uw = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(q, uc, uh * uw)).reshape(q, -1, uh, uw)
        iou_pred = self.iou_prediction_head(iou_token_out)[:, out_slice]
        return masks, iou_pred
