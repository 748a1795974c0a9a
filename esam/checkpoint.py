"""Reading and writing model weights.

Supported inputs:

* official EfficientSAM files, ``torch.save({"model": state_dict})`` (``efficient_sam_vitt.pt``),
  and the zip archive the S model is published as (``efficient_sam_vits.pt.zip``, read in place);
* esam checkpoints: ``{"format": "esam", "model_name", "config", "model": state_dict}``
  (``.pt``), or the same in a ``.safetensors`` file with name and config in its metadata;
* a bare state dict (``.pt`` or ``.safetensors``).

Every ``torch.load`` uses ``weights_only=True`` and ``map_location="cpu"``. Loading is strict:
missing, unexpected or shape-mismatched keys raise one :class:`CheckpointError` listing them
all, and the model is left untouched. Nothing is ever downloaded.

Stand-in weights (:mod:`esam.standin`) are recognised whatever the file's layout, and the info
:func:`read_checkpoint` returns then says so (``weights="standin (seed N)"``), so results
computed with them are flagged as not meaningful.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from esam.errors import InputError
from esam.standin import identify_standin
from esam.utils.io import write_bytes_atomic

OFFICIAL_WEIGHTS_HINT = (
    "Official EfficientSAM weights (efficient_sam_vitt.pt, efficient_sam_vits.pt.zip) are published "
    "in the weights/ folder of https://github.com/yformer/EfficientSAM; download them yourself and "
    "pass the file path (e.g. --checkpoint weights/efficient_sam_vitt.pt)."
)
ESAM_FORMAT = "esam"
#: Format tag of a backbone checkpoint: a ViT trunk with its architecture (``arch``).
BACKBONE_FORMAT = "esam-backbone"
#: Fields of a backbone's ``arch`` block (the :class:`~esam.modeling.vit.ViT` arguments).
BACKBONE_ARCH_KEYS = (
    "embed_dim",
    "depth",
    "num_heads",
    "patch_size",
    "mlp_ratio",
    "pretrain_img_size",
    "pos_embed_cls_slot",
)


class CheckpointError(InputError):
    """A checkpoint file cannot be read or does not fit the model."""


def _torch_load_bytes(data: bytes | io.BytesIO, source: str) -> Any:
    buf = data if isinstance(data, io.BytesIO) else io.BytesIO(data)
    try:
        return torch.load(buf, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(
            f"{source}: cannot be read as a PyTorch checkpoint with weights_only=True: {e}"
        ) from e


def _read_official_zip(path: Path) -> Any:
    """Read a zip archive that *contains* a checkpoint file (the published vits .pt.zip)."""
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/") and "__MACOSX" not in n]
        if any(n.endswith("data.pkl") for n in names):  # torch.save's own zip format
            return None
        inner = [n for n in names if n.endswith((".pt", ".pth", ".safetensors"))]
        if len(inner) != 1:
            raise CheckpointError(
                f"{path}: expected exactly one .pt/.pth/.safetensors file in the archive, found {inner or names}"
            )
        data = zf.read(inner[0])
    if inner[0].endswith(".safetensors"):
        from safetensors.torch import load as st_load

        return st_load(data)
    return _torch_load_bytes(data, f"{path}!{inner[0]}")


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a weights file without building a model.

    Returns:
        (state_dict, info) where ``info`` may hold ``model_name`` and ``config`` (esam files),
        ``weights`` (a note on where the weights come from) and always ``format``
        (``official``, ``esam`` or ``state_dict``). For stand-in weights ``info`` also holds
        ``standin_seed`` and ``standin_generator``, and ``weights`` is ``"standin (seed N)"``
        unless the file carries its own note.

    Raises:
        FileNotFoundError: the file does not exist (the message says where weights come from).
        CheckpointError: unreadable file or unknown layout.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}. {OFFICIAL_WEIGHTS_HINT}")
    if path.suffix == ".safetensors":
        state, info = _read_safetensors(path)
    else:
        obj: Any = None
        if zipfile.is_zipfile(path):
            obj = _read_official_zip(path)
        if obj is None:
            obj = _torch_load_bytes(path.read_bytes(), str(path))
        state, info = _unpack(obj, str(path))
    note_standin(state, info)
    return state, info


def note_standin(state: dict[str, torch.Tensor], info: dict[str, Any]) -> dict[str, Any]:
    """Record in ``info`` (in place) whether ``state`` holds stand-in weights.

    Adds ``standin_seed`` and ``standin_generator``, and ``weights = "standin (seed N)"``
    unless ``info`` already has a ``weights`` note (one written into the file wins).
    """
    match = identify_standin(state)
    if match is not None:
        info["standin_seed"] = match.seed
        info["standin_generator"] = match.generator
        if not info.get("weights"):
            info["weights"] = match.label
    return info


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device="cpu")
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be read as safetensors: {e}") from e
    info: dict[str, Any] = {"format": metadata.get("format", "state_dict")}
    if info["format"] == BACKBONE_FORMAT:
        try:
            info["arch"] = json.loads(metadata.get("arch", "null"))
            info["source"] = json.loads(metadata.get("source", "{}"))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: backbone metadata is not valid JSON: {e}") from e
        return state, info
    if "model_name" in metadata:
        info["model_name"] = metadata["model_name"]
    if "config" in metadata:
        info["config"] = json.loads(metadata["config"])
    if "weights" in metadata:
        info["weights"] = metadata["weights"]
    return state, info


def _unpack(obj: Any, source: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if isinstance(obj, dict) and obj.get("format") == ESAM_FORMAT:
        info = {
            "format": ESAM_FORMAT,
            "model_name": obj.get("model_name"),
            "config": obj.get("config"),
        }
        if obj.get("weights"):
            info["weights"] = obj["weights"]
        state = obj.get("model")
    elif isinstance(obj, dict) and obj.get("format") == BACKBONE_FORMAT:
        info = {"format": BACKBONE_FORMAT, "arch": obj.get("arch"), "source": obj.get("source")}
        state = obj.get("model")
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        info, state = {"format": "official"}, obj["model"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        info, state = {"format": "state_dict"}, obj
    else:
        keys = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{source}: unknown checkpoint layout (top-level keys {keys}); expected {{'model': state_dict}}, "
            "an esam checkpoint or a bare state dict"
        )
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: the 'model' entry is not a state dict of tensors")
    return state, info


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise one :class:`CheckpointError` listing every missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        parts = [f"{source}: checkpoint does not match the model"]
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ):
            if items:
                shown = ", ".join(items[:20]) + (
                    f", ... ({len(items)} in all)" if len(items) > 20 else ""
                )
                parts.append(f"{title} ({len(items)}): {shown}")
        raise CheckpointError("\n  ".join(parts))


#: Config fields that only set how a model built without weights starts (the tensors they
#: shape are stored in the checkpoint and replace them), so they may differ on load.
INIT_ONLY_CONFIG_KEYS = frozenset({"prompt_pe_scale"})


def check_config(model: nn.Module, info: dict[str, Any], source: str) -> None:
    """Refuse an esam checkpoint whose stored architecture differs from ``model``'s.

    Shapes alone cannot catch every difference: the position embedding is stored at the
    pretraining grid, so weights saved for a 256 px model would load into a 1024 px one.
    Fields of :data:`INIT_ONLY_CONFIG_KEYS` are not compared.
    """
    stored = info.get("config")
    current = getattr(model, "config", None)
    if not isinstance(stored, dict) or current is None or not hasattr(current, "to_dict"):
        return
    mine = current.to_dict()
    shared = (stored.keys() & mine.keys()) - INIT_ONLY_CONFIG_KEYS
    diff = sorted(k for k in shared if stored[k] != mine[k])
    if diff:
        shown = ", ".join(f"{k}: checkpoint {stored[k]!r} vs model {mine[k]!r}" for k in diff)
        raise CheckpointError(f"{source}: checkpoint was saved for another configuration ({shown})")


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` after :func:`check_state_dict` has named every problem."""
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)


