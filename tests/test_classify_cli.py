"""``esam eval imagenet``'s command line: KEY=VALUE overrides among the flags, in any order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from esam.classify.config import ClassifyConfig
from esam.cli.imagenet import parser, resolve_config
from esam.cli.main import main
from esam.data.synth_classes import write_synth_classes


def _cfg(*argv: str) -> ClassifyConfig:
    return resolve_config(parser().parse_intermixed_args(list(argv)))


def test_overrides_may_stand_before_between_and_after_flags() -> None:
    cfg = _cfg(
        "train.epochs=3", "--mode", "linear", "linear.lars=false", "--config", "tiny",
        "--train", "t", "data.eval_batch_size=7", "--val", "v", "--output", "o",
        "model.name=mixed",
    )  # fmt: skip
    assert (cfg.mode, cfg.data.train, cfg.data.val, cfg.output) == ("linear", "t", "v", "o")
    assert cfg.train.epochs == 3 and cfg.linear.lars is False
    assert cfg.data.eval_batch_size == 7 and cfg.model.name == "mixed"
    assert cfg.model.embed_dim == 64  # the tiny config still applies under the overrides
    # an override wins over a flag wherever it stands; overrides apply in order
    cfg = _cfg("data.val=a", "--val", "b", "train.epochs=2", "train.epochs=5", "--config", "tiny")
    assert cfg.data.val == "a" and cfg.train.epochs == 5


def test_mixed_order_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_synth_classes(tmp_path / "shapes", 2, 8, val_per_class=3, size=32).out
    out = tmp_path / "run"
    args = [
        "eval", "imagenet", "train.epochs=1", "--mode", "finetune", "train.batch_size=8",
        "--config", "tiny", "--train", str(data / "train"), "train.progress=false",
        "--val", str(data / "val"), "--output", str(out), "model.name=mixed order",
    ]  # fmt: skip
    assert main(args) == 0
    assert "top-1" in capsys.readouterr().out
    r = json.loads((out / "results.json").read_text())
    assert r["model"]["name"] == "mixed order" and r["config"]["epochs"] == 1
    assert r["metrics"]["n_images"] == 6 and r["metrics"]["steps"] == 2  # 16 images / batch 8


def test_bad_arguments_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["eval", "imagenet", "--mode", "finetune", "--no-such-flag"])
    assert "--no-such-flag" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["eval", "imagenet", "--help"])
    assert e.value.code == 0 and "KEY=VALUE" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_device_without_cuda_and_a_missing_backbone_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_synth_classes(tmp_path / "shapes", 2, 2, val_per_class=1, size=32).out
    base = [
        "eval", "imagenet", "--mode", "linear", "--config", "tiny", "--train",
        str(data / "train"), "--val", str(data / "val"), "--output", str(tmp_path / "run"),
    ]  # fmt: skip
    assert main([*base, "device=cuda"]) != 0
    assert "CUDA is not available on this machine; run on the CPU" in capsys.readouterr().err
    assert main([*base, "device=cpu", "--backbone", str(tmp_path / "nope.pt")]) != 0
    err = capsys.readouterr().err
    assert f"backbone checkpoint not found: {tmp_path / 'nope.pt'} (pass --backbone PATH" in err
