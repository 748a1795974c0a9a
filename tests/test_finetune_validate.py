"""Held-out validation during ``esam finetune``: the harness's numbers, when they are logged,
bad files, and that scoring changes nothing about training."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from esam.cli.main import main
from esam.config import load_config
from esam.data.skips import SKIP_IMAGE_CORRUPT, SKIP_IMAGE_MISSING, SKIP_IN_SKIPPED_IMAGE
from esam.data.synth_sa1b import write_synthetic_sa1b
from esam.finetune.config import FinetuneConfig
from esam.finetune.model import build_finetune_model, save_finetuned
from esam.finetune.validate import Validation
from esam.runtime.distributed import DistContext
from esam.train.metrics import read_log
from tests.distributed import torchrun

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sa1b")
    write_synthetic_sa1b(root / "train", 8, seed=0, height=96)
    write_synthetic_sa1b(root / "val", 5, seed=1, height=96)
    return root / "train", root / "val"


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "finetune", "--config", "tiny", "--data", str(data), "--output", str(out),
        "model.img_size=96", "model.encoder_depth=1", "data.max_masks=4",
        "train.batch_size=2", "train.log_every=1", "train.progress=false",
        "train.schedule.warmup_steps=0", *extra,
    ]  # fmt: skip


def _harness(model: Path, data: Path, prompt: str, out: Path) -> float:
    argv = [
        "eval", "zeroshot", "--model", "efficientsam", "--checkpoint", str(model),
        "--dataset", "sa1b", "--annotations", str(data), "--images", str(data),
        "--prompt", prompt, "--workers", "0", "--no-progress", "--output", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    return float(json.loads(out.read_text())["metrics"]["miou"])


def test_validation_scores_what_the_harness_scores(sets: tuple[Path, Path], tmp_path: Path) -> None:
    _, val = sets
    cfg = load_config(
        FinetuneConfig,
        "tiny",
        ["model.img_size=96", "model.encoder_depth=1", f"val.path={val}",
         "val.prompts=[box, point1, point3]"],
    )  # fmt: skip
    torch.manual_seed(3)
    model, _ = build_finetune_model(cfg)  # random weights: masks of every shape and size
    values = Validation(cfg.val, model, DistContext())()
    path = save_finetuned(model, tmp_path / "model.pt", "test")
    for prompt in ("box", "point1", "point3"):
        expected = _harness(path, val, prompt, tmp_path / f"{prompt}.json")
        assert values[f"val_{prompt}_miou"] == pytest.approx(expected, abs=1e-9), prompt
    # not a degenerate model: the prompts give different masks
    assert len({round(v, 6) for v in values.values()}) == 3, values


def test_a_run_validates_after_each_epoch_without_changing_its_training(
    sets: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, val = sets
    plain, checked = tmp_path / "plain", tmp_path / "checked"
    assert main(_args(train, plain, "train.epochs=3")) == 0
    capsys.readouterr()
    assert main(_args(train, checked, "train.epochs=3", "--val-data", str(val))) == 0
    printed = capsys.readouterr().out
    rows = read_log(checked / "log.jsonl")
    steps = [r for r in rows if "loss" in r]
    vals = [r for r in rows if "val_box_miou" in r]
    # the same training, bit for bit: scoring draws no random number and leaves train mode
    assert [r["loss"] for r in steps] == [r["loss"] for r in read_log(plain / "log.jsonl")]
    assert [(r["step"], r["epoch"]) for r in vals] == [(4, 0), (8, 1), (12, 2)]
    assert all(0 <= r["val_box_miou"] <= 100 and r["eval_s"] > 0 for r in vals)
    results = json.loads((checked / "results.json").read_text())
    block = results["val"]
    assert block["n_images"] == 5 and block["prompts"] == ["box", "point1"]
    assert [c["step"] for c in block["curve"]] == [4, 8, 12]
    final = vals[-1]
    assert results["metrics"]["val_box_miou"] == final["val_box_miou"]
    assert results["metrics"]["val_point1_miou"] == final["val_point1_miou"]
    assert f"val_box_miou {final['val_box_miou']:.2f}%" in printed
    # the final validation is the harness's number for the run's model.pt
    harness = _harness(checked / "model.pt", val, "box", tmp_path / "box.json")
    assert final["val_box_miou"] == pytest.approx(harness, abs=1e-9)


def test_validation_every_n_epochs_survives_a_resume(
    sets: tuple[Path, Path], tmp_path: Path
) -> None:
    train, val = sets
    full, split = tmp_path / "full", tmp_path / "split"
    common = ("train.epochs=3", "--val-data", str(val), "val.every_epochs=2")
    assert main(_args(train, full, *common)) == 0
    assert main(_args(train, split, *common, "train.max_steps=9")) == 0  # stopped in epoch 2
    assert main(_args(train, split, *common, "--resume")) == 0
    a, b = read_log(full / "log.jsonl"), read_log(split / "log.jsonl")
    val_a = [r for r in a if "val_box_miou" in r]
    val_b = [r for r in b if "val_box_miou" in r]
    # after the 2nd epoch, and at the end (the stopped session also scored its last step, 9)
    assert [r["step"] for r in val_a] == [8, 12]
    assert [r["step"] for r in val_b] == [8, 9, 12]
    keys = ("val_box_miou", "val_point1_miou")
    assert [[r[k] for k in keys] for r in val_a] == [[r[k] for k in keys] for r in val_b[::2]]
    assert [r["loss"] for r in a if "loss" in r] == [r["loss"] for r in b if "loss" in r]
    curve = json.loads((split / "results.json").read_text())["val"]["curve"]
    assert [c["step"] for c in curve] == [8, 9, 12]


def test_an_unreadable_validation_image_is_counted_not_fatal(
    sets: tuple[Path, Path], tmp_path: Path
) -> None:
    train, _ = sets
    root = tmp_path / "val"
    write_synthetic_sa1b(root, 4, seed=2, height=96, layout="folder")
    val = root / "sa_000000"
    jpgs = sorted(val.glob("*.jpg"))
    jpgs[1].write_bytes(b"not a jpeg")
    jpgs[2].unlink()  # its json stays: an image whose file is missing
    masks = [len(json.loads(j.with_suffix(".json").read_text())["annotations"]) for j in jpgs]
    out = tmp_path / "run"
    assert main(_args(train, out, "train.epochs=1", "--val-data", str(val))) == 0
    block = json.loads((out / "results.json").read_text())["val"]
    expected = {
        SKIP_IMAGE_CORRUPT: 1,
        SKIP_IMAGE_MISSING: 1,
        SKIP_IN_SKIPPED_IMAGE: masks[1] + masks[2],
    }
    for prompt in ("box", "point1"):
        assert block["skips"][prompt] == expected, block["skips"]
    assert block["n_images"] == 4
    # the two readable images' masks are scored
    assert block["n_scored"] == {"box": masks[0] + masks[3], "point1": masks[0] + masks[3]}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--val-data", "/no/such/folder"), "/no/such/folder"),
        (("val.every_epochs=-1",), "val.every_epochs must be >= 0"),
        (("val.prompts=[]",), "val.prompts is empty"),
        (("val.prompts=[box, point2]",), "point2"),
    ],
)
def test_bad_validation_settings_are_named_errors_before_training(
    sets: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], extra, message
) -> None:
    train, _ = sets
    assert main(_args(train, tmp_path / "run", "train.epochs=1", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_two_gloo_processes_score_what_one_scores(sets: tuple[Path, Path], tmp_path: Path) -> None:
    train, val = sets
    # a step of 1e-30 leaves every weight as it was (below the last bit of any nonzero one),
    # so both score the same model
    common = (
        "train.epochs=1", "train.max_steps=1", "train.optim.name=sgd", "train.optim.lr=1e-30",
        "train.optim.weight_decay=0", "--val-data", str(val),
    )  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    values = []
    for n, out in ((1, tmp_path / "one"), (2, tmp_path / "two")):
        cmd = [*torchrun(n, "-m", "esam.cli.main"), *_args(train, out, *common)]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        values.append(json.loads((out / "results.json").read_text())["metrics"])
    for key in ("val_box_miou", "val_point1_miou"):
        assert values[0][key] == values[1][key], key