def load_state(
    model: nn.Module, state: dict[str, torch.Tensor], info: dict[str, Any], source: str
) -> None:
    """Strictly load an already-read checkpoint (see :func:`read_checkpoint`) into ``model``."""
    check_config(model, info, source)
    load_state_dict_strict(model, state, source)


def load_model_weights(
    model: nn.Module, path: str | os.PathLike[str], expected_name: str | None = None
) -> dict[str, Any]:
    """Load a checkpoint strictly into ``model``.

    Args:
        model: the model to fill.
        path: weights file (see module docstring).
        expected_name: registry name of ``model``; an esam checkpoint saved for another model
            is refused.

    Returns:
        The checkpoint ``info`` dict (format, model name, config, weights note).
    """
    state, info = read_checkpoint(path)
    name = info.get("model_name")
    if expected_name and name and name != expected_name:
        raise CheckpointError(f"{path}: checkpoint is for model {name!r}, not {expected_name!r}")
    load_state(model, state, info, str(path))
    return info


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    model_name: str | None = None,
    config: dict[str, Any] | None = None,
    weights: str | None = None,
) -> Path:
    """Write ``model``'s weights with its name and config, atomically.

    ``.safetensors`` paths get a safetensors file (name and config in its metadata); any other
    suffix an esam ``torch.save`` checkpoint. ``weights`` is a free-form note on where the
    weights come from (e.g. ``"standin"``) that results files repeat.
    """
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save

        meta = {"format": ESAM_FORMAT}
        if model_name:
            meta["model_name"] = model_name
        if config is not None:
            meta["config"] = json.dumps(config)
        if weights:
            meta["weights"] = weights
        return write_bytes_atomic(path, save(state, metadata=meta))
    buf = io.BytesIO()
    torch.save(
        {
            "format": ESAM_FORMAT,
            "model_name": model_name,
            "config": config,
            "weights": weights,
            "model": state,
        },
        buf,
    )
    return write_bytes_atomic(path, buf.getvalue())


