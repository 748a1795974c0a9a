"""The model a fine-tuning run trains: built from the config, initialised, saved with its
architecture.

Initialisation, in order: random weights (EfficientSAM's default init), then the whole model
from ``model.init_checkpoint`` (an official or esam EfficientSAM file; strict), then the image
encoder's trunk from ``model.backbone`` (a SAMI export or an EfficientSAM checkpoint's encoder;
strict on the trunk, the neck kept). The saved ``model.pt`` is an esam checkpoint that stores
its architecture, so ``esam.build_model("efficientsam", "model.pt")`` (and every command's
``--model efficientsam --checkpoint model.pt``) rebuilds exactly this model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from esam.build import GENERIC_NAME, MODEL_CONFIGS, build_from_config, load_backbone_into
from esam.checkpoint import CheckpointError, load_state, read_checkpoint, save_checkpoint
from esam.errors import InputError
from esam.finetune.config import FREEZABLE_PARTS, FinetuneConfig
from esam.modeling import EfficientSam


def model_config(cfg: FinetuneConfig) -> Any:
    """The :class:`esam.EfficientSamConfig` of the run's model."""
    m = cfg.model
    overrides: dict[str, Any] = {"img_size": m.img_size, **m.overrides}
    for key in ("encoder_depth", "encoder_embed_dim", "encoder_num_heads"):
        value = getattr(m, key)
        if value is not None:
            overrides[key] = value
    try:
        return dataclasses.replace(MODEL_CONFIGS[m.arch], **overrides)
    except TypeError as e:  # an unknown field name
        raise InputError(f"model.overrides: {e}") from e


def weights_note(cfg: FinetuneConfig) -> str:
    """What the run's weights were trained on, as recorded with them and in its results."""
    return f"finetuned on {cfg.data.note}" if cfg.data.note else "finetuned"


def build_architecture(cfg: FinetuneConfig) -> EfficientSam:
    """The run's model with PyTorch's default weights, named for the generic builder."""
    model = build_from_config(model_config(cfg))
    model.model_name = GENERIC_NAME
    return model


def build_finetune_model(cfg: FinetuneConfig) -> tuple[EfficientSam, dict[str, Any]]:
    """The model with its initial weights, and a record of where they came from.

    Raises:
        FileNotFoundError: a named checkpoint does not exist.
        CheckpointError: a checkpoint does not fit the architecture (every key named).
    """
    model = build_architecture(cfg)
    # a trunk trained from scratch starts as MAE's does: Xavier weights and the 2D sine-cosine
    # position table (PyTorch's defaults leave the position embedding at zero, so the image
    # embedding would carry no position until one is learned)
    model.image_encoder.init_weights()
    origin: dict[str, Any] = {"init": "random (ViT trunk: MAE initialisation)"}
    if cfg.model.init_checkpoint is not None:
        state, info = read_checkpoint(cfg.model.init_checkpoint)
        stored = info.get("config")
        try:
            # an esam file may hold a reduced model: it must be this run's architecture
            load_state(
                model, state, info if isinstance(stored, dict) else {}, cfg.model.init_checkpoint
            )
        except CheckpointError as e:
            if not cfg.model.overrides:
                raise
            raise CheckpointError(
                f"{e}\n  (the config changes the architecture with model.overrides="
                f"{cfg.model.overrides}; pass model.overrides={{}} to start from a full-size "
                "checkpoint)"
            ) from e
        origin = {"init": "checkpoint", "init_checkpoint": cfg.model.init_checkpoint}
    if cfg.model.backbone is not None:
        load_backbone_into(model.image_encoder, cfg.model.backbone)
        origin["backbone"] = cfg.model.backbone
    return model, origin


def freeze_parts(model: EfficientSam, parts: list[str]) -> list[str]:
    """Stop the gradient of the named parts (:data:`~esam.finetune.config.FREEZABLE_PARTS`);
    returns the names of the frozen parameters.

    Raises:
        InputError: a name that is not one of those parts.
    """
    unknown = sorted(set(parts) - set(FREEZABLE_PARTS))
    if unknown:
        raise InputError(f"cannot freeze {unknown}: the parts are {list(FREEZABLE_PARTS)}")
    frozen: list[str] = []
    for part in parts:
        module = getattr(model, part)
        module.requires_grad_(False)
        frozen.extend(f"{part}.{name}" for name, _ in module.named_parameters())
    return frozen


def save_finetuned(model: EfficientSam, path: str | Path, note: str | None = None) -> Path:
    """Write ``model`` as an esam checkpoint that stores its architecture."""
    return save_checkpoint(
        model, path, GENERIC_NAME, model.config.to_dict(), weights=note or "finetuned"
    )
