"""``esam pretrain``: SAMI / MAE pretraining, the teacher-feature cache, and backbone export.

Usage::

    esam pretrain [--config NAME_OR_YAML] --data DIR --output RUN_DIR [--teacher NAME]
                  [--teacher-checkpoint PATH] [--teacher-cache DIR] [--resume] [KEY=VALUE ...]
    esam pretrain cache-teacher --data DIR --out CACHE_DIR --teacher NAME
                  --teacher-checkpoint PATH [--views K] [...]
    esam pretrain export RUN_DIR --out BACKBONE.pt

Configs (``--config``): ``sami_vit_tiny``, ``sami_vit_small``, ``sami_vit_base`` (the paper's
recipe), ``mae_vit_tiny`` (the MAE baseline) and ``tiny`` (a few minutes on a CPU), or a YAML
file; every field can be set with ``KEY=VALUE`` (``train.epochs=10``, ``teacher.output=trunk``)
or its generated flag (``--train.epochs 10``). Precedence: defaults < config < flags <
``KEY=VALUE``. Run under ``torchrun --nproc_per_node N -m esam.cli.main pretrain ...`` for one
process per GPU.
"""

from __future__ import annotations

import argparse
import sys

_SUBCOMMANDS = ("cache-teacher", "export")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``esam pretrain`` (its own sub-commands are dispatched on the first word)."""
    p = sub.add_parser(
        "pretrain",
        add_help=False,
        help="SAMI pretraining of a light ViT (also cache-teacher and export)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=dispatch, pass_through=True)


def dispatch(args: argparse.Namespace) -> int:
    argv: list[str] = list(args.argv)
    if argv and argv[0] == "export":
        return run_export(export_parser().parse_args(argv[1:]))
    if argv and argv[0] == "cache-teacher":
        return run_cache(cache_parser().parse_args(argv[1:]))
    return run_train(train_parser().parse_intermixed_args(argv))


# --- training -------------------------------------------------------------------------------

#: Short flags and the config fields they set.
_ALIASES = {
    "data": "data.path",
    "output": "train.output_dir",
    "teacher": "teacher.name",
    "teacher_checkpoint": "teacher.checkpoint",
    "teacher_cache": "teacher.cache",
    "device": "train.device",
    "eval_data": "data.eval_path",
}


def train_parser() -> argparse.ArgumentParser:
    from esam.cli.config_args import add_config_arguments
    from esam.sami.config import SamiConfig
    from esam.sami.teacher import TEACHER_NAMES

    p = argparse.ArgumentParser(
        prog="esam pretrain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", metavar="DIR", help="training images: ImageNet layout or flat folder")
    p.add_argument("--output", metavar="RUN_DIR", help="run folder (config, log, checkpoints)")
    p.add_argument("--teacher", choices=TEACHER_NAMES, help="teacher model (default: sam_vit_h)")
    p.add_argument("--teacher-checkpoint", metavar="PATH", help="teacher weights file")
    p.add_argument("--teacher-cache", metavar="DIR", help="train from cached teacher features")
    p.add_argument("--eval-data", metavar="DIR", help="held-out images evaluated after training")
    p.add_argument("--device", help="cpu or cuda (default: the config's)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in RUN_DIR from its newest checkpoint (else RUN_DIR must not hold "
        "checkpoints)",
    )
    add_config_arguments(p, SamiConfig)
    return p


def run_train(args: argparse.Namespace) -> int:
    from esam.cli.config_args import config_from_args
    from esam.cli.formatting import number
    from esam.sami.config import SamiConfig
    from esam.sami.pretrain import run_pretrain

    resume = {"train.resume": "auto"} if args.resume else None
    cfg = config_from_args(SamiConfig, args, aliases=_ALIASES, extra_flags=resume)
    result = run_pretrain(cfg)
    if result.results is not None:
        m = result.results["metrics"]
        line = f"{result.global_step} steps, final loss {number(m['final_loss'], '.4g')}"
        if m.get("eval_mse_ratio") is not None:
            line += (
                f"; held-out MSE {m['eval_mse']:.4g} vs mean-feature {m['eval_mean_feature_mse']:.4g}"
                f" (ratio {m['eval_mse_ratio']:.3f})"
            )
        print(f"{line} -> {result.run_dir}")
    return 0


# --- export ---------------------------------------------------------------------------------


def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="esam pretrain export",
        description="Write the student trunk of a pretraining run as a backbone checkpoint "
        "(read by fine-tuning, ImageNet classification and the detection/segmentation plugins).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a pretraining run folder or checkpoint")
    p.add_argument(
        "--out",
        required=True,
        metavar="BACKBONE.pt",
        help="backbone file to write (.safetensors: a safetensors file)",
    )
    return p


def run_export(args: argparse.Namespace) -> int:
    from esam.sami.export import export_backbone
    from esam.utils.io import check_writable_file

    check_writable_file(args.out, "backbone file")
    path, arch = export_backbone(args.run_dir, args.out)
    print(
        f"backbone (width {arch['embed_dim']}, {arch['depth']} blocks, patch "
        f"{arch['patch_size']}, pretrained at {arch['pretrain_img_size']} px) -> {path}"
    )
    return 0


# --- teacher cache --------------------------------------------------------------------------


def cache_parser() -> argparse.ArgumentParser:
    from esam.sami.teacher import TEACHER_NAMES

    p = argparse.ArgumentParser(
        prog="esam pretrain cache-teacher",
        description="Compute the teacher's features for K fixed augmented views of every image "
        "once (fp16 shards, sharded across torchrun processes); esam pretrain --teacher-cache "
        "then trains without running the teacher.",
    )
    p.add_argument("--data", required=True, metavar="DIR", help="the training image folder")
    p.add_argument("--out", required=True, metavar="CACHE_DIR", help="cache folder to write")
    p.add_argument("--teacher", required=True, choices=TEACHER_NAMES, help="teacher model")
    p.add_argument("--teacher-checkpoint", metavar="PATH", help="teacher weights file")
    p.add_argument("--views", type=int, default=4, help="views per image (default: 4)")
    p.add_argument("--view-size", type=int, default=224, help="student view side (default: 224)")
    p.add_argument(
        "--teacher-input-size", type=int, help="teacher view side (default: the view size)"
    )
    p.add_argument("--feature", choices=("neck", "trunk"), default="neck", help="default: neck")
    p.add_argument("--scale-min", type=float, default=0.2, help="smallest crop area (0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the views (default: 0)")
    p.add_argument("--batch-size", type=int, default=32, help="views per teacher call")
    p.add_argument("--shard-size", type=int, default=4096, help="views per shard file")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="teacher autocast precision, recorded in the cache (default: fp32; bf16 is several "
        "times faster on GPUs with bfloat16 units; features are stored in fp16 either way)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run_cache(args: argparse.Namespace) -> int:
    from pathlib import Path

    from esam.data.imagefolder import scan_image_folder
    from esam.runtime.distributed import (
        barrier,
        check_device,
        device_for,
        finish,
        init_distributed,
        run_collectively,
    )
    from esam.sami.cache import (
        mark_part_failed,
        merge_cache_index,
        remove_stale_parts,
        wait_for_parts,
        write_cache_part,
    )
    from esam.sami.teacher import build_teacher

    images = scan_image_folder(args.data)
    ctx = init_distributed(args.device)
    try:
        device = device_for(args.device, ctx)
        check_device(device)
        # collectively: a rank that cannot build the teacher stops the others with its message
        teacher = run_collectively(
            lambda: build_teacher(
                args.teacher,
                args.teacher_checkpoint,
                input_size=args.teacher_input_size or args.view_size,
                output=args.feature,
                output_grid=args.view_size // 16,
                device=device,
            ),
            ctx,
        )
        paths = [str(images.path(i)) for i in range(len(images))]
        if ctx.distributed:  # an earlier run's parts would end the waits below too early
            if ctx.is_main:
                Path(args.out).mkdir(parents=True, exist_ok=True)
                remove_stale_parts(args.out, ctx.world_size)
            barrier(ctx)

        def work() -> Path:
            try:
                part = write_cache_part(
                    args.out,
                    paths,
                    teacher,
                    views_per_image=args.views,
                    seed=args.seed,
                    view_size=args.view_size,
                    rank=ctx.rank,
                    world_size=ctx.world_size,
                    batch_size=args.batch_size,
                    shard_size=args.shard_size,
                    scale=(args.scale_min, 1.0),
                    progress=not args.no_progress and ctx.is_main,
                    precision=args.precision,
                )
            except Exception as e:
                if ctx.distributed:
                    mark_part_failed(args.out, ctx.rank, ctx.world_size, f"{type(e).__name__}: {e}")
                raise
            if ctx.distributed:
                # hours of work per rank end minutes apart: wait on the files, not a collective
                wait_for_parts(args.out, ctx.world_size)
            return part

        run_collectively(work, ctx)
        barrier(ctx)
        if ctx.is_main:
            index = merge_cache_index(args.out, ctx.world_size)
            print(
                f"{len(images)} images x {args.views} views of {args.teacher} features -> {index}",
                file=sys.stdout,
            )
    finally:
        finish(ctx)
    return 0
