"""SAMI: SAM-leveraged masked image pretraining (EfficientSAM, Xiong et al., CVPR 2024, Sec. 3.1).

MAE's recipe with SAM's image features as the reconstruction target. Per sample, 75 % of the
patch tokens are hidden at random; the ViT encoder runs on the visible tokens only; a
cross-attention decoder reconstructs the hidden ones; its outputs are merged with the visible
tokens' encoder outputs, put back in token order, normalised and mapped by a linear head to the
teacher's feature width; the loss is the mean squared error to the teacher's features of the
same view, on every token by default (the paper's loss averages over all N tokens).

Decoder (the paper fixes "queries from the masked tokens; keys and values from the unmasked
features of the encoder and the masked features" and, as MAE, 8 blocks of width 512; the rest
is chosen here):

* the encoder's visible outputs get a LayerNorm (the trunk has no final norm of its own: the
  EfficientSAM layout puts the neck there), a linear projection to the decoder width and the
  decoder's fixed 2D sine-cosine position embedding; they are the same in every block;
* queries are a learned mask token plus the position embedding of each masked token;
* each block: LayerNorm, multi-head cross-attention of the queries over
  ``[visible tokens, queries]`` (so masked tokens also see each other, as the paper's keys and
  values include the masked features), residual; LayerNorm, MLP (ratio 4), residual. A
  separate self-attention among the queries before the cross-attention is optional
  (``decoder_self_attn``, off: the cross-attention already covers the masked tokens);
* merged output: the projected visible tokens (as they enter the decoder) and the decoded
  masked tokens, in token order, then LayerNorm and a linear head.

The same code trains an MAE baseline: ``target="pixels"`` regresses each masked patch's
pixels (per-patch normalised by default), as MAE's ``norm_pix_loss``.

After pretraining only the encoder is kept: :meth:`SamiModel.encoder_state_dict` gives the
trunk's weights under EfficientSAM's image-encoder names, and :func:`esam.checkpoint.load_trunk_state` loads
them strictly into an :class:`~esam.modeling.image_encoder.ImageEncoderViT`, whose position
embedding (stored at 14x14 + one class slot) is resized to the 64x64 grid at run time.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from esam.errors import InputError
from esam.modeling.attention import attention
from esam.modeling.vit import Attention, Mlp, ViT, sincos_pos_embed_2d
from esam.sami.masking import Masking, random_masking

TargetKind = Literal["teacher", "pixels"]
LossOn = Literal["all", "masked"]


class CrossAttention(nn.Module):
    """Multi-head attention of queries BxMxD over keys/values BxLxD -> BxMxD."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise InputError(f"decoder width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, m, d = queries.shape
        n_ctx, h = context.shape[1], self.num_heads
        q = self.q(queries).reshape(b, m, h, d // h).transpose(1, 2)  # B x h x M x d/h
        kv = self.kv(context).reshape(b, n_ctx, 2, h, d // h).permute(2, 0, 3, 1, 4)
        out = attention(q, kv[0], kv[1])  # B x h x M x d/h
        return self.proj(out.transpose(1, 2).reshape(b, m, d))


class DecoderBlock(nn.Module):
    """One SAMI decoder block: queries BxMxD attend to ``[visible BxKxD, queries]``.

    Optional self-attention among the queries, then cross-attention, then an MLP; pre-norm
    residual branches throughout (LayerNorm eps 1e-6).
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, self_attn: bool = False
    ) -> None:
        super().__init__()
        self.self_attn: Attention | None = Attention(dim, num_heads) if self_attn else None
        self.norm_self = nn.LayerNorm(dim, eps=1e-6) if self_attn else None
        self.norm_q = nn.LayerNorm(dim, eps=1e-6)
        self.norm_kv = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, queries: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """queries BxMxD, visible BxKxD -> updated queries BxMxD."""
        if self.self_attn is not None and self.norm_self is not None:
            queries = queries + self.self_attn(self.norm_self(queries))
        context = self.norm_kv(torch.cat([visible, queries], dim=1))  # B x (K+M) x D
        queries = queries + self.cross_attn(self.norm_q(queries), context)
        return queries + self.mlp(self.norm_mlp(queries))


class CrossAttentionDecoder(nn.Module):
    """Reconstructs the masked tokens from the encoder's visible outputs.

    Args:
        encoder_dim: width C of the encoder's tokens.
        dim: decoder width D.
        depth: decoder blocks (0 allowed: the masked tokens are then the mask token plus their
            position embedding).
        num_heads: attention heads.
        grid: default token grid (h, w); the position table of another grid is computed on
            the fly.
        self_attn: add self-attention among the queries in every block.
    """

    def __init__(
        self,
        encoder_dim: int,
        dim: int,
        depth: int,
        num_heads: int,
        grid: tuple[int, int],
        self_attn: bool = False,
    ) -> None:
        super().__init__()
        if depth < 0:
            raise InputError(f"decoder depth must be >= 0, got {depth}")
        self.dim = dim
        self.grid = grid
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_pos_embed_2d(dim, grid)[None], persistent=False)
        self.blocks = nn.ModuleList(
            DecoderBlock(dim, num_heads, self_attn=self_attn) for _ in range(depth)
        )

    pos_embed: torch.Tensor

    def position_table(self, grid: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        """1xNxD fixed position embedding of ``grid`` (h, w), on ``like``'s device and dtype."""
        table = self.pos_embed if grid == self.grid else sincos_pos_embed_2d(self.dim, grid)[None]
        return table.to(device=like.device, dtype=like.dtype)

    def forward(
        self, latent: torch.Tensor, ids_restore: torch.Tensor, grid: tuple[int, int]
    ) -> torch.Tensor:
        """Merge visible and decoded masked tokens back into token order.

        Args:
            latent: BxKxC encoder outputs of the visible tokens, in ``ids_keep`` order.
            ids_restore: BxN from :func:`~esam.sami.masking.random_masking`.
            grid: (h, w) with h*w = N.

        Returns:
            BxNxD decoder-width tokens in row-major grid order.
        """
        b, k = latent.shape[:2]
        n = ids_restore.shape[1]
        ids_shuffle = torch.argsort(ids_restore, dim=1)  # B x N: visible first, then masked
        x = self.embed(latent)
        pos = self.position_table(grid, x).expand(b, -1, -1)  # B x N x D

        def at(ids: torch.Tensor) -> torch.Tensor:
            return torch.gather(pos, 1, ids.unsqueeze(-1).expand(-1, -1, self.dim))

        visible = x + at(ids_shuffle[:, :k])  # B x K x D
        queries = self.mask_token.to(x.dtype) + at(ids_shuffle[:, k:])  # B x M x D
        if n > k:
            for blk in self.blocks:
                queries = blk(queries, visible)
        merged = torch.cat([visible, queries], dim=1)  # shuffled order
        return torch.gather(merged, 1, ids_restore.unsqueeze(-1).expand(-1, -1, self.dim))


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Bx3xHxW -> BxNx(p*p*3) pixel vectors per patch, row-major patches, (py, px, c) inside."""
    b, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise InputError(f"image side {h}x{w} is not a multiple of the patch size {p}")
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def normalize_tokens(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-token standardisation over the last dimension: BxNxD -> BxNxD (MAE's norm_pix)."""
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True)
    return (x - mean) / (var + eps).sqrt()


class SamiModel(nn.Module):
    """Masked-image pretraining of a ViT trunk against a teacher's features (or pixels).

    Args:
        encoder: the student trunk (:class:`~esam.modeling.vit.ViT`), e.g. from
            :func:`build_sami_encoder`; built at the pretraining size (224 px).
        teacher_dim: width D of the teacher's features (256 for SAM's neck output, 1280 for
            ViT-H's trunk). Required for ``target="teacher"``; for pixels it must be None or
            ``patch_size**2 * 3``.
        decoder_depth: decoder blocks (paper: 8).
        decoder_dim: decoder width (paper: 512).
        decoder_heads: decoder attention heads (MAE: 16).
        mask_ratio: fraction of tokens hidden from the encoder (paper: 0.75).
        loss_on: ``"all"`` tokens (the paper's loss; default for the teacher target) or
            ``"masked"`` only (default for pixels, as MAE).
        norm_target: standardise each target token over its features before the loss
            (default: off for the teacher, on for pixels, MAE's ``norm_pix_loss``).
        target: ``"teacher"`` (SAMI) or ``"pixels"`` (the MAE baseline).
        decoder_self_attn: self-attention among the decoder's queries in every block.
        freeze_pos_embed: keep the encoder's position embedding fixed (MAE trains with its
            sine-cosine table frozen); its ``requires_grad`` is set accordingly.

    Shapes: images Bx3xHxW (normalised, H and W multiples of the patch size; the token grid
    is h x w, N = h*w); teacher targets BxNxD; predictions BxNxD; mask BxN bool.
    """

    def __init__(
        self,
        encoder: ViT,
        teacher_dim: int | None = None,
        decoder_depth: int = 8,
        decoder_dim: int = 512,
        decoder_heads: int = 16,
        mask_ratio: float = 0.75,
        loss_on: LossOn | None = None,
        norm_target: bool | None = None,
        target: TargetKind = "teacher",
        decoder_self_attn: bool = False,
        freeze_pos_embed: bool = True,
    ) -> None:
        super().__init__()
        if target not in ("teacher", "pixels"):
            raise InputError(f"target must be 'teacher' or 'pixels', got {target!r}")
        pixel_dim = encoder.patch_size**2 * encoder.patch_embed.proj.in_channels
        if target == "teacher":
            if teacher_dim is None or teacher_dim < 1:
                raise InputError(
                    f"target='teacher' needs teacher_dim (the teacher's feature width), got {teacher_dim}"
                )
            out_dim = teacher_dim
        else:
            if teacher_dim is not None and teacher_dim != pixel_dim:
                raise InputError(
                    f"target='pixels' predicts {pixel_dim} values per patch; teacher_dim must be None or {pixel_dim}, got {teacher_dim}"
                )
            out_dim = pixel_dim
        loss_on = loss_on or ("all" if target == "teacher" else "masked")
        if loss_on not in ("all", "masked"):
            raise InputError(f"loss_on must be 'all' or 'masked', got {loss_on!r}")
        if loss_on == "masked" and mask_ratio == 0.0:
            raise InputError("loss_on='masked' needs mask_ratio > 0 (no token would be scored)")
        grid = encoder.grid_size
        self.encoder = encoder
        self.target = target
        self.target_dim = out_dim
        self.mask_ratio = mask_ratio
        self.loss_on: LossOn = loss_on
        self.norm_target = target == "pixels" if norm_target is None else norm_target
        self.encoder_norm = nn.LayerNorm(encoder.embed_dim, eps=1e-6)
        self.decoder = CrossAttentionDecoder(
            encoder.embed_dim,
            decoder_dim,
            decoder_depth,
            decoder_heads,
            (grid, grid),
            self_attn=decoder_self_attn,
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.head = nn.Linear(decoder_dim, out_dim)
        encoder.pos_embed.requires_grad_(not freeze_pos_embed)
        self.init_decoder_weights()

    @torch.no_grad()
    def init_decoder_weights(self) -> None:
        """MAE's initialisation of everything but the encoder.

        Linear layers Xavier-uniform with zero bias, LayerNorm 1/0, mask token normal (std
        0.02). The encoder is left alone: initialise it with ``encoder.init_weights()`` (done by
        :func:`build_sami_encoder`) or load it from a checkpoint.
        """
        for name, m in self.named_modules():
            if name == "encoder" or name.startswith("encoder."):
                continue
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.decoder.mask_token, std=0.02)

    @property
    def patch_size(self) -> int:
        return self.encoder.patch_size

    def grid_of(self, images: torch.Tensor) -> tuple[int, int]:
        """Token grid (h, w) of Bx3xHxW images; a named error if they do not fit the model."""
        if images.ndim != 4 or images.shape[1] != self.encoder.patch_embed.proj.in_channels:
            raise InputError(f"images must have shape Bx3xHxW, got {tuple(images.shape)}")
        h, w = images.shape[2:]
        p = self.patch_size
        if h % p or w % p:
            raise InputError(f"image side {h}x{w} is not a multiple of the patch size {p}")
        return h // p, w // p

    def forward_encoder(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Masking]:
        """Mask at random and encode the visible tokens only.

        Args:
            images: Bx3xHxW normalised images.
            generator: source of the masks (None: torch's global RNG).
            noise: BxN uniform noise that decides the masks instead (see
                :func:`~esam.sami.masking.random_masking`).

        Returns:
            latent BxKxC (normalised encoder outputs of the visible tokens, ``ids_keep``
            order) and the :class:`~esam.sami.masking.Masking` (ids_keep BxK, ids_restore BxN,
            mask BxN bool).
        """
        h, w = self.grid_of(images)
        masking = random_masking(
            images.shape[0],
            h * w,
            self.mask_ratio,
            generator=generator,
            device=images.device,
            noise=noise,
        )
        latent = self.encoder.forward_masked(images, masking.ids_keep)
        return self.encoder_norm(latent), masking

    def forward_decoder(
        self, latent: torch.Tensor, ids_restore: torch.Tensor, grid: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Reconstruct the masked tokens and predict targets for every token.

        Args:
            latent: BxKxC from :meth:`forward_encoder`.
            ids_restore: BxN from the same masking.
            grid: (h, w) token grid, h*w = N (default: square).

        Returns:
            BxNxD predictions in row-major token order (D = ``target_dim``).
        """
        n = ids_restore.shape[1]
        if grid is None:
            side = round(n**0.5)
            if side * side != n:
                raise InputError(f"{n} tokens do not form a square grid; pass grid=(h, w)")
            grid = (side, side)
        merged = self.decoder(latent, ids_restore, grid)
        return self.head(self.decoder_norm(merged))

    def prepare_targets(
        self, images: torch.Tensor, targets: torch.Tensor | None, like: torch.Tensor
    ) -> torch.Tensor:
        """BxNxD regression targets: the teacher's features or the patches' pixels.

        Args:
            images: Bx3xHxW normalised images (used for ``target="pixels"``).
            targets: BxNxD teacher features (``target="teacher"``; any float dtype, e.g. the
                float16 of a feature cache), or None for pixels.
            like: the predictions BxNxD, whose shape and device the targets take; they are
                float32 whatever the predictions' dtype (the loss is computed in float32).
        """
        if self.target == "pixels":
            if targets is not None:
                raise InputError("target='pixels' computes its targets; do not pass targets")
            tgt = patchify(images, self.patch_size)
        else:
            if targets is None:
                raise InputError(
                    "target='teacher' needs targets: the teacher's BxNxD features of the same view"
                )
            tgt = targets
        if tuple(tgt.shape) != tuple(like.shape):
            raise InputError(
                f"targets must have shape {tuple(like.shape)} (B x tokens x {self.target_dim}), got {tuple(tgt.shape)}"
            )
        tgt = tgt.to(device=like.device, dtype=torch.float32)
        return normalize_tokens(tgt) if self.norm_target else tgt

    def forward_loss(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Mean squared error: per token over D, then over all tokens or the masked ones.

        Args:
            pred: BxNxD predictions.
            target: BxNxD prepared targets (see :meth:`prepare_targets`).
            mask: BxN bool, True where masked.

        Returns:
            scalar float32 loss (bf16/fp16 predictions are compared in float32).
        """
        per_token = (pred.float() - target.float()).pow(2).mean(dim=-1)  # B x N
        if self.loss_on == "all":
            return per_token.mean()
        weights = mask.to(per_token.dtype)
        return (per_token * weights).sum() / weights.sum()

    def forward(
        self,
        images: torch.Tensor,
        targets: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One pretraining step's forward pass.

        Args:
            images: Bx3xHxW normalised views.
            targets: BxNxD teacher features of the same views (None for ``target="pixels"``).
            generator: source of the random masks.
            noise: BxN noise deciding the masks instead of ``generator``.

        Returns:
            (loss scalar, predictions BxNxD, mask BxN bool with True = masked).
        """
        latent, masking = self.forward_encoder(images, generator, noise)
        pred = self.forward_decoder(latent, masking.ids_restore, self.grid_of(images))
        loss = self.forward_loss(pred, self.prepare_targets(images, targets, pred), masking.mask)
        return loss, pred, masking.mask

    # -- optimiser hooks -------------------------------------------------------------------

    @property
    def num_layer_ids(self) -> int:
        """Distinct :meth:`layer_id` values: the encoder's (``depth + 2``)."""
        return self.encoder.num_layer_ids

    def layer_id(self, name: str) -> int:
        """Layer index for layer-wise lr decay of a parameter name relative to this model.

        ``encoder.*`` delegates to the encoder (0 embeddings, ``i + 1`` block i); everything
        SAMI adds (encoder norm, decoder, head) is after the trunk: ``num_layer_ids - 1``.
        """
        if name.startswith("encoder."):
            return self.encoder.layer_id(name[len("encoder.") :])
        return self.num_layer_ids - 1

    def no_weight_decay(self) -> set[str]:
        """Parameter names (relative to this model) exempt from weight decay.

        The encoder's (prefixed ``encoder.``) and the decoder's mask token; 1-D parameters
        (biases, norms) are left to the optimiser's ``ndim <= 1`` rule.
        """
        return {f"encoder.{n}" for n in self.encoder.no_weight_decay()} | {"decoder.mask_token"}

    # -- export ----------------------------------------------------------------------------

    def encoder_state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """The trained trunk's weights (detached CPU copies), keys prefixed with ``prefix``.

        With ``prefix=""`` the keys are those of :class:`~esam.modeling.vit.ViT` and of the
        trunk part of EfficientSAM's image encoder (load with :func:`esam.checkpoint.load_trunk_state`); with
        ``prefix="image_encoder."`` they are the names in an EfficientSAM checkpoint.
        """
        return {
            prefix + k: v.detach().to("cpu", copy=True).contiguous()
            for k, v in self.encoder.state_dict().items()
        }


def build_sami_encoder(
    model_name: str = "efficientsam_vitt",
    img_size: int = 224,
    drop_path_rate: float = 0.0,
    pos_embed_init: Literal["sincos", "trunc_normal"] = "sincos",
    init: bool = True,
    **overrides: Any,
) -> ViT:
    """A student trunk with the architecture of a registered EfficientSAM's image encoder.

    Sizes come from :data:`esam.build.MODEL_CONFIGS` (Ti 192/3, S 384/6, B 768/12, depth 12,
    patch 16, position embedding stored at 14x14 + class slot), so the trained trunk loads
    into ``esam.build_model(model_name).image_encoder`` with
    :func:`esam.checkpoint.load_trunk_state`.

    Args:
        model_name: an EfficientSAM registry name.
        img_size: pretraining input side (224 -> 14x14 tokens).
        drop_path_rate: stochastic depth of the last block (0 in SAMI pretraining).
        pos_embed_init: see :meth:`~esam.modeling.vit.ViT.init_weights`.
        init: apply MAE's initialisation (else PyTorch defaults, for loading weights).
        overrides: :class:`~esam.build.EfficientSamConfig` fields to change (e.g.
            ``encoder_depth=4`` for a small CPU model).
    """
    import dataclasses

    from esam.build import MODEL_CONFIGS

    if model_name not in MODEL_CONFIGS:
        raise InputError(f"unknown model {model_name!r}; choose from {sorted(MODEL_CONFIGS)}")
    cfg = dataclasses.replace(MODEL_CONFIGS[model_name], **overrides)
    vit = ViT(
        img_size=img_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.encoder_embed_dim,
        depth=cfg.encoder_depth,
        num_heads=cfg.encoder_num_heads,
        mlp_ratio=cfg.mlp_ratio,
        pretrain_img_size=cfg.pretrain_img_size,
        drop_path_rate=drop_path_rate,
    )
    if init:
        vit.init_weights(pos_embed=pos_embed_init)
    return vit
