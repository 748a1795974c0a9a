"""``python -m esam_downstream train|test``: the two downstream tasks on an esam backbone.

``test`` writes ``WORK_DIR/results.json`` in esam's results schema (:mod:`esam.utils.results`):
task ``coco-maskrcnn`` (bbox_mAP, segm_mAP and their _s/_m/_l, in percent) or
``ade20k-mask2former`` (mIoU, aAcc, in percent), with the backbone's sha256 and the resolved
config. Multi-GPU runs go through torchrun (``--launcher pytorch``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from esam.cli.downstream import add_arguments
from esam.errors import InputError, UserError

#: task -> (default config per arch, dataset name, data-root keys, metric renames)
TASKS: dict[str, dict[str, Any]] = {
    "coco-maskrcnn": {
        "config": "mask-rcnn_esam-vit-{arch}_lsj-100e_coco",
        "dataset": "coco",
        "evaluator_ann": "annotations/instances_val2017.json",
        "metrics": {
            f"coco/{kind}_mAP{suffix}": f"{kind}_mAP{suffix}"
            for kind in ("bbox", "segm")
            for suffix in ("", "_s", "_m", "_l")
        },
        "scale": 100.0,  # mmdet reports fractions
    },
    "ade20k-mask2former": {
        "config": "mask2former_esam-vit-{arch}_160k_ade20k-512x512",
        "dataset": "ade20k",
        "evaluator_ann": None,
        "metrics": {"mIoU": "mIoU", "aAcc": "aAcc"},
        "scale": 1.0,  # mmseg reports percentages
    },
}


def parse_cfg_options(items: list[str]) -> dict[str, Any]:
    """``key=value`` strings -> dict; values parsed as JSON when they parse, else kept as text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--cfg-options expects key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


#: ViT width -> ``--arch`` of the shipped configs.
ARCH_OF_WIDTH = {192: "t", 384: "s", 768: "b"}


def backbone_arch(path: Path) -> str:
    """The shipped configs' ``--arch`` for a backbone checkpoint (by its ViT width).

    Raises:
        InputError: a width no shipped config has (give ``--config``).
    """
    from esam.checkpoint import read_backbone

    _, arch, _ = read_backbone(path)
    width = int(arch["embed_dim"])
    if width not in ARCH_OF_WIDTH:
        raise InputError(
            f"{path}: a ViT of width {width} has no shipped config (widths "
            f"{sorted(ARCH_OF_WIDTH)}); give --config"
        )
    return ARCH_OF_WIDTH[width]


def _options(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    from esam_downstream.runtime import config_path

    spec = TASKS[args.task]
    config = (
        Path(args.config) if args.config else config_path(spec["config"].format(arch=args.arch))
    )
    opts: dict[str, Any] = {}
    if args.data_root:
        root = str(Path(args.data_root)) + "/"
        for split in ("train", "val", "test"):
            opts[f"{split}_dataloader.dataset.data_root"] = root
        if spec["evaluator_ann"]:
            for split in ("val", "test"):
                opts[f"{split}_evaluator.ann_file"] = root + spec["evaluator_ann"]
    if args.launcher != "none":
        opts["launcher"] = args.launcher
    opts.update(parse_cfg_options(args.cfg_options))
    return config, opts


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    """Run ``train`` or ``test``; ``test`` returns (and writes) the results object."""
    from esam.utils.io import write_json_atomic
    from esam.utils.meta import run_metadata, utc_now
    from esam.utils.results import make_results
    from esam_downstream.runtime import build_runner

    if args.backbone and not Path(args.backbone).is_file():
        raise FileNotFoundError(f"backbone checkpoint not found: {args.backbone}")
    if args.command == "test":
        if args.checkpoint is None and not args.untrained:
            raise InputError(
                "test needs the trained model: pass --checkpoint WORK_DIR/iter_N.pth (or "
                "--untrained to evaluate the config's untrained heads as a smoke run)"
            )
        if args.checkpoint is not None and not Path(args.checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint not found: {args.checkpoint}")
    if args.arch is None:
        args.arch = backbone_arch(Path(args.backbone)) if args.backbone and not args.config else "t"
    config, opts = _options(args)
    start = utc_now()
    runner = build_runner(config, args.work_dir, opts, backbone=args.backbone)
    if args.command == "train":
        runner.train()
        return None
    if args.checkpoint is not None:
        # strictly (mmengine's load_from is not): a checkpoint of another architecture or
        # config is a named error, never a partly loaded model that scores as this one
        try:
            runner.load_checkpoint(str(args.checkpoint), strict=True)
        except RuntimeError as e:
            raise InputError(
                f"{args.checkpoint} does not fit the model of {config} (pass the --arch or "
                f"--config it was trained with): {e}"
            ) from e
    raw = runner.test()
    spec = TASKS[args.task]
    # mmdet writes -1 for a size bucket without ground truth: the schema's "no value" is null
    metrics = {
        new: float(raw[old]) * spec["scale"]
        if raw.get(old) is not None and float(raw[old]) >= 0
        else None
        for old, new in spec["metrics"].items()
    }
    if runner.rank != 0:
        return None
    backbone = Path(args.backbone) if args.backbone else None
    results = make_results(
        task=args.task,
        model={
            "name": args.model
            or (f"esam-vit-{args.arch}" if not args.config else Path(args.config).stem),
            # the weights that produced the numbers are the trained detector's: they identify
            # the run (two checkpoints of one backbone are two rows of the report, not one)
            "checkpoint": str(args.checkpoint) if args.checkpoint else None,
            "checkpoint_sha256": sha256_file(args.checkpoint) if args.checkpoint else None,
            "backbone": str(backbone) if backbone else None,
            "backbone_sha256": sha256_file(backbone) if backbone else None,
            "weights": "trained" if args.checkpoint else "untrained heads (smoke run)",
        },
        config={
            **recipe_keys(args.task, runner.cfg),
            "config_file": str(config),
            "cfg_options": opts,
            "resolved": runner.cfg.pretty_text,
        },
        metrics=metrics,
        meta=run_metadata(
            "cuda" if runner.model is not None and _on_cuda(runner) else "cpu", start_time=start
        ),
        dataset={"name": spec["dataset"], "root": args.data_root},
        units={"percent_metrics": "percent"},
    )
    write_json_atomic(Path(args.work_dir) / "results.json", results)
    return results


def _side(size: Any) -> str | None:
    """``1024`` for a square (1024, 1024), ``HxW`` otherwise; None when not set."""
    if size is None:
        return None
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return str(h) if h == w else f"{h}x{w}"


def recipe_keys(task: str, cfg: Any) -> dict[str, Any]:
    """The recipe settings the report tells runs apart by (its ``variant_keys`` per task).

    ``coco-maskrcnn``: ``img_size`` (the LSJ canvas) and ``schedule`` (training iterations);
    ``ade20k-mask2former``: ``crop_size`` and ``iters``. For ``test`` they describe the config
    the detector was trained with (the same config is what ``test`` is given).
    """
    iters = cfg.get("train_cfg", {}).get("max_iters")
    if task == "coco-maskrcnn":
        return {
            "img_size": _side(cfg.get("image_size")),
            "schedule": f"{iters} iters" if iters else None,
        }
    return {"crop_size": _side(cfg.get("crop_size")), "iters": iters}


def _on_cuda(runner: Any) -> bool:
    return any(p.is_cuda for p in runner.model.parameters())


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``esam downstream`` (:func:`esam.cli.downstream.add_arguments`)."""
    parser = argparse.ArgumentParser(prog="python -m esam_downstream", description=__doc__)
    return add_arguments(parser)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (UserError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
