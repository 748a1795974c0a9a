"""The frozen teacher of SAMI: an image encoder whose features the student reconstructs.

Teachers (:func:`build_teacher`):

* ``sam_vit_h`` / ``sam_vit_l`` / ``sam_vit_b``: SAM's image encoder, built with the
  ``segment-anything`` package (``pip install 'esam[sam]'``) and filled from an official
  ``sam_vit_*.pth`` file: its ``image_encoder.*`` keys are loaded strictly by esam
  (``torch.load(weights_only=True)``), never through the package's own loader.
* ``efficientsam_vitt`` / ``_vits`` / ``_vitb``: the image encoder of an official or esam
  EfficientSAM checkpoint (cheap teachers for tests, or for distilling a trained model further).

What the teacher sees and returns. The paper (Sec. 3.1, 4.1) pretrains at 224 px on ImageNet
and reconstructs "the features of SAM's image encoder" without saying at which input size or
which layer. Defaults chosen here:

* **input size 224 (the student's view)**. ViT-H at 1024 px costs about 20x the compute of
  224 px per image, which an ImageNet-scale run of 400 epochs cannot afford as an online
  teacher; at 224 px its 14x14 grid is the student's, so no pooling blurs the targets. SAM's
  absolute position embedding (stored for 64x64 tokens) is resized bicubically to 14x14 once;
  its relative position tables are interpolated by segment-anything's own ``get_rel_pos``
  (linear resize of the global blocks' 127-entry tables to 27 entries; the windowed blocks use
  14x14 windows, which at a 14x14 grid is one window, so their tables are used as stored).
  ``input_size=1024`` instead runs the teacher on a 1024 px rendering of the same view and
  average-pools its 64x64 output to the student's grid.
* **the neck output (256 channels)**. It is what SAM's mask decoder consumes and what
  EfficientSAM's own image encoder produces (its neck maps to the same 256 channels), so the
  student learns the representation it is later fine-tuned to provide; it is also 5x cheaper
  to cache than ViT-H's 1280-channel trunk output. ``output="trunk"`` gives the last block's
  tokens instead.

A teacher is always frozen: eval mode (``train()`` does not change that), no parameter
requires a gradient, and :meth:`Teacher.forward` runs under ``torch.inference_mode`` and
returns a normal (non-inference) float32 tensor the loss can use.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from esam.checkpoint import CheckpointError, check_state_dict
from esam.errors import InputError
from esam.modeling.vit import ViT, resize_pos_embed
from esam.utils.io import sha256_file

FeatureKind = Literal["neck", "trunk"]

SAM_TEACHERS: dict[str, str] = {"sam_vit_h": "vit_h", "sam_vit_l": "vit_l", "sam_vit_b": "vit_b"}
"""esam teacher name -> ``segment_anything.sam_model_registry`` key."""
EFFICIENTSAM_TEACHERS = ("efficientsam_vitt", "efficientsam_vits", "efficientsam_vitb")
TEACHER_NAMES = (*SAM_TEACHERS, *EFFICIENTSAM_TEACHERS)
#: SAM image-encoder width -> the SAM model of that width (for error messages).
_SAM_BY_WIDTH = {1280: "sam_vit_h", 1024: "sam_vit_l", 768: "sam_vit_b"}
#: Input tokens per teacher call (16 px patches): 64 views at 224 px, 3 at 1024 px.
TOKENS_PER_CALL = 64 * 14 * 14

SAM_WEIGHTS_HINT = (
    "SAM checkpoints (sam_vit_h_4b8939.pth, sam_vit_l_0b3195.pth, sam_vit_b_01ec64.pth) are "
    "published under 'Model Checkpoints' in the README of "
    "https://github.com/facebookresearch/segment-anything; download one yourself and pass its path."
)


def _import_segment_anything() -> Any:
    try:
        import segment_anything
    except ImportError as e:
        raise ImportError(
            f"SAM teachers need the segment-anything package ({e}): pip install 'esam[sam]'"
        ) from e
    return segment_anything


class _SamBackbone(nn.Module):
    """segment-anything ``ImageEncoderViT`` run at any input grid: Bx3xHxW -> BxDxhxw."""

    def __init__(self, encoder: Any, grid: tuple[int, int], output: FeatureKind) -> None:
        super().__init__()
        self.encoder = encoder
        self.output = output
        self.grid = grid
        pos = getattr(encoder, "pos_embed", None)
        if pos is not None:
            # 1xSxSxC stored for the 1024 px grid -> 1xhxwxC for this teacher's grid, once.
            flat = pos.detach().reshape(1, -1, pos.shape[-1])
            resized = resize_pos_embed(flat, grid, has_cls_slot=False)
            self.register_buffer("pos_resized", resized.contiguous(), persistent=False)
        else:
            self.pos_resized = None

    pos_resized: torch.Tensor | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        enc: Any = self.encoder
        x = enc.patch_embed(x)  # B x h x w x C
        if self.pos_resized is not None:
            if tuple(x.shape[1:3]) != self.grid:
                raise InputError(
                    f"teacher built for a {self.grid} token grid, got {tuple(x.shape[1:3])}"
                )
            x = x + self.pos_resized
        for blk in enc.blocks:
            x = blk(x)
        x = x.permute(0, 3, 1, 2)  # B x C x h x w
        return enc.neck(x) if self.output == "neck" else x


class _EfficientSamBackbone(nn.Module):
    """esam ``ImageEncoderViT`` (position embedding resized per call): Bx3xHxW -> BxDxhxw."""

    def __init__(self, encoder: ViT, output: FeatureKind) -> None:
        super().__init__()
        self.encoder = encoder
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder.forward_features(x)  # B x C x h x w
        if self.output == "neck":
            neck = getattr(self.encoder, "neck", None)
            if neck is None:
                raise InputError("output='neck' needs an image encoder with a neck")
            feats = neck(feats)
        return feats


class Teacher(nn.Module):
    """A frozen image encoder giving BxNxD target features on the student's token grid.

    Build with :func:`build_teacher`, :meth:`from_sam_encoder` or
    :meth:`from_efficientsam_encoder`.

    Args:
        backbone: module mapping Bx3xSxS normalised images to BxDxhxw features.
        name: teacher name recorded with results and caches.
        input_size: side S of the teacher's input; other sizes are resized bilinearly.
        output_grid: side of the student's token grid; the teacher's h x w output is
            average-pooled to it when they differ.
        feature_dim: D.
        output: which features (``"neck"`` or ``"trunk"``), recorded.
        checkpoint: the weights file, or None (recorded).
        checkpoint_sha256: SHA-256 of that file, or None.
        random_weights: the weights are untrained (speed measurements only).
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        name: str,
        input_size: int,
        output_grid: int,
        feature_dim: int,
        output: FeatureKind,
        checkpoint: str | None = None,
        checkpoint_sha256: str | None = None,
        random_weights: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.name = name
        self.input_size = input_size
        self.output_grid = output_grid
        self.feature_dim = feature_dim
        self.output = output
        self.checkpoint = checkpoint
        self.checkpoint_sha256 = checkpoint_sha256
        self.random_weights = random_weights
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Teacher:
        """A teacher stays in eval mode whatever its parent asks."""
        return super().train(False)

    @property
    def num_tokens(self) -> int:
        """N = output_grid squared."""
        return self.output_grid * self.output_grid

    def describe(self) -> dict[str, Any]:
        """What a results file or a feature cache records about this teacher."""
        return {
            "name": self.name,
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha256,
            "random_weights": self.random_weights,
            "input_size": self.input_size,
            "output": self.output,
            "output_grid": self.output_grid,
            "feature_dim": self.feature_dim,
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Target features of normalised views.

        Args:
            images: Bx3xHxW normalised (ImageNet mean/std) views. Views of another size than
                ``input_size`` are resized bilinearly; rendering them at ``input_size`` from
                the same view parameters is sharper.

        Returns:
            BxNxD float32 (N = ``output_grid``**2, row-major), a normal tensor (not an
            inference tensor), on the teacher's device.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"images must have shape Bx3xHxW, got {tuple(images.shape)}")
        # at most TOKENS_PER_CALL input tokens per call: SAM's global attention holds a
        # tokens x tokens matrix per head and image (at 1024 px, 4096^2 x 16 heads each)
        chunk = max(1, TOKENS_PER_CALL // (self.input_size // 16) ** 2)
        outs = [self._features(images[i : i + chunk]) for i in range(0, len(images), chunk)]
        return torch.cat(outs) if len(outs) != 1 else outs[0]

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        param = next(self.backbone.parameters())
        with torch.inference_mode():
            x = images.to(device=param.device, dtype=param.dtype)
            s = self.input_size
            if x.shape[-2:] != (s, s):
                x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
            feats = self.backbone(x)  # B x D x h x w
            g = self.output_grid
            if feats.shape[-2:] != (g, g):
                feats = F.adaptive_avg_pool2d(feats, (g, g))
            out = feats.flatten(2).transpose(1, 2).float()  # B x N x D
        return out.clone()

    @classmethod
    def from_sam_encoder(
        cls,
        encoder: Any,
        *,
        name: str = "sam",
        input_size: int = 224,
        output: FeatureKind = "neck",
        output_grid: int = 14,
        checkpoint: str | None = None,
        checkpoint_sha256: str | None = None,
        random_weights: bool = False,
    ) -> Teacher:
        """Wrap a segment-anything ``ImageEncoderViT`` (already holding its weights)."""
        _check_output(output)
        patch = int(encoder.patch_embed.proj.kernel_size[0])
        if input_size % patch:
            raise InputError(f"input_size {input_size} is not a multiple of the patch size {patch}")
        grid = (input_size // patch, input_size // patch)
        dim = (
            int(encoder.neck[-2].out_channels)
            if output == "neck"
            else int(encoder.patch_embed.proj.out_channels)
        )
        return cls(
            _SamBackbone(encoder, grid, output),
            name=name,
            input_size=input_size,
            output_grid=output_grid,
            feature_dim=dim,
            output=output,
            checkpoint=checkpoint,
            checkpoint_sha256=checkpoint_sha256,
            random_weights=random_weights,
        )

    @classmethod
    def from_efficientsam_encoder(
        cls,
        encoder: ViT,
        *,
        name: str = "efficientsam",
        input_size: int = 224,
        output: FeatureKind = "neck",
        output_grid: int = 14,
        checkpoint: str | None = None,
        checkpoint_sha256: str | None = None,
        random_weights: bool = False,
    ) -> Teacher:
        """Wrap an esam :class:`~esam.modeling.image_encoder.ImageEncoderViT` (or a bare ViT
        with ``output="trunk"``)."""
        _check_output(output)
        if input_size % encoder.patch_size:
            raise InputError(
                f"input_size {input_size} is not a multiple of the patch size {encoder.patch_size}"
            )
        if output == "neck":
            if not hasattr(encoder, "neck_dim"):
                raise InputError("output='neck' needs an image encoder with a neck")
            dim = int(encoder.neck_dim)  # type: ignore[arg-type]
        else:
            dim = encoder.embed_dim
        return cls(
            _EfficientSamBackbone(encoder, output),
            name=name,
            input_size=input_size,
            output_grid=output_grid,
            feature_dim=dim,
            output=output,
            checkpoint=checkpoint,
            checkpoint_sha256=checkpoint_sha256,
            random_weights=random_weights,
        )


def _check_output(output: str) -> None:
    if output not in ("neck", "trunk"):
        raise InputError(f"output must be 'neck' or 'trunk', got {output!r}")


def _encoder_size(state: dict[str, torch.Tensor]) -> tuple[int | None, int]:
    """(width, number of blocks) of an image-encoder state dict."""
    w = state.get("patch_embed.proj.weight")
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    return (int(w.shape[0]) if w is not None else None), len(blocks)


def read_sam_encoder_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The image-encoder state dict of a SAM checkpoint (keys without ``image_encoder.``).

    Accepts the official ``sam_vit_*.pth`` files (the whole ``Sam`` state dict, of which the
    ``image_encoder.*`` keys are taken) and bare image-encoder state dicts. Read with
    ``torch.load(weights_only=True, mmap=True)``: nothing in the file is executed.

    Raises:
        FileNotFoundError: no such file (the message says where SAM weights are published).
        CheckpointError: not a state dict of tensors.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"SAM checkpoint not found: {p}. {SAM_WEIGHTS_HINT}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(
            f"{p}: cannot be read as a PyTorch checkpoint with weights_only=True: {e}"
        ) from e
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{p}: expected a state dict of tensors (an official sam_vit_*.pth)")
    prefix = "image_encoder."
    if any(k.startswith(prefix) for k in obj):
        return {k[len(prefix) :]: v for k, v in obj.items() if k.startswith(prefix)}
    return dict(obj)


def load_sam_image_encoder(
    encoder: nn.Module,
    path: str | os.PathLike[str],
    name: str = "the SAM teacher",
    assign: bool = False,
) -> None:
    """Strictly load a SAM checkpoint's image encoder into ``encoder``.

    ``assign=True`` takes the file's tensors instead of copying into ``encoder``'s (for an
    encoder built on the meta device).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: a file for another SAM size (one line naming both sizes), or keys that
            do not match (one error listing every missing, unexpected or mis-shaped key).
    """
    state = read_sam_encoder_state(path)
    own = encoder.state_dict()
    want_w, want_d = _encoder_size(own)
    got_w, got_d = _encoder_size(state)
    if got_w is not None and (got_w, got_d) != (want_w, want_d):
        looks = _SAM_BY_WIDTH.get(got_w, "an unknown size")
        raise CheckpointError(
            f"{path}: wrong-size SAM checkpoint: its image encoder has width {got_w} and {got_d} blocks "
            f"(looks like {looks}), but {name} has width {want_w} and {want_d} blocks"
        )
    check_state_dict(encoder, state, f"{path} (image_encoder.*)")
    encoder.load_state_dict(state, strict=True, assign=assign)


def build_teacher(
    name: str,
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    input_size: int = 224,
    output: FeatureKind = "neck",
    output_grid: int = 14,
    random_weights: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    hash_checkpoint: bool = True,
) -> Teacher:
    """Build a frozen teacher by name.

    Args:
        name: one of :data:`TEACHER_NAMES`.
        checkpoint: ``sam_vit_*.pth`` for SAM teachers; an official or esam EfficientSAM file
            for ``efficientsam_*``.
        input_size: side of the teacher's input (224: the student's view; 1024: SAM's native
            size, output pooled to ``output_grid``).
        output: ``"neck"`` (256 channels, default) or ``"trunk"`` (last block's width).
        output_grid: the student's token grid side (14 at 224 px).
        random_weights: build untrained weights without a checkpoint; for speed measurements
            only, never implied.
        device: where the teacher runs.
        dtype: the teacher's parameter dtype (bfloat16/float16 halve its cost on GPUs);
            features are returned as float32.
        hash_checkpoint: record the checkpoint file's SHA-256 (reads the whole file once).

    Raises:
        InputError: unknown name, bad option, or no checkpoint without ``random_weights``.
        FileNotFoundError: the checkpoint does not exist.
        CheckpointError: the checkpoint does not fit (named error).
        ImportError: a SAM teacher without segment-anything installed.
    """
    if name not in TEACHER_NAMES:
        raise InputError(f"unknown teacher {name!r}; choose from {list(TEACHER_NAMES)}")
    _check_output(output)
    if checkpoint is not None and random_weights:
        raise InputError("pass either a checkpoint or random_weights=True, not both")
    if checkpoint is None and not random_weights:
        hint = SAM_WEIGHTS_HINT if name in SAM_TEACHERS else _efficientsam_hint()
        raise InputError(
            f"teacher {name!r} needs checkpoint=PATH. {hint} "
            "(random_weights=True builds an untrained teacher for speed measurements only.)"
        )
    ckpt = os.fspath(checkpoint) if checkpoint is not None else None
    digest = (
        sha256_file(ckpt) if ckpt is not None and hash_checkpoint and Path(ckpt).is_file() else None
    )
    common: dict[str, Any] = dict(
        name=name,
        input_size=input_size,
        output=output,
        output_grid=output_grid,
        checkpoint=ckpt,
        checkpoint_sha256=digest,
        random_weights=random_weights,
    )
    if name in SAM_TEACHERS:
        sa = _import_segment_anything()
        if ckpt is not None and not Path(ckpt).is_file():
            raise FileNotFoundError(f"SAM checkpoint not found: {ckpt}. {SAM_WEIGHTS_HINT}")
        # With a checkpoint, build on the meta device (no 600M-parameter random init) and take
        # the file's tensors; random weights are initialised on the target device directly.
        where = torch.device("meta") if ckpt is not None else torch.device(device or "cpu")
        with where:
            encoder = sa.sam_model_registry[SAM_TEACHERS[name]](checkpoint=None).image_encoder
        if ckpt is not None:
            load_sam_image_encoder(encoder, ckpt, name, assign=True)
        teacher = Teacher.from_sam_encoder(encoder, **common)
    else:
        import esam

        if ckpt is not None:
            _check_efficientsam_size(name, ckpt)
        model = esam.build_model(name, ckpt)
        teacher = Teacher.from_efficientsam_encoder(model.image_encoder, **common)
    if device is not None:
        teacher = teacher.to(device)
    return teacher.to(dtype)


def _check_efficientsam_size(name: str, path: str) -> None:
    """One-line error for an EfficientSAM file of another size than ``name``.

    esam checkpoints name their model (a mismatch is refused by the builder); official files
    and bare state dicts do not, so their image encoder's width and depth are compared with
    the registry's.
    """
    from esam.build import MODEL_CONFIGS
    from esam.checkpoint import read_checkpoint

    state, info = read_checkpoint(path)
    if isinstance(info.get("config"), dict):
        return
    prefix = "image_encoder."
    got_w, got_d = _encoder_size(
        {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    )
    cfg = MODEL_CONFIGS[name]
    if got_w is not None and (got_w, got_d) != (cfg.encoder_embed_dim, cfg.encoder_depth):
        looks = next(
            (n for n, c in MODEL_CONFIGS.items() if c.encoder_embed_dim == got_w), "an unknown size"
        )
        raise CheckpointError(
            f"{path}: wrong-size EfficientSAM checkpoint: its image encoder has width {got_w} and {got_d} blocks "
            f"(looks like {looks}), but {name} has width {cfg.encoder_embed_dim} and {cfg.encoder_depth} blocks"
        )


def _efficientsam_hint() -> str:
    from esam.checkpoint import OFFICIAL_WEIGHTS_HINT

    return OFFICIAL_WEIGHTS_HINT
