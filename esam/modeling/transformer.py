"""EfficientSAM two-way transformer (prompt tokens <-> image tokens).

Differs from SAM's: GELU in the MLP, and the self-attention keeps its residual in every
layer (including the first) with the token position encoding added *into* the residual stream
from the second layer on. Both are reproduced exactly so that official checkpoints give the
official outputs.

Image-side tensors may have batch 1 while the token side has batch Q (one image, Q prompts):
the image embedding then stays shared until the first image-to-token attention makes the keys
prompt-specific, which saves the per-prompt copy and the repeated projections of the official
implementation without changing a single operation's result.
"""

from __future__ import annotations

from torch import Tensor, nn

from esam.modeling.attention import attention
from esam.modeling.common import MLPBlock


class TwoWayAttention(nn.Module):
    """Multi-head attention whose projections may downsample the width.

    Args:
        embedding_dim: input/output width C.
        num_heads: heads; must divide ``embedding_dim // downsample_rate``.
        downsample_rate: internal width is ``embedding_dim // downsample_rate``.
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide {self.internal_dim}")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)
        self.fast_attention = True

    def _heads(self, x: Tensor, batch: int) -> Tensor:
        b, n, c = x.shape
        x = x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)
        return x.expand(batch, -1, -1, -1) if b != batch else x

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q: BqxNqxC, k/v: BkxNkxC with Bq, Bk equal or one of them 1 -> BxNqxC."""
        q, k, v = self.q_proj(q), self.k_proj(k), self.v_proj(v)
        batch = max(q.shape[0], k.shape[0])
        out = attention(
            self._heads(q, batch), self._heads(k, batch), self._heads(v, batch), self.fast_attention
        )
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


class TwoWayAttentionBlock(nn.Module):
    """Self-attention on tokens, token->image cross-attention, MLP, image->token cross-attention."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: type[nn.Module] = nn.GELU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = TwoWayAttention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = TwoWayAttention(
            embedding_dim, num_heads, attention_downsample_rate
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, embedding_dim, 1, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = TwoWayAttention(
            embedding_dim, num_heads, attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor
    ) -> tuple[Tensor, Tensor]:
        """queries/query_pe: QxNtxC; keys: (Q or 1)xNixC; key_pe: 1xNixC -> (queries, keys)."""
        if not self.skip_first_layer_pe:
            queries = queries + query_pe
        queries = self.norm1(queries + self.self_attn(queries, queries, queries))

        q = queries + query_pe
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))

        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        k = keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks and a final token->image attention.

    Args:
        depth: number of blocks (2).
        embedding_dim: width C (256).
        num_heads: heads (8).
        mlp_dim: token MLP hidden width (2048).
        activation: MLP activation (GELU).
        attention_downsample_rate: cross-attention width reduction (2).
    """

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: type[nn.Module] = nn.GELU,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim,
                num_heads,
                mlp_dim,
                activation,
                attention_downsample_rate,
                skip_first_layer_pe=i == 0,
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = TwoWayAttention(
            embedding_dim, num_heads, attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self, image_embedding: Tensor, image_pe: Tensor, point_embedding: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Run the transformer.

        Args:
            image_embedding: (Q or 1)xCxhxw image embedding (batch 1 is shared by all Q prompts).
            image_pe: 1xCxhxw position encoding of the image grid.
            point_embedding: QxNtxC output + prompt tokens.

        Returns:
            tokens QxNtxC and image tokens Qx(h*w)xC.
        """
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        q = queries + point_embedding
        k = keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        if keys.shape[0] != queries.shape[0]:  # depth 0: keys never became prompt-specific
            keys = keys.expand(queries.shape[0], -1, -1)
        return queries, keys
