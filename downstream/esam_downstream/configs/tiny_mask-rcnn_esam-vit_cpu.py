# A tiny Mask R-CNN on an esam ViT for CPU tests: 128x128 images, a 2-block 32-wide trunk
# (block 0 windowed 4x4, block 1 global), 64-channel heads, few proposals, 2 classes
# (esam_downstream.synth.write_coco_instances). Set data_root with --cfg-options.
_base_ = ["./mask-rcnn_esam-vit-t_lsj-100e_coco.py"]

image_size = (128, 128)
ch = 64
norm_cfg = dict(type="EsamLN2d", requires_grad=True)
data_root = "data/tiny_coco/"
metainfo = dict(classes=("box", "disc"))
model = dict(
    data_preprocessor=dict(
        batch_augments=[dict(type="BatchFixedSizePad", size=image_size, pad_mask=True)]
    ),
    backbone=dict(
        arch=None,
        embed_dim=32,
        depth=2,
        num_heads=2,
        pretrain_img_size=64,
        img_size=image_size[0],
        window_size=4,
        global_blocks=[1],
        drop_path_rate=0.0,
        rel_pos="auto",  # the checkpoint's own choice (none for esam weights), as measured
    ),
    neck=dict(in_channels=32, out_channels=ch),
    rpn_head=dict(in_channels=ch, feat_channels=ch),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=ch),
        bbox_head=dict(
            in_channels=ch,
            conv_out_channels=ch,
            fc_out_channels=128,
            num_classes=2,
            norm_cfg=norm_cfg,
        ),
        mask_roi_extractor=dict(out_channels=ch),
        mask_head=dict(in_channels=ch, conv_out_channels=ch, num_classes=2),
    ),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=64)),
        rpn_proposal=dict(nms_pre=200, max_per_img=100),
        rcnn=dict(sampler=dict(num=64)),
    ),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100), rcnn=dict(max_per_img=20)),
)
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="Resize", scale=image_size, keep_ratio=True),
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
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file="annotations/instances_train.json",
        data_prefix=dict(img="train/"),
        filter_cfg=dict(filter_empty_gt=True, min_size=1),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file="annotations/instances_train.json",
        data_prefix=dict(img="train/"),
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + "annotations/instances_train.json")
test_evaluator = val_evaluator

max_iters = 8
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(lr=2e-4),
    paramwise_cfg=dict(decay_rate=0.7),
)
param_scheduler = [dict(type="ConstantLR", factor=1.0, by_epoch=False, begin=0, end=max_iters)]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(type="LoggerHook", interval=1),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=max_iters, save_last=True),
    visualization=dict(type="DetVisualizationHook", draw=False),
)
log_processor = dict(window_size=1)
