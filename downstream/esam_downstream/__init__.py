"""esam's ViT as an mmdet / mmseg backbone (Mask R-CNN with the ViTDet recipe, Mask2Former).

The plain-PyTorch parts (:mod:`~esam_downstream.backbone`, :mod:`~esam_downstream.pyramid`,
:mod:`~esam_downstream.layer_decay`) import without any mm* package. Configs register the
modules in mmengine's, mmdet's and mmseg's registries with
``custom_imports = dict(imports=["esam_downstream.registry"], allow_failed_imports=False)``
(see :mod:`esam_downstream.registry`). ``esam`` itself never imports this package.
"""

from __future__ import annotations

from esam_downstream.backbone import EsamViTBackbone
from esam_downstream.pyramid import SimpleFeaturePyramid

__all__ = ["EsamViTBackbone", "SimpleFeaturePyramid"]
