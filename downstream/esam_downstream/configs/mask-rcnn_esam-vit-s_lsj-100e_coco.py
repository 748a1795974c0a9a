# ViT-S (384 wide, 6 heads) variant of mask-rcnn_esam-vit-b_lsj-100e_coco.py.
_base_ = ["./mask-rcnn_esam-vit-b_lsj-100e_coco.py"]
arch = "small"
embed_dim = 384
model = dict(backbone=dict(arch=arch), neck=dict(in_channels=embed_dim))
