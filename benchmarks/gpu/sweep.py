"""The GPU throughput sweep behind ``run_all.sh``: a time-boxed plan, results files, one summary.

Usage (normally through ``run_all.sh``)::

    python benchmarks/gpu/sweep.py --out OUT_DIR [--budget-s 420] [--peak-tflops 790]
    python benchmarks/gpu/sweep.py --out OUT_DIR --dry-run     # CPU rehearsal on tiny models

Plan, in priority order (each model's configurations also in priority order):

1. EfficientSAM-Ti reference mode and fast path at identical settings (batch 1 and 8 fp32,
   batch 8 and 32 bf16, eager): the fast/reference speed ratio.
2. EfficientSAM-Ti fast path, best-throughput candidates and precision check: batch 32 bf16
   compiled, batch 32 fp16 eager and compiled, batch 64 bf16 compiled. (On an H200, bf16 kept
   98.2 mIoU against fp32 and fp16 99.8: the accuracy bar of 99.5 leaves fp16 as the precision
   whose compiled run matters.)
3. EfficientSAM-S, reference and fast (batch 8 fp32 and bf16, eager).
4. SAM ViT-B/L/H through segment-anything when importable (batch 8 bf16, batch 1 fp32).
5. EfficientSAM-S fast path, batch 32 bf16 compiled (added to its results file).

Every configuration runs in a fresh process (``esam.bench.worker``). Each model has a time
allowance (unused time carries over to the next); a configuration whose estimated cost does not
fit the remaining time is skipped and listed, so the whole sweep stays within ``--budget-s``.

Weights: published files found in ``--weights`` (default ``weights/`` in the repository,
published file names) are used; other models run untrained (esam's stand-in weights, SAM's
default initialisation). Timings do not depend on weight values; the accuracy column compares
each setting with the same model's fp32 output, and untrained weights, whose logits sit close
to 0, make that comparison stricter than trained weights do. The summary therefore also names
the fastest setting regardless of accuracy.

The summary gives the best accurate end-to-end setting against two bounds: ``--peak-tflops``
(the issue's dense bf16 figure for an H100) and the dense bf16 matmul rate measured on the
same GPU after the sweep (``esam.bench.timing.dense_matmul_rate``, 8192^3).

Outputs in OUT_DIR (flat, at most 8 files): one ``esam.results/1`` throughput file per model
(``efficientsam_vitt.json``, ``efficientsam_vitt-reference.json``, ...) and ``summary.txt`` (the
summary this script prints).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from esam.bench.settings import RunConfig, SweepSettings  # noqa: E402

log = logging.getLogger("esam.bench.gpu_sweep")

#: Estimated seconds of one configuration (process start, build, warm-up, timing, accuracy).
EST_EAGER_S = 10.0
EST_COMPILED_S = 60.0
TI_BOUND_NOTE = (
    "dense bf16 rate / FLOPs per image (matmul, conv and attention FLOPs of one image, one box)"
)


@dataclass
class Stage:
    """One model's configurations and its time allowance."""

    model: str
    configs: list[RunConfig]
    allowance_s: float
    accuracy_images: int = 8
    iters: int = 20
    warmup: int = 3
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        return self.model.replace(":", "-") + ".json"


def plan(dry_run: bool, with_sam: bool) -> list[Stage]:
    """The sweep plan (see module docstring)."""
    e = lambda b, d: RunConfig(b, d, False)  # noqa: E731
    c = lambda b, d: RunConfig(b, d, True)  # noqa: E731
    shared = [e(1, "fp32"), e(8, "fp32"), e(8, "bf16"), e(32, "bf16")]
    stages = [
        Stage("efficientsam_vitt:reference", list(shared), 50),
        Stage(
            "efficientsam_vitt",
            [*shared, c(32, "bf16"), e(32, "fp16"), c(32, "fp16"), c(64, "bf16")],
            190,
        ),
        Stage("efficientsam_vits:reference", [e(8, "fp32"), e(8, "bf16")], 30),
        Stage("efficientsam_vits", [e(8, "fp32"), e(8, "bf16")], 30),
    ]
    if with_sam:
        for name, allowance in (("sam_vit_b", 28), ("sam_vit_l", 30), ("sam_vit_h", 36)):
            stages.append(
                Stage(name, [e(8, "bf16"), e(1, "fp32")], allowance, accuracy_images=4, iters=10)
            )
    stages.append(Stage("efficientsam_vits", [c(32, "bf16")], 50))
    if dry_run:
        for st in stages:
            st.configs = list(
                dict.fromkeys(
                    RunConfig(min(cfg.batch_size, 2), cfg.dtype, cfg.compile)
                    for cfg in st.configs
                    if not cfg.compile
                )
            )
            st.accuracy_images, st.iters, st.warmup = 2, 2, 1
            if st.model.startswith("efficientsam"):
                st.overrides = {"img_size": 64, "encoder_depth": 1}
        stages = [st for st in stages if st.configs]
    return stages


