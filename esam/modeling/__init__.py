"""EfficientSAM model components, one per module."""

from esam.modeling.efficient_sam import EfficientSam, set_reference_mode
from esam.modeling.image_encoder import ImageEncoderViT
from esam.modeling.mask_decoder import MaskDecoder
from esam.modeling.prompt_encoder import PromptEncoder
from esam.modeling.transformer import TwoWayTransformer
from esam.modeling.vit import ViT

__all__ = [
    "EfficientSam",
    "ImageEncoderViT",
    "MaskDecoder",
    "PromptEncoder",
    "TwoWayTransformer",
    "ViT",
    "set_reference_mode",
]