def save_backbone(
    path: str | os.PathLike[str],
    state: dict[str, torch.Tensor],
    arch: dict[str, Any],
    source: dict[str, Any] | None = None,
) -> Path:
    """Write a ViT trunk as a backbone checkpoint, atomically.

    Args:
        path: the file: ``.safetensors`` gives a safetensors file (arch and source as JSON in
            its metadata), any other suffix a ``torch.save`` file.
        state: the trunk's state dict (``patch_embed.*``, ``pos_embed``, ``blocks.*``).
        arch: :data:`BACKBONE_ARCH_KEYS` -> value (the trunk's architecture).
        source: where the weights come from (run folder, step, method), kept in the file.
    """
    missing = [k for k in BACKBONE_ARCH_KEYS if k not in arch]
    if missing:
        raise CheckpointError(f"backbone arch lacks {missing}")
    kept_arch = {k: arch[k] for k in BACKBONE_ARCH_KEYS}
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if Path(path).suffix == ".safetensors":
        from safetensors.torch import save

        meta = {
            "format": BACKBONE_FORMAT,
            "arch": json.dumps(kept_arch),
            "source": json.dumps(source or {}),
        }
        return write_bytes_atomic(path, save(tensors, metadata=meta))
    buf = io.BytesIO()
    torch.save(
        {"format": BACKBONE_FORMAT, "arch": kept_arch, "source": source or {}, "model": tensors},
        buf,
    )
    return write_bytes_atomic(path, buf.getvalue())


