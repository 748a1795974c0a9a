"""Backbone weights for the classifier: esam checkpoints and timm ViT state dicts.

Two sources give a ViT trunk (``patch_embed.*``, ``pos_embed``, ``blocks.*``):

* esam files, read by :func:`esam.checkpoint.read_backbone`: ``esam pretrain export`` output
  or an EfficientSAM checkpoint (its image encoder's trunk, the neck left out);
* timm's ViT layout (DeiT, MAE, DINO weights): a bare state dict or ``{"model": ...}``, with
  ``cls_token``, ``norm.*``, ``fc_norm.*`` and ``head.*`` beside the trunk. The esam ViT uses
  the same block names as timm's (``blocks.i.norm1``, ``attn.qkv``, ``attn.proj``,
  ``mlp.fc1``/``fc2``), so :func:`timm_trunk_filter` only drops what is not trunk and strips
  wrapper prefixes (``module.``, ``backbone.``, ``encoder.``); the dropped keys are recorded.

Either way the position embedding is resized once, at load, from the checkpoint's grid (any
square grid, with or without a class-token slot) to the classifier's grid, keeping esam's
layout of one (unused) class-token slot first. Then :func:`esam.checkpoint.load_trunk_state`
loads strictly: a checkpoint whose keys or shapes do not fit (another width or depth, a timm
variant with layer scale) raises a :class:`~esam.checkpoint.CheckpointError` listing them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from esam.checkpoint import TRUNK_ROOTS, CheckpointError, load_trunk_state, read_checkpoint
from esam.modeling.vit import ViT, resize_pos_embed
from esam.utils.io import sha256_file

if TYPE_CHECKING:
    from esam.classify.model import ViTClassifier

#: Wrapper prefixes some checkpoints put before timm's names (DDP, DINO's teacher, MAE-style).
_PREFIXES = ("module.", "backbone.", "encoder.")
#: timm ViT keys that are not part of the trunk: dropped (recorded) when mapping.
TIMM_NON_TRUNK = ("cls_token", "norm", "fc_norm", "head", "dist_token", "head_dist")


def is_timm_layout(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict looks like a timm ViT (trunk names at the top, or a class token,
    final norm or head beside them) rather than an esam / EfficientSAM file."""
    keys = {_strip(k) for k in state}
    if any(k.startswith("image_encoder.") for k in keys):
        return False
    has_trunk = "patch_embed.proj.weight" in keys and "pos_embed" in keys
    return has_trunk and any(k.split(".", 1)[0] in TIMM_NON_TRUNK for k in keys)


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p) :], True
    return key


