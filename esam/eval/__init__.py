"""Zero-shot benchmarks of promptable segmentation models on COCO and LVIS.

* :mod:`esam.eval.zeroshot`: box and click mIoU from ground-truth prompts.
* :mod:`esam.eval.instseg`: instance segmentation AP from detector boxes.
* :mod:`esam.eval.protocols`: the named protocol presets (prompt-selection rules).

Modules with one job each: :mod:`~esam.eval.config` (settings every run shares),
:mod:`~esam.eval.metrics` (IoU, size buckets), :mod:`~esam.eval.outputs` (results and rows
files). Shared pieces come from below: the models through :mod:`esam.adapters`; annotations,
masks, images, prompts and image loading in DataLoader workers from :mod:`esam.data`;
torchrun sharding from :mod:`esam.runtime.distributed`.
"""
