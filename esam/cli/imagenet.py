"""``esam eval imagenet``: ImageNet-1K classification of a ViT backbone (fine-tune, probe, eval).

Usage::

    esam eval imagenet --mode finetune|linear|eval --backbone CKPT --train DIR --val DIR
                       [--labels FILE] --output RUN_DIR [--config NAME_OR_YAML] [--resume]
                       [KEY=VALUE ...]

Configs (``--config``): ``vit_tiny``, ``vit_small``, ``vit_base`` (the paper's fine-tuning
recipe and MAE's linear probe) and ``tiny`` (a CPU-sized run); every field can be set with
``KEY=VALUE`` (``train.epochs=10``, ``linear.lars=false``), before, between or after the flags;
``KEY=VALUE`` overrides win over flags and are applied in order. ``--backbone`` takes an ``esam
pretrain export`` file, an EfficientSAM checkpoint or a timm ViT state dict (DeiT, MAE, DINO).
``--mode eval`` evaluates ``model.checkpoint=RUN_DIR/classifier.pt`` of an earlier run.
RUN_DIR receives config.yaml, log.jsonl, checkpoints/, classifier.pt, results.json and
results.rows.jsonl. Run under ``torchrun --nproc_per_node N -m esam.cli.main eval imagenet ...``
for one process per GPU.
"""

from __future__ import annotations

import argparse
from typing import Any

#: Short flags and the config fields they set.
_ALIASES = {
    "backbone": "model.backbone",
    "train": "data.train",
    "val": "data.val",
    "labels": "data.labels",
}


def register(tasks: argparse._SubParsersAction) -> None:
    """Add ``imagenet`` to the ``esam eval`` subcommands.

    The arguments are parsed by :func:`parser` with ``parse_intermixed_args``, so ``KEY=VALUE``
    overrides may stand anywhere among the flags (as in ``esam finetune``).
    """
    p = tasks.add_parser(
        "imagenet",
        add_help=False,
        help="ImageNet-1K top-1/top-5 of a ViT backbone: fine-tune, linear probe or evaluate",
        description=__doc__,
    )
    p.set_defaults(func=dispatch, pass_through=True)


def parser() -> argparse.ArgumentParser:
    """The parser of ``esam eval imagenet``'s own arguments."""
    from esam.classify.config import ClassifyConfig
    from esam.cli.config_args import add_config_arguments

    p = argparse.ArgumentParser(
        prog="esam eval imagenet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--backbone", metavar="CKPT", help="backbone weights (esam, EfficientSAM, timm)")
    p.add_argument("--train", metavar="DIR", help="training images, one folder per class")
    p.add_argument("--val", metavar="DIR", help="val images: class folders or a flat folder")
    p.add_argument("--labels", metavar="FILE", help="labels file of a flat val folder")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in RUN_DIR from its checkpoint"
    )
    add_config_arguments(p, ClassifyConfig, fields=("mode", "output", "device"))
    return p


def dispatch(args: argparse.Namespace) -> int:
    """Parse the pass-through arguments (flags and overrides in any order), then run."""
    return run_imagenet_cli(parser().parse_intermixed_args(list(args.argv)))


def resolve_config(args: argparse.Namespace) -> Any:
    """The :class:`~esam.classify.config.ClassifyConfig` of parsed arguments: defaults <
    ``--config`` < flags < ``KEY=VALUE`` (in order).

    Raises:
        esam.config.ConfigError: every problem of the resolved values.
    """
    from esam.classify.config import ClassifyConfig
    from esam.cli.config_args import config_from_args

    resume = {"train.resume": "auto", "linear.train.resume": "auto"} if args.resume else None
    return config_from_args(ClassifyConfig, args, aliases=_ALIASES, extra_flags=resume)


def run_imagenet_cli(args: argparse.Namespace) -> int:
    from esam.classify.run import run_classify
    from esam.cli.formatting import number

    cfg = resolve_config(args)
    result = run_classify(cfg)
    if result.results is not None:
        m = result.results["metrics"]

        def pct(key: str) -> str:
            return number(m.get(key), ".2f", "%")

        print(
            f"top-1 {pct('top1')}, top-5 {pct('top5')} on {m['n_images']} images "
            f"({cfg.mode}) -> {result.run_dir / 'results.json'}"
        )
    return 0
