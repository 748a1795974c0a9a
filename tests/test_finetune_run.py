"""``esam finetune`` end to end on generated SA-1B data: run folder, resume, two processes,
official-layout initialisation, reloading, evaluation through the zero-shot harness."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import esam
from esam.cli.main import main
from esam.data.synth_sa1b import encode_jpeg, write_synthetic_sa1b
from esam.standin import load_standin_weights
from esam.train.checkpointing import CheckpointManager, load_checkpoint
from esam.train.metrics import read_log
from esam.utils.results import validate_results
from tests.distributed import torchrun
from tests.numerics import network_tolerance

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sa1b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sa1b")
    write_synthetic_sa1b(root / "train", 16, seed=0, height=128)
    return root / "train"


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "finetune", "--config", "tiny", "--data", str(data), "--output", str(out),
        "model.img_size=128", "model.encoder_depth=1", "data.max_masks=4",
        "train.batch_size=2", "train.log_every=1", "train.progress=false",
        "train.schedule.warmup_steps=0", "prompts.corrective_rounds=1", *extra,
    ]  # fmt: skip


def test_a_run_writes_model_log_and_results(sa1b: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(_args(sa1b, out, "train.epochs=2")) == 0
    rows = read_log(out / "log.jsonl")
    assert len(rows) == 16 and {"step", "loss", "focal", "dice", "iou_mse", "lr"} <= set(rows[0])
    results = validate_results(json.loads((out / "results.json").read_text()))
    assert results["task"] == "finetune" and results["metrics"]["steps"] == 16
    assert [c["step"] for c in results["curve"]] == [r["step"] for r in rows]
    model = esam.build_model("efficientsam", out / "model.pt")
    assert model.config.img_size == 128 and model.config.encoder_depth == 1
    # the saved weights are the trained ones (the last checkpoint's)
    state = load_checkpoint(CheckpointManager(out / "checkpoints").latest())["model"]
    trained = {k.removeprefix("model."): v for k, v in state.items()}
    assert trained.keys() == model.state_dict().keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trained.items())


def test_resume_reproduces_the_uninterrupted_run(sa1b: Path, tmp_path: Path) -> None:
    full, split = tmp_path / "full", tmp_path / "split"
    common = ("train.epochs=1", "train.save_every_steps=3")
    assert main(_args(sa1b, full, *common)) == 0
    assert main(_args(sa1b, split, *common, "train.max_steps=5")) == 0  # killed after step 5
    assert main(_args(sa1b, split, *common, "--resume")) == 0
    a, b = read_log(full / "log.jsonl"), read_log(split / "log.jsonl")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # bitwise on one CPU process
    wa = torch.load(full / "model.pt", weights_only=True)["model"]
    wb = torch.load(split / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_export_writes_the_model_of_any_training_checkpoint(
    sa1b: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    common = ("train.epochs=1", "train.save_every_steps=3", "train.keep_last=5")
    assert main(_args(sa1b, out, *common)) == 0
    # the run folder: its newest checkpoint, which is the final model
    assert main(["finetune", "export", str(out), "--out", str(tmp_path / "last.pt")]) == 0
    final = torch.load(out / "model.pt", weights_only=True)["model"]
    last = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    assert last.keys() == final.keys() and all(torch.equal(last[k], final[k]) for k in final)
    # an earlier checkpoint: its own weights, under the run's architecture
    early = out / "checkpoints" / "checkpoint-00000003.pt"
    assert main(["finetune", "export", str(early), "--out", str(tmp_path / "s3.pt")]) == 0
    assert "model at step 3" in capsys.readouterr().out
    model = esam.build_model("efficientsam", tmp_path / "s3.pt")
    assert model.config.img_size == 128 and model.config.encoder_depth == 1
    stored = {k.removeprefix("model."): v for k, v in load_checkpoint(early)["model"].items()}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stored.items())
    assert any(not torch.equal(stored[k], final[k]) for k in final)
    _, info = esam.checkpoint.read_checkpoint(tmp_path / "s3.pt")
    assert "step 3" in info["weights"]


def test_export_refuses_what_is_not_a_finetuning_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    assert (
        main(["finetune", "export", str(tmp_path / "empty"), "--out", str(tmp_path / "x.pt")]) == 2
    )
    assert "holds no checkpoint" in capsys.readouterr().err
    # a training checkpoint of another task (a pretraining run's student)
    other = tmp_path / "pretrain"
    CheckpointManager(other / "checkpoints").save(
        {"model": {"encoder.pos_embed": torch.zeros(1)}, "config": {"student": {}}}, 7
    )
    assert main(["finetune", "export", str(other), "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "not a checkpoint of esam finetune" in err and "encoder.pos_embed" in err
    assert not (tmp_path / "x.pt").exists()


@pytest.fixture(scope="module")
def bad_sa1b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 generated images with one of each kind of bad input the run must count or name."""
    root = tmp_path_factory.mktemp("bad") / "set"
    write_synthetic_sa1b(root, 8, seed=3, height=96, layout="folder")
    folder = root / "sa_000000"
    record = json.loads((folder / "sa_2.json").read_text())
    good = record["annotations"][0]
    wrong_size = dict(good, id=90001, segmentation=dict(good["segmentation"], size=[97, 96]))
    no_id = {k: v for k, v in good.items() if k != "id"}
    no_segmentation = {k: v for k, v in good.items() if k != "segmentation"} | {"id": 90002}
    record["annotations"] += [wrong_size, no_id, no_segmentation]
    (folder / "sa_2.json").write_text(json.dumps(record))
    truncated = (folder / "sa_3.json").read_bytes()
    (folder / "sa_3.json").write_bytes(truncated[: len(truncated) // 2])  # does not parse
    no_masks = json.loads((folder / "sa_4.json").read_text())
    (folder / "sa_4.json").write_text(json.dumps(no_masks | {"annotations": []}))
    (folder / "sa_5.jpg").write_bytes(b"not a jpeg")  # unreadable
    small = np.zeros((64, 64, 3), np.uint8)
    (folder / "sa_7.jpg").write_bytes(encode_jpeg(small))  # not its json's 96x96
    (folder / "sa_50.jpg").write_bytes(encode_jpeg(small))  # no json
    (folder / "sa_60.json").write_text(json.dumps(record))  # no jpg
    (folder / "README.txt").write_text("notes")
    return folder


#: The bad input of ``bad_sa1b`` that every run over it must report, exactly.
BAD_INPUT_COUNTS = {
    "invalid_rle": 1,
    "annotation_without_id": 1,
    "no_segmentation": 1,
    "image_without_json": 1,
    "json_without_image": 1,
    "ignored_file": 1,
    "image_without_annotations": 1,
    "image_without_usable_masks": 1,
}


def _skips_and_unreadable(run: Path) -> tuple[dict[str, int], list[str]]:
    results = json.loads((run / "results.json").read_text())
    assert results["metrics"]["unreadable_images"] == len(results["unreadable_images"])
    return results["skips"], [Path(p).name for p in results["unreadable_images"]]


def test_bad_input_is_counted_once_per_annotation_and_kept_across_a_resume(
    bad_sa1b: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one, two, split = tmp_path / "one", tmp_path / "two", tmp_path / "split"
    common = ("model.img_size=96", "train.batch_size=2", "prompts.corrective_rounds=0")
    assert main(_args(bad_sa1b, one, *common, "train.epochs=1")) == 0
    assert main(_args(bad_sa1b, two, *common, "train.epochs=2")) == 0
    skips, unreadable = _skips_and_unreadable(one)
    assert {k: skips.get(k) for k in BAD_INPUT_COUNTS} == BAD_INPUT_COUNTS
    assert unreadable == ["sa_3.json", "sa_5.jpg", "sa_7.jpg"]
    # counts of annotations, not of draws: a second epoch adds none
    assert _skips_and_unreadable(two) == (skips, unreadable)
    # stopped after 3 of 8 steps, then resumed: the counts made before the stop are kept
    assert main(_args(bad_sa1b, split, *common, "train.epochs=2", "train.max_steps=3")) == 0
    assert main(_args(bad_sa1b, split, *common, "train.epochs=2", "--resume")) == 0
    assert _skips_and_unreadable(split) == (skips, unreadable)
    results = json.loads((split / "results.json").read_text())
    assert results["metrics"]["steps"] == 8
    assert results["metrics"]["images_per_s"] > 0
    # resuming a complete run changes nothing and still reports its last losses
    before = (split / "results.json").read_bytes(), (split / "model.pt").read_bytes()
    capsys.readouterr()
    assert main(_args(bad_sa1b, split, *common, "train.epochs=2", "--resume")) == 0
    assert ((split / "results.json").read_bytes(), (split / "model.pt").read_bytes()) == before
    printed = capsys.readouterr().out
    assert printed.startswith("8 steps, loss ") and "n/a" not in printed


@pytest.mark.parametrize("rounds", [0, 1])
def test_two_gloo_processes_match_one(sa1b: Path, tmp_path: Path, rounds: int) -> None:
    # without corrective rounds (the tiny config) one output head gets no gradient, which
    # DDP has to be told of
    one, two = tmp_path / "one", tmp_path / "two"
    common = (
        "train.epochs=1", "train.max_steps=2", "train.optim.name=sgd", "train.optim.lr=0.01",
        f"prompts.corrective_rounds={rounds}",
    )  # fmt: skip
    assert main(_args(sa1b, one, *common) + ["train.batch_size=4"]) == 0
    cmd = [
        *torchrun(2, "-m", "esam.cli.main"),
        *_args(sa1b, two, *common), "train.batch_size=2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = read_log(one / "log.jsonl"), read_log(two / "log.jsonl")
    # the same images, masks and prompts split across processes; reductions up to the
    # decoder's 2048-wide MLP through ~30 layers
    tol = network_tolerance(torch.float32, 2304, 30)
    for ra, rb in zip(a, b, strict=True):
        assert abs(ra["loss"] - rb["loss"]) <= tol * abs(ra["loss"]), (ra, rb)
    wa = torch.load(one / "model.pt", weights_only=True)["model"]
    wb = torch.load(two / "model.pt", weights_only=True)["model"]
    for k in wa:
        scale = float(wa[k].abs().max()) or 1.0
        assert float((wa[k] - wb[k]).abs().max()) <= tol * scale, k


def test_from_an_official_layout_checkpoint_and_back_into_the_predictor(
    sa1b: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ti = esam.build_model("efficientsam_vitt")
    load_standin_weights(ti)
    official = tmp_path / "efficient_sam_vitt.pt"
    torch.save({"model": ti.state_dict()}, official)  # the official file layout
    out = tmp_path / "run"
    argv = [
        "finetune", "--config", "tiny", "--data", str(sa1b), "--output", str(out),
        "--init-checkpoint", str(official), "model.img_size=1024", "model.encoder_depth=12",
        "model.encoder_embed_dim=192", "model.overrides={}", "data.max_masks=2",
        "train.batch_size=1",
        "train.epochs=1", "train.max_steps=1", "train.progress=false",
        "train.schedule.warmup_steps=0", "prompts.corrective_rounds=0",
    ]  # fmt: skip
    # the tiny config's narrowed decoder does not fit a full-size file: a named error says how
    narrowed = [a for a in argv if a != "model.overrides={}"]
    assert main(narrowed) == 2
    assert "pass model.overrides={}" in capsys.readouterr().err
    assert main(argv) == 0
    trained = esam.build_model("efficientsam", out / "model.pt")
    moved = [k for k, v in ti.state_dict().items() if not torch.equal(v, trained.state_dict()[k])]
    assert moved  # the steps changed the weights
    image = (np.random.default_rng(0).random((96, 120, 3)) * 255).astype(np.uint8)
    box = np.array([10.0, 12.0, 80.0, 70.0])
    outputs = []
    for model in (trained, esam.build_model("efficientsam", out / "model.pt")):
        predictor = esam.EfficientSamPredictor(model)
        predictor.set_image(image)
        outputs.append(predictor.predict(box=box))
    for a, b in zip(outputs[0], outputs[1], strict=True):
        assert np.array_equal(a, b)


def test_a_frozen_image_encoder_keeps_its_weights_and_leaves_the_optimizer(
    sa1b: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = tmp_path / "first"
    assert main(_args(sa1b, first, "train.epochs=1", "train.max_steps=2")) == 0
    out = tmp_path / "frozen"
    extra = ("--init-checkpoint", str(first / "model.pt"), "model.freeze=[image_encoder]")
    assert main(_args(sa1b, out, "train.epochs=1", "train.max_steps=2", *extra)) == 0
    start = esam.build_model("efficientsam", first / "model.pt").state_dict()
    end = esam.build_model("efficientsam", out / "model.pt").state_dict()
    moved = {k.split(".")[0] for k in start if not torch.equal(start[k], end[k])}
    assert moved == {"prompt_encoder", "mask_decoder"}
    results = json.loads((out / "results.json").read_text())
    assert results["model"]["origin"]["frozen"] == ["image_encoder"]
    encoder = sum(v.numel() for k, v in start.items() if k.startswith("image_encoder."))
    assert results["model"]["trainable_params"] == results["model"]["params"] - encoder
    optimizer = load_checkpoint(CheckpointManager(out / "checkpoints").latest())["optimizer"]
    # the tiny config's optimizer is Muon + AdamW: the state of each
    parts = [optimizer[k] for k in ("muon", "adamw") if optimizer[k] is not None]
    names = [n for part in parts for g in part["param_groups"] for n in g["param_names"]]
    assert names and not [n for n in names if ".image_encoder." in f".{n}"]
    assert any(".mask_decoder." in f".{n}" for n in names)
    # resuming without the freeze: the optimizer no longer fits, and the error says why
    resume = ("--init-checkpoint", str(first / "model.pt"), "--resume")
    assert main(_args(sa1b, out, "train.epochs=1", "train.max_steps=2", *resume)) == 2
    assert "model.freeze (['image_encoder'] there, [] here)" in capsys.readouterr().err


def test_the_harness_evaluates_a_finetuned_model(sa1b: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(_args(sa1b, out, "train.epochs=1", "train.max_steps=2")) == 0
    results = tmp_path / "eval.json"
    argv = [
        "eval", "zeroshot", "--model", "efficientsam", "--checkpoint", str(out / "model.pt"),
        "--dataset", "sa1b", "--annotations", str(sa1b), "--images", str(sa1b),
        "--workers", "0", "--no-progress", "--limit-images", "2", "--output", str(results),
    ]  # fmt: skip
    assert main(argv) == 0
    res = json.loads(results.read_text())
    assert res["model"]["name"] == "efficientsam" and res["metrics"]["n_instances"] > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("model.img_size=100",), "multiple of 16"),
        (("data.max_masks=0",), "max_masks must be >= 1"),
        (("prompts.box_prob=2",), "box_prob"),
        (("model.backbone=/no/such/backbone.pt",), "not found"),
        (("model.freeze=[image_encoder]",), "would stay at random weights"),
        (("model.freeze=[mask_decoder, prompt_encoder, image_encoder]",), "nothing would train"),
    ],
)
def test_bad_settings_are_named_one_line_errors(
    sa1b: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra, message
) -> None:
    assert main(_args(sa1b, tmp_path / "run", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_device_without_cuda_is_named_before_anything_runs(
    sa1b: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(_args(sa1b, out, "train.device=cuda")) != 0
    assert "'cuda' requested but CUDA is not available" in capsys.readouterr().err
    assert not out.exists()
