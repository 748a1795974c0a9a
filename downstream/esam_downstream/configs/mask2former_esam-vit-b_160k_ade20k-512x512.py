# Mask2Former with an esam ViT backbone on ADE20K, 512x512 crops, 160k iterations.
#
# mmseg's Mask2Former R50 ADE20K setup with the backbone swapped for an esam ViT (windowed
# attention and zero-initialised relative position as in ViTDet) plus the simple feature
# pyramid (strides 4-32, 256 channels) as the neck feeding the pixel decoder. Optimisation:
# AdamW lr 2e-4 wd 0.05, poly schedule, backbone lr x0.1, batch 16 (8 GPUs x 2), 160k
# iterations.
_base_ = ["mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py"]
custom_imports = dict(
    imports=["mmdet.models", "esam_downstream.registry"], allow_failed_imports=False
)

arch = "base"
embed_dim = 768
crop_size = (512, 512)
model = dict(
    backbone=dict(
        _delete_=True,
        type="EsamViT",
        checkpoint=None,
        arch=arch,
        img_size=crop_size[0],
        window_size=14,
        global_blocks=None,
        drop_path_rate=0.1,
        rel_pos=True,  # ViTDet's decomposed relative position, zero-initialised, trained
    ),
    neck=dict(
        type="EsamSimpleFeaturePyramid",
        in_channels=embed_dim,
        out_channels=256,
        scales=(4.0, 2.0, 1.0, 0.5),
    ),
    decode_head=dict(in_channels=[256, 256, 256, 256]),
)
optim_wrapper = dict(
    optimizer=dict(lr=2e-4, weight_decay=0.05),
    # pos_embed: no weight decay; its key outranks "backbone" (longer), so it repeats lr_mult.
    paramwise_cfg=dict(custom_keys={"pos_embed": dict(lr_mult=0.1, decay_mult=0.0)}),
)
