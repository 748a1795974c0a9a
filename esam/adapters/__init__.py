"""Model adapters: one encode-once, decode-many interface over promptable segmenters, and their registry.

The zero-shot harness (:mod:`esam.eval`) and the throughput benchmark (:mod:`esam.bench`) both
drive models through these adapters.

Built-in names:

* ``efficientsam_vitt``, ``efficientsam_vits``, ``efficientsam_vitb`` (every name of
  :data:`esam.model_registry`): esam's EfficientSAM, official processing.
* ``sam_vit_b``, ``sam_vit_l``, ``sam_vit_h``: SAM through ``segment-anything``.
* ``mobilesam``: MobileSAM through ``mobilesam-mirror``.
* ``efficientvit_sam_l0`` ... ``efficientvit_sam_xl1``: EfficientViT-SAM through ``efficientsam``.
* ``box_fill``, ``oracle``: reference baselines that need no weights.

Other models plug in without editing esam through the entry-point group ``esam.adapters``: an
installed package declares, in its ``pyproject.toml``::

    [project.entry-points."esam.adapters"]
    fastsam = "my_package.esam_adapter:build_fastsam"

where ``build_fastsam(name: str, checkpoint: str | None, device: str)`` returns a
:class:`SegmentationAdapter`. ``esam eval zeroshot --model fastsam`` then finds it. See
``docs/adapters.md``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from importlib import metadata

from esam.adapters.base import Prediction, Prompts, SegmentationAdapter
from esam.errors import InputError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "esam.adapters"

AdapterFactory = Callable[..., SegmentationAdapter]
"""``factory(name: str, checkpoint: str | None, device: str) -> SegmentationAdapter``."""

_BUILTIN: dict[str, str] = {
    "box_fill": "esam.adapters.baselines:build_box_fill",
    "oracle": "esam.adapters.baselines:build_oracle",
    "sam_vit_b": "esam.adapters.sam:build_sam",
    "sam_vit_l": "esam.adapters.sam:build_sam",
    "sam_vit_h": "esam.adapters.sam:build_sam",
    "mobilesam": "esam.adapters.mobilesam:build_mobilesam",
    **{
        f"efficientvit_sam_{v}": "esam.adapters.efficientvit_sam:build_efficientvit_sam"
        for v in ("l0", "l1", "l2", "xl0", "xl1")
    },
}
_EFFICIENTSAM_FACTORY = "esam.adapters.efficientsam:build_efficientsam"


def _resolve(target: str) -> AdapterFactory:
    module, attr = target.split(":")
    factory: AdapterFactory = getattr(importlib.import_module(module), attr)
    return factory


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_adapters() -> dict[str, str]:
    """Every adapter name mapped to where it comes from (``builtin`` or the plug-in's target)."""
    from esam.adapters.efficientsam import efficientsam_names

    out = {name: "builtin" for name in efficientsam_names()}
    out.update({name: "builtin" for name in _BUILTIN})
    for name, ep in _entry_points().items():
        if name in out:
            log.warning("entry point %s=%s ignored: %r is a built-in adapter", name, ep.value, name)
            continue
        out[name] = ep.value
    return dict(sorted(out.items()))


def get_factory(name: str) -> AdapterFactory:
    """The factory of adapter ``name`` (built-in first, then the ``esam.adapters`` group)."""
    from esam.adapters.efficientsam import efficientsam_names

    if name in efficientsam_names():
        return _resolve(_EFFICIENTSAM_FACTORY)
    if name in _BUILTIN:
        return _resolve(_BUILTIN[name])
    eps = _entry_points()
    if name in eps:
        factory: AdapterFactory = eps[name].load()
        return factory
    raise InputError(
        f"unknown model {name!r}; available: {', '.join(available_adapters())} "
        f"(more can be installed through the entry-point group {ENTRY_POINT_GROUP!r})"
    )


def build_adapter(
    name: str, checkpoint: str | None = None, device: str = "cpu"
) -> SegmentationAdapter:
    """Build adapter ``name`` with weights from ``checkpoint`` on ``device``."""
    adapter = get_factory(name)(name, checkpoint, device)
    if not isinstance(adapter, SegmentationAdapter):
        raise TypeError(
            f"the factory of model {name!r} returned {type(adapter).__name__}, "
            "not an esam.adapters.SegmentationAdapter"
        )
    if getattr(adapter, "checkpoint", None) is None and checkpoint is not None:
        adapter.checkpoint = checkpoint
    return adapter


__all__ = [
    "ENTRY_POINT_GROUP",
    "AdapterFactory",
    "Prediction",
    "Prompts",
    "SegmentationAdapter",
    "available_adapters",
    "build_adapter",
    "get_factory",
]
