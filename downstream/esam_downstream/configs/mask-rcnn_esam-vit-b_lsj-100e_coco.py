# Mask R-CNN with an esam ViT backbone, ViTDet recipe, COCO instance segmentation.
#
# Recipe (ViTDet, Li et al. 2022, as the EfficientSAM paper uses it for Table 2): 1024x1024
# large-scale jitter (resize 0.1-2.0, crop, pad 114), windowed attention (14x14) with 4 evenly
# spaced global blocks, decomposed relative position (zero-initialised tables: esam
# checkpoints have none), simple feature pyramid (strides 4-32, plus a stride-64 level for the
# RPN), 2-conv RPN, 4conv1fc box head and mask head with LayerNorm, layer-wise lr decay, drop
# path 0.1. Optimisation as the EfficientSAM paper states: AdamW lr 2e-4 wd 0.1, cosine
# schedule, 100 epochs (184,375 iterations at batch 64: 64 images x 184,375 / 118k = 100).
# Pass the backbone with --backbone (or model.backbone.checkpoint=...).
_base_ = [
    "mmdet::_base_/models/mask-rcnn_r50_fpn.py",
    "mmdet::_base_/default_runtime.py",
]
custom_imports = dict(imports=["esam_downstream.registry"], allow_failed_imports=False)

arch = "base"
embed_dim = 768
image_size = (1024, 1024)
norm_cfg = dict(type="EsamLN2d", requires_grad=True)

model = dict(
    data_preprocessor=dict(
        pad_size_divisor=32,
        batch_augments=[dict(type="BatchFixedSizePad", size=image_size, pad_mask=True)],
    ),
    backbone=dict(
        _delete_=True,
        type="EsamViT",
        checkpoint=None,
        arch=arch,
        img_size=image_size[0],
        window_size=14,
        global_blocks=None,  # ViTDet's 4 evenly spaced global blocks (2, 5, 8, 11 at depth 12)
        drop_path_rate=0.1,
        rel_pos=True,  # ViTDet's decomposed relative position, zero-initialised, trained
    ),
    neck=dict(
        _delete_=True,
        type="EsamSimpleFeaturePyramid",
        in_channels=embed_dim,
        out_channels=256,
        scales=(4.0, 2.0, 1.0, 0.5),
        extra_levels=1,
    ),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(type="Shared4Conv1FCBBoxHead", conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg),
    ),
)

dataset_type = "CocoDataset"
data_root = "data/coco/"
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="RandomFlip", prob=0.5),
    dict(type="RandomResize", scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(
        type="RandomCrop",
        crop_type="absolute_range",
        crop_size=image_size,
        recompute_bbox=True,
        allow_negative_crop=True,
    ),
    dict(type="FilterAnnotations", min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type="Pad", size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type="PackDetInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=image_size, keep_ratio=True),
    dict(type="Pad", size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(
        type="PackDetInputs",
        meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor"),
    ),
]
train_dataloader = dict(
    batch_size=4,  # per GPU; 16 GPUs give the recipe's batch of 64
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file="annotations/instances_train2017.json",
        data_prefix=dict(img="train2017/"),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file="annotations/instances_val2017.json",
        data_prefix=dict(img="val2017/"),
        test_mode=True,
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(
    type="CocoMetric",
    ann_file=data_root + "annotations/instances_val2017.json",
    metric=["bbox", "segm"],
    format_only=False,
)
test_evaluator = val_evaluator

max_iters = 184375
warmup_iters = 250
optim_wrapper = dict(
    type="AmpOptimWrapper",  # esam_downstream.runtime.cpu_safe swaps it for OptimWrapper on CPU
    constructor="EsamLayerDecayOptimizerConstructor",
    paramwise_cfg=dict(decay_rate=0.7),  # ViTDet's value for ViT-B
    optimizer=dict(type="AdamW", lr=2e-4, betas=(0.9, 0.999), weight_decay=0.1),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=warmup_iters),
    dict(
        type="CosineAnnealingLR",
        by_epoch=False,
        begin=warmup_iters,
        end=max_iters,
        T_max=max_iters - warmup_iters,
        eta_min=0.0,
    ),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=5000)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
default_hooks = dict(
    logger=dict(type="LoggerHook", interval=50),
    checkpoint=dict(
        type="CheckpointHook", by_epoch=False, save_last=True, interval=5000, max_keep_ckpts=3
    ),
)
log_processor = dict(type="LogProcessor", window_size=50, by_epoch=False)
auto_scale_lr = dict(enable=False, base_batch_size=64)
