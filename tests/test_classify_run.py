"""esam eval imagenet end to end on a generated set: learning, probing, resume, two processes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from esam.cli.main import main
from esam.data.synth_classes import write_synthetic_classes
from esam.train.metrics import read_log
from esam.utils.results import validate_results
from tests.distributed import torchrun
from tests.numerics import network_tolerance

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 shape/colour classes, 32 px: 48 training and 12 val images per class."""
    root = tmp_path_factory.mktemp("shapes")
    write_synthetic_classes(root, 4, 48, 32, seed=0, split="train")
    write_synthetic_classes(root, 4, 12, 32, seed=0, split="val")
    return root


def _args(root: Path, out: Path, mode: str, *extra: str) -> list[str]:
    return [
        "eval", "imagenet", "--mode", mode, "--config", "tiny", "--train", str(root / "train"),
        "--val", str(root / "val"), "--output", str(out), "train.progress=false",
        "linear.train.progress=false", *extra,
    ]  # fmt: skip


def _results(out: Path) -> dict:
    return validate_results(json.loads((out / "results.json").read_text()))


def test_finetuning_a_random_tiny_vit_learns_the_classes(shapes: Path, tmp_path: Path) -> None:
    out = tmp_path / "ft"
    assert main(_args(shapes, out, "finetune", "train.epochs=6")) == 0
    r = _results(out)
    m = r["metrics"]
    assert r["task"] == "imagenet" and m["n_images"] == 48 and m["n_classes"] == 4
    assert m["top1"] >= 90.0, m  # chance: 25 %
    assert r["config"]["mode"] == "finetune" and r["config"]["img_size"] == 32
    assert r["config"]["epochs"] == 6 and r["config"]["aug"]["mixup"] == 0.0
    assert {p["class"] for p in r["per_class"]} == {
        "class_0_disc", "class_1_square", "class_2_triangle", "class_3_cross",
    }  # fmt: skip
    rows = [json.loads(x) for x in (out / r["rows_file"]).read_text().splitlines()]
    assert len(rows) == 48 and all(x["class_count"] == 12 for x in rows)
    assert sum(x["correct1"] for x in rows) == round(m["top1"] * 48 / 100)
    for name in ("config.yaml", "log.jsonl", "classifier.pt"):
        assert (out / name).is_file(), name
    # the saved classifier evaluates to the same numbers
    again = tmp_path / "again"
    extra = (f"model.checkpoint={out / 'classifier.pt'}",)
    assert main(_args(shapes, again, "eval", *extra)) == 0
    assert _results(again)["metrics"]["top1"] == m["top1"]
    assert _results(again)["config"]["mode"] == "finetune"
    # without the training config: the classifier's own size (32 px, not the default 224)
    # and the name it was trained under
    bare = tmp_path / "bare"
    argv = [
        "eval", "imagenet", "--mode", "eval", "--val", str(shapes / "val"), "--output",
        str(bare), f"model.checkpoint={out / 'classifier.pt'}", "device=cpu",
    ]  # fmt: skip
    assert main(argv) == 0
    rb = _results(bare)
    assert rb["metrics"]["top1"] == m["top1"] and rb["model"]["arch"]["img_size"] == 32
    assert rb["model"]["name"] == r["model"]["name"] == "random vit_tiny"


def test_linear_probe_on_a_frozen_random_backbone_beats_chance(
    shapes: Path, tmp_path: Path
) -> None:
    out = tmp_path / "probe"
    assert main(_args(shapes, out, "linear", "linear.train.epochs=10")) == 0
    r = _results(out)
    assert r["metrics"]["top1"] >= 60.0, r["metrics"]  # chance: 25 %
    feats = r["training"]["features"]
    assert not feats["train_cached"] and feats["dtype"] == "float16"
    cached = list((out / "features").glob("*.pt"))
    assert len(cached) == 2
    stored = torch.load(cached[0], weights_only=True)
    assert stored["features"].dtype == torch.float16
    # a second probe over the same backbone reads the cache instead of encoding again
    # (the random backbone is the same: same seed)
    out2 = tmp_path / "probe2"
    extra = ("linear.train.epochs=10", f"linear.cache={out / 'features'}")
    assert main(_args(shapes, out2, "linear", *extra)) == 0
    r2 = _results(out2)
    assert r2["training"]["features"]["train_cached"] and r2["training"]["features"]["val_cached"]
    assert r2["metrics"]["top1"] == r["metrics"]["top1"]


