# ViT-Ti (192 wide, 3 heads) variant of mask-rcnn_esam-vit-b_lsj-100e_coco.py.
_base_ = ["./mask-rcnn_esam-vit-b_lsj-100e_coco.py"]
arch = "tiny"
embed_dim = 192
model = dict(backbone=dict(arch=arch), neck=dict(in_channels=embed_dim))
