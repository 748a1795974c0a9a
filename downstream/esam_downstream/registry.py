"""Registration of esam's backbone, the simple feature pyramid and the layer-decay optimizer
constructor in mmengine's, mmdet's and mmseg's registries.

Imported by ``custom_imports=dict(imports=["esam_downstream.registry"])`` in a config. mmdet and mmseg are each optional: a registry is filled
when its package imports. Registered names:

* ``MODELS``: ``EsamViT`` (:class:`~esam_downstream.backbone.EsamViTBackbone`),
  ``EsamSimpleFeaturePyramid`` (:class:`~esam_downstream.pyramid.SimpleFeaturePyramid`),
  ``EsamLN2d`` (esam's channel LayerNorm, as a ``norm_cfg`` type for the heads);
* ``OPTIM_WRAPPER_CONSTRUCTORS``: ``EsamLayerDecayOptimizerConstructor``.
"""

from __future__ import annotations

import importlib
from typing import Any

from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as ROOT_CONSTRUCTORS
from torch import nn

from esam.modeling.common import LayerNorm2d
from esam_downstream.backbone import EsamViTBackbone
from esam_downstream.layer_decay import layer_decay_param_groups
from esam_downstream.pyramid import SimpleFeaturePyramid


class EsamLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """mmengine optimizer-wrapper constructor with layer-wise lr decay over an esam ViT.

    ``paramwise_cfg``: ``decay_rate`` (per-layer lr factor, e.g. 0.7 as ViTDet's ViT-B); the
    groups are :func:`~esam_downstream.layer_decay.layer_decay_param_groups`. The optimizer's
    ``lr`` and ``weight_decay`` are the base values.
    """

    def add_params(self, params: list[dict[str, Any]], module: nn.Module, **kwargs: Any) -> None:
        """Fill ``params`` with the layer-decay groups of ``module`` (mmengine's hook point)."""
        if self.base_lr is None or self.base_wd is None:
            raise ValueError(
                "EsamLayerDecayOptimizerConstructor needs optimizer lr and weight_decay"
            )
        decay_rate = float(self.paramwise_cfg.get("decay_rate", 1.0))
        for group in layer_decay_param_groups(module, self.base_lr, self.base_wd, decay_rate):
            group.pop("param_names")
            params.append(group)


def _register(registry: Any, modules: dict[str, type]) -> None:
    """Register each class under its name unless the name is taken (re-imports)."""
    for name, cls in modules.items():
        if name not in registry.module_dict:
            registry.register_module(name=name, module=cls)


MODULES = {
    "EsamViT": EsamViTBackbone,
    "EsamSimpleFeaturePyramid": SimpleFeaturePyramid,
    "EsamLN2d": LayerNorm2d,
}
CONSTRUCTORS = {"EsamLayerDecayOptimizerConstructor": EsamLayerDecayOptimizerConstructor}

_register(ROOT_MODELS, MODULES)
_register(ROOT_CONSTRUCTORS, CONSTRUCTORS)
#: Which downstream packages' registries hold the esam modules (mmdet, mmseg when installed).
REGISTERED_IN: list[str] = []
for _package in ("mmdet", "mmseg"):
    try:
        _reg = importlib.import_module(f"{_package}.registry")
    except ImportError:
        continue
    _register(_reg.MODELS, MODULES)
    _register(_reg.OPTIM_WRAPPER_CONSTRUCTORS, CONSTRUCTORS)
    REGISTERED_IN.append(_package)
