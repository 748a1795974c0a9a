"""Frozen teachers: EfficientSAM checkpoints (stand-in weights) and SAM-architecture encoders."""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import esam
from esam.checkpoint import CheckpointError
from esam.errors import InputError
from esam.sami.model import SamiModel
from esam.sami.teacher import (
    Teacher,
    build_teacher,
    load_sam_image_encoder,
)
from esam.standin import load_standin_weights
from tests.numerics import network_tolerance
from tests.test_sami_model import tiny_encoder

TINY = {"img_size": 64, "encoder_depth": 2}


@pytest.fixture(scope="module")
def vitt_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in EfficientSAM-Ti (2 blocks) saved as an esam checkpoint."""
    model = load_standin_weights(esam.build_model("efficientsam_vitt", **TINY))
    path = tmp_path_factory.mktemp("teacher") / "vitt_standin.pt"
    esam.save_checkpoint(model, path, "efficientsam_vitt", model.config.to_dict(), "standin")
    return path


def test_efficientsam_teacher_matches_its_image_encoder(vitt_checkpoint: Path) -> None:
    teacher = build_teacher("efficientsam_vitt", vitt_checkpoint, input_size=64, output_grid=4)
    model = esam.build_model("efficientsam_vitt", vitt_checkpoint)
    x = torch.randn(2, 3, 64, 64)
    feats = teacher(x)
    assert feats.shape == (2, 16, 256) and feats.dtype == torch.float32
    assert not feats.is_inference() and not feats.requires_grad
    with torch.no_grad():
        want = model.image_encoder(x).flatten(2).transpose(1, 2)
    assert torch.allclose(feats, want, atol=1e-5)
    desc = teacher.describe()
    assert desc["name"] == "efficientsam_vitt" and len(desc["checkpoint_sha256"]) == 64
    trunk = build_teacher(
        "efficientsam_vitt", vitt_checkpoint, input_size=64, output="trunk", output_grid=4
    )
    assert trunk(x).shape == (2, 16, 192)


def test_a_large_batch_is_run_in_chunks_with_the_same_features(
    vitt_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import esam.sami.teacher as teacher_module

    teacher = build_teacher("efficientsam_vitt", vitt_checkpoint, input_size=64, output_grid=4)
    x = torch.randn(5, 3, 64, 64)
    whole = teacher(x)
    calls: list[int] = []
    real = teacher._features
    monkeypatch.setattr(teacher, "_features", lambda v: (calls.append(len(v)), real(v))[1])
    monkeypatch.setattr(teacher_module, "TOKENS_PER_CALL", 2 * 16)  # 2 views of 4x4 tokens
    chunked = teacher(x)
    assert calls == [2, 2, 1]
    # a view's features do not depend on the others in its call; only rounding differs
    tol = network_tolerance(torch.float32, 768, 12) * float(whole.abs().max())
    assert float((chunked - whole).abs().max()) <= tol


def test_larger_teacher_view_is_pooled_to_the_student_grid(vitt_checkpoint: Path) -> None:
    teacher = build_teacher("efficientsam_vitt", vitt_checkpoint, input_size=128, output_grid=4)
    enc = esam.build_model("efficientsam_vitt", vitt_checkpoint).image_encoder
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        big = F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False)
        want = F.adaptive_avg_pool2d(enc.neck(enc.forward_features(big)), 4)
    assert torch.allclose(teacher(x), want.flatten(2).transpose(1, 2), atol=1e-5)


def test_teacher_stays_frozen_through_a_student_step(vitt_checkpoint: Path) -> None:
    teacher = build_teacher("efficientsam_vitt", vitt_checkpoint, input_size=64, output_grid=4)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    assert all(not p.requires_grad for p in teacher.parameters())
    student = SamiModel(tiny_encoder(), teacher_dim=256, decoder_depth=1, decoder_dim=32)
    holder = torch.nn.ModuleDict({"student": student, "teacher": teacher}).train()
    assert not teacher.training  # train() on a parent leaves the teacher in eval mode
    opt = torch.optim.SGD([p for p in holder.parameters() if p.requires_grad], lr=0.5)
    images = torch.randn(2, 3, 64, 64)
    loss, _, _ = student(images, teacher(images))
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert any(p.grad is not None for p in student.parameters())


def test_teacher_builder_errors(vitt_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown teacher"):
        build_teacher("sam_vit_x")
    with pytest.raises(InputError, match="random_weights=True"):
        build_teacher("efficientsam_vitt")
    with pytest.raises(FileNotFoundError, match="yformer/EfficientSAM"):
        build_teacher("efficientsam_vitt", tmp_path / "missing.pt")
    with pytest.raises(InputError, match="not both"):
        build_teacher("efficientsam_vitt", vitt_checkpoint, random_weights=True)
    with pytest.raises(CheckpointError, match="not 'efficientsam_vits'"):
        build_teacher("efficientsam_vits", vitt_checkpoint)  # an esam Ti file for an S teacher
    # an official-layout file (no name, no config) of another size: one line naming both
    official = tmp_path / "efficient_sam_vits.pt"
    vits = esam.build_model("efficientsam_vits", img_size=64)
    torch.save({"model": vits.state_dict()}, official)
    with pytest.raises(CheckpointError) as err:
        build_teacher("efficientsam_vitt", official)
    msg = str(err.value)
    assert "wrong-size EfficientSAM checkpoint" in msg and "looks like efficientsam_vits" in msg
    assert "\n" not in msg
    rand = build_teacher("efficientsam_vitt", random_weights=True, input_size=64, output_grid=4)
    assert rand.describe()["random_weights"] and rand.checkpoint is None


def test_import_stays_light() -> None:
    code = (
        "import sys, esam, esam.sami, esam.sami.teacher, esam.sami.cache, esam.data.views; "
        "bad = [m for m in ('segment_anything', 'torchvision', 'timm') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- SAM architecture (segment-anything), tiny sizes ---------------------------------------


def _tiny_sam_encoder(dim: int = 32, depth: int = 2):
    sam_modeling = pytest.importorskip("segment_anything.modeling")
    enc = sam_modeling.ImageEncoderViT(
        img_size=128,
        patch_size=16,
        embed_dim=dim,
        depth=depth,
        num_heads=2,
        out_chans=16,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=4,
        global_attn_indexes=(depth - 1,),
    )
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_(0.0, 0.05)
    return enc.eval()


@pytest.fixture(scope="module")
def sam_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny SAM-architecture encoder saved like an official sam_vit_*.pth (whole Sam)."""
    enc = _tiny_sam_encoder()
    state = {f"image_encoder.{k}": v for k, v in enc.state_dict().items()}
    state["mask_decoder.iou_token.weight"] = torch.zeros(1, 16)
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(state, path)
    return path, enc.state_dict()


