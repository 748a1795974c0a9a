"""``esam eval``: zero-shot benchmarks (box / click mIoU, instance segmentation from boxes).

Subcommands::

    esam eval zeroshot --model NAME [--checkpoint PATH] --dataset coco|lvis|sa1b --annotations FILE
                       --images DIR --prompt box|point1|point3 [...] --output FILE.json
    esam eval instseg  --model NAME [--checkpoint PATH] --dataset coco|lvis --annotations FILE
                       --images DIR --detections FILE [...] --output FILE.json
    esam eval proposals --model NAME|oracle|box_grid [--checkpoint PATH] --dataset coco|lvis
                       --annotations FILE --images DIR [generator settings] --output FILE.json
    esam eval imagenet --mode finetune|linear|eval --backbone CKPT --train DIR --val DIR
                       [--labels FILE] --output RUN_DIR [--config NAME_OR_YAML] [--resume]
    esam eval models   (list the available model adapters)

Run under ``torchrun --nproc_per_node N -m esam.cli.main eval ...`` to shard images across
processes (one per GPU, or several on CPU).
"""

from __future__ import annotations

import argparse
from typing import Any

from esam.cli.formatting import number

#: Fields of the run configs that the command line does not expose as flags (``key=value``
#: still reaches them).
_HIDDEN = ("extra",)


def _flags(cls: type) -> list[str]:
    from esam.config import iter_fields

    return [f.key for f in iter_fields(cls) if f.key not in _HIDDEN]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``esam eval`` with its ``zeroshot``, ``instseg`` and ``models`` subcommands.

    The flags of ``zeroshot`` and ``instseg`` are generated from
    :class:`~esam.eval.config.ZeroShotConfig` and :class:`~esam.eval.config.InstSegConfig`
    (each field's docstring is its help); ``--config RUN.yaml`` and ``KEY=VALUE`` work too.
    """
    from esam.cli.config_args import add_config_arguments
    from esam.eval.config import InstSegConfig, ProposalsConfig, ZeroShotConfig

    p = sub.add_parser(
        "eval",
        help="zero-shot benchmarks: box/click mIoU and instance segmentation from detector boxes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tasks = p.add_subparsers(dest="eval_task", metavar="TASK", required=True)

    z = tasks.add_parser(
        "zeroshot",
        help="mIoU of masks prompted by ground-truth boxes or clicks",
        description="mIoU (percent) over all instances and per COCO size bucket. The "
        "prompt-selection rules come from --protocol (docs/protocols.md); each rule flag "
        "overrides the preset and is recorded.",
    )
    add_config_arguments(z, ZeroShotConfig, fields=_flags(ZeroShotConfig))
    z.set_defaults(func=run_zeroshot_cli)

    i = tasks.add_parser(
        "instseg",
        help="segm AP of masks prompted by detector boxes (COCOeval / LVISEval)",
        description="One mask per detection box; AP in percent.",
    )
    add_config_arguments(i, InstSegConfig, fields=_flags(InstSegConfig))
    i.set_defaults(func=run_instseg_cli)

    r = tasks.add_parser(
        "proposals",
        help="class-agnostic mask AR@100/AR@1000 of segment-everything proposals (COCOeval)",
        description="Zero-shot object proposals: mask average recall in percent, overall, by "
        "size and (LVIS) by category frequency. --model oracle and box_grid need no weights.",
    )
    add_config_arguments(r, ProposalsConfig, fields=_flags(ProposalsConfig))
    r.set_defaults(func=run_proposals_cli)

    from esam.cli.imagenet import register as register_imagenet

    register_imagenet(tasks)

    m = tasks.add_parser("models", help="list the model adapters")
    m.set_defaults(func=list_models_cli)


def _require_output(output: str | None) -> None:
    if output is None:
        from esam.errors import InputError

        raise InputError("--output FILE.json is required (the results file to write)")


def run_zeroshot_cli(args: argparse.Namespace) -> int:
    from esam.cli.config_args import config_from_args
    from esam.eval.config import ZeroShotConfig
    from esam.eval.zeroshot import run_zeroshot

    cfg = config_from_args(ZeroShotConfig, args)
    _require_output(cfg.output)
    run = run_zeroshot(cfg)
    if run is not None:
        print(_format_miou(run.results["metrics"], str(cfg.output)))
    return 0


def run_instseg_cli(args: argparse.Namespace) -> int:
    from esam.cli.config_args import config_from_args
    from esam.eval.config import InstSegConfig
    from esam.eval.instseg import run_instseg

    cfg = config_from_args(InstSegConfig, args)
    _require_output(cfg.output)
    run = run_instseg(cfg)
    if run is not None:
        m = run.results["metrics"]
        vals = ", ".join(
            f"{k}={number(m[k], '.2f')}"
            for k in ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")
        )
        print(f"{vals} ({m['n_detections']} detections) -> {cfg.output}")
    return 0


def run_proposals_cli(args: argparse.Namespace) -> int:
    from esam.cli.config_args import config_from_args
    from esam.eval.config import ProposalsConfig
    from esam.eval.proposals import run_proposals
    from esam.everything.proposals import build_generator_proposals

    cfg = config_from_args(ProposalsConfig, args)
    _require_output(cfg.output)
    run = run_proposals(
        cfg,
        factory=lambda c, device: build_generator_proposals(
            c.model, c.checkpoint, device, c.generator_settings()
        ),
    )
    if run is not None:
        m = run.results["metrics"]
        vals = ", ".join(
            f"{k}={number(m[k], '.2f')}"
            for k in ("ar_100", "ar_1000", "ar_small_1000", "ar_medium_1000", "ar_large_1000")
        )
        print(f"{vals} ({m['n_proposals']} proposals, {m['n_images']} images) -> {cfg.output}")
    return 0


def list_models_cli(args: argparse.Namespace) -> int:
    from esam.adapters import ENTRY_POINT_GROUP, available_adapters

    for name, source in available_adapters().items():
        print(f"{name:24s} {source}")
    print(f"(add more through the entry-point group '{ENTRY_POINT_GROUP}')")
    return 0


def _format_miou(m: dict[str, Any], output: str) -> str:
    def f(v: Any) -> str:
        return number(v, ".2f")

    return (
        f"mIoU={f(m['miou'])} small={f(m['miou_small'])} medium={f(m['miou_medium'])} "
        f"large={f(m['miou_large'])} ({m['n_instances']} instances) -> {output}"
    )
