"""The classifier: an esam ViT trunk, a pooled token, a LayerNorm and a linear head.

As MAE's fine-tuning model with ``global_pool`` (``pool="avg"``, the default): the tokens of
the last block are averaged, normalised (``fc_norm``, LayerNorm eps 1e-6) and classified. With
``pool="token"`` (DeiT's and DINO's head) a learned class token, at the position embedding's
class slot, runs through the blocks with the patch tokens and its output is normalised and
classified; it starts from a timm checkpoint's ``cls_token`` where the backbone has one. The trunk's position embedding is
stored at the classifier's own grid (224 px: 14x14 plus esam's unused class slot), so a
backbone's embedding is resized once at load (:mod:`esam.classify.backbones`), never per step.

The model numbers its layers for layer-wise lr decay (``layer_id``, ``num_layer_ids``) and
lists its no-weight-decay parameters, as :func:`esam.train.param_groups.param_groups` expects.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from esam.checkpoint import CheckpointError
from esam.classify.config import ModelConfig
from esam.errors import InputError
from esam.modeling.vit import ViT
from esam.utils.io import write_bytes_atomic

#: Format tag of a classifier file written by a run.
CLASSIFIER_FORMAT = "esam-classifier"


#: Ways to pool the last block's tokens into one feature vector.
POOLS = ("avg", "token")


class ViTClassifier(nn.Module):
    """ViT trunk -> mean of the tokens (or the class token's output) -> LayerNorm -> linear head.

    Args:
        trunk: the ViT (input Bx3xHxW, H = W = its img_size).
        num_classes: outputs of the head.
        head_init_std: std of the head's truncated-normal initial weights (bias 0).
        pool: ``avg`` (global average pooling) or ``token`` (a learned class token).
    """

    cls_token: nn.Parameter | None

    def __init__(
        self, trunk: ViT, num_classes: int, head_init_std: float = 2e-5, pool: str = "avg"
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise InputError(f"a classifier needs at least one class, got {num_classes}")
        if pool not in POOLS:
            raise InputError(f"model.pool must be one of {', '.join(POOLS)}, got {pool!r}")
        self.trunk = trunk
        self.num_classes = num_classes
        self.pool = pool
        self.cls_token = None
        if pool == "token":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, trunk.embed_dim))
            nn.init.normal_(self.cls_token, std=0.02)
        self.fc_norm = nn.LayerNorm(trunk.embed_dim, eps=1e-6)
        self.head = nn.Linear(trunk.embed_dim, num_classes)
        nn.init.trunc_normal_(
            self.head.weight, std=head_init_std, a=-2 * head_init_std, b=2 * head_init_std
        )
        nn.init.zeros_(self.head.bias)

    @property
    def num_heads(self) -> int:
        """Attention heads of the trunk's blocks."""
        block: Any = self.trunk.blocks[0] if self.trunk.depth else None
        return int(block.attn.num_heads) if block is not None else 1

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Bx3xHxW normalised images -> BxC pooled, normalised features (the head's input)."""
        tokens, _ = self.trunk.embed(x)  # B x N x C
        if self.cls_token is None:
            return self.fc_norm(self.trunk.forward_tokens(tokens).mean(dim=1))
        cls: torch.Tensor = self.cls_token
        if self.trunk.pos_embed_cls_slot:
            cls = cls + self.trunk.pos_embed[:, :1]
        tokens = torch.cat([cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return self.fc_norm(self.trunk.forward_tokens(tokens)[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Bx3xHxW -> BxK logits."""
        return self.head(self.features(x))

    def no_weight_decay(self) -> set[str]:
        """The trunk's position embedding and the class token (1-D parameters are exempt anyway)."""
        return {f"trunk.{n}" for n in self.trunk.no_weight_decay()} | {"cls_token"}

    @property
    def num_layer_ids(self) -> int:
        """Embeddings (0), blocks (1..depth), norm and head (depth + 1)."""
        return self.trunk.num_layer_ids

    def layer_id(self, name: str) -> int:
        """Layer of a parameter name for layer-wise lr decay."""
        if name.startswith("trunk."):
            return self.trunk.layer_id(name[len("trunk.") :])
        if name == "cls_token":
            return 0
        return self.trunk.depth + 1


def build_trunk(cfg: ModelConfig, drop_path: float | None = None) -> ViT:
    """The config's ViT with MAE's initialisation (sine-cosine position table at its grid)."""
    dim, depth, heads = cfg.dims()
    if dim % heads:
        raise InputError(f"model: width {dim} is not divisible by {heads} heads")
    vit = ViT(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        pretrain_img_size=cfg.img_size,
        pos_embed_cls_slot=True,
        drop_path_rate=cfg.drop_path if drop_path is None else drop_path,
    )
    vit.init_weights()
    return vit


def build_classifier(
    cfg: ModelConfig, num_classes: int, drop_path: float | None = None
) -> tuple[ViTClassifier, dict[str, Any]]:
    """The classifier with its initial trunk weights and a record of where they came from.

    Random weights (MAE initialisation), then ``cfg.backbone`` when given; with token pooling,
    a timm backbone's ``cls_token`` and final ``norm`` start the class token and ``fc_norm``
    (its head applies that norm before reading the class token).

    Raises:
        FileNotFoundError: the backbone file does not exist.
        CheckpointError: the backbone does not fit (every key named).
    """
    from esam.classify.backbones import load_backbone, load_class_token

    trunk = build_trunk(cfg, drop_path)
    origin: dict[str, Any] = {"init": "random (MAE initialisation)"}
    if cfg.backbone is not None:
        origin = {"init": "backbone", **load_backbone(trunk, cfg.backbone, cfg.backbone_format)}
    model = ViTClassifier(trunk, num_classes, cfg.head_init_std, cfg.pool)
    if cfg.backbone is not None and model.cls_token is not None:
        origin["class_token"] = load_class_token(model, origin)
    return model, origin


def save_classifier(
    model: ViTClassifier,
    path: str | Path,
    cfg: ModelConfig,
    classes: list[str],
    meta: dict[str, Any],
) -> Path:
    """Write the classifier with its architecture and class names, atomically."""
    buf = io.BytesIO()
    torch.save(
        {
            "format": CLASSIFIER_FORMAT,
            "arch": {
                "embed_dim": model.trunk.embed_dim,
                "depth": model.trunk.depth,
                "num_heads": model.num_heads,
                "patch_size": model.trunk.patch_size,
                "img_size": cfg.img_size,
                "pool": model.pool,
            },
            "classes": list(classes),
            "meta": meta,
            "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        },
        buf,
    )
    return write_bytes_atomic(path, buf.getvalue())


def load_classifier(path: str | Path) -> tuple[ViTClassifier, list[str], dict[str, Any]]:
    """A classifier file of :func:`save_classifier`: (model, class names, meta).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a classifier file, or its weights do not fit its architecture.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"classifier checkpoint not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{p}: cannot be read ({e})") from e
    if not isinstance(obj, dict) or obj.get("format") != CLASSIFIER_FORMAT:
        raise CheckpointError(
            f"{p}: not a classifier file of esam eval imagenet (format {CLASSIFIER_FORMAT!r})"
        )
    arch = obj["arch"]
    mcfg = ModelConfig(
        embed_dim=int(arch["embed_dim"]),
        depth=int(arch["depth"]),
        num_heads=int(arch["num_heads"]),
        patch_size=int(arch["patch_size"]),
        img_size=int(arch["img_size"]),
        drop_path=0.0,
    )
    model = ViTClassifier(build_trunk(mcfg), len(obj["classes"]), pool=str(arch.get("pool", "avg")))
    try:
        model.load_state_dict(obj["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{p}: weights do not fit the stored architecture: {e}") from e
    return model, list(obj["classes"]), dict(obj.get("meta") or {})
