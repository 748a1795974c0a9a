"""esam: EfficientSAM end to end.

Public entry points::

    import esam
    model = esam.build_model("efficientsam_vitt", checkpoint="efficient_sam_vitt.pt")
    predictor = esam.EfficientSamPredictor(model)
    masks = esam.EfficientSamAutomaticMaskGenerator(model).generate(image)
"""

from esam.build import EfficientSamConfig, build_model, model_registry
from esam.checkpoint import CheckpointError, load_model_weights, read_checkpoint, save_checkpoint
from esam.everything import EfficientSamAutomaticMaskGenerator
from esam.modeling import EfficientSam, set_reference_mode
from esam.predictor import EfficientSamPredictor

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "EfficientSam",
    "EfficientSamAutomaticMaskGenerator",
    "EfficientSamConfig",
    "EfficientSamPredictor",
    "__version__",
    "build_model",
    "load_model_weights",
    "model_registry",
    "read_checkpoint",
    "save_checkpoint",
    "set_reference_mode",
]
