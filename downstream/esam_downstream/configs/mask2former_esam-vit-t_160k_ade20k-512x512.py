# ViT-Ti variant of mask2former_esam-vit-b_160k_ade20k-512x512.py.
_base_ = ["./mask2former_esam-vit-b_160k_ade20k-512x512.py"]
arch = "tiny"
embed_dim = 192
model = dict(backbone=dict(arch=arch), neck=dict(in_channels=embed_dim))
