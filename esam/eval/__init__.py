"""Zero-shot benchmarks of promptable segmentation models on COCO and LVIS.

* :mod:`esam.eval.zeroshot`: box and click mIoU from ground-truth prompts.
* :mod:`esam.eval.instseg`: instance segmentation AP from detector boxes.
* :mod:`esam.eval.adapters`: one interface over EfficientSAM, SAM, MobileSAM, EfficientViT-SAM,
  reference baselines and plug-ins (entry-point group ``esam.adapters``).

Modules with one job each: :mod:`~esam.eval.data` (annotations, images, skip counting),
:mod:`~esam.eval.prompts` (boxes and clicks), :mod:`~esam.eval.metrics` (IoU, size buckets),
:mod:`~esam.eval.loader` (DataLoader workers), :mod:`esam.runtime.distributed` (torchrun sharding),
:mod:`~esam.eval.outputs` (results and rows files), :mod:`~esam.eval.synthetic` (the project's
own sample data), :mod:`~esam.eval.deps` (optional dependencies of the ``eval`` extra, imported
with an error that names ``pip install 'esam[eval]'``).
"""
