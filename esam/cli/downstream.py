"""``esam downstream train|test``: the detection and segmentation heads of ``downstream/``.

An alias of ``python -m esam_downstream`` (Mask R-CNN with the ViTDet recipe on COCO, task
``coco-maskrcnn``; Mask2Former on ADE20K, task ``ade20k-mask2former``) for a Python in which
the ``esam_downstream`` package is installed; elsewhere it stops with a one-line error. The
package needs mmcv, mmdet and mmsegmentation on torch 2.13 (``tox -e downstream`` builds that
environment; ``downstream/README.md``).

The command's arguments are defined here, in plain argparse, and ``esam_downstream`` builds
its parser from :func:`add_arguments`: ``esam suite`` reads a downstream run's settings from
this parser without importing the package, and nothing is declared twice. Importing this
module imports neither ``esam_downstream`` nor any mm* package.
"""

from __future__ import annotations

import argparse
import importlib.util

from esam.errors import UserError

#: The tasks of ``python -m esam_downstream`` (its ``TASKS`` holds how each runs).
DOWNSTREAM_TASKS = ("ade20k-mask2former", "coco-maskrcnn")
#: ``--arch`` values: the shipped configs' ViT sizes.
ARCH_CHOICES = ("t", "s", "b")

NOT_INSTALLED = (
    "the esam_downstream package is not installed in this Python: install downstream/ "
    "(downstream/README.md) or run it in the downstream environment (`tox -e downstream`, "
    "then .tox/downstream/bin/python -m esam_downstream ...)"
)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of ``train|test`` (shared by ``esam downstream`` and esam_downstream)."""
    parser.add_argument("command", choices=("train", "test"))
    parser.add_argument("--task", choices=DOWNSTREAM_TASKS, required=True)
    parser.add_argument(
        "--arch",
        choices=ARCH_CHOICES,
        help="ViT size of the shipped config (default: the backbone checkpoint's size, else t)",
    )
    parser.add_argument(
        "--backbone", help="esam backbone checkpoint (SAMI export, EfficientSAM file)"
    )
    parser.add_argument(
        "--checkpoint",
        help="test: the trained detector/segmenter (mmengine .pth), loaded strictly; required "
        "unless --untrained",
    )
    parser.add_argument(
        "--untrained",
        action="store_true",
        help="test: evaluate the config's initial heads without --checkpoint (a smoke run; the "
        "results say so)",
    )
    parser.add_argument(
        "--model",
        help="name recorded as the results' model (default: esam-vit-<arch> or the config's name)",
    )
    parser.add_argument(
        "--data-root", help="COCO root (annotations/, train2017/, val2017/) or ADEChallengeData2016"
    )
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--config", help="config file instead of the shipped one for --arch")
    parser.add_argument("--cfg-options", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--launcher", choices=("none", "pytorch", "slurm", "mpi"), default="none")
    return parser


def parser(prog: str = "esam downstream") -> argparse.ArgumentParser:
    """A parser of the downstream command line."""
    return add_arguments(argparse.ArgumentParser(prog=prog, description=__doc__))


def installed() -> bool:
    """Whether ``esam_downstream`` can be imported here (checked without importing it)."""
    return importlib.util.find_spec("esam_downstream") is not None


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``esam downstream``; its arguments go to esam_downstream unparsed."""
    p = sub.add_parser(
        "downstream",
        add_help=False,
        help="Mask R-CNN / Mask2Former on an esam backbone (python -m esam_downstream)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=dispatch, pass_through=True)


def dispatch(args: argparse.Namespace) -> int:
    if not installed():
        raise UserError(NOT_INSTALLED)
    from esam_downstream.cli import main

    return main(list(args.argv))
