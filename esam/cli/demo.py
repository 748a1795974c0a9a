"""``esam demo``: the whole pipeline, compact, on the embedded default data."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run every stage on the shipped sample and build the report",
        description=__doc__,
    )
    p.add_argument(
        "--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)"
    )
    p.add_argument("--quick", action="store_true", help="reduced setting (smoke test)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from esam.demo import run_demo

    run_demo(args.out, quick=args.quick)
    return 0