def test_sam_encoder_loads_strictly_and_matches_its_own_forward(sam_file) -> None:
    path, ref_state = sam_file
    enc = _tiny_sam_encoder()
    load_sam_image_encoder(enc, path)
    assert all(torch.equal(enc.state_dict()[k], v) for k, v in ref_state.items())
    native = Teacher.from_sam_encoder(enc, input_size=128, output_grid=8)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        want = enc(x).flatten(2).transpose(1, 2)
    assert torch.allclose(native(x), want, atol=1e-6)
    # at the student's smaller view: absolute embedding resized by esam, relative tables
    # interpolated by segment-anything's own get_rel_pos
    small = Teacher.from_sam_encoder(enc, input_size=64, output_grid=4)
    assert small(torch.randn(2, 3, 64, 64)).shape == (2, 16, 16)
    trunk = Teacher.from_sam_encoder(enc, input_size=64, output_grid=4, output="trunk")
    assert trunk(torch.randn(1, 3, 64, 64)).shape == (1, 16, 32)


def test_sam_wrong_size_and_key_errors(sam_file, tmp_path: Path) -> None:
    path, ref_state = sam_file
    with pytest.raises(CheckpointError) as err:
        load_sam_image_encoder(_tiny_sam_encoder(dim=64), path, "sam_tiny64")
    msg = str(err.value)
    assert "wrong-size SAM checkpoint" in msg and "width 32" in msg and "\n" not in msg
    broken = {f"image_encoder.{k}": v for k, v in ref_state.items() if "rel_pos_h" not in k}
    broken["image_encoder.extra.weight"] = torch.zeros(2)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \(2\).*\n.*unexpected keys \(1\)"):
        load_sam_image_encoder(_tiny_sam_encoder(), tmp_path / "broken.pth")
    with pytest.raises(FileNotFoundError, match="segment-anything"):
        load_sam_image_encoder(_tiny_sam_encoder(), tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_sam_image_encoder(_tiny_sam_encoder(), tmp_path / "junk.pth")


def test_sam_teacher_by_name_refuses_a_wrong_size_file(sam_file) -> None:
    pytest.importorskip("segment_anything")
    path, _ = sam_file
    # ViT-B is built on the meta device (no weights allocated) before the size check
    with pytest.raises(CheckpointError, match=r"width 32 and 2 blocks .* sam_vit_b has width 768"):
        build_teacher("sam_vit_b", path)
