"""Data shared by every job: images, masks, annotations, prompts, views and samplers.

* :mod:`esam.data.images`: image files decoded to RGB, failures named by skip reason.
* :mod:`esam.data.masks`: COCO polygons and RLE, checked, decoded and encoded.
* :mod:`esam.data.coco`: COCO and LVIS instance annotations with counted skips.
* :mod:`esam.data.image_tasks`: images (and per-image ground truth) read in DataLoader workers,
  a failed read returned as a reason instead of raised.
* :mod:`esam.data.skips`: the skip reasons every run counts.
* :mod:`esam.data.prompts`: boxes and clicks derived from ground truth.
* :mod:`esam.data.sa1b`: SA-1B-format data (tar shards or folders of jpg + json pairs).
* :mod:`esam.data.tarshards`: indexed reads of tar shards (``shard.tar::member`` paths).
* :mod:`esam.data.synthetic`: the project's own generated COCO-format sample.
* :mod:`esam.data.synth_sa1b`: generated SA-1B-format sets (one mask per visible part).
* :mod:`esam.data.synth_classes`: a generated classification set in ImageNet's folder layout.
* :mod:`esam.data.convert`: COCO / LVIS instances to SA-1B format.
* :mod:`esam.data.scenes`, :mod:`esam.data.imagefolder`: generated and real image folders.
* :mod:`esam.data.views`: seeded augmented views (random resized crop and flip).
* :mod:`esam.data.samplers`: a seeded, rank-sharded sampler that resumes mid-epoch.
"""
