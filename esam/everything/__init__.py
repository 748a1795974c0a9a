"""Segment everything: an automatic mask generator with bounded memory.

``EfficientSamAutomaticMaskGenerator`` follows segment-anything's ``SamAutomaticMaskGenerator``
(same settings, same records) with an EfficientSAM model; :mod:`esam.everything.sam_compat`
lets segment-anything's own generator drive the same model, for comparisons.
"""

from esam.data.images import as_rgb_uint8
from esam.everything.generator import RECORD_KEYS, EfficientSamAutomaticMaskGenerator

__all__ = ["RECORD_KEYS", "EfficientSamAutomaticMaskGenerator", "as_rgb_uint8"]
