"""``esam pretrain`` end to end: learning, resume, two processes, export, cache, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import esam
from esam.cli.main import main
from esam.data.scenes import write_scene_folder
from esam.standin import load_standin_weights
from esam.train.checkpointing import CheckpointManager, load_checkpoint
from esam.train.metrics import read_log
from esam.utils.io import sha256_file
from esam.utils.results import validate_results
from tests.distributed import torchrun
from tests.numerics import network_tolerance

REPO = Path(__file__).resolve().parents[1]
SIZE = 64  # 4x4 tokens of 16 px


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sami")
    train = write_scene_folder(root / "train", 48, seed=0, size=SIZE)
    heldout = write_scene_folder(root / "heldout", 16, seed=0, size=SIZE, start=1000)
    model = esam.build_model("efficientsam_vitt", img_size=SIZE, encoder_depth=1)
    load_standin_weights(model)
    teacher = root / "teacher.pt"
    esam.save_checkpoint(model, teacher, "efficientsam_vitt", model.config.to_dict())
    return {"root": root, "train": train, "heldout": heldout, "teacher": teacher}


def _args(data: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "pretrain",
        "--config",
        "tiny",
        "--data",
        str(data["train"]),
        "--output",
        str(out),
        "--teacher",
        "efficientsam_vitt",
        "--teacher-checkpoint",
        str(data["teacher"]),
        f"student.img_size={SIZE}",
        "student.depth=2",
        "decoder.depth=1",
        "decoder.dim=64",
        "train.batch_size=8",
        "train.log_every=1",
        "train.progress=false",
        "train.schedule.warmup_epochs=0",
        *extra,
    ]


def test_pretraining_learns_and_writes_a_complete_run(tmp_path: Path) -> None:
    """96 px scenes, a 2-block frozen teacher: the student's held-out reconstruction error
    falls well below that of predicting the teacher's mean feature (measured: ratio 0.61-0.63
    after these 160 steps; the demo's longer run reaches about 0.45)."""
    size = 96
    train = write_scene_folder(tmp_path / "train", 128, seed=0, size=size)
    heldout = write_scene_folder(tmp_path / "heldout", 32, seed=0, size=size, start=1000)
    model = esam.build_model("efficientsam_vitt", img_size=size, encoder_depth=2)
    load_standin_weights(model)
    teacher = tmp_path / "teacher.pt"
    esam.save_checkpoint(model, teacher, "efficientsam_vitt", model.config.to_dict())
    out = tmp_path / "run"
    argv = [
        "pretrain", "--config", "tiny", "--data", str(train), "--eval-data", str(heldout),
        "--output", str(out), "--teacher", "efficientsam_vitt", "--teacher-checkpoint",
        str(teacher), "student.depth=2", "train.batch_size=16", "train.epochs=20",
        "train.log_every=1", "train.progress=false",
    ]  # fmt: skip
    assert main(argv) == 0
    assert (out / "config.yaml").is_file() and CheckpointManager(out / "checkpoints").latest()
    rows = read_log(out / "log.jsonl")
    assert len(rows) == 160 and {"step", "epoch", "loss", "lr", "samples_per_s"} <= set(rows[0])
    results = validate_results(json.loads((out / "results.json").read_text()))
    m = results["metrics"]
    assert results["task"] == "pretrain" and m["steps"] == 160
    assert [p["step"] for p in results["curve"]] == [r["step"] for r in rows]
    assert m["eval_mse_ratio"] < 0.75, m
    assert np.mean([r["loss"] for r in rows[-8:]]) < 0.6 * np.mean([r["loss"] for r in rows[:8]])


