"""Sharding across processes: torchrun with 2 CPU processes (gloo) gives exactly one process's numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import esam
from esam.cli.main import main as esam_main
from esam.data.synthetic import write_synthetic_coco, write_synthetic_detections
from esam.eval.outputs import read_rows
from esam.runtime.distributed import (
    TIMEOUT_ENV,
    DistContext,
    device_for,
    dist_timeout,
    gather_to_main,
    init_distributed,
    run_collectively,
    shard,
)
from esam.standin import load_standin_weights
from tests.distributed import free_port, torchrun


def test_shard_and_gather_single_process() -> None:
    items = list(range(7))
    assert shard(items, DistContext()) == items
    assert shard(items, DistContext(rank=1, world_size=3)) == [1, 4]
    assert (
        sorted(x for r in range(3) for x in shard(items, DistContext(rank=r, world_size=3)))
        == items
    )
    assert gather_to_main({"a": 1}, DistContext()) == [{"a": 1}]
    assert device_for("cuda", DistContext(rank=1, world_size=2, local_rank=1)) == "cuda:1"
    assert device_for("cpu", DistContext(rank=1, world_size=2, local_rank=1)) == "cpu"


RUNS = {
    "box": ["zeroshot", "--model", "box_fill", "--prompt", "box"],
    "clicks": [
        "zeroshot",
        "--model",
        "oracle",
        "--prompt",
        "point3",
        "--click",
        "random",
        "--seed",
        "5",
    ],
    "instseg": ["instseg", "--model", "box_fill", "--detections", "{det}"],
}


def test_two_processes_give_exactly_the_numbers_of_one(tmp_path: Path) -> None:
    ann, img = write_synthetic_coco(tmp_path / "syn", n_images=5)  # 5 images: uneven shards
    det = write_synthetic_detections(ann, tmp_path / "dets.json")
    common = [
        "--dataset",
        "coco",
        "--annotations",
        str(ann),
        "--images",
        str(img),
        "--workers",
        "1",
        "--no-progress",
    ]

    def argv(name: str, out: Path) -> list[str]:
        task = [a.format(det=det) for a in RUNS[name]]
        return ["eval", *task, *common, "--output", str(out)]

    for name in RUNS:
        assert esam_main(argv(name, tmp_path / f"one_{name}.json")) == 0

    script = tmp_path / "run_all.py"
    calls = {name: argv(name, tmp_path / f"two_{name}.json") for name in RUNS}
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            import torch.distributed as dist
            from esam.cli.main import main
            dist.init_process_group("gloo")
            for argv in {list(calls.values())!r}:
                assert main(argv) == 0
            dist.destroy_process_group()
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = torchrun(2, str(script))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count(" -> ") == len(RUNS)  # only rank 0 reports and writes

    for name in RUNS:
        one = json.loads((tmp_path / f"one_{name}.json").read_text())
        two = json.loads((tmp_path / f"two_{name}.json").read_text())
        assert one["config"]["world_size"] == 1 and two["config"]["world_size"] == 2
        assert two["metrics"] == one["metrics"], name
        assert two["skips"] == one["skips"], name
        rows_one = read_rows(tmp_path / one["rows_file"])
        rows_two = read_rows(tmp_path / two["rows_file"])
        assert rows_two == rows_one, name
        assert len(rows_one) > 0


def test_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert dist_timeout() == timedelta(seconds=600)
    monkeypatch.setenv(TIMEOUT_ENV, "42.5")
    assert dist_timeout() == timedelta(seconds=42.5)
    for bad in ("soon", "0", "-3", "inf"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=TIMEOUT_ENV):
            dist_timeout()


def test_init_distributed_creates_the_group_with_the_short_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The torchrun path (group created here, owns_group) passes ESAM_DIST_TIMEOUT_S, not 60 min."""
    import torch.distributed as dist

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.append(kw))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    for k, v in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", TIMEOUT_ENV: "17"}.items():
        monkeypatch.setenv(k, v)
    ctx = init_distributed("cpu")
    assert ctx == DistContext(rank=1, world_size=2, local_rank=1, owns_group=True)
    assert calls == [{"backend": "gloo", "timeout": timedelta(seconds=17)}]


