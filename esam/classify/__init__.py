"""ImageNet-style classification of ViT backbones: fine-tuning, linear probing, evaluation.

* :mod:`esam.classify.config`: :class:`ClassifyConfig` (``esam/configs/classify/*.yaml``).
* :mod:`esam.classify.model`: the classifier (ViT, average pooling, norm, linear head).
* :mod:`esam.classify.backbones`: esam and timm ViT checkpoints onto the esam ViT.
* :mod:`esam.classify.data`: labelled images (class folders, flat val + labels file).
* :mod:`esam.classify.linear`: cached fp16 features, the BatchNorm + linear probe, LARS.
* :mod:`esam.classify.evaluate`: top-1 / top-5, per-image rows, per-class accuracy.
* :mod:`esam.classify.run`: one ``esam eval imagenet`` run on the shared training engine.

timm (the ``classify`` extra) is imported lazily, where a transform, Mixup, loss or LARS is made.
"""
