"""Launching multi-process (gloo) test runs on one machine.

``torchrun --standalone`` lets the launcher bind its rendezvous store to a port it picks
itself and hands that store to the workers, so two runs started at the same moment (tests in
parallel, or a test beside a user's job) cannot race for a port. Choosing a free port in the
test and passing ``--master_port`` leaves a window between closing the probe socket and the
launcher binding it.
"""

from __future__ import annotations

import socket
import sys


def torchrun(nproc: int, *args: str) -> list[str]:
    """argv of ``torchrun --standalone --nproc_per_node nproc ARGS`` with this interpreter.

    ``args`` is what follows the launcher's options: a script path or ``-m module``, then its
    arguments.
    """
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        *args,
    ]


def free_port() -> int:
    """A TCP port free at the time of the call, for tests that set ``MASTER_PORT`` themselves
    (processes started one by one, without the launcher)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
