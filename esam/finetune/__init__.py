"""Fine-tuning EfficientSAM on SA-1B-format data the way SAM was trained.

* :mod:`esam.finetune.prompting`: batched, seeded prompt sampling on tensors (a jittered box
  or one point first, then corrective clicks in the error region), slot-limited appends.
* :mod:`esam.finetune.losses`: focal + dice on the best of the multimask outputs and the
  IoU-prediction MSE (SAM's loss), target downsampling and logit upsampling.
"""
