"""Plain ViT backbone shared by SAMI pretraining, EfficientSAM, classification and detection.

Global attention in every block, patch 16, no class token in the forward pass. The learned
absolute position embedding is stored at a *pretraining grid* (14x14 for 224 px, plus one
unused class-token slot, as in the official EfficientSAM checkpoints) and resized bicubically
to the grid of the input, so one set of weights serves 224 px masked pretraining and 1024 px
segmentation alike.

Training support, none of which adds a parameter (official checkpoints load unchanged):
stochastic depth (``drop_path_rate``), MAE's initialisation (:meth:`ViT.init_weights`), and
the hooks optimisers need for weight-decay exclusion and layer-wise learning-rate decay
(:meth:`ViT.no_weight_decay`, :meth:`ViT.layer_id`, :attr:`ViT.num_layer_ids`).
"""

from __future__ import annotations

import math
from typing import Literal

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


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch for a random subset of samples while training.

    Each sample's branch output (Bx...) is kept with probability ``1 - p`` and then scaled by
    ``1 / (1 - p)``, so its expectation is unchanged; in eval mode (or with ``p == 0``) the
    module is the identity. It has no parameters.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Block(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6). BxNxC -> BxNxC.

    ``drop_path`` is the stochastic-depth probability of both residual branches.
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def sincos_pos_embed_2d(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """Fixed 2D sine-cosine position embedding (the MAE initialisation).

    The first half of the channels encodes the row, the second half the column; each half is
    ``[sin(pos * w_k), cos(pos * w_k)]`` with frequencies ``w_k = 10000^(-k / (dim / 4))``.

    Args:
        dim: embedding width, a multiple of 4.
        grid: (h, w) token grid.

    Returns:
        (h*w)xdim float32, row-major grid order.
    """
    if dim % 4:
        raise ValueError(f"a 2D sin-cos position embedding needs a width divisible by 4, got {dim}")
    h, w = grid
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows = torch.arange(h, dtype=torch.float64)[:, None] * omega  # h x dim/4
    cols = torch.arange(w, dtype=torch.float64)[:, None] * omega  # w x dim/4
    row_emb = torch.cat([rows.sin(), rows.cos()], dim=1)[:, None].expand(h, w, dim // 2)
    col_emb = torch.cat([cols.sin(), cols.cos()], dim=1)[None].expand(h, w, dim // 2)
    return torch.cat([row_emb, col_emb], dim=-1).reshape(h * w, dim).float()


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
        drop_path_rate: stochastic depth of the last block; block ``i`` of ``depth`` drops with
            probability ``drop_path_rate * i / (depth - 1)`` (0 for the first block).

    Construction leaves PyTorch's default initialisation (the position embedding zero), which
    is all loading a checkpoint needs; call :meth:`init_weights` before training from scratch.
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
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.pos_embed_cls_slot = pos_embed_cls_slot
        self.pretrain_grid = pretrain_img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        n_pos = self.pretrain_grid * self.pretrain_grid + int(pos_embed_cls_slot)
        self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, embed_dim))
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, r) for r in rates)

    @property
    def depth(self) -> int:
        """Number of blocks."""
        return len(self.blocks)

    @torch.no_grad()
    def init_weights(self, pos_embed: Literal["sincos", "trunc_normal"] = "sincos") -> None:
        """Initialise the trunk for training from scratch, as MAE does.

        * Linear layers (the fused qkv projection counts as one): Xavier-uniform weights, zero
          biases. The patch embedding is a linear layer over flattened 3xpxp patches and is
          initialised like one (Xavier-uniform on its ``embed_dim x 3p^2`` view), zero bias.
        * LayerNorm: weight 1, bias 0.
        * Position embedding: ``"sincos"`` (default) fills the fixed 2D sine-cosine table of MAE
          at the stored pretraining grid (the unused class-token slot 0); ``"trunc_normal"``
          draws a truncated normal, std 0.02, cut at +-2 std. Either way it stays a trainable
          parameter here; freezing it (as MAE does) is the caller's choice.

        The sine-cosine table is the default because SAMI follows MAE's recipe, and MAE
        pretrains with it (fixed); a learned embedding drawn at std 0.02 starts as a weak
        position signal next to the patch embeddings and must be learned first. The official
        checkpoints do not say which was used: both give the same stored shape. Random draws
        use torch's global RNG: seed it for reproducible weights.
        """
        if pos_embed not in ("sincos", "trunc_normal"):
            raise ValueError(f"pos_embed must be 'sincos' or 'trunc_normal', got {pos_embed!r}")
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if self.patch_embed.proj.bias is not None:
            nn.init.zeros_(self.patch_embed.proj.bias)
        if pos_embed == "sincos":
            table = sincos_pos_embed_2d(self.embed_dim, (self.pretrain_grid, self.pretrain_grid))
            if self.pos_embed_cls_slot:
                table = torch.cat([table.new_zeros(1, self.embed_dim), table])
            self.pos_embed.copy_(table[None])
        else:
            nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-0.04, b=0.04)

    def no_weight_decay(self) -> set[str]:
        """Parameter names (relative to this module) that must not be weight-decayed.

        The position embedding. Biases and normalisation weights (every 1-D parameter) are
        left to the optimiser's usual ``ndim <= 1`` rule and are not listed.
        """
        return {"pos_embed"}

    @property
    def num_layer_ids(self) -> int:
        """Number of distinct :meth:`layer_id` values: ``depth + 2``."""
        return self.depth + 2

    def layer_id(self, name: str) -> int:
        """Layer index of a parameter name (relative to this module) for layer-wise lr decay.

        0 for the patch and position embeddings, ``i + 1`` for ``blocks.i.*``, ``depth + 1``
        for anything after the blocks (e.g. an image encoder's neck or a head).
        """
        root = name.split(".", 1)[0]
        if root in ("patch_embed", "pos_embed", "cls_token"):
            return 0
        if root == "blocks":
            parts = name.split(".")
            if len(parts) < 2 or not parts[1].isdigit():
                raise ValueError(f"parameter name {name!r} does not name a block index")
            return int(parts[1]) + 1
        return self.depth + 1

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
