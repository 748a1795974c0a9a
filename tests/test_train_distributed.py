"""Two CPU processes (gloo, under torchrun) with global batch G train like one process with G.

Each process takes 4 samples per step; one process takes 8. The two ranks must see exactly
the single process's samples at every step, and give its loss and its update to within the
worst-case float32 rounding of the reductions involved (bounds from test_train_engine).
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import torch

from esam.train.checkpointing import load_checkpoint
from esam.train.metrics import read_log
from tests.distributed import torchrun
from tests.test_train_engine import (
    IndexedData,
    MseTask,
    build,
    config,
    exact_grads,
    rounding_bounds,
    sgd_update_bound,
)

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
from pathlib import Path
import torch
from esam.runtime.distributed import (
    all_reduce_mean, broadcast_object, exit_process, finish, init_distributed,
)
from tests.test_train_engine import MseTask, build, config

out = Path(sys.argv[1])
ctx = init_distributed("cpu")
means = all_reduce_mean({"rank": float(ctx.rank), "one": 1.0}, ctx)
tensor = all_reduce_mean(torch.tensor([2.0 * ctx.rank, 4.0]), ctx)
shared = broadcast_object({"from": ctx.rank}, ctx)
task = MseTask()
cfg = config(out / "run", batch_size=4, max_steps=2, save_every_steps=1, keep_last=2)
trainer = build(cfg, task, ctx=ctx)
trainer.fit()
(out / f"rank{ctx.rank}.json").write_text(json.dumps({
    "seen": task.seen, "means": means, "tensor": tensor.tolist(), "shared": shared,
    "model": type(trainer.model).__name__, "world": ctx.world_size,
}))
finish(ctx)
exit_process(0)
"""


def _model_weights(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    state = load_checkpoint(path)["model"]
    return state["weight"], state["bias"]


def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    script = tmp_path / "train2.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(
        OMP_NUM_THREADS="1",
        ESAM_DIST_TIMEOUT_S="120",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
    )
    cmd = torchrun(2, str(script), str(tmp_path / "two"))
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["means"] == {"one": 1.0, "rank": 0.5} and ranks[1]["tensor"] == [1.0, 4.0]
    assert ranks[1]["shared"] == {"from": 0}
    assert ranks[0]["model"] == "DistributedDataParallel" and ranks[0]["world"] == 2

    one_task = MseTask()
    build(config(tmp_path / "one", max_steps=2, save_every_steps=1, keep_last=2), one_task).fit()

    # the same samples at every step, split disjointly between the ranks
    for step in range(2):
        a, b = ranks[0]["seen"][step], ranks[1]["seen"][step]
        assert not set(a) & set(b) and sorted(a + b) == sorted(one_task.seen[step])

    data = IndexedData()
    torch.manual_seed(0)
    init = torch.nn.Linear(4, 1)
    w0, b0 = init.weight.detach(), init.bias.detach()
    one_w1, one_b1 = _model_weights(tmp_path / "one" / "checkpoints" / "checkpoint-00000001.pt")
    two_w1, two_b1 = _model_weights(
        tmp_path / "two" / "run" / "checkpoints" / "checkpoint-00000001.pt"
    )
    one_log, two_log = (
        read_log(tmp_path / "one" / "log.jsonl"),
        read_log(tmp_path / "two" / "run" / "log.jsonl"),
    )
    assert [r["step"] for r in two_log] == [1, 2]  # rank 0 alone writes

    # step 1: loss and update from the same initial weights
    idx = one_task.seen[0]
    x, y = data.x[idx], data.y[idx]
    loss_tol, gw_tol, gb_tol = rounding_bounds(x, y, w0, b0)
    assert abs(one_log[0]["loss"] - two_log[0]["loss"]) <= 2 * loss_tol
    gw, gb = exact_grads(x, y, w0, b0)
    assert (
        (one_w1.double() - two_w1.double()).abs() <= 2 * sgd_update_bound(0.1, gw_tol, w0, gw)
    ).all()
    assert (
        (one_b1.double() - two_b1.double()).abs() <= 2 * sgd_update_bound(0.1, gb_tol, b0, gb)
    ).all()

    # step 2: from weights that differ by the measured step-1 difference (first order)
    idx = one_task.seen[1]
    x, y = data.x[idx], data.y[idx]
    loss_tol, _, _ = rounding_bounds(x, y, one_w1, one_b1)
    gw, gb = exact_grads(x, y, one_w1, one_b1)
    drift = float(
        (gw.abs() * (one_w1 - two_w1).double().abs()).sum()
        + (gb.abs() * (one_b1 - two_b1).double().abs()).sum()
    )
    assert abs(one_log[1]["loss"] - two_log[1]["loss"]) <= 2 * loss_tol + drift
