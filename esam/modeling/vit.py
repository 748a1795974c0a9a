"""Plain ViT backbone shared by SAMI pretraining, EfficientSAM, classification and detection.

Global attention in every block, patch 16, no class token in the forward pass. The learned
absolute position embedding is stored at a *pretraining grid* (14x14 for 224 px, plus one
unused class-token slot, as in the official EfficientSAM checkpoints) and resized bicubically
to the grid of the input, so one set of weights serves 224 px masked pretraining and 1024 px
segmentation alike.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from esam.modeling.attention import attention


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: Bx3xHxW -> BxCx(H/p)x(W/p)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection. BxNxC -> BxNxC."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.fast_attention = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = (
            self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        )
        out = attention(qkv[0], qkv[1], qkv[2], self.fast_attention)  # B x heads x N x C/heads
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """Linear -> GELU -> Linear. ...xC -> ...xC."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6). BxNxC -> BxNxC."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def resize_pos_embed(
    pos_embed: torch.Tensor, grid: tuple[int, int], has_cls_slot: bool
) -> torch.Tensor:
    """Position embedding for an input grid.

    Args:
        pos_embed: 1x(S*S [+1])xC learned embedding at the pretraining grid SxS.
        grid: (h, w) token grid of the input.
        has_cls_slot: whether ``pos_embed`` starts with a class-token slot (dropped here).

    Returns:
        1xhxwxC, bicubically resized (align_corners=False) when (h, w) != (S, S).
    """
    if has_cls_slot:
        pos_embed = pos_embed[:, 1:]
    n = pos_embed.shape[1]
    size = math.isqrt(n)
    if size * size != n:
        raise ValueError(f"position embedding has {n} grid slots, which is not a square")
    h, w = grid
    if (h, w) == (size, size):
        return pos_embed.reshape(1, h, w, -1)
    resized = F.interpolate(
        pos_embed.reshape(1, size, size, -1).permute(0, 3, 1, 2),
        size=(h, w),
        mode="bicubic",
        align_corners=False,
    )
    return resized.permute(0, 2, 3, 1)


class ViT(nn.Module):
    """Plain ViT trunk: patch embedding, absolute position embedding, ``depth`` global blocks.

    Args:
        img_size: default input side in pixels (the grid is ``img_size // patch_size``).
        patch_size: patch side in pixels.
        in_chans: input channels.
        embed_dim: token width (Ti 192, S 384, B 768).
        depth: number of blocks.
        num_heads: attention heads (Ti 3, S 6, B 12).
        mlp_ratio: MLP hidden width / ``embed_dim``.
        pretrain_img_size: side the position embedding is stored at (224 -> 14x14 grid).
        pos_embed_cls_slot: store one extra (unused) class-token slot, as the official weights do.
    """

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        pretrain_img_size: int = 224,
        pos_embed_cls_slot: bool = True,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.pos_embed_cls_slot = pos_embed_cls_slot
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        pretrain_grid = pretrain_img_size // patch_size
        self.pos_embed = nn.Parameter(
            torch.zeros(1, pretrain_grid * pretrain_grid + int(pos_embed_cls_slot), embed_dim)
        )
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))

    @property
    def grid_size(self) -> int:
        """Token grid side at the default input size."""
        return self.img_size // self.patch_size

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patchify and add position embeddings.

        Args:
            x: Bx3xHxW normalised image, H and W multiples of the patch size.

        Returns:
            tokens BxNxC in row-major grid order (N = h*w), and the grid (h, w).
        """
        x = self.patch_embed(x).permute(0, 2, 3, 1)  # B x h x w x C
        h, w = x.shape[1], x.shape[2]
        x = x + resize_pos_embed(self.pos_embed, (h, w), self.pos_embed_cls_slot)
        return x.reshape(x.shape[0], h * w, x.shape[3]), (h, w)

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Run all blocks on a token set: BxNxC -> BxNxC (N may be a masked subset)."""
        for blk in self.blocks:
            tokens = blk(tokens)
        return tokens

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Bx3xHxW -> BxCxhxw feature map of the last block."""
        tokens, (h, w) = self.embed(x)
        tokens = self.forward_tokens(tokens)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)

    def forward_masked(self, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Encode only the visible tokens (MAE/SAMI style).

        Args:
            x: Bx3xHxW normalised image.
            ids_keep: BxK long indices of the visible tokens in row-major grid order.

        Returns:
            BxKxC encoded visible tokens.
        """
        tokens, _ = self.embed(x)
        idx = ids_keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
        return self.forward_tokens(torch.gather(tokens, 1, idx))

    def get_intermediate_layers(
        self, x: torch.Tensor, n: int | list[int] = 1, reshape: bool = True
    ) -> tuple[torch.Tensor, ...]:
        """Outputs of the last ``n`` blocks (or of the block indices in ``n``).

        Returns a tuple of BxCxhxw maps when ``reshape`` (the contract of mmseg/mmdet heads),
        else of BxNxC token tensors.
        """
        tokens, (h, w) = self.embed(x)
        wanted = (
            set(range(len(self.blocks) - n, len(self.blocks))) if isinstance(n, int) else set(n)
        )
        outs = []
        for i, blk in enumerate(self.blocks):
            tokens = blk(tokens)
            if i in wanted:
                outs.append(tokens)
        if reshape:
            outs = [t.transpose(1, 2).reshape(t.shape[0], -1, h, w) for t in outs]
        return tuple(outs)