def test_resume_reproduces_the_uninterrupted_run(data, tmp_path: Path) -> None:
    full, split = tmp_path / "full", tmp_path / "split"
    common = ("train.epochs=2", "train.save_every_steps=4", "data.flip_prob=0.5")
    assert main(_args(data, full, *common)) == 0
    assert main(_args(data, split, *common, "train.max_steps=7")) == 0
    (split / "checkpoints" / "checkpoint-00000007.pt").unlink()  # as if killed in step 7
    assert main(_args(data, split, *common, "--resume")) == 0  # restarts from step 4
    a, b = read_log(full / "log.jsonl"), read_log(split / "log.jsonl")
    # bitwise on one CPU process: the same samples, masks and RNG states after resuming
    assert [r["loss"] for r in a] == [r["loss"] for r in b] and len(a) == 12
    wa = load_checkpoint(CheckpointManager(full / "checkpoints").latest())["model"]
    wb = load_checkpoint(CheckpointManager(split / "checkpoints").latest())["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(
    data, tmp_path: Path
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    # SGD: the update is linear in the averaged gradient (Adam's normalisation would turn the
    # rounding noise of near-zero gradient components into full-size steps of either sign)
    common = (
        "train.epochs=1",
        "train.max_steps=2",
        "data.flip_prob=0.5",
        "train.optim.name=sgd",
        "train.optim.lr=0.05",
    )
    assert main(_args(data, one, *common) + ["train.batch_size=8"]) == 0
    cmd = [
        *torchrun(2, "-m", "esam.cli.main"),
        *_args(data, two, *common), "train.batch_size=4",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = read_log(one / "log.jsonl"), read_log(two / "log.jsonl")
    assert len(a) == len(b) == 2
    wa = load_checkpoint(CheckpointManager(one / "checkpoints").latest())["model"]
    wb = load_checkpoint(CheckpointManager(two / "checkpoints").latest())["model"]
    # the same samples (views and masks drawn per sample) split across two processes; the
    # model is small: reductions of at most 256 terms through ~20 layers
    tol = network_tolerance(torch.float32, 256, 20)
    for ra, rb in zip(a, b, strict=True):
        assert abs(ra["loss"] - rb["loss"]) <= tol * abs(ra["loss"]), (ra, rb)
    for k in wa:
        scale = float(wa[k].abs().max()) or 1.0
        assert float((wa[k] - wb[k]).abs().max()) <= tol * scale, k


def test_teacher_is_frozen(data) -> None:
    from esam.sami.config import SamiConfig
    from esam.sami.pretrain import SamiTask, build_model, make_teacher

    cfg = SamiConfig()
    cfg.teacher.checkpoint = str(data["teacher"])
    cfg.teacher.name = "efficientsam_vitt"
    cfg.student.img_size, cfg.student.depth = SIZE, 1
    teacher = make_teacher(cfg, "cpu")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    model = build_model(cfg, teacher.feature_dim)
    task = SamiTask(teacher)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = {
        "image": torch.randn(2, 3, SIZE, SIZE),
        "noise": torch.rand(2, 16),
        "unreadable": [],
    }
    for _ in range(2):
        loss, _ = task.training_step(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_export_loads_into_efficientsam_and_as_a_backbone(data, tmp_path: Path) -> None:
    from esam.build import build_backbone
    from esam.build import load_backbone_into as load_into_image_encoder

    run = tmp_path / "run"
    assert main(_args(data, run, "train.epochs=1", "train.max_steps=1")) == 0
    out = tmp_path / "backbone.pt"
    assert main(["pretrain", "export", str(run), "--out", str(out)]) == 0
    trunk = load_checkpoint(CheckpointManager(run / "checkpoints").latest())["model"]
    vit = build_backbone(out)
    assert vit.embed_dim == 96 and len(vit.blocks) == 2
    assert torch.equal(vit.pos_embed, trunk["encoder.pos_embed"])
    as_st = tmp_path / "backbone.safetensors"
    assert main(["pretrain", "export", str(run), "--out", str(as_st)]) == 0
    assert not zipfile.is_zipfile(as_st)  # a safetensors file, not a torch pickle so named
    vit_st = build_backbone(as_st)
    assert vit_st.backbone_info["arch"] == vit.backbone_info["arch"]  # type: ignore[index]
    assert vit_st.backbone_info["source"]["step"] == 1  # type: ignore[index]
    for (k, a), (_, b) in zip(vit.state_dict().items(), vit_st.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    model = esam.build_model(
        "efficientsam_vitt", img_size=128, encoder_embed_dim=96, encoder_depth=2
    )
    neck = {k: v.clone() for k, v in model.image_encoder.neck.state_dict().items()}
    load_into_image_encoder(model.image_encoder, out)
    assert torch.equal(
        model.image_encoder.blocks[1].mlp.fc2.weight, trunk["encoder.blocks.1.mlp.fc2.weight"]
    )
    assert all(torch.equal(neck[k], v) for k, v in model.image_encoder.neck.state_dict().items())
    with torch.no_grad():  # runs at 128 px: the 4x4 pretraining grid resized to 8x8
        assert model.image_encoder(torch.zeros(1, 3, 128, 128)).shape == (1, 256, 8, 8)
    wrong = esam.build_model("efficientsam_vitt", img_size=128, encoder_depth=2)
    with pytest.raises(ValueError, match="width-96 backbone"):
        load_into_image_encoder(wrong.image_encoder, out)
    heads = vit.blocks[0].attn.num_heads
    other = 1 if heads != 1 else 2
    regrouped = esam.build_model(
        "efficientsam_vitt",
        img_size=128,
        encoder_embed_dim=96,
        encoder_depth=2,
        encoder_num_heads=other,
    )
    with pytest.raises(ValueError, match=f"trained with {heads} attention heads .* with {other}"):
        load_into_image_encoder(regrouped.image_encoder, out)


def test_cache_teacher_then_train_from_the_cache(
    data, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    argv = [
        "pretrain", "cache-teacher", "--data", str(data["train"]), "--out", str(cache),
        "--teacher", "efficientsam_vitt", "--teacher-checkpoint", str(data["teacher"]),
        "--views", "2", "--view-size", str(SIZE), "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    index = json.loads((cache / "index.json").read_text())
    assert len(index["images"]) == 48 and index["views_per_image"] == 2
    run = tmp_path / "run"
    args = _args(data, run, "train.epochs=2")
    args[args.index("--teacher-checkpoint") : args.index("--teacher-checkpoint") + 2] = [
        "--teacher-cache",
        str(cache),
    ]
    assert main(args) == 0
    rows = read_log(run / "log.jsonl")
    assert rows[-1]["loss"] < rows[0]["loss"]

    def with_cache(out: Path, *extra: str) -> list[str]:
        a = _args(data, out, *extra)
        i = a.index("--teacher-checkpoint")
        return a[:i] + ["--teacher-cache", str(cache)] + a[i + 2 :]

    # the results describe the teacher the cached features came from
    teacher = json.loads((run / "results.json").read_text())["model"]["teacher"]
    assert teacher["cache"] == str(cache) and teacher["input_size"] == SIZE
    assert teacher["checkpoint_sha256"] == sha256_file(data["teacher"])
    assert teacher["views_per_image"] == 2 and teacher["view_augment"] == index["augment"]
    # the run's own crop settings do not apply to cached views: said, not silent
    with caplog.at_level("WARNING", logger="esam.sami.pretrain"):
        args_scale = with_cache(tmp_path / "run_scale", "data.scale_min=0.5", "train.max_steps=1")
        assert main(args_scale) == 0
    assert "data.scale_min=0.5 and data.flip_prob=0.5 do not apply" in caplog.text
    # a cache that does not match the run's teacher is a named error, never used
    with_file = _args(data, tmp_path / "run_file", "--teacher-cache", str(cache))
    other = tmp_path / "other_teacher.pt"
    other.write_bytes(data["teacher"].read_bytes() + b"\0")
    other_file = list(with_file)
    other_file[other_file.index(str(data["teacher"]))] = str(other)
    capsys.readouterr()
    assert main(other_file + ["train.max_steps=1"]) == 2
    assert "was built from teacher weights with SHA-256" in capsys.readouterr().err
    assert main(with_file + ["teacher.input_size=128", "train.max_steps=1"]) == 2
    assert "holds features of 64 px teacher views, the run asks for 128 px" in (
        capsys.readouterr().err
    )
    assert main(with_file + ["train.max_steps=1"]) == 0  # the cache's own file
    # damaged shards are named errors, not a silent retrain: a changed byte...
    shard = sorted(cache.glob("shard-*.npy"))[-1]
    good = shard.read_bytes()
    shard.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    assert main(_args(data, tmp_path / "run2", "--teacher-cache", str(cache))) == 2
    assert f"{shard.name}: SHA-256" in capsys.readouterr().err
    # ... and a truncated file
    shard.write_bytes(good[:-100])
    assert main(_args(data, tmp_path / "run3", "--teacher-cache", str(cache))) == 2
    assert "the shard is truncated or damaged" in capsys.readouterr().err


def test_unreadable_images_are_counted_not_fatal(data, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    write_scene_folder(folder, 16, size=SIZE)
    (folder / "scene_000003.png").write_bytes(b"not a png")
    args = _args(data, tmp_path / "run", "train.epochs=1")
    args[args.index("--data") + 1] = str(folder)
    assert main(args) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["metrics"]["unreadable_images"] == 1
    assert results["unreadable_images"][0].endswith("scene_000003.png")
    assert results["dataset"]["n_images_skipped"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("train.epochs=0",), "epochs must be >= 1"),
        (("student.widht=3",), "unknown key 'student.widht'"),
        (("mask_ratio=lots",), "mask_ratio"),
    ],
)
def test_bad_settings_are_named_errors(data, tmp_path: Path, capsys, change, message) -> None:
    assert main(_args(data, tmp_path / "run", *change)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_empty_folder_and_wrong_teacher_file(data, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    args = _args(data, tmp_path / "run", "train.epochs=1")
    args[args.index("--data") + 1] = str(empty)
    assert main(args) == 2
    assert "no images found in" in capsys.readouterr().err
    small = esam.build_model("efficientsam_vits", img_size=SIZE, encoder_depth=1)
    wrong = tmp_path / "vits.pt"
    torch.save({"model": small.state_dict()}, wrong)  # official layout, another size
    args = _args(data, tmp_path / "run2", "train.epochs=1")
    args[args.index("--teacher-checkpoint") + 1] = str(wrong)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "wrong-size EfficientSAM checkpoint" in err and len(err.splitlines()) == 1


def test_samples_are_a_function_of_seed_epoch_and_index(data) -> None:
    from esam.data.imagefolder import scan_image_folder
    from esam.sami.data import PretrainViews, ViewSettings

    ds = PretrainViews(scan_image_folder(data["train"]), ViewSettings(size=SIZE), 16, seed=3)
    a, b, c = ds[(0, 5)], ds[(0, 5)], ds[(1, 5)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["noise"], b["noise"])
    assert not torch.equal(a["noise"], c["noise"])


def test_an_online_teacher_of_another_side_gets_its_view_rendered_from_the_uint8_crop(data) -> None:
    from esam.data.imagefolder import read_rgb, scan_image_folder
    from esam.data.views import DEFAULT_RATIO, apply_view, sample_view
    from esam.sami.data import VIEW_STREAM, PretrainViews, ViewSettings, collate, sample_rng
    from esam.sami.pretrain import SamiTask

    folder = scan_image_folder(data["train"])
    views = ViewSettings(size=SIZE, teacher_size=2 * SIZE)
    ds = PretrainViews(folder, views, 16, seed=3)
    samples = [ds[(0, i)] for i in range(3)]
    assert all(s["teacher_crop"].dtype == torch.uint8 for s in samples)
    batch = collate(samples)
    assert len(batch["teacher_crop"]) == 3 and batch["teacher_flip"].dtype == torch.bool

    seen: list[torch.Tensor] = []

    class Recorder:
        input_size = 2 * SIZE

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x)
            return torch.zeros(x.shape[0], 16, 8)

    def model(images, targets, noise):
        return targets.sum() + images.sum() * 0, None, None

    SamiTask(Recorder()).training_step(model, batch)  # type: ignore[arg-type]
    (rendered,) = seen
    assert rendered.shape == (3, 3, 2 * SIZE, 2 * SIZE)
    for k, s in enumerate(samples):
        image = read_rgb(folder.path(int(s["index"])))
        # the view the sample drew, redrawn from its seed
        rng = sample_rng(3, 0, k, VIEW_STREAM)
        params = sample_view(rng, *image.shape[:2], views.scale, DEFAULT_RATIO, views.flip_prob)
        assert tuple(s["teacher_crop"].shape) == (params.height, params.width, 3)
        assert torch.equal(rendered[k], apply_view(image, params, 2 * SIZE))
