# A tiny Mask2Former on an esam ViT for CPU tests: 128x128 crops, a 2-block 32-wide trunk
# (block 0 windowed 4x4, block 1 global), 1 pixel-decoder layer, 3 decoder layers, 20 queries,
# 150 ADE20K classes (esam_downstream.synth.write_ade20k). Set data_root with --cfg-options.
_base_ = ["./mask2former_esam-vit-t_160k_ade20k-512x512.py"]

crop_size = (128, 128)
data_root = "data/tiny_ade/"
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=None,
        embed_dim=32,
        depth=2,
        num_heads=2,
        pretrain_img_size=64,
        img_size=crop_size[0],
        window_size=4,
        global_blocks=[1],
        drop_path_rate=0.0,
        rel_pos="auto",  # the checkpoint's own choice (none for esam weights), as measured
    ),
    neck=dict(in_channels=32),
    decode_head=dict(
        num_queries=20,
        pixel_decoder=dict(encoder=dict(num_layers=1)),
        transformer_decoder=dict(num_layers=3),
        train_cfg=dict(num_points=1024),
    ),
)
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="Resize", scale=crop_size, keep_ratio=True),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=crop_size, keep_ratio=True),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        data_prefix=dict(img_path="images/training", seg_map_path="annotations/training"),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        data_prefix=dict(img_path="images/training", seg_map_path="annotations/training"),
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader

max_iters = 8
param_scheduler = [dict(type="ConstantLR", factor=1.0, by_epoch=False, begin=0, end=max_iters)]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(type="LoggerHook", interval=1, log_metric_by_epoch=False),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=max_iters, save_best=None),
    visualization=dict(type="SegVisualizationHook", draw=False),
)
log_processor = dict(window_size=1, by_epoch=False)
