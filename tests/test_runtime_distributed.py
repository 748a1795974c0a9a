"""Process-group helpers in one process (the 2-process gloo run is in test_train_distributed)."""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from esam.errors import UserError
from esam.runtime import distributed
from esam.runtime.distributed import (
    TIMEOUT_ENV,
    DistContext,
    MainRankFilter,
    RankFailedError,
    all_reduce_mean,
    broadcast_object,
    current_context,
    device_for,
    dist_timeout,
    gather_to_main,
    init_distributed,
    is_main_process,
    run_collectively,
    shard,
    unwrap_model,
    wrap_ddp,
)


def test_single_process_helpers_are_identities() -> None:
    ctx = DistContext()
    t = torch.arange(3.0)
    assert all_reduce_mean(t, ctx) is t
    assert all_reduce_mean({"a": 1, "b": 2.5}, ctx) == {"a": 1.0, "b": 2.5}
    assert broadcast_object({"x": 1}, ctx) == {"x": 1}
    assert gather_to_main(5, ctx) == [5]
    assert run_collectively(lambda: 3, ctx) == 3
    assert shard(list(range(7)), DistContext(rank=1, world_size=3)) == [1, 4]
    assert device_for("cuda", DistContext(rank=1, world_size=2, local_rank=1)) == "cuda:1"
    assert current_context() == DistContext() and is_main_process()
    model = nn.Linear(2, 2)
    assert wrap_ddp(model, ctx, "cpu") is model and unwrap_model(model) is model
    assert issubclass(RankFailedError, UserError)


def test_timeout_and_group_creation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert dist_timeout() == timedelta(seconds=600)
    for bad in ("soon", "0", "inf"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=TIMEOUT_ENV):
            dist_timeout()
    import torch.distributed as dist

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.append(kw))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    for k, v in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", TIMEOUT_ENV: "17"}.items():
        monkeypatch.setenv(k, v)
    assert init_distributed("cpu") == DistContext(1, 2, 1, owns_group=True)
    assert calls == [{"backend": "gloo", "timeout": timedelta(seconds=17)}]


def test_finish_leaves_the_group_together_unless_an_error_propagates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch.distributed as dist

    from esam.runtime.distributed import finish

    monkeypatch.setattr(distributed, "_left_group", False)  # finish() sets it for this process
    calls: list[str] = []
    monkeypatch.setattr(dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append("destroy"))
    ctx = DistContext(1, 2, 1, owns_group=True)
    finish(ctx)
    assert calls == ["barrier", "destroy"]
    calls.clear()
    with pytest.raises(RuntimeError, match="rank failed"):
        try:
            raise RuntimeError("rank failed")
        finally:
            finish(ctx)  # the others may wait in another collective: no barrier
    assert calls == ["destroy"]
    calls.clear()

    def gone() -> None:
        raise RuntimeError("Connection closed by peer")

    monkeypatch.setattr(dist, "barrier", gone)
    finish(ctx)  # logged, and the group is left anyway
    assert calls == ["destroy"]
    calls.clear()
    finish(DistContext(0, 2, 0, owns_group=False))  # someone else's group: untouched
    assert calls == []


EXIT_SCRIPT = """
import atexit, logging, sys
import torch, torch.distributed as dist
from esam.runtime.distributed import DistContext, exit_process, finish

atexit.register(lambda: print("atexit handler ran"))
if sys.argv[1] == "group":
    dist.init_process_group("gloo", init_method="file://" + sys.argv[2], rank=0, world_size=1)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
    finish(DistContext(0, 1, 0, owns_group=True))
logging.basicConfig(level=logging.INFO, format="%(message)s")
logging.getLogger("run").info("logged")
print("printed", end="")
exit_process(3)
"""


@pytest.mark.parametrize("group", [True, False])
def test_exit_process_ends_a_group_member_without_teardown(group: bool, tmp_path: Path) -> None:
    argv = [sys.executable, "-c", EXIT_SCRIPT, "group" if group else "alone", str(tmp_path / "rdv")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "logged" in proc.stderr  # output and logs are flushed on either path
    # after a group, the interpreter's teardown (atexit included) is skipped
    assert proc.stdout == ("printed" if group else "printedatexit handler ran\n")


def test_only_rank_zero_logs_below_warning() -> None:
    def record(level: int) -> logging.LogRecord:
        return logging.LogRecord("esam", level, __file__, 1, "m", None, None)

    main, other = MainRankFilter(0), MainRankFilter(1)
    assert main.filter(record(logging.INFO))
    assert not other.filter(record(logging.INFO))
    assert other.filter(record(logging.WARNING))
