"""Model sizes and builders: the only place where EfficientSAM dimensions live.

``model_registry`` maps a name to a builder ``(checkpoint=None, **overrides) -> EfficientSam``;
:func:`build_model` is the usual entry point.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from esam.errors import InputError
from esam.modeling import (
    EfficientSam,
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    TwoWayTransformer,
)


@dataclass(frozen=True)
class EfficientSamConfig:
    """Architecture of an EfficientSAM model."""

    encoder_embed_dim: int
    """ViT token width (Ti 192, S 384, B 768)."""
    encoder_num_heads: int
    """ViT attention heads (Ti 3, S 6, B 12)."""
    encoder_depth: int = 12
    """Number of ViT blocks."""
    img_size: int = 1024
    """Side of the square encoder input; 1024 for the released models, smaller for tests."""
    patch_size: int = 16
    """ViT patch side in pixels."""
    pretrain_img_size: int = 224
    """Input side the position embedding is stored at (SAMI pretraining: 224 -> 14x14)."""
    mlp_ratio: float = 4.0
    """ViT MLP hidden width / token width."""
    neck_dim: int = 256
    """Channels of the image embedding after the neck."""
    decoder_max_num_input_points: int = 6
    """Prompt slots per query (a box takes two)."""
    decoder_depth: int = 2
    """Two-way transformer blocks."""
    decoder_num_heads: int = 8
    """Two-way transformer heads."""
    decoder_mlp_dim: int = 2048
    """Two-way transformer MLP width."""
    decoder_upscaling_dims: tuple[int, ...] = (64, 32)
    """Channels after each 2x upscaling step."""
    num_multimask_outputs: int = 3
    """Masks per prompt in multimask mode."""
    iou_head_depth: int = 2
    """Hidden layers of the IoU prediction MLP."""
    iou_head_hidden_dim: int = 256
    """Width of the IoU prediction MLP."""
    prompt_pe_scale: float = 1.0
    """Standard deviation of the random frequencies of the prompt and grid position encoding
    (SAM's ``scale``). Only a model trained from scratch is affected: the frequencies are
    stored with the weights, and a checkpoint brings its own."""

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise InputError(
                f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}"
            )
        if not self.prompt_pe_scale > 0:
            raise InputError(f"prompt_pe_scale must be positive, got {self.prompt_pe_scale}")
        if self.encoder_embed_dim % self.encoder_num_heads:
            raise InputError(
                f"encoder_embed_dim {self.encoder_embed_dim} must be divisible by encoder_num_heads {self.encoder_num_heads}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EfficientSamConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InputError(f"unknown EfficientSamConfig keys: {sorted(unknown)}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**d)


MODEL_CONFIGS: dict[str, EfficientSamConfig] = {
    "efficientsam_vitt": EfficientSamConfig(encoder_embed_dim=192, encoder_num_heads=3),
    "efficientsam_vits": EfficientSamConfig(encoder_embed_dim=384, encoder_num_heads=6),
    "efficientsam_vitb": EfficientSamConfig(encoder_embed_dim=768, encoder_num_heads=12),
}


def build_from_config(cfg: EfficientSamConfig) -> EfficientSam:
    """An untrained EfficientSAM with the architecture ``cfg``."""
    act: type[nn.Module] = nn.GELU
    image_encoder = ImageEncoderViT(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.encoder_embed_dim,
        depth=cfg.encoder_depth,
        num_heads=cfg.encoder_num_heads,
        mlp_ratio=cfg.mlp_ratio,
        pretrain_img_size=cfg.pretrain_img_size,
        neck_dim=cfg.neck_dim,
    )
    grid = image_encoder.grid_size
    model = EfficientSam(
        image_encoder=image_encoder,
        prompt_encoder=PromptEncoder(
            cfg.neck_dim, (grid, grid), (cfg.img_size, cfg.img_size), cfg.prompt_pe_scale
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=cfg.neck_dim,
            transformer=TwoWayTransformer(
                depth=cfg.decoder_depth,
                embedding_dim=cfg.neck_dim,
                num_heads=cfg.decoder_num_heads,
                mlp_dim=cfg.decoder_mlp_dim,
                activation=act,
            ),
            num_multimask_outputs=cfg.num_multimask_outputs,
            activation=act,
            iou_head_depth=cfg.iou_head_depth,
            iou_head_hidden_dim=cfg.iou_head_hidden_dim,
            upscaling_layer_dims=cfg.decoder_upscaling_dims,
        ),
        decoder_max_num_input_points=cfg.decoder_max_num_input_points,
    )
    model.config = cfg
    return model


def _build(name: str, checkpoint: str | Path | None = None, **overrides: Any) -> EfficientSam:
    cfg = dataclasses.replace(MODEL_CONFIGS[name], **overrides)
    state = info = None
    if checkpoint is not None:
        from esam.checkpoint import CheckpointError, read_checkpoint

        state, info = read_checkpoint(checkpoint)
        if info.get("model_name") and info["model_name"] != name:
            raise CheckpointError(
                f"{checkpoint}: checkpoint is for model {info['model_name']!r}, not {name!r}"
            )
        if isinstance(info.get("config"), dict):
            # esam checkpoints carry their architecture: build that one, unless the caller
            # asked for something else explicitly (then load_state names the differences).
            stored = EfficientSamConfig.from_dict(info["config"])
            cfg = dataclasses.replace(stored, **overrides)
    model = build_from_config(cfg)
    model.model_name = name
    if state is not None and info is not None:
        from esam.checkpoint import load_state

        load_state(model, state, info, str(checkpoint))
        model.weights_info = {k: v for k, v in info.items() if k != "config"}
    return model.eval()


def build_efficientsam_vitt(checkpoint: str | Path | None = None, **overrides: Any) -> EfficientSam:
    """EfficientSAM-Ti (ViT-Ti encoder, 192 dim, 3 heads)."""
    return _build("efficientsam_vitt", checkpoint, **overrides)


def build_efficientsam_vits(checkpoint: str | Path | None = None, **overrides: Any) -> EfficientSam:
    """EfficientSAM-S (ViT-S encoder, 384 dim, 6 heads)."""
    return _build("efficientsam_vits", checkpoint, **overrides)


def build_efficientsam_vitb(checkpoint: str | Path | None = None, **overrides: Any) -> EfficientSam:
    """EfficientSAM-B (ViT-B encoder, 768 dim, 12 heads)."""
    return _build("efficientsam_vitb", checkpoint, **overrides)


#: The registry name of "whatever architecture the esam checkpoint stores".
GENERIC_NAME = "efficientsam"


def build_efficientsam(checkpoint: str | Path | None = None, **overrides: Any) -> EfficientSam:
    """The EfficientSAM an esam checkpoint describes (its stored config), e.g. a fine-tuned one.

    Without a checkpoint: the EfficientSAM-Ti architecture, untrained (for timing). Official
    files store no architecture: load them by their own name (``efficientsam_vitt`` ...).

    Raises:
        CheckpointError: the file stores no architecture.
    """
    if checkpoint is None:
        model = _build("efficientsam_vitt", None, **overrides)
        model.model_name = GENERIC_NAME
        return model
    from esam.checkpoint import CheckpointError, load_state, read_checkpoint

    state, info = read_checkpoint(checkpoint)
    if not isinstance(info.get("config"), dict):
        raise CheckpointError(
            f"{checkpoint}: the generic model name {GENERIC_NAME!r} needs an esam checkpoint that "
            "stores its architecture (esam finetune and esam.save_checkpoint write one); load an "
            "official file by its own name, e.g. efficientsam_vitt"
        )
    cfg = dataclasses.replace(EfficientSamConfig.from_dict(info["config"]), **overrides)
    model = build_from_config(cfg)
    model.model_name = GENERIC_NAME
    load_state(model, state, info, str(checkpoint))
    model.weights_info = {k: v for k, v in info.items() if k != "config"}
    return model.eval()


model_registry: dict[str, Callable[..., EfficientSam]] = {
    "efficientsam_vitt": build_efficientsam_vitt,
    "efficientsam_vits": build_efficientsam_vits,
    "efficientsam_vitb": build_efficientsam_vitb,
    GENERIC_NAME: build_efficientsam,
}


def build_model(name: str, checkpoint: str | Path | None = None, **overrides: Any) -> EfficientSam:
    """Build a registered model, loading ``checkpoint`` when given (else untrained weights).

    Args:
        name: a key of :data:`model_registry`.
        checkpoint: official ``.pt`` / ``.pt.zip``, esam ``.pt`` or ``.safetensors`` file.
        overrides: :class:`EfficientSamConfig` fields to change (e.g. ``img_size=256`` for tests).
    """
    if name not in model_registry:
        raise InputError(f"unknown model {name!r}; registered models: {sorted(model_registry)}")
    return model_registry[name](checkpoint, **overrides)


def build_backbone(
    checkpoint: str | Path, img_size: int = 224, drop_path_rate: float = 0.0
) -> nn.Module:
    """A ViT trunk with the weights of a backbone checkpoint, loaded strictly.

    Args:
        checkpoint: ``esam pretrain export`` output, or an EfficientSAM checkpoint (official or
            esam) whose image encoder's trunk is used.
        img_size: default input side (position embeddings are resized to any input's grid).
        drop_path_rate: stochastic depth for fine-tuning.

    Returns:
        :class:`~esam.modeling.vit.ViT` with ``backbone_info`` (the checkpoint's info).
    """
    from esam.checkpoint import load_state_dict_strict, read_backbone
    from esam.modeling.vit import ViT

    state, arch, info = read_backbone(checkpoint)
    vit = ViT(
        img_size=img_size,
        patch_size=int(arch["patch_size"]),
        embed_dim=int(arch["embed_dim"]),
        depth=int(arch["depth"]),
        num_heads=int(arch["num_heads"]),
        mlp_ratio=float(arch["mlp_ratio"]),
        pretrain_img_size=int(arch["pretrain_img_size"]),
        pos_embed_cls_slot=bool(arch["pos_embed_cls_slot"]),
        drop_path_rate=drop_path_rate,
    )
    load_state_dict_strict(vit, state, str(checkpoint))
    vit.backbone_info = info  # type: ignore[assignment]
    return vit


def load_backbone_into(module: nn.Module, backbone: str | Path) -> None:
    """Load a backbone checkpoint's trunk into a ViT or an EfficientSAM image encoder.

    Every trunk key must match (names and shapes), or one error lists what does not; an image
    encoder's neck is kept as it is. The position embedding stays at its stored pretraining
    grid and is resized to each input's grid at run time (e.g. 14x14 -> 64x64 at 1024 px).

    Raises:
        InputError: the backbone's width or number of attention heads differs from the
            module's.
        CheckpointError: the trunk does not fit the module.
    """
    from esam.checkpoint import load_trunk_state, read_backbone

    state, arch, _ = read_backbone(backbone)
    width = getattr(module, "embed_dim", None)
    if width is not None and int(arch["embed_dim"]) != int(width):
        raise InputError(
            f"{backbone}: a width-{arch['embed_dim']} backbone cannot load into a width-{width} "
            "encoder"
        )
    # the head count leaves every tensor's shape alone, so the strict load cannot catch it
    blocks = getattr(module, "blocks", None)
    heads = getattr(getattr(blocks[0], "attn", None), "num_heads", None) if blocks else None
    if heads is not None and "num_heads" in arch and int(arch["num_heads"]) != int(heads):
        raise InputError(
            f"{backbone}: a backbone trained with {arch['num_heads']} attention heads cannot "
            f"load into an encoder with {heads} (set the encoder's heads to "
            f"{arch['num_heads']}, e.g. model.encoder_num_heads={arch['num_heads']})"
        )
    load_trunk_state(module, state, str(backbone))
