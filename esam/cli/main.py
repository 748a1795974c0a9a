"""Entry point of the ``esam`` command: one parser, one subcommand per job.

Each subcommand lives in its own module exposing ``register(subparsers)``; modules are imported
only to build the parser, and heavy dependencies are imported inside the handlers, so
``esam --help`` stays fast and works without optional extras.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from esam.errors import UserError

# (module, attribute) pairs; each module's ``register`` adds one top-level subcommand.
_SUBCOMMAND_MODULES: tuple[str, ...] = (
    "esam.cli.predict",
    "esam.cli.everything",
    "esam.cli.eval",
    "esam.cli.bench",
    "esam.cli.pretrain",
    "esam.cli.finetune",
    "esam.cli.data",
    "esam.cli.report",
    "esam.cli.suite",
    "esam.cli.downstream",
    "esam.cli.demo",
)


_EXTRA_OF_MODULE = {
    "pycocotools": "eval",
    "lvis": "eval",
    "scipy": "eval",
    "pandas": "report",
    "matplotlib": "report",
    "segment_anything": "sam",
    "torchvision": "sam",
    "mobile_sam": "peers",
    "efficientsam": "peers",
    "timm": "peers",
}


def _install_hint(e: ImportError) -> str:
    """Which optional extra provides the module that failed to import."""
    name = (getattr(e, "name", None) or "").split(".")[0]
    extra = _EXTRA_OF_MODULE.get(name)
    if extra:
        return f"the '{name}' package is needed here: pip install 'esam[{extra}]'"
    return "a package this command needs is missing: pip install 'esam[all]'"


def _one_line(e: BaseException) -> str:
    """The message of an error; an OSError's as one line naming its file."""
    if not isinstance(e, OSError):
        return str(e) or type(e).__name__
    text = str(e)
    if e.filename is not None and str(e.filename) not in text:
        text = f"{e.strerror or text}: {e.filename}"
    return " ".join(text.split())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esam",
        description="EfficientSAM end to end: prediction, SAMI pretraining, zero-shot benchmarks, throughput, reports.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # subcommand not shipped in this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "pass_through", False):
        args.argv = rest  # a command that parses its own arguments (e.g. pretrain's sub-commands)
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (UserError, OSError) as e:
        # the project's own user-facing errors, and file-system errors (whose message names
        # the file); anything else is a bug and keeps its traceback
        print(f"esam {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"esam {args.command}: error: {e}\n{_install_hint(e)}", file=sys.stderr)
        return 2


def run() -> NoReturn:
    """The ``esam`` console script: :func:`main`, then the process's exit (see
    :func:`esam.runtime.distributed.exit_process`, which ends torchrun's ranks cleanly)."""
    from esam.runtime.distributed import exit_process

    exit_process(main())


if __name__ == "__main__":
    run()