def timm_trunk_filter(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map a timm ViT state dict onto esam trunk names.

    Returns:
        (trunk state dict, dropped keys): keys under :data:`TIMM_NON_TRUNK` are dropped; any
        other key is kept under its stripped name, so unknown parts (``blocks.0.ls1.gamma``,
        ``norm_pre.*``) reach the strict load and are named there.
    """
    trunk: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        name = _strip(key)
        if name.split(".", 1)[0] in TIMM_NON_TRUNK:
            dropped.append(key)
        else:
            trunk[name] = value
    return trunk, sorted(dropped)


def resize_pos_embed_to(pos_embed: torch.Tensor, grid: int, source: str) -> torch.Tensor:
    """A checkpoint's position embedding in esam's layout at ``grid x grid``.

    Args:
        pos_embed: 1xSxC (or SxC): a square grid of S tokens, optionally after one class slot.
        grid: the classifier's token grid side.
        source: named in errors.

    Returns:
        1x(1 + grid^2)xC: the class slot (the checkpoint's, else zeros; read only by a
        class-token classifier) then the grid, resized bicubically when the checkpoint's grid
        differs.
    """
    pe = pos_embed if pos_embed.ndim == 3 else pos_embed[None]
    slots = int(pe.shape[1])
    has_cls = math.isqrt(slots) ** 2 != slots
    side = math.isqrt(slots - int(has_cls))
    if side * side != slots - int(has_cls):
        raise CheckpointError(
            f"{source}: pos_embed has {slots} tokens: neither a square grid nor one with a "
            "class-token slot"
        )
    grid_pe = resize_pos_embed(pe.float(), (grid, grid), has_cls)  # 1 x grid x grid x C
    flat = grid_pe.reshape(1, grid * grid, -1).to(pos_embed.dtype)
    cls_slot = pe[:, :1].to(flat.dtype) if has_cls else flat.new_zeros(1, 1, flat.shape[-1])
    return torch.cat([cls_slot, flat], dim=1)


def read_trunk(path: str | Path, fmt: str = "auto") -> tuple[dict[str, torch.Tensor], dict]:
    """The trunk weights of a backbone file and where they come from.

    Args:
        path: the checkpoint.
        fmt: ``auto``, ``esam`` or ``timm``.

    Returns:
        (trunk state dict in esam names, origin): ``origin`` holds ``path``, ``sha256``,
        ``format`` (``esam-backbone``, ``efficientsam``, ``timm``), and for timm files the
        ``dropped`` keys; esam exports add their ``source`` block.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is neither kind.
    """
    from esam.checkpoint import read_backbone

    if not Path(path).is_file():
        raise FileNotFoundError(
            f"backbone checkpoint not found: {path} (pass --backbone PATH: a file of esam "
            "pretrain export, an EfficientSAM checkpoint, or a timm ViT's weights)"
        )
    origin: dict[str, Any] = {"path": str(path), "sha256": sha256_file(path)}
    if fmt == "auto":
        state, _ = read_checkpoint(path)
        fmt = "timm" if is_timm_layout(state) else "esam"
    if fmt == "timm":
        state, info = read_checkpoint(path)
        trunk, dropped = timm_trunk_filter(state)
        if not trunk:
            raise CheckpointError(f"{path}: no ViT trunk keys (patch_embed, pos_embed, blocks)")
        origin.update(format="timm", dropped=dropped)
        if info.get("weights"):
            origin["weights"] = info["weights"]
        return trunk, origin
    trunk, arch, info = read_backbone(path)
    origin.update(
        format="esam-backbone" if info.get("backbone_of") == "backbone" else "efficientsam",
        arch=arch,
    )
    for key in ("source", "weights", "model_name"):
        if info.get(key):
            origin[key] = info[key]
    return trunk, origin


def load_backbone(vit: ViT, path: str | Path, fmt: str = "auto") -> dict[str, Any]:
    """Load a backbone file's trunk into ``vit`` (position embedding resized to its grid).

    Returns:
        The origin record of :func:`read_trunk`.

    Raises:
        CheckpointError: the trunk does not fit ``vit``; the message lists every missing,
            unexpected or mis-shaped key (e.g. a ViT-S file into a ViT-Ti classifier).
    """
    trunk, origin = read_trunk(path, fmt)
    if "pos_embed" in trunk:
        trunk = dict(trunk)
        trunk["pos_embed"] = resize_pos_embed_to(trunk["pos_embed"], vit.pretrain_grid, str(path))
    extra = sorted(k for k in trunk if k.split(".", 1)[0] not in TRUNK_ROOTS)
    if extra:
        origin["unexpected"] = extra
    load_trunk_state(vit, trunk, f"backbone {path}")
    return origin


def load_class_token(model: ViTClassifier, origin: dict[str, Any]) -> str:
    """Start a token-pooling classifier's class token and ``fc_norm`` from a timm backbone.

    timm's ViT reads its class token after the final ``norm``, so ``cls_token`` and ``norm.*``
    map onto ``model.cls_token`` and ``model.fc_norm``; they leave ``origin["dropped"]``.

    Args:
        model: a :class:`~esam.classify.model.ViTClassifier` with ``pool="token"``.
        origin: the record of :func:`load_backbone` (its ``path`` and ``format``).

    Returns:
        What started the class token, for the results (``"timm checkpoint: cls_token, norm"``,
        or ``"new: the backbone has no class token"``).

    Raises:
        CheckpointError: the checkpoint's class token or norm has another width.
    """
    if origin.get("format") != "timm":
        return "new: the backbone has no class token"
    state, _ = read_checkpoint(origin["path"])
    named = {_strip(k): (k, v) for k, v in state.items()}
    if model.cls_token is None:
        raise ValueError("load_class_token needs a classifier with pool='token'")
    width = int(model.cls_token.shape[-1])
    targets: dict[str, tuple[torch.Tensor, tuple[int, ...]]] = {
        "cls_token": (model.cls_token, (1, 1, width)),
        "norm.weight": (model.fc_norm.weight, (width,)),
        "norm.bias": (model.fc_norm.bias, (width,)),
    }
    loaded: list[str] = []
    for name, (param, shape) in targets.items():
        if name not in named:
            continue
        key, value = named[name]
        if tuple(value.shape) != shape:
            raise CheckpointError(
                f"backbone {origin['path']}: {key} has shape {tuple(value.shape)}, the "
                f"classifier needs {shape}"
            )
        with torch.no_grad():
            param.copy_(value.to(param.dtype))
        loaded.append(key)
    if not any(_strip(k) == "cls_token" for k in loaded):
        return "new: the backbone has no class token"
    origin["dropped"] = [k for k in origin.get("dropped", []) if k not in loaded]
    return "timm checkpoint: " + ", ".join(sorted({_strip(k).split(".")[0] for k in loaded}))
