"""Layer-wise learning-rate decay parameter groups (plain PyTorch; mmengine wraps them).

A parameter of the ViT trunk with layer id ``l`` (esam's :meth:`ViT.layer_id`: 0 for the
patch and position embeddings, ``i + 1`` for block ``i``) gets the learning rate
``lr * decay_rate ** (depth + 1 - l)``; everything outside the trunk (pyramid, heads) gets
``lr``. Weight decay is 0 for 1-D parameters (biases, norms) and for the trunk's
:meth:`ViT.no_weight_decay` names, ``weight_decay`` otherwise. This is ViTDet's rule with
esam's layer ids.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from esam.errors import InputError
from esam_downstream.backbone import EsamViTBackbone


class LayerDecayError(InputError):
    """The model has no esam ViT backbone, or the decay settings are out of range."""


def find_backbone(model: nn.Module) -> tuple[str, EsamViTBackbone]:
    """The (qualified name, module) of the one :class:`EsamViTBackbone` inside ``model``."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, EsamViTBackbone)]
    if len(found) != 1:
        raise LayerDecayError(
            f"layer-wise lr decay needs exactly one EsamViTBackbone in the model, found {len(found)}"
        )
    return found[0]


def layer_decay_param_groups(
    model: nn.Module, lr: float, weight_decay: float, decay_rate: float
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with layer-wise lr decay over the model's esam ViT.

    Args:
        model: a model holding one :class:`EsamViTBackbone` (e.g. a detector).
        lr: base learning rate (of the heads and the last trunk layer's successors).
        weight_decay: base weight decay.
        decay_rate: per-layer lr factor in (0, 1].

    Returns:
        One group per (layer id, decays or not) with keys ``params``, ``lr``,
        ``weight_decay``, ``lr_scale``, ``layer_id`` and ``param_names``; only parameters that
        require gradients.
    """
    if not 0.0 < decay_rate <= 1.0:
        raise LayerDecayError(f"decay_rate must be in (0, 1], got {decay_rate}")
    name, backbone = find_backbone(model)
    vit = backbone.vit
    trunk_prefix = f"{name}.vit." if name else "vit."
    top = vit.num_layer_ids - 1
    no_decay = {trunk_prefix + k for k in vit.no_weight_decay()}
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for pname, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = vit.layer_id(pname[len(trunk_prefix) :]) if pname.startswith(trunk_prefix) else top
        decays = param.ndim > 1 and pname not in no_decay
        key = (layer, decays)
        if key not in groups:
            scale = decay_rate ** (top - layer)
            groups[key] = {
                "params": [],
                "param_names": [],
                "lr": lr * scale,
                "lr_scale": scale,
                "weight_decay": weight_decay if decays else 0.0,
                "layer_id": layer,
            }
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(pname)
    return [groups[k] for k in sorted(groups)]
