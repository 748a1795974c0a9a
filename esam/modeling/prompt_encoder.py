"""EfficientSAM prompt encoder: points and box corners -> sparse embeddings.

Differs from SAM's: every prompt slot (padding included) gets the random-Fourier position
encoding of its coordinates; padding (label -1), positive points (1) and box corners (2, 3)
add a learned embedding; negative points (0) add none. There is no dense (mask) prompt.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of 2-D coordinates: ...x2 in [0,1] -> ...x(2*num_pos_feats).

    Args:
        num_pos_feats: number of frequencies.
        scale: standard deviation of the frequencies (SAM's ``scale``), in cycles per half
            image side. The matrix is a buffer, saved with the weights: the scale only sets how
            a model built without a checkpoint starts.
    """

    positional_encoding_gaussian_matrix: torch.Tensor

    def __init__(self, num_pos_feats: int, scale: float = 1.0) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats))
        )

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        # Coordinates stay float32 whatever the model's dtype: rounded to bfloat16 they would
        # move by up to 4 px at 1024 px. The matrix carries the model's dtype (bfloat16:
        # frequencies within 0.2%).
        matrix = self.positional_encoding_gaussian_matrix
        coords = (2 * coords.float() - 1) @ matrix.float()
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1).to(matrix.dtype)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Dense encoding of a grid of pixel centres: (h, w) -> Cxhxw."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        grid = torch.ones((h, w), device=device, dtype=torch.float32)
        y = (grid.cumsum(dim=0) - 0.5) / h
        x = (grid.cumsum(dim=1) - 0.5) / w
        return self._pe_encoding(torch.stack([x, y], dim=-1)).permute(2, 0, 1)

    def forward_with_coords(
        self, coords: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """Encode pixel coordinates BxNx2 (x, y) in an image of ``image_size`` (h, w): -> BxNxC."""
        h, w = image_size
        norm = torch.stack([coords[..., 0] / w, coords[..., 1] / h], dim=-1)
        return self._pe_encoding(norm.to(torch.float32))


class PromptEncoder(nn.Module):
    """Sparse prompt encoder.

    Args:
        embed_dim: embedding width (256).
        image_embedding_size: (h, w) of the image embedding grid (64, 64).
        input_image_size: (H, W) of the encoder input in pixels (1024, 1024).
        pe_scale: standard deviation of the position encoding's random frequencies
            (:class:`PositionEmbeddingRandom`).
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        pe_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2, pe_scale)
        self.invalid_points = nn.Embedding(1, embed_dim)
        self.point_embeddings = nn.Embedding(1, embed_dim)
        self.bbox_top_left_embeddings = nn.Embedding(1, embed_dim)
        self.bbox_bottom_right_embeddings = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Position encoding of the image embedding grid: 1xCxhxw."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def forward(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Embed prompts.

        Args:
            coords: BxNx2 (x, y) in encoder-input pixels; padding slots hold -1.
            labels: BxN; -1 padding, 0 negative, 1 positive, 2 box top-left, 3 box bottom-right.

        Returns:
            BxNxC sparse embeddings.
        """
        emb = self.pe_layer.forward_with_coords(coords + 0.5, self.input_image_size)
        labels = labels[..., None]
        emb = emb + self.invalid_points.weight * (labels == -1)
        emb = emb + self.point_embeddings.weight * (labels == 1)
        emb = emb + self.bbox_top_left_embeddings.weight * (labels == 2)
        emb = emb + self.bbox_bottom_right_embeddings.weight * (labels == 3)
        return emb