def merge_results(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """One results object from two sweeps of the same model (rows, failures, runs appended)."""
    merged = dict(old)
    for key in ("metrics", "failures", "skipped", "runs"):
        merged[key] = list(old.get(key, [])) + list(new.get(key, []))
    cfg = dict(old["config"])
    for key in ("batch_sizes", "dtypes", "compile"):
        cfg[key] = list(dict.fromkeys(list(old["config"][key]) + list(new["config"][key])))
    cfg["batch_sizes"] = sorted(cfg["batch_sizes"])
    cfg["precision"] = {**old["config"].get("precision", {}), **new["config"].get("precision", {})}
    merged["config"] = cfg
    meta = dict(old["meta"])
    meta["end_time"] = new["meta"]["end_time"]
    meta["dtype"] = ",".join(cfg["dtypes"])
    merged["meta"] = meta
    merged["complete"] = bool(old.get("complete")) and bool(new.get("complete"))
    return merged


#: File names looked for in ``--weights`` (the published names), per model.
WEIGHT_FILES: dict[str, tuple[str, ...]] = {
    "efficientsam_vitt": ("efficient_sam_vitt.pt",),
    "efficientsam_vits": ("efficient_sam_vits.pt", "efficient_sam_vits.pt.zip"),
    "sam_vit_b": ("sam_vit_b_01ec64.pth",),
    "sam_vit_l": ("sam_vit_l_0b3195.pth",),
    "sam_vit_h": ("sam_vit_h_4b8939.pth",),
}


def find_checkpoint(model: str, weights_dir: Path | None) -> str | None:
    """The published weights file of ``model`` in ``weights_dir``, if it is there."""
    if weights_dir is None:
        return None
    base = model.split(":")[0]
    for name in WEIGHT_FILES.get(base, ()):
        if (weights_dir / name).is_file():
            return str(weights_dir / name)
    return None


def sam_available() -> bool:
    try:
        import segment_anything  # noqa: F401
    except ImportError:
        return False
    return True


def run_plan(
    stages: list[Stage], out: Path, device: str, budget_s: float, weights_dir: Path | None = None
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Run every stage within the budget; return results per model and notes on what was skipped."""
    from esam.bench.throughput import run_sweep
    from esam.utils.io import write_json_atomic

    t0 = time.monotonic()
    deadline = t0 + budget_s
    carry = 0.0
    results: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    for st in stages:
        start = time.monotonic()
        stage_deadline = min(deadline, start + st.allowance_s + carry)

        def skip(cfg: RunConfig, stage_deadline: float = stage_deadline) -> str | None:
            need = EST_COMPILED_S if cfg.compile else EST_EAGER_S
            left = stage_deadline - time.monotonic()
            return (
                f"time budget: {left:.0f} s left for this model, about {need:.0f} s needed"
                if left < need
                else None
            )

        if stage_deadline - start < EST_EAGER_S + 10:  # not even the reference run and one config
            notes.append(f"{st.model}: skipped entirely (time budget)")
            carry = max(0.0, stage_deadline - start)
            continue
        settings = SweepSettings(
            model=st.model,
            device=device,
            configs=tuple(st.configs),
            warmup=st.warmup,
            iters=st.iters,
            accuracy_images=st.accuracy_images,
            prompts_per_image=1,
            overrides=st.overrides,
            threads=1 if device == "cpu" else 0,
            checkpoint=None if st.overrides else find_checkpoint(st.model, weights_dir),
        )
        earlier = results.get(st.model)
        try:
            res = run_sweep(
                settings,
                output=None if earlier else out / st.filename,
                progress=False,
                worker_timeout_s=max(30.0, min(150.0, deadline - time.monotonic())),
                skip_reason=skip,
            )
        except ValueError as e:
            notes.append(f"{st.model}: not run: {e}")
            continue
        if earlier:
            res = merge_results(earlier, res)
            write_json_atomic(out / st.filename, res)
        results[st.model] = res
        carry = max(0.0, stage_deadline - time.monotonic())
        log.warning("%s done in %.0f s", st.model, time.monotonic() - start)
    return results, notes


def _row(res: dict[str, Any] | None, comp: str, b: int, d: str, c: bool) -> dict[str, Any] | None:
    if not res:
        return None
    for r in res["metrics"]:
        if (r["component"], r["batch_size"], r["dtype"], r["compile"]) == (comp, b, d, c):
            return r
    return None


def _ratio_lines(
    fast: dict[str, Any] | None, ref: dict[str, Any] | None, label: str, target: float | None
) -> list[str]:
    from esam.bench.throughput import compare

    if not fast or not ref:
        return [f"{label}: fast/reference comparison not available (a run is missing)"]
    rows = compare(fast, ref)
    lines = [f"{label}: fast path vs official-style reference, same batch/dtype/compile (images/s)"]
    lines.append(
        f"  {'component':<14}{'batch':>6}{'dtype':>6}{'fast':>11}{'reference':>11}{'speed-up':>10}"
    )
    for r in rows:
        mark = ""
        if target is not None and r["component"] == "end_to_end":
            mark = f"  target >= {target:g}x: {'PASS' if r['speedup'] >= target else 'MISS'}"
        lines.append(
            f"  {r['component']:<14}{r['batch_size']:>6}{r['dtype']:>6}{r['images_per_s']:>11.1f}"
            f"{r['baseline_images_per_s']:>11.1f}{r['speedup']:>9.2f}x{mark}"
        )
    return lines


def _best_lines(
    res: dict[str, Any] | None,
    label: str,
    peak_tflops: float,
    target: float | None,
    measured_tflops: float | None = None,
) -> list[str]:
    from esam.bench.throughput import best_row

    if not res:
        return [f"{label}: no results"]
    best = best_row(res, "end_to_end", max_miou_drop=0.5)
    if best is None:
        return [f"{label}: no end-to-end setting with mIoU within 0.5 of fp32"]
    flops = res["model"]["flops"]["end_to_end"]
    bound = peak_tflops * 1e12 / flops
    compiled = "compiled" if best["compile"] else "eager"
    lines = [
        f"{label}: best end-to-end setting with mIoU >= 99.5 vs fp32: batch {best['batch_size']}, {best['dtype']}, "
        f"{compiled}: {best['images_per_s']:.1f} images/s (p50 {best['latency_p50_ms']:.2f} ms per batch, "
        f"mIoU {best.get('miou_vs_fp32', float('nan')):.2f})"
    ]
    lines.append(
        f"  bound: {peak_tflops:g} TFLOP/s / {flops / 1e9:.1f} GFLOP per image = {bound:,.0f} images/s; "
        f"best is {100 * best['images_per_s'] / bound:.1f}% of it ({TI_BOUND_NOTE})"
    )
    if measured_tflops:
        measured = measured_tflops * 1e12 / flops
        lines.append(
            f"  measured here: dense bf16 matmul {measured_tflops:,.1f} TFLOP/s -> {measured:,.0f} "
            f"images/s; best is {100 * best['images_per_s'] / measured:.1f}% of it"
        )
    if target is not None:
        lines.append(
            f"  target >= {target:g} images/s: {'PASS' if best['images_per_s'] >= target else 'MISS'}"
        )
    fastest = best_row(res, "end_to_end", max_miou_drop=100.0)
    if fastest is not None and fastest is not best:
        lines.append(
            f"  fastest end to end regardless of accuracy: batch {fastest['batch_size']}, {fastest['dtype']}, "
            f"{'compiled' if fastest['compile'] else 'eager'}: {fastest['images_per_s']:.1f} images/s, "
            f"mIoU {fastest.get('miou_vs_fp32', float('nan')):.2f} (weights: {res['model'].get('weights')})"
        )
    return lines


def _table_lines(res: dict[str, Any]) -> list[str]:
    lines = []
    for r in res["metrics"]:
        if r["component"] != "end_to_end":
            continue
        miou = r.get("miou_vs_fp32")
        lines.append(
            f"  b{r['batch_size']:<3}{r['dtype']:<5}{'compiled' if r['compile'] else 'eager':<9}"
            f"{r['images_per_s']:>10.1f} img/s  p50 {r['latency_p50_ms']:>9.2f} ms  p90 {r['latency_p90_ms']:>9.2f} ms  "
            f"peak {r['peak_mem_mib']:>8.0f} MiB  mIoU {'-' if miou is None else f'{miou:.2f}'}"
        )
    return lines


def summary(
    results: dict[str, dict[str, Any]],
    notes: list[str],
    wall_s: float,
    budget_s: float,
    peak_tflops: float,
    device: str,
    out: Path,
    measured_tflops: float | None = None,
) -> str:
    """The one summary of the sweep (printed and written to summary.txt)."""
    from esam.utils.meta import hardware_info, utc_now

    hw = hardware_info(device)
    head = (
        f"esam throughput sweep on {hw.get('gpu_name', hw.get('cpu_model'))} (driver {hw.get('gpu_driver')}, "
        f"CUDA {hw.get('cuda_version')}), CPU {hw.get('cpu_model')} x{hw.get('cpu_cores')}; {utc_now()}"
    )
    weights = ", ".join(f"{k}: {v['model'].get('weights')}" for k, v in results.items())
    lines = [
        head,
        f"wall time {wall_s:.0f} s (budget {budget_s:.0f} s); 1 box per image, 3 masks; inputs on device",
        f"weights: {weights or '-'}",
        "",
    ]
    ti, ti_ref = results.get("efficientsam_vitt"), results.get("efficientsam_vitt:reference")
    s, s_ref = results.get("efficientsam_vits"), results.get("efficientsam_vits:reference")
    lines += _ratio_lines(
        ti, ti_ref, "EfficientSAM-Ti", 3.0 if device.startswith("cuda") else 2.5
    ) + [""]
    lines += _best_lines(
        ti,
        "EfficientSAM-Ti",
        peak_tflops,
        1000.0 if device.startswith("cuda") else None,
        measured_tflops,
    ) + [""]
    lines += _ratio_lines(s, s_ref, "EfficientSAM-S", None) + [""]
    lines += _best_lines(s, "EfficientSAM-S", peak_tflops, None, measured_tflops) + [""]
    for name, res in results.items():
        lines.append(f"{name} ({res['model'].get('mode')}), end to end:")
        lines += _table_lines(res)
        for f in res.get("failures", []):
            lines.append(
                f"  FAILED b{f['batch_size']}/{f['dtype']}/{'compiled' if f['compile'] else 'eager'}: {f['error']}"
            )
        for f in res.get("skipped", []):
            lines.append(
                f"  SKIPPED b{f['batch_size']}/{f['dtype']}/{'compiled' if f['compile'] else 'eager'}: {f['reason']}"
            )
    lines += [""] + notes
    lines.append(
        f"files: {', '.join(sorted(p.name for p in out.iterdir() if p.is_file()))} in {out}"
    )
    return "\n".join(lines)


def measured_matmul_tflops(device: str, dry_run: bool) -> float | None:
    """Dense bf16 matmul TFLOP/s measured on ``device`` after the sweep (None if it fails)."""
    from esam.bench.timing import dense_matmul_rate

    try:
        # 8192^3 keeps the GPU's tensor cores saturated; the CPU rehearsal uses a small matrix.
        n = 1024 if dry_run else 8192
        return dense_matmul_rate(device, "bf16", n=n, warmup=3, iters=10) / 1e12
    except Exception as e:  # the results are written already; the bound line is optional
        log.warning("dense matmul rate not measured: %s", e)
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the results files and summary.txt")
    p.add_argument(
        "--weights",
        default=str(REPO / "weights"),
        help="folder with published weights under their published names (used when present; "
        "default: weights/ in the repository); models without a file use untrained weights",
    )
    p.add_argument(
        "--budget-s", type=float, default=420.0, help="seconds the sweep may take (default: 420)"
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=790.0,
        help="dense bf16 TFLOP/s of the GPU for the bound (default: 790)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="rehearse on CPU with tiny esam models (no GPU numbers)",
    )
    p.add_argument(
        "--no-sam", action="store_true", help="skip SAM even when segment-anything is importable"
    )
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    import torch

    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print(
            "sweep: no CUDA device is available; use --dry-run to rehearse on CPU", file=sys.stderr
        )
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with_sam = not args.no_sam and not args.dry_run and sam_available()
    notes = (
        []
        if with_sam or args.no_sam or args.dry_run
        else ["SAM: skipped (segment-anything not importable; see run_all.sh)"]
    )
    t0 = time.monotonic()
    weights_dir = Path(args.weights) if Path(args.weights).is_dir() else None
    results, run_notes = run_plan(
        plan(args.dry_run, with_sam), out, device, args.budget_s, weights_dir
    )
    wall = time.monotonic() - t0
    measured = measured_matmul_tflops(device, args.dry_run)
    text = summary(
        results, notes + run_notes, wall, args.budget_s, args.peak_tflops, device, out, measured
    )
    if args.dry_run:
        text = "DRY RUN on CPU with tiny models: not GPU numbers, not for publication\n" + text
    from esam.utils.io import write_text_atomic

    write_text_atomic(out / "summary.txt", text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