_AUG = (
    "aug.auto_augment=rand-m9-mstd0.5-inc1", "aug.reprob=0.25", "aug.mixup=0.8",
    "aug.cutmix=1.0", "aug.smoothing=0.1", "train.batch_size=16", "train.log_every=1",
)  # fmt: skip


def test_resume_reproduces_the_uninterrupted_run(shapes: Path, tmp_path: Path) -> None:
    full, split = tmp_path / "full", tmp_path / "split"
    common = (*_AUG, "train.epochs=2", "train.save_every_steps=4")
    assert main(_args(shapes, full, "finetune", *common)) == 0
    assert main(_args(shapes, split, "finetune", *common, "train.max_steps=5")) == 0
    assert main(_args(shapes, split, "finetune", *common, "--resume")) == 0
    a, b = read_log(full / "log.jsonl"), read_log(split / "log.jsonl")
    assert len(a) == 24 and [r["loss"] for r in a] == [r["loss"] for r in b]
    wa = torch.load(full / "classifier.pt", weights_only=True)["model"]
    wb = torch.load(split / "classifier.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _results(full)["metrics"]["top1"] == _results(split)["metrics"]["top1"]


def test_two_gloo_processes_match_one(shapes: Path, tmp_path: Path) -> None:
    """RandAugment and erasing are per-sample, so they split across processes; mixup mixes a
    process's own batch and is off here (see esam.classify.run). SGD: Adam's division by
    sqrt(v) turns rounding noise of near-zero gradients into lr-sized steps."""
    one, two = tmp_path / "one", tmp_path / "two"
    common = (
        "aug.auto_augment=rand-m9-mstd0.5-inc1", "aug.reprob=0.25", "train.epochs=1",
        "train.max_steps=3", "train.log_every=1", "model.drop_path=0.0",
        "train.optim.name=sgd", "train.optim.lr=0.05",
    )  # fmt: skip
    assert main(_args(shapes, one, "finetune", *common, "train.batch_size=16")) == 0
    cmd = [
        *torchrun(2, "-m", "esam.cli.main"),
        *_args(shapes, two, "finetune", *common, "train.batch_size=8"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = read_log(one / "log.jsonl"), read_log(two / "log.jsonl")
    tol = network_tolerance(torch.float32, 256, 10)
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b, strict=True):
        assert abs(ra["loss"] - rb["loss"]) <= tol * abs(ra["loss"]), (ra, rb)
    wa = torch.load(one / "classifier.pt", weights_only=True)["model"]
    wb = torch.load(two / "classifier.pt", weights_only=True)["model"]
    for k in wa:
        scale = float(wa[k].abs().max()) or 1.0
        assert float((wa[k] - wb[k]).abs().max()) <= tol * scale, k
    # evaluation sharded over two processes counts every val image once
    assert _results(two)["metrics"]["n_images"] == 48


def test_two_gloo_processes_extract_the_probe_features_of_one(shapes: Path, tmp_path: Path) -> None:
    """Each process encodes its share of the images; rank 0 caches them in dataset order."""
    one, two = tmp_path / "one", tmp_path / "two"
    common = ("linear.train.epochs=1",)
    assert main(_args(shapes, one, "linear", *common)) == 0
    cmd = [*torchrun(2, "-m", "esam.cli.main"), *_args(shapes, two, "linear", *common)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for split, n in (("train", 192), ("val", 48)):
        (fa,) = (one / "features").glob(f"{split}-*.pt")
        (fb,) = (two / "features").glob(f"{split}-*.pt")
        assert fa.name == fb.name  # the same key: the cache does not depend on the processes
        a, b = (torch.load(f, weights_only=True) for f in (fa, fb))
        assert a["indices"].tolist() == b["indices"].tolist() == list(range(n))
        assert torch.equal(a["labels"], b["labels"])
        # batches differ between the runs: fp32 rounding, then at most one fp16 step
        x, y = a["features"].float(), b["features"].float()
        scale = float(x.abs().max())
        bound = (
            2.0**-10 * torch.maximum(x.abs(), y.abs())
            + network_tolerance(torch.float32, 192, 12) * scale
        )
        assert bool(((x - y).abs() <= bound).all()), float((x - y).abs().max())
    # each process encoded its own half
    features = _results(two)["training"]["features"]
    assert features["train_encoded_per_process"] == [96, 96]
    assert features["val_encoded_per_process"] == [24, 24]
    assert _results(one)["training"]["features"]["train_encoded_per_process"] == [192]
    assert _results(two)["metrics"]["n_images"] == 48
