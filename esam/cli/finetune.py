"""``esam finetune``: fine-tune EfficientSAM on SA-1B-format data, SAM's way.

Usage::

    esam finetune [--config NAME_OR_YAML] --data DIR_OR_TARS --output RUN_DIR
                  [--val-data DIR_OR_TARS] [--backbone PATH] [--init-checkpoint PATH]
                  [--resume] [KEY=VALUE ...]
    esam finetune export RUN_DIR_OR_CHECKPOINT --out MODEL.pt

Configs (``--config``): ``efficientsam_vitt``, ``efficientsam_vits`` (the paper's recipe: 1024
px, AdamW 4e-4, batch 128, 5 epochs) and ``tiny`` (a small model from scratch on a CPU), or a
YAML file; every field can be set with ``KEY=VALUE`` (``prompts.corrective_rounds=2``) or its
flag. Precedence: defaults < config < flags < ``KEY=VALUE``. RUN_DIR receives ``model.pt``:
evaluate it with ``esam eval zeroshot --model efficientsam --checkpoint RUN_DIR/model.pt``.
``--val-data`` scores held-out data the same way during training (``val.*`` settings; the values
go to ``log.jsonl`` and ``results.json``).
Run under ``torchrun --nproc_per_node N -m esam.cli.main finetune ...`` for one process per GPU.
``export`` writes the model of a run's newest training checkpoint (or of a checkpoint file)
as ``model.pt`` is written, to evaluate a run before it ends or at an earlier step.
"""

from __future__ import annotations

import argparse

#: Short flags and the config fields they set.
_ALIASES = {
    "data": "data.path",
    "val_data": "val.path",
    "output": "train.output_dir",
    "backbone": "model.backbone",
    "init_checkpoint": "model.init_checkpoint",
    "device": "train.device",
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``esam finetune``."""
    p = sub.add_parser(
        "finetune",
        add_help=False,
        help="fine-tune EfficientSAM on SA-1B-format data (SAM's prompts and losses)",
        description=__doc__,
    )
    p.set_defaults(func=dispatch, pass_through=True)


def parser() -> argparse.ArgumentParser:
    from esam.cli.config_args import add_config_arguments
    from esam.finetune.config import FinetuneConfig

    p = argparse.ArgumentParser(
        prog="esam finetune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", metavar="DIR_OR_TARS", help="SA-1B-format training data")
    p.add_argument(
        "--val-data",
        metavar="DIR_OR_TARS",
        help="SA-1B-format held-out data scored after every val.every_epochs epochs and at the "
        "end (box and 1-click mIoU, as esam eval zeroshot scores them)",
    )
    p.add_argument("--output", metavar="RUN_DIR", help="run folder (model.pt, log, checkpoints)")
    p.add_argument("--backbone", metavar="PATH", help="image-encoder trunk (esam pretrain export)")
    p.add_argument("--init-checkpoint", metavar="PATH", help="EfficientSAM weights to start from")
    p.add_argument("--device", help="cpu or cuda (default: the config's)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in RUN_DIR from its newest checkpoint; a new run starts when "
        "RUN_DIR has none (so a preempted job can be relaunched with the same command), and a "
        "run that is complete already is left as it is",
    )
    add_config_arguments(p, FinetuneConfig)
    return p


def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="esam finetune export",
        description="Write the model of a fine-tuning run's newest training checkpoint (or of "
        "a checkpoint file) as an esam checkpoint, the kind of file the run's model.pt is.",
    )
    p.add_argument(
        "run_dir", metavar="RUN_DIR_OR_CHECKPOINT", help="a fine-tuning run folder or checkpoint"
    )
    p.add_argument("--out", required=True, metavar="MODEL.pt", help="model file to write")
    return p


def run_export(args: argparse.Namespace) -> int:
    from esam.finetune.export import export_finetuned
    from esam.utils.io import check_writable_file

    check_writable_file(args.out, "model file")
    path, step = export_finetuned(args.run_dir, args.out)
    print(f"model at step {step} -> {path}")
    return 0


def dispatch(args: argparse.Namespace) -> int:
    from esam.cli.config_args import config_from_args
    from esam.cli.formatting import number
    from esam.finetune.config import FinetuneConfig
    from esam.finetune.run import run_finetune

    argv: list[str] = list(args.argv)
    if argv and argv[0] == "export":
        return run_export(export_parser().parse_args(argv[1:]))
    parsed = parser().parse_intermixed_args(argv)
    resume = {"train.resume": "auto"} if parsed.resume else None
    cfg = config_from_args(FinetuneConfig, parsed, aliases=_ALIASES, extra_flags=resume)
    result = run_finetune(cfg)
    if result.results is not None:
        m = result.results["metrics"]

        def fmt(key: str) -> str:
            return number(m.get(key), ".4g")

        print(
            f"{result.global_step} steps, loss {fmt('final_loss')} (focal {fmt('final_focal')}, "
            f"dice {fmt('final_dice')}, IoU MSE {fmt('final_iou_mse')}) -> {result.model_path}"
        )
        vals = [k for k in m if k.startswith("val_") and m[k] is not None]
        if vals:
            print("held-out: " + ", ".join(f"{k} {number(m[k], '.2f')}%" for k in vals))
    return 0
