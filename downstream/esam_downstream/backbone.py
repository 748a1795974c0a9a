"""esam's ViT as a detection/segmentation backbone, with ViTDet's windowed attention.

Plain PyTorch (no mm* import), so parity with :class:`esam.modeling.vit.ViT` can be tested
without mmcv. The trunk *is* an esam ``ViT``: the same module, the same parameter names, loaded
strictly through :func:`esam.checkpoint.load_trunk_state`. What this module adds does not
change esam's numerics:

* windowed attention (ViTDet): blocks whose index is not in ``global_blocks`` attend within
  non-overlapping ``window_size x window_size`` windows of the token grid. The grid is padded
  with zeros (after the block's first LayerNorm) to a multiple of the window, as ViTDet does;
  padded tokens are keys like any other and are cropped from the output. The block's own
  modules (norms, qkv, projection, MLP) are used unchanged; only the token set that attention
  sees differs. With ``window_size=0`` (or every block global) the output equals
  ``ViT.forward_features`` exactly.
* the absolute position embedding is resized to each input's grid by esam (``ViT.embed``).
* decomposed relative position (ViTDet; SAM's image encoder): per block, tables
  ``blocks.<i>.attn.rel_pos_h`` / ``rel_pos_w`` ((2*S-1) x head_dim for an attention extent of
  S tokens) add ``q . R_h[i - i'] + q . R_w[j - j']`` to the attention logits between query
  (i, j) and key (i', j'); tables are linearly resized when the extent differs (a window, or an
  input of another size). Used when the checkpoint has such tables (``rel_pos="auto"``) or
  when asked (``rel_pos=True``: zero-initialised tables, as ViTDet trains them, which leave the
  output unchanged until trained). esam's own checkpoints have none.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from esam.checkpoint import BACKBONE_ARCH_KEYS, CheckpointError, load_trunk_state, read_backbone
from esam.errors import InputError
from esam.modeling.vit import Block, ViT

#: Trunk sizes by name: embed_dim, depth, num_heads (the EfficientSAM / SAMI encoders).
ARCHS: dict[str, dict[str, int]] = {
    "tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
}


class BackboneConfigError(InputError):
    """The backbone's settings contradict each other or the checkpoint's architecture."""


class InputSizeError(InputError):
    """An input image whose side is not a multiple of the patch size."""


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split a token grid into non-overlapping windows, zero-padding it to a multiple of ``window``.

    Args:
        x: BxHxWxC token grid.
        window: window side in tokens (>= 1).

    Returns:
        (B*nWin)x(window*window)xC windows in row-major window order, and the padded grid
        (Hp, Wp) with ``nWin = (Hp/window) * (Wp/window)``.
    """
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)
    return windows, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded: tuple[int, int], grid: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`, cropping the padding.

    Args:
        windows: (B*nWin)x(window*window)xC.
        window: window side in tokens.
        padded: the padded grid (Hp, Wp) that :func:`window_partition` returned.
        grid: the original grid (H, W).

    Returns:
        BxHxWxC.
    """
    hp, wp = padded
    h, w = grid
    c = windows.shape[-1]
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.view(b, hp // window, wp // window, window, window, c)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
    return x[:, :h, :w].contiguous()


#: Names of the relative position tables on each block's ``attn`` module.
REL_POS_KEYS = ("rel_pos_h", "rel_pos_w")


def rel_pos_table(table: torch.Tensor, q_size: int, k_size: int) -> torch.Tensor:
    """Relative position embeddings for every (query, key) pair along one axis.

    Args:
        table: Lxd table, row ``r`` holding offset ``r - (L - 1) / 2``; linearly resized to
            ``2 * max(q_size, k_size) - 1`` rows when L differs.
        q_size: query positions along the axis.
        k_size: key positions along the axis.

    Returns:
        q_size x k_size x d: the embedding of query i and key j (offsets scaled to the longer
        side when the sizes differ, as SAM and ViTDet do).
    """
    length = 2 * max(q_size, k_size) - 1
    if table.shape[0] != length:
        table = F.interpolate(table.t()[None], size=length, mode="linear")[0].t()
    q_coords = torch.arange(q_size, device=table.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=table.device)[None, :] * max(q_size / k_size, 1.0)
    offsets = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return table[offsets.long()]


def rel_pos_attention(attn: nn.Module, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """esam's :class:`~esam.modeling.vit.Attention` plus decomposed relative position.

    Args:
        attn: an Attention module carrying ``rel_pos_h`` and ``rel_pos_w`` parameters.
        x: BxNxC tokens of an HxW grid (row-major, N = H*W).
        grid: (H, W).

    Returns:
        BxNxC: ``proj(softmax(q k^T / sqrt(d) + B_rel) v)`` with
        ``B_rel[(i, j), (i', j')] = q_(i,j) . (R_h[i, i'] + R_w[j, j'])`` (q unscaled).
    """
    b, n, c = x.shape
    heads = attn.num_heads
    h, w = grid
    qkv = attn.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # B x heads x N x d
    r_h = rel_pos_table(attn.rel_pos_h, h, h)  # H x H x d
    r_w = rel_pos_table(attn.rel_pos_w, w, w)  # W x W x d
    qg = q.reshape(b, heads, h, w, -1)
    bias_h = torch.einsum("bnhwd,hkd->bnhwk", qg, r_h)  # over key rows
    bias_w = torch.einsum("bnhwd,wkd->bnhwk", qg, r_w)  # over key columns
    bias = (bias_h[..., :, None] + bias_w[..., None, :]).reshape(b, heads, n, n)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
    return attn.proj(out.transpose(1, 2).reshape(b, n, c))


def block_attention(blk: Block, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A block's attention on BxNxC tokens of a ``grid``: with relative position if it has any."""
    if hasattr(blk.attn, "rel_pos_h"):
        return rel_pos_attention(blk.attn, x, grid)
    out: torch.Tensor = blk.attn(x)
    return out


def windowed_block(blk: Block, x: torch.Tensor, window: int) -> torch.Tensor:
    """One esam :class:`~esam.modeling.vit.Block` with attention restricted to windows.

    The pre-norm residual structure of ``Block.forward`` with the attention branch run per
    window: ``x + drop_path(attn_win(norm1(x)))``, then ``+ drop_path(mlp(norm2(x)))``.

    Args:
        blk: the block whose modules are used.
        x: BxHxWxC token grid.
        window: window side in tokens.

    Returns:
        BxHxWxC.
    """
    h, w = x.shape[1], x.shape[2]
    windows, padded = window_partition(blk.norm1(x), window)
    y = block_attention(blk, windows, (window, window))
    y = window_unpartition(y, window, padded, (h, w))
    x = x + blk.drop_path(y)
    return x + blk.drop_path(blk.mlp(blk.norm2(x)))


def global_block(blk: Block, x: torch.Tensor) -> torch.Tensor:
    """One block with global attention on a BxHxWxC grid (``Block.forward`` without rel pos)."""
    b, h, w, c = x.shape
    if not hasattr(blk.attn, "rel_pos_h"):
        return blk(x.reshape(b, h * w, c)).view_as(x)
    tokens = x.reshape(b, h * w, c)
    tokens = tokens + blk.drop_path(rel_pos_attention(blk.attn, blk.norm1(tokens), (h, w)))
    tokens = tokens + blk.drop_path(blk.mlp(blk.norm2(tokens)))
    return tokens.view_as(x)


def split_rel_pos(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(trunk state without relative position tables, the tables ``blocks.<i>.attn.rel_pos_*``)."""
    rel = {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] in REL_POS_KEYS}
    return {k: v for k, v in state.items() if k not in rel}, rel


def default_global_blocks(depth: int, count: int = 4) -> tuple[int, ...]:
    """ViTDet's choice of global blocks: ``count`` evenly spaced, the last block among them.

    For depth 12 and 4 global blocks: (2, 5, 8, 11), the blocks ViTDet's ViT-B leaves global.
    """
    if depth % count:
        raise BackboneConfigError(f"depth {depth} cannot be split into {count} equal stages")
    step = depth // count
    return tuple(range(step - 1, depth, step))


class EsamViTBackbone(nn.Module):
    """esam ViT trunk -> one stride-``patch_size`` feature map, with optional windowed blocks.

    Args:
        checkpoint: an esam backbone checkpoint (``esam pretrain export``) or an EfficientSAM
            checkpoint (official or esam), read by :func:`esam.checkpoint.read_backbone` and
            loaded strictly. Its architecture decides the trunk's size; ``arch`` and any of
            :data:`esam.checkpoint.BACKBONE_ARCH_KEYS` given here must agree with it.
        arch: ``"tiny"``, ``"small"`` or ``"base"`` (:data:`ARCHS`) when no checkpoint is given.
        img_size: nominal input side (the position embedding is resized to any input's grid).
        window_size: window side in tokens for the non-global blocks; 0 means all global.
        global_blocks: indices of the blocks with global attention; ``None`` gives
            :func:`default_global_blocks` (four, evenly spaced) when ``window_size > 0``.
        drop_path_rate: stochastic depth of the last block (linear in the block index).
        rel_pos: decomposed relative position in every block: ``"auto"`` when the checkpoint
            has the tables (``blocks.<i>.attn.rel_pos_h`` / ``_w``), ``True`` always (tables
            from the checkpoint, else zero-initialised), ``False`` never (a checkpoint with
            tables is then refused, naming them).
        frozen: freeze the trunk (``requires_grad=False``, kept in eval mode).
        arch_overrides: trunk fields (``embed_dim``, ``depth``, ``num_heads``, ``patch_size``,
            ``mlp_ratio``, ``pretrain_img_size``, ``pos_embed_cls_slot``) for tiny test models,
            or to state what a checkpoint must be.

    ``forward`` returns a 1-tuple holding a BxCx(H/p)x(W/p) map (the mm* backbone contract).
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike[str] | None = None,
        arch: str | None = None,
        img_size: int = 1024,
        window_size: int = 14,
        global_blocks: Sequence[int] | None = None,
        drop_path_rate: float = 0.0,
        frozen: bool = False,
        rel_pos: bool | str = "auto",
        **arch_overrides: Any,
    ) -> None:
        super().__init__()
        unknown = set(arch_overrides) - set(BACKBONE_ARCH_KEYS)
        if unknown:
            raise BackboneConfigError(
                f"unknown backbone settings {sorted(unknown)}; trunk fields are "
                f"{list(BACKBONE_ARCH_KEYS)}"
            )
        wanted: dict[str, Any] = {}
        if arch is not None:
            if arch not in ARCHS:
                raise BackboneConfigError(f"unknown arch {arch!r}; known: {sorted(ARCHS)}")
            wanted.update(ARCHS[arch])
        wanted.update(arch_overrides)
        state: dict[str, torch.Tensor] | None = None
        self.backbone_info: dict[str, Any] = {}
        if checkpoint is not None:
            state, stored, info = read_backbone(checkpoint)
            clash = sorted(k for k in wanted if k in stored and wanted[k] != stored[k])
            if clash:
                shown = ", ".join(
                    f"{k}: config {wanted[k]!r} vs checkpoint {stored[k]!r}" for k in clash
                )
                raise BackboneConfigError(f"{checkpoint}: backbone of another size ({shown})")
            wanted = dict(stored)
            self.backbone_info = {**info, "path": str(checkpoint)}
        elif arch is None and "embed_dim" not in wanted:
            raise BackboneConfigError("give a backbone checkpoint, or an arch for random weights")
        depth = int(wanted.get("depth", 12))
        if window_size < 0:
            raise BackboneConfigError(f"window_size must be >= 0, got {window_size}")
        if window_size and global_blocks is None:
            global_blocks = default_global_blocks(depth)
        blocks = tuple(int(i) for i in (global_blocks or ()))
        bad = [i for i in blocks if not 0 <= i < depth]
        if bad:
            raise BackboneConfigError(f"global_blocks {bad} outside 0..{depth - 1}")
        self.vit = ViT(img_size=img_size, drop_path_rate=drop_path_rate, **wanted)
        self.window_size = int(window_size)
        self.global_blocks = frozenset(range(depth)) if not window_size else frozenset(blocks)
        self.from_checkpoint = state is not None
        if rel_pos not in ("auto", True, False):
            raise BackboneConfigError(f"rel_pos must be 'auto', True or False, got {rel_pos!r}")
        rel_state: dict[str, torch.Tensor] = {}
        if state is not None:
            if rel_pos is not False:  # else the tables stay in and are named as unexpected
                state, rel_state = split_rel_pos(state)
            load_trunk_state(self.vit, state, str(checkpoint))
        self.rel_pos = bool(rel_state) if rel_pos == "auto" else bool(rel_pos)
        if self.rel_pos:
            self._add_rel_pos(rel_state, str(checkpoint) if checkpoint is not None else "")
        self.frozen = frozen
        if frozen:
            self.vit.requires_grad_(False)

    def _add_rel_pos(self, tables: dict[str, torch.Tensor], source: str) -> None:
        """Give every block's attention ``rel_pos_h`` / ``rel_pos_w``: from ``tables`` if any.

        A new table spans the block's attention extent: the window, or the grid at
        ``img_size`` for a global block. Tables from a checkpoint keep their length (resized to
        each extent at run time) but must exist for every block and have the head width.

        Raises:
            CheckpointError: tables missing for some blocks, or of the wrong width or rank.
        """
        head_dim = self.vit.embed_dim // self.vit.blocks[0].attn.num_heads
        grid = self.vit.img_size // self.vit.patch_size
        wanted = {
            f"blocks.{i}.attn.{name}" for i in range(len(self.vit.blocks)) for name in REL_POS_KEYS
        }
        problems = []
        if tables:
            missing = sorted(wanted - set(tables))
            unexpected = sorted(set(tables) - wanted)
            bad = sorted(
                f"{k}: given {tuple(v.shape)} vs (L, {head_dim})"
                for k, v in tables.items()
                if k in wanted and (v.ndim != 2 or v.shape[1] != head_dim)
            )
            for title, items in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", bad),
            ):
                if items:
                    problems.append(f"{title} ({len(items)}): {', '.join(items[:10])}")
        if problems:
            raise CheckpointError(
                f"{source}: relative position tables do not match the trunk; " + "; ".join(problems)
            )
        for i, blk in enumerate(self.vit.blocks):
            side = grid if i in self.global_blocks else self.window_size
            for name in REL_POS_KEYS:
                key = f"blocks.{i}.attn.{name}"
                value = tables[key].float() if tables else torch.zeros(2 * side - 1, head_dim)
                blk.attn.register_parameter(name, nn.Parameter(value.clone()))

    @property
    def embed_dim(self) -> int:
        """Channels of the output map."""
        return self.vit.embed_dim

    @property
    def patch_size(self) -> int:
        """Stride of the output map in pixels."""
        return self.vit.patch_size

    def init_weights(self) -> None:
        """MAE initialisation of the trunk when it was built without a checkpoint.

        mmengine's runners call ``init_weights`` on every module before training; a trunk
        loaded from a checkpoint is left exactly as loaded.
        """
        if not self.from_checkpoint:
            self.vit.init_weights()

    def train(self, mode: bool = True) -> EsamViTBackbone:
        """Set the training mode; a frozen trunk stays in eval mode (no stochastic depth)."""
        super().train(mode)
        if self.frozen:
            self.vit.eval()
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """Bx3xHxW normalised images (H, W multiples of the patch size) -> (BxCx(H/p)x(W/p),).

        Raises:
            InputSizeError: H or W is not a multiple of the patch size.
        """
        p = self.vit.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise InputSizeError(
                f"input of {x.shape[-2]}x{x.shape[-1]} px is not a multiple of the patch size {p}; "
                "pad it (mmdet/mmseg: data_preprocessor pad_size_divisor or size)"
            )
        tokens, (h, w) = self.vit.embed(x)  # B x N x C
        grid = tokens.view(tokens.shape[0], h, w, -1)
        for i, blk in enumerate(self.vit.blocks):
            if i in self.global_blocks:
                grid = global_block(blk, grid)
            else:
                grid = windowed_block(blk, grid, self.window_size)
        return (grid.permute(0, 3, 1, 2).contiguous(),)