def read_backbone(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """The ViT trunk in a backbone checkpoint or in an EfficientSAM checkpoint.

    Accepts files of :func:`save_backbone` (``esam pretrain export``) and EfficientSAM
    checkpoints (official or esam), whose image encoder's trunk is taken (its neck left out).

    Returns:
        (trunk state dict, arch, info): ``arch`` as in :data:`BACKBONE_ARCH_KEYS`; ``info`` the
        checkpoint's info plus ``backbone_of`` (what the trunk was taken from).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: neither kind of file, or an EfficientSAM file without an image encoder.
    """
    state, info = read_checkpoint(path)
    if info.get("format") == BACKBONE_FORMAT:
        arch = info.get("arch")
        if not isinstance(arch, dict) or any(k not in arch for k in BACKBONE_ARCH_KEYS):
            raise CheckpointError(f"{path}: backbone checkpoint without a complete 'arch' block")
        return state, dict(arch), {**info, "backbone_of": "backbone"}
    prefix = "image_encoder."
    trunk = {
        k[len(prefix) :]: v
        for k, v in state.items()
        if k.startswith(prefix) and not k.startswith(prefix + "neck.")
    }
    if not trunk:
        raise CheckpointError(
            f"{path}: neither a backbone checkpoint (esam pretrain export) nor an EfficientSAM "
            "checkpoint with image_encoder.* weights"
        )
    config = info.get("config") if isinstance(info.get("config"), dict) else None
    heads = int(config["encoder_num_heads"]) if config else None
    return trunk, arch_of_trunk(trunk, heads, str(path)), {**info, "backbone_of": "image_encoder"}


def arch_of_trunk(
    trunk: dict[str, torch.Tensor], num_heads: int | None, source: str
) -> dict[str, Any]:
    """The backbone ``arch`` of a ViT trunk's state dict (heads cannot be read from shapes).

    Args:
        trunk: ``patch_embed.*``, ``pos_embed`` and ``blocks.*`` weights.
        num_heads: attention heads; None takes EfficientSAM's for the trunk's width (Ti 3,
            S 6, B 12).
        source: named in errors.
    """
    embed = trunk.get("patch_embed.proj.weight")
    pos = trunk.get("pos_embed")
    if embed is None or pos is None:
        raise CheckpointError(f"{source}: trunk without patch_embed / pos_embed")
    width, patch = int(embed.shape[0]), int(embed.shape[-1])
    depth = len({k.split(".")[1] for k in trunk if k.startswith("blocks.")})
    slots = int(pos.shape[1])
    cls_slot = math.isqrt(slots) ** 2 != slots
    grid = math.isqrt(slots - 1) if cls_slot else math.isqrt(slots)
    if grid * grid != slots - int(cls_slot):
        raise CheckpointError(f"{source}: pos_embed has {slots} slots, not a square grid")
    heads = num_heads or {192: 3, 384: 6, 768: 12}.get(width)
    if heads is None:
        raise CheckpointError(
            f"{source}: cannot tell the number of attention heads of a width-{width} trunk "
            "without a stored config"
        )
    mlp = float(trunk["blocks.0.mlp.fc1.weight"].shape[0]) / width if depth else 4.0
    return {
        "embed_dim": width,
        "depth": depth,
        "num_heads": int(heads),
        "patch_size": patch,
        "mlp_ratio": mlp,
        "pretrain_img_size": grid * patch,
        "pos_embed_cls_slot": cls_slot,
    }


#: Top-level names of a ViT trunk's parameters; an image encoder's neck is not among them.
TRUNK_ROOTS = ("patch_embed", "pos_embed", "blocks")


def trunk_keys(module: nn.Module) -> list[str]:
    """State-dict keys of ``module`` that belong to its ViT trunk (not a neck or head)."""
    return [k for k in module.state_dict() if k.split(".", 1)[0] in TRUNK_ROOTS]


def load_trunk_state(
    module: nn.Module, state: Mapping[str, torch.Tensor], source: str = "trunk weights"
) -> None:
    """Load trunk weights strictly into a ViT or an EfficientSAM image encoder.

    Every trunk key of ``module`` (patch embedding, position embedding, blocks) must be in
    ``state`` with the same shape, and ``state`` must hold nothing else; anything outside the
    trunk (an image encoder's neck) is left as it is.

    Raises:
        CheckpointError: listing every missing, unexpected or mis-shaped key; ``module`` is
            left untouched.
    """
    own = module.state_dict()
    expected = set(trunk_keys(module))
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    mismatched = sorted(
        f"{k}: given {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in expected & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = [f"{source}: do not match the {type(module).__name__} trunk"]
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ):
            if items:
                more = f", ... ({len(items)} in all)" if len(items) > 10 else ""
                parts.append(f"{title} ({len(items)}): {', '.join(items[:10])}{more}")
        raise CheckpointError("; ".join(parts))
    module.load_state_dict(dict(state), strict=False)  # keys checked above: only non-trunk missing
