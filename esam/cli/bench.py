"""``esam bench``: throughput, latency, memory and accuracy at the timed precision.

Subcommands::

    esam bench throughput --model NAME [--checkpoint PATH] --device cpu|cuda
                          --batch-sizes 1,8,32 --dtypes fp32,bf16,fp16 [--compile [on|off|both]]
                          [--prompts-per-image 1] [--warmup N] [--iters N] --output FILE.json
    esam bench compare FAST.json BASELINE.json   (speed ratios at identical settings)
    esam bench models                            (list the benchmarkable models)

Each (batch size, dtype, compile) configuration runs in a fresh process. Without --checkpoint,
esam models get their deterministic stand-in weights (recorded as ``weights: "standin (seed
N)"``) and other models their untrained initialisation (``weights: "untrained"``): timings
are unaffected, and the accuracy column then measures agreement with the model's own fp32
output.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any

from esam.errors import InputError


def _sweep_defaults() -> dict[str, str]:
    """:class:`~esam.bench.settings.SweepSettings`' defaults as the flags spell them, so the
    command line has no second copy of them."""
    from esam.bench.settings import SweepSettings

    d = SweepSettings(model="-")
    return {
        "device": d.device,
        "batch_sizes": ",".join(str(b) for b in d.batch_sizes),
        "dtypes": ",".join(d.dtypes),
        "compile": "both" if len(d.compile) > 1 else ("on" if d.compile[0] else "off"),
        "compile_mode": d.compile_mode,
        "components": ",".join(d.components),
    }


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``esam bench`` with its ``throughput``, ``compare`` and ``models`` subcommands.

    The flags of ``throughput`` spell the fields of :class:`~esam.bench.settings.SweepSettings`
    (lists as comma-separated strings); their defaults are read from it.
    """
    from esam.bench.settings import SweepSettings

    sd = _sweep_defaults()
    fields = {f.name: f.default for f in dataclasses.fields(SweepSettings)}
    p = sub.add_parser(
        "bench",
        help="throughput, latency, memory, size and accuracy-at-precision benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tasks = p.add_subparsers(dest="bench_task", metavar="TASK", required=True)

    t = tasks.add_parser(
        "throughput",
        help="images/s, latency p50/p90 and peak memory per component, plus mIoU vs fp32",
        description="Time the image encoder, the decoder and end to end (box prompts) over a sweep.",
    )
    t.add_argument("--model", required=True, help="model name (see 'esam bench models')")
    t.add_argument(
        "--checkpoint", help="weights file (default: untrained weights; never downloaded)"
    )
    t.add_argument(
        "--device", default=sd["device"], help=f"cpu or cuda[:N] (default: {sd['device']})"
    )
    t.add_argument(
        "--batch-sizes",
        default=sd["batch_sizes"],
        help=f"comma-separated images per call (default: {sd['batch_sizes']})",
    )
    t.add_argument(
        "--dtypes",
        default=sd["dtypes"],
        help=f"comma-separated from fp32, tf32 (CUDA), bf16, fp16 (default: {sd['dtypes']})",
    )
    t.add_argument(
        "--compile",
        nargs="?",
        const="on",
        default=sd["compile"],
        metavar="on|off|both",
        help="torch.compile the encoder and decoder; 'both' runs each setting eager and compiled",
    )
    t.add_argument(
        "--compile-mode",
        default=sd["compile_mode"],
        help=f"torch.compile mode (default: {sd['compile_mode']})",
    )
    t.add_argument(
        "--prompts-per-image",
        type=int,
        default=fields["prompts_per_image"],
        help=f"box prompts per image (default: {fields['prompts_per_image']})",
    )
    t.add_argument(
        "--warmup",
        type=int,
        default=fields["warmup"],
        help=f"untimed calls per component (default: {fields['warmup']})",
    )
    t.add_argument(
        "--iters",
        type=int,
        default=fields["iters"],
        help=f"timed calls per component (default: {fields['iters']})",
    )
    t.add_argument(
        "--accuracy-images",
        type=int,
        default=fields["accuracy_images"],
        help="images of the fixed synthetic accuracy set; 0 skips accuracy "
        f"(default: {fields['accuracy_images']})",
    )
    t.add_argument(
        "--seed",
        type=int,
        default=fields["seed"],
        help=f"seed of the accuracy set and untrained weights (default: {fields['seed']})",
    )
    t.add_argument(
        "--components",
        default=sd["components"],
        help=f"comma-separated subset of {sd['components']} (default: all)",
    )
    t.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="EfficientSamConfig field for esam models, e.g. img_size=256 (repeatable; for tests)",
    )
    t.add_argument(
        "--threads",
        type=int,
        default=fields["threads"],
        help="torch CPU threads per worker (default: torch's choice)",
    )
    t.add_argument(
        "--retain-freed-memory",
        action="store_true",
        help="CPU workers keep freed memory mapped (glibc mallopt): large temporary buffers "
        "then cost no page faults",
    )
    t.add_argument(
        "--in-process",
        action="store_true",
        help="run every configuration in this process (debugging)",
    )
    t.add_argument(
        "--worker-timeout", type=float, help="seconds before a configuration's process is killed"
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--output", required=True, help="results JSON file")
    t.set_defaults(func=run_throughput_cli)

    c = tasks.add_parser(
        "compare", help="speed ratios of two throughput results at identical settings"
    )
    c.add_argument("fast", help="results JSON of the model to rate")
    c.add_argument("baseline", help="results JSON of the baseline (e.g. the :reference mode)")
    c.set_defaults(func=compare_cli)

    m = tasks.add_parser("models", help="list the benchmarkable models")
    m.set_defaults(func=list_models_cli)


def settings_from_args(args: argparse.Namespace) -> Any:
    """A validated :class:`~esam.bench.settings.SweepSettings` from parsed arguments."""
    from esam.bench.settings import (
        SweepSettings,
        parse_batch_sizes,
        parse_compile,
        parse_dtypes,
        parse_overrides,
    )

    return SweepSettings(
        model=args.model,
        device=args.device,
        checkpoint=args.checkpoint,
        batch_sizes=parse_batch_sizes(args.batch_sizes),
        dtypes=parse_dtypes(args.dtypes),
        compile=parse_compile(args.compile),
        compile_mode=args.compile_mode,
        prompts_per_image=args.prompts_per_image,
        warmup=args.warmup,
        iters=args.iters,
        accuracy_images=args.accuracy_images,
        seed=args.seed,
        overrides=parse_overrides(args.override),
        components=tuple(c.strip() for c in args.components.split(",") if c.strip()),
        threads=args.threads,
        retain_freed_memory=args.retain_freed_memory,
    ).validate()


def run_throughput_cli(args: argparse.Namespace) -> int:
    from esam.bench.throughput import format_table, run_sweep

    settings = settings_from_args(args)
    if args.checkpoint is None:
        logging.getLogger(__name__).info(
            "no --checkpoint: untrained weights (timings are unaffected)"
        )
    results = run_sweep(
        settings,
        output=args.output,
        in_process=args.in_process,
        worker_timeout_s=args.worker_timeout,
        progress=not args.no_progress,
        log_level="DEBUG" if getattr(args, "verbose", False) else "WARNING",
    )
    print(format_table(results))
    print(f"results written to {args.output}")
    return 1 if results.get("failures") else 0


def compare_cli(args: argparse.Namespace) -> int:
    from esam.bench.throughput import compare, load_results_file

    fast = load_results_file(args.fast)
    base = load_results_file(args.baseline)
    rows = compare(fast, base)
    if not rows:
        raise InputError(
            "the two results files share no (component, batch size, dtype, compile) setting"
        )
    print(f"{fast['model']['name']} vs {base['model']['name']} ({fast['config']['device']})")
    print(
        f"{'component':<14}{'batch':>6}{'dtype':>6}{'compile':>8}{'img/s':>12}{'baseline':>12}{'speedup':>9}{'mem ratio':>10}"
    )
    for r in rows:
        mem = "-" if r["peak_mem_ratio"] is None else f"{r['peak_mem_ratio']:.2f}"
        print(
            f"{r['component']:<14}{r['batch_size']:>6}{r['dtype']:>6}{'yes' if r['compile'] else 'no':>8}"
            f"{r['images_per_s']:>12.2f}{r['baseline_images_per_s']:>12.2f}{r['speedup']:>8.2f}x{mem:>10}"
        )
    return 0


def list_models_cli(args: argparse.Namespace) -> int:
    from esam.bench.models import available_models

    for name, desc in available_models().items():
        print(f"{name:<32} {desc}")
    return 0