def test_run_collectively_in_one_process_just_runs() -> None:
    assert run_collectively(lambda: 3, DistContext()) == 3
    with pytest.raises(KeyError):
        run_collectively(lambda: {}["x"], DistContext())


def _dist_env(rank: int, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(
        {
            "OMP_NUM_THREADS": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            TIMEOUT_ENV: "60",
        }
    )
    return env


def test_a_failing_rank_stops_every_rank_with_its_message(tmp_path: Path) -> None:
    """Rank 1 hits a corrupt image; rank 0 must stop at once with rank 1's error, not hang.

    The processes are started by hand (RANK, WORLD_SIZE, MASTER_* in the environment, as
    srun or a job script would), so no launcher kills the survivor for us.
    """
    ann, img = write_synthetic_coco(tmp_path / "syn", n_images=4)
    (img / "000000000002.png").write_bytes(b"not an image")  # image 2: rank 1's first image
    argv = [
        sys.executable,
        "-m",
        "esam.cli.main",
        "eval",
        "zeroshot",
        "--model",
        "box_fill",
        "--dataset",
        "coco",
        "--annotations",
        str(ann),
        "--images",
        str(img),
        "--workers",
        "0",
        "--no-progress",
        "--output",
        str(tmp_path / "out.json"),
    ]
    port = free_port()
    procs = [
        subprocess.Popen(
            argv, env=_dist_env(r, port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for r in (0, 1)
    ]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=120)
            outs.append((p.returncode, out + err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    (rc0, text0), (rc1, text1) = outs
    assert rc1 == 2 and "000000000002.png: cannot be decoded" in text1, text1[-2000:]
    assert rc0 == 2, text0[-2000:]
    assert "rank 1 failed: InputError:" in text0 and "000000000002.png" in text0, text0[-2000:]
    assert not (tmp_path / "out.json").exists()


def _tiny_esam_checkpoint(path: Path) -> Path:
    model = esam.build_model("efficientsam_vitt", img_size=128, encoder_depth=1)
    load_standin_weights(model)
    esam.save_checkpoint(model, path, "efficientsam_vitt", model.config.to_dict())
    return path


def test_torchrun_cli_with_an_efficientsam_checkpoint_matches_one_process(tmp_path: Path) -> None:
    """``torchrun -m esam.cli.main eval zeroshot`` alone (group made by init_distributed) on 2
    CPU processes, with a reduced EfficientSAM built from its checkpoint's config, writes exactly
    the results of a single-process run."""
    ckpt = _tiny_esam_checkpoint(tmp_path / "tiny_vitt.pt")
    ann, img = write_synthetic_coco(tmp_path / "syn", n_images=3)  # 3 images: uneven shards

    def argv(out: Path) -> list[str]:
        return [
            "eval",
            "zeroshot",
            "--model",
            "efficientsam_vitt",
            "--checkpoint",
            str(ckpt),
            "--dataset",
            "coco",
            "--annotations",
            str(ann),
            "--images",
            str(img),
            "--prompt",
            "point3",
            "--click",
            "iterative",
            "--workers",
            "0",
            "--no-progress",
            "--output",
            str(out),
        ]

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update({"OMP_NUM_THREADS": "1", TIMEOUT_ENV: "120"})
    # the single-process run uses one thread too (torchrun's default per process), so float
    # reductions in the model are summed in the same order: results must be identical
    one = [sys.executable, "-m", "esam.cli.main", *argv(tmp_path / "one.json")]
    proc = subprocess.run(one, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cmd = [*torchrun(2, "-m", "esam.cli.main"), *argv(tmp_path / "two.json")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert one["config"]["world_size"] == 1 and two["config"]["world_size"] == 2
    assert two["model"]["processing"]["config"]["encoder_depth"] == 1
    assert two["model"]["processing"]["config"]["img_size"] == 128
    assert two["metrics"] == one["metrics"] and one["metrics"]["n_instances"] == 21
    assert two["skips"] == one["skips"]
    rows_one = read_rows(tmp_path / one["rows_file"])
    assert read_rows(tmp_path / two["rows_file"]) == rows_one
    assert {len(r["iou_per_click"]) for r in rows_one} == {3}
