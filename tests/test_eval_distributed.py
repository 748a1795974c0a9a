"""Sharding across processes: torchrun with 2 CPU processes (gloo) gives exactly one process's numbers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from esam.cli.main import main as esam_main
from esam.eval.distributed import DistContext, device_for, gather_to_main, shard
from esam.eval.outputs import read_rows
from esam.eval.synthetic import write_synthetic_coco, write_synthetic_detections


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(script),
    ]
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
