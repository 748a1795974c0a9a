"""Optimizer parameter groups: weight-decay exemptions and layer-wise lr decay.

Rules, for every parameter with ``requires_grad`` (frozen ones are left out):

* **no weight decay** for 1-D parameters (norm weights, biases, layer scales), parameters of
  normalisation layers, and names given by the ``no_weight_decay()`` of the model or of any
  module inside it (embeddings such as ``pos_embed``; a module's names are prefixed with its
  path) or by the caller; a listed name matches a parameter exactly or as a module prefix
  (``"decoder.pos"`` exempts ``decoder.pos.weight``);
* **layer decay** (optional): the model exposes ``layer_id(name) -> int`` in
  ``[0, num_layer_ids)`` and ``num_layer_ids``; parameters of layer ``i`` get the lr factor
  ``layer_decay ** (num_layer_ids - 1 - i)`` (the last id, usually the head, gets 1; the
  embeddings, id 0, the smallest). Requesting it from a model without these raises
  :class:`LayerDecayError`.

Each group carries ``lr_scale`` and ``wd_scale`` (0 or 1) for
:class:`esam.train.schedules.ParamScheduler`, and ``param_names`` (PyTorch's own key), so the
groups are readable in a checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from esam.errors import UserError
from esam.runtime.distributed import unwrap_model

_NORMS: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._NormBase,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


class LayerDecayError(UserError, TypeError):
    """Layer-wise lr decay was requested from a model that does not number its layers."""


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in patterns)


def _norm_param_names(model: nn.Module) -> set[str]:
    names: set[str] = set()
    for mod_name, module in model.named_modules():
        if isinstance(module, _NORMS):
            prefix = f"{mod_name}." if mod_name else ""
            names.update(prefix + n for n, _ in module.named_parameters(recurse=False))
    return names


def declared_no_weight_decay(model: nn.Module) -> set[str]:
    """The names every module of ``model`` declares exempt through ``no_weight_decay()``,
    prefixed with the module's path (a ViT inside a wrapper exempts ``encoder.pos_embed``, not
    ``pos_embed``)."""
    names: set[str] = set()
    for path, module in model.named_modules():
        own = getattr(module, "no_weight_decay", None)
        if callable(own):
            names.update(f"{path}.{n}" if path else n for n in own())
    return names


def param_groups(
    model: nn.Module,
    *,
    weight_decay: float,
    layer_decay: float | None = None,
    no_weight_decay: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Parameter groups of ``model`` (unwrapped from DDP) following the module's rules.

    Args:
        model: the model (a DDP wrapper is looked through).
        weight_decay: decay of the decayed groups (exempt groups get 0).
        layer_decay: lr decay per layer, or None for one lr scale (1.0) everywhere.
        no_weight_decay: more exempt names or module prefixes.

    Returns:
        Groups ordered by (layer id, decayed last), each with ``params``, ``param_names``,
        ``weight_decay``, ``wd_scale`` and ``lr_scale``; empty groups are omitted.

    Raises:
        LayerDecayError: ``layer_decay`` is set but the model lacks ``layer_id`` /
            ``num_layer_ids``, or ``layer_id`` returns an id outside ``[0, num_layer_ids)``.
    """
    model = unwrap_model(model)
    exempt = set(no_weight_decay) | declared_no_weight_decay(model)
    norm_names = _norm_param_names(model)
    n_ids = 1
    layer_id: Any = getattr(model, "layer_id", None)
    num_ids: Any = getattr(model, "num_layer_ids", None)
    if layer_decay is not None:
        missing = [
            what
            for what, ok in (
                ("layer_id(name)", callable(layer_id)),
                ("num_layer_ids", num_ids is not None),
            )
            if not ok
        ]
        if missing:
            raise LayerDecayError(
                f"layer_decay={layer_decay} needs a model exposing layer_id(name) and "
                f"num_layer_ids; {type(model).__name__} lacks {' and '.join(missing)}"
            )
        n_ids = int(num_ids)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = not (p.ndim <= 1 or name in norm_names or _matches(name, exempt))
        layer = 0
        if layer_decay is not None:
            layer = int(layer_id(name))
            if not 0 <= layer < n_ids:
                raise LayerDecayError(
                    f"{type(model).__name__}.layer_id({name!r}) = {layer} is outside "
                    f"[0, {n_ids}) (num_layer_ids)"
                )
        key = (layer, decay)
        if key not in groups:
            scale = 1.0 if layer_decay is None else layer_decay ** (n_ids - 1 - layer)
            groups[key] = {
                "params": [],
                "param_names": [],
                "weight_decay": weight_decay if decay else 0.0,
                "wd_scale": 1.0 if decay else 0.0,
                "lr_scale": scale,
            }
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    return [groups[k] for k in sorted(groups)]
