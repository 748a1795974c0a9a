"""Checkpoint reading and writing: formats, strictness, clear errors."""

from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path

import pytest
import torch

import esam
from esam.build import build_from_config
from esam.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from esam.standin import load_standin_weights

TINY = {"img_size": 64, "encoder_depth": 1}


def _tiny():
    return load_standin_weights(esam.build_model("efficientsam_vitt", **TINY))


def _params_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_esam_checkpoint_round_trip(tmp_path: Path, suffix: str) -> None:
    model = _tiny()
    path = save_checkpoint(
        model, tmp_path / f"m{suffix}", "efficientsam_vitt", model.config.to_dict()
    )
    state, info = read_checkpoint(path)
    assert info["model_name"] == "efficientsam_vitt"
    assert esam.EfficientSamConfig.from_dict(info["config"]) == model.config
    fresh = esam.build_model("efficientsam_vitt", checkpoint=path, **TINY)
    assert _params_equal(model, fresh)


def test_official_layout_and_zip_archive(tmp_path: Path) -> None:
    model = _tiny()
    official = tmp_path / "efficient_sam_vitt.pt"
    torch.save({"model": model.state_dict()}, official)
    assert _params_equal(model, esam.build_model("efficientsam_vitt", official, **TINY))
    # The S weights are published as a zip archive that contains the .pt file.
    archive = tmp_path / "efficient_sam_vits.pt.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(official, "weights/efficient_sam_vitt.pt")
    assert _params_equal(model, esam.build_model("efficientsam_vitt", archive, **TINY))
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    assert read_checkpoint(bare)[1]["format"] == "state_dict"


def test_strict_load_lists_every_problem_and_leaves_model_untouched(tmp_path: Path) -> None:
    source = _tiny()
    state = dict(source.state_dict())
    del state["mask_decoder.iou_token.weight"]
    del state["image_encoder.neck.0.weight"]
    state["extra.weight"] = torch.zeros(3)
    state["image_encoder.pos_embed"] = torch.zeros(1, 50, 192)
    path = tmp_path / "bad.pt"
    torch.save({"model": state}, path)
    target = esam.build_model("efficientsam_vitt", **TINY)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        esam.load_model_weights(target, path)
    msg = str(err.value)
    assert (
        "missing keys (2)" in msg
        and "mask_decoder.iou_token.weight" in msg
        and "image_encoder.neck.0.weight" in msg
    )
    assert "unexpected keys (1): extra.weight" in msg
    assert "image_encoder.pos_embed: checkpoint (1, 50, 192) vs model (1, 197, 192)" in msg
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_missing_file_says_where_weights_come_from(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="github.com/yformer/EfficientSAM"):
        esam.build_model("efficientsam_vitt", tmp_path / "nope.pt")


def test_corrupt_and_unsafe_files_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        read_checkpoint(garbage)
    unsafe = tmp_path / "unsafe.pt"
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(1)}, "hook": Path("/tmp")}, buf)  # not weights-only safe
    unsafe.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="weights_only"):
        read_checkpoint(unsafe)
    odd = tmp_path / "odd.pt"
    torch.save({"optimizer": {"lr": 1.0}}, odd)
    with pytest.raises(CheckpointError, match="unknown checkpoint layout"):
        read_checkpoint(odd)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="safetensors"):
        read_checkpoint(bad_st)


def test_checkpoint_for_another_model_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(_tiny(), tmp_path / "t.pt", "efficientsam_vitt")
    with pytest.raises(
        CheckpointError, match="for model 'efficientsam_vitt', not 'efficientsam_vits'"
    ):
        esam.load_model_weights(
            esam.build_model("efficientsam_vits", **TINY), path, expected_name="efficientsam_vits"
        )


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match="unknown model 'efficientsam_huge'"):
        esam.build_model("efficientsam_huge")


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="multiple of patch_size"):
        esam.EfficientSamConfig(encoder_embed_dim=192, encoder_num_heads=3, img_size=100)
    with pytest.raises(ValueError, match="unknown EfficientSamConfig keys"):
        esam.EfficientSamConfig.from_dict(
            {"encoder_embed_dim": 192, "encoder_num_heads": 3, "bogus": 1}
        )


def test_stored_config_is_used_and_enforced(tmp_path: Path) -> None:
    """Position embeddings are stored at 14x14, so shapes alone cannot reveal the input size."""
    model = _tiny()  # 64 px, 1 block
    path = save_checkpoint(
        model,
        tmp_path / "small.safetensors",
        "efficientsam_vitt",
        model.config.to_dict(),
        weights="standin",
    )
    rebuilt = esam.build_model("efficientsam_vitt", path)
    assert rebuilt.config == model.config and _params_equal(model, rebuilt)
    assert rebuilt.weights_info["weights"] == "standin"
    with pytest.raises(CheckpointError, match="img_size: checkpoint 64 vs model 1024"):
        esam.build_model("efficientsam_vitt", path, img_size=1024)
    full = esam.build_model("efficientsam_vitt", encoder_depth=1)
    with pytest.raises(CheckpointError, match="img_size: checkpoint 64 vs model 1024"):
        esam.load_model_weights(full, path)


def test_prompt_pe_scale_sets_initial_frequencies_only(tmp_path: Path) -> None:
    """The scale multiplies the random frequencies a model starts with; once saved, the
    frequencies travel with the weights, so a model built with another scale loads them."""
    arch = esam.EfficientSamConfig(
        encoder_embed_dim=48, encoder_num_heads=3, encoder_depth=1, img_size=64, neck_dim=32
    )
    torch.manual_seed(0)
    plain = build_from_config(arch)
    torch.manual_seed(0)
    narrow = build_from_config(dataclasses.replace(arch, prompt_pe_scale=0.25))
    key = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
    torch.testing.assert_close(narrow.state_dict()[key], 0.25 * plain.state_dict()[key])
    path = save_checkpoint(narrow, tmp_path / "narrow.pt", "efficientsam", narrow.config.to_dict())
    esam.load_model_weights(plain, path)
    assert _params_equal(plain, narrow)
    with pytest.raises(ValueError, match="prompt_pe_scale must be positive, got 0"):
        dataclasses.replace(arch, prompt_pe_scale=0)
