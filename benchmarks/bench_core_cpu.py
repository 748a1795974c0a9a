"""Speed and memory of esam's EfficientSAM core on CPU: fast path vs the official-style reference.

Usage::

    python benchmarks/bench_core_cpu.py [--models vitt,vits] [--sizes 1200x1800,480x640]
        [--prompts 1,16,64] [--repeats 3] [--threads N] [--dtype fp32|bf16] [--json OUT.json]
        [--retain-freed-memory] [--profile]
        [--upsample-chunk N] [--queries-per-pass N]

What is compared (same weights, same process, measurements interleaved fast / reference so that
load changes on a shared machine hit both alike; see below for the statistic):

* encoder: ``get_image_embeddings`` of one image, fast path (fused SDPA attention; blocked
  explicit attention in bfloat16) vs ``set_reference_mode(model, True)`` (explicit attention,
  as the official code).
* decoder with Q box prompts on one image (embedding precomputed):
  fast = ``EfficientSamPredictor.predict_batch(boxes=..., best_only=True)``, returning each
  prompt's highest-IoU mask as booleans at the image size (decoded in chunks; only the returned
  mask is upsampled, a few prompts at a time); ``--all-masks`` returns all three instead;
  reference = reference mode ``predict_masks(..., output_h=H, output_w=W)``, returning the
  full-resolution float logits of all prompts at once, as the official code does.
* end to end, one image and one box: fast = ``predictor.set_image`` +
  ``predictor.predict(box=..., best_only=True)`` (``--all-masks``: all three);
  reference = the uint8 image converted to a tensor, then the reference-mode ``forward``.

Images are synthetic (seeded) at each size of ``--sizes`` (default 1200x1800, a large photo,
and 480x640, the typical COCO size); the encoder always sees 1024x1024 after the stretch, so
only the decoder's full-resolution output depends on the size. Weights are esam's
deterministic stand-in weights (no download); timings do not depend on weight values.

Peak memory growth of the decoder call is measured in a fresh subprocess per measurement: the
subprocess builds the model, encodes the image, runs the call once (warm-up: one-time
allocations such as kernel caches), frees everything, returns freed heap to the OS with glibc
``malloc_trim``, reads its resident set size (RSS), resets the kernel's RSS high-water mark by
writing ``5`` to ``/proc/self/clear_refs``, runs the call again keeping its outputs alive, and
reads the high-water mark (``VmHWM`` in ``/proc/self/status``). Growth = high-water mark minus
the RSS before the call: the memory the call needed, outputs included, exactly as the kernel
accounted it (no sampling). Where ``clear_refs`` is not writable the script falls back to
sampling the RSS every millisecond in a thread (``esam.bench.memory``). ``tracemalloc`` would
not see torch's allocations. The decoder is identical in Ti and S, so memory is measured on Ti.

Timing statistic: the minimum over the repeats (the least-disturbed run, the robust estimate
on a shared machine), with the ratio of medians alongside. ``--threads 1`` avoids the
multi-thread barrier stalls that other processes on the same cores cause.

``--dtype bf16`` casts the model's weights to bfloat16 (both paths; inputs stay float32).

Allocator: with glibc's defaults every large temporary buffer is a fresh ``mmap`` whose pages
fault in when first written, which costs the reference's full attention matrices (200 MB per
block in float32) more than their arithmetic. ``--retain-freed-memory`` keeps freed memory
mapped for the timed calls (:mod:`esam.utils.allocator`; jemalloc does the same only with
its purging turned off); run
both ways to see how much of a speed-up is the allocator's. The allocator is recorded. The
memory probes always run with glibc's defaults (their peak growth is read after freed memory
has been returned to the OS).

Compute floor: the encoder's FLOPs (``torch.utils.flop_counter``) divided by the measured rate
of a dense 2048^3 matrix multiply at the same dtype and thread count. No implementation of the
same arithmetic runs much below it, so reference time / floor bounds the speed-up any fast path
can show on this machine, and floor / fast time says how close esam's is.

Targets checked at the end (EfficientSAM-Ti): end to end >= 2.5x the reference; with 64 boxes,
decoder no slower than the reference and peak memory growth <= 1/4 of the reference's.
``--upsample-chunk`` / ``--queries-per-pass`` try other values of the fast path's two memory
knobs (what-if runs; the defaults are esam's).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import esam  # noqa: E402
from esam.bench.flops import count_flops  # noqa: E402
from esam.bench.memory import PeakMemory  # noqa: E402
from esam.bench.timing import dense_matmul_rate  # noqa: E402
from esam.runtime.precision import parse_precision  # noqa: E402
from esam.standin import load_standin_weights  # noqa: E402
from esam.utils.allocator import allocator_info, retain_freed_memory  # noqa: E402

MODELS = {"vitt": "efficientsam_vitt", "vits": "efficientsam_vits"}
LABEL = {"vitt": "Ti", "vits": "S"}


def synthetic_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """An HxWx3 uint8 image: gradient, noise and a few filled rectangles."""
    rng = np.random.Generator(np.random.PCG64(seed))
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 200 / w, yy * 200 / h, (xx + yy) * 100 / (h + w)], axis=-1)
    img = img + rng.normal(0, 8, img.shape)
    for _ in range(6):
        y0, x0 = int(rng.integers(0, h * 3 // 4)), int(rng.integers(0, w * 3 // 4))
        img[y0 : y0 + h // 5, x0 : x0 + w // 5] = rng.uniform(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def boxes_for(q: int, h: int, w: int, seed: int = 1) -> np.ndarray:
    """Q boxes (x0, y0, x1, y1) of 10-50% of the image side."""
    rng = np.random.Generator(np.random.PCG64(seed))
    bw = rng.uniform(0.1, 0.5, q) * w
    bh = rng.uniform(0.1, 0.5, q) * h
    x0 = rng.uniform(0, 1, q) * (w - bw)
    y0 = rng.uniform(0, 1, q) * (h - bh)
    return np.stack([x0, y0, x0 + bw, y0 + bh], axis=1).astype(np.float32)


#: The precisions this CPU benchmark times (names as esam.runtime.precision reads them).
DTYPES = ("fp32", "bf16")


def build(key: str, dtype: str = "fp32") -> esam.EfficientSam:
    model = esam.build_model(MODELS[key])
    load_standin_weights(model)
    return model.to(parse_precision(dtype)).eval()


def reference_inputs(boxes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """1xQx2x2 corner points and 1xQx2 labels (2, 3), the official box encoding."""
    q = boxes.shape[0]
    pts = torch.from_numpy(boxes).reshape(1, q, 2, 2)
    labels = torch.tensor([2, 3]).repeat(1, q, 1)
    return pts, labels


def image_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0


class Calls:
    """The fast and reference calls on one model (reference mode is toggled per call)."""

    def __init__(
        self,
        model: esam.EfficientSam,
        img: np.ndarray,
        upsample_chunk: int | None = None,
        queries_per_pass: int | None = None,
        best_only: bool = True,
    ) -> None:
        self.model = model
        self.best_only = best_only
        self.img = img
        self.h, self.w = img.shape[:2]
        self.x = image_tensor(img)
        if queries_per_pass is not None:
            model.mask_decoder.max_queries_per_pass = queries_per_pass
        if upsample_chunk is not None:
            self.predictor = esam.EfficientSamPredictor(model, upsample_chunk=upsample_chunk)
        else:
            self.predictor = esam.EfficientSamPredictor(model)
        with torch.inference_mode():
            esam.set_reference_mode(model, False)
            self.predictor.set_image(img)
            assert self.predictor.features is not None
            self.emb: torch.Tensor = self.predictor.features

    def encoder(self, reference: bool) -> Callable[[], Any]:
        def run() -> Any:
            esam.set_reference_mode(self.model, reference)
            with torch.inference_mode():
                return self.model.get_image_embeddings(self.x)

        return run

    def decoder(self, reference: bool, boxes: np.ndarray) -> Callable[[], Any]:
        pts, labels = reference_inputs(boxes)

        def fast() -> Any:
            esam.set_reference_mode(self.model, False)
            return self.predictor.predict_batch(boxes=boxes, best_only=self.best_only)

        def ref() -> Any:
            esam.set_reference_mode(self.model, True)
            with torch.inference_mode():
                return self.model.predict_masks(
                    self.emb, pts, labels, True, self.h, self.w, self.h, self.w
                )

        return ref if reference else fast

    def end_to_end(self, reference: bool, box: np.ndarray) -> Callable[[], Any]:
        pts, labels = reference_inputs(box[None])

        def fast() -> Any:
            esam.set_reference_mode(self.model, False)
            self.predictor.set_image(self.img)
            return self.predictor.predict(box=box, best_only=self.best_only)

        def ref() -> Any:
            esam.set_reference_mode(self.model, True)
            with torch.inference_mode():
                return self.model(image_tensor(self.img), pts, labels)

        return ref if reference else fast


@dataclass
class Pair:
    """Seconds of the fast and reference calls over the timed repeats."""

    fast: list[float]
    ref: list[float]

    @property
    def fast_min(self) -> float:
        return min(self.fast)

    @property
    def ref_min(self) -> float:
        return min(self.ref)

    @property
    def speedup_min(self) -> float:
        return self.ref_min / self.fast_min

    @property
    def speedup_median(self) -> float:
        return statistics.median(self.ref) / statistics.median(self.fast)


def time_pair(fast: Callable[[], Any], ref: Callable[[], Any], repeats: int) -> Pair:
    """Seconds of ``fast`` and ``ref``: one warm-up each, then ``repeats`` interleaved rounds."""
    fast()
    ref()
    pair = Pair([], [])
    for _ in range(repeats):
        for fn, acc in ((fast, pair.fast), (ref, pair.ref)):
            gc.collect()
            t0 = time.perf_counter()
            out = fn()
            acc.append(time.perf_counter() - t0)
            del out
    return pair


# ----------------------------------------------------------------------------- memory probe


def memory_probe(
    key: str, path: str, q: int, h: int, w: int, threads: int, dtype: str, knobs: dict[str, Any]
) -> dict[str, Any]:
    """Run in a fresh process: peak RSS growth (MiB) of one decoder call (see module docstring)."""
    if threads:
        torch.set_num_threads(threads)
    model = build(key, dtype)
    calls = Calls(model, synthetic_image(h, w), **knobs)
    fn = calls.decoder(path == "reference", boxes_for(q, h, w))
    out = fn()  # warm-up
    del out
    with PeakMemory("cpu", settle=True) as pm:
        out = fn()
    del out
    return {"growth_mib": pm.growth_mib, "method": pm.method}


def run_probe(
    key: str, path: str, q: int, h: int, w: int, threads: int, dtype: str, knobs: dict[str, Any]
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--memory-probe",
        f"{key},{path},{q},{h},{w}",
        "--threads",
        str(threads),
        "--dtype",
        dtype,
        "--knobs",
        json.dumps(knobs),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"memory probe {cmd} failed:\n{res.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


# ----------------------------------------------------------------------------- main


def describe_allocator(info: dict[str, Any]) -> str:
    """One phrase for the header: what manages host memory in this process."""
    tuned = (
        " with " + ", ".join(f"{k}={v}" for k, v in info["malloc_env"].items())
        if info["malloc_env"]
        else ""
    )
    if info["ld_preload"]:
        return "preloaded " + ", ".join(info["ld_preload"]) + tuned
    kept = "freed memory retained" if info["retain_freed_memory"] else "defaults"
    return f"{info['libc']} malloc, {kept}{tuned}"


def parse_sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        h, _, w = item.strip().partition("x")
        try:
            out.append((int(h), int(w)))
        except ValueError:
            raise ValueError(
                f"--sizes items must look like HxW (e.g. 1200x1800), got {item!r}"
            ) from None
    return out


def profile_fast_decoder(model: esam.EfficientSam, h: int, w: int, q: int) -> str:
    """torch.profiler table of the fast decoder path with ``q`` boxes."""
    from torch.profiler import ProfilerActivity, profile

    calls = Calls(model, synthetic_image(h, w))
    fn = calls.decoder(False, boxes_for(q, h, w))
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    table: str = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--models", default="vitt,vits", help="comma-separated from vitt, vits (default: both)"
    )
    p.add_argument(
        "--sizes", default="1200x1800,480x640", help="image sizes HxW (default: 1200x1800,480x640)"
    )
    p.add_argument(
        "--prompts",
        default="1,16,64",
        help="box prompts per image for the decoder (default: 1,16,64)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed repeats per measurement, median reported (default: 3)",
    )
    p.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)"
    )
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="fp32",
        help="weights and compute dtype of both paths (default: fp32)",
    )
    p.add_argument(
        "--retain-freed-memory",
        action="store_true",
        help="keep freed memory mapped during the timed calls (glibc mallopt)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the memory probes")
    p.add_argument(
        "--profile",
        action="store_true",
        help="print a torch.profiler table of the fast decoder at the largest prompt count",
    )
    p.add_argument("--json", help="also write the measurements to this JSON file")
    p.add_argument(
        "--upsample-chunk",
        type=int,
        help="what-if: predictor upsample_chunk for the fast path (default: esam's)",
    )
    p.add_argument(
        "--queries-per-pass",
        type=int,
        help="what-if: mask decoder max_queries_per_pass for the fast path (default: esam's)",
    )
    p.add_argument(
        "--all-masks",
        action="store_true",
        help="fast path returns all 3 masks per prompt instead of the best one",
    )
    p.add_argument("--memory-probe", help=argparse.SUPPRESS)
    p.add_argument("--knobs", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.memory_probe:
        key, path, q, h, w = args.memory_probe.split(",")
        knobs = json.loads(args.knobs)
        print(
            json.dumps(
                memory_probe(key, path, int(q), int(h), int(w), args.threads, args.dtype, knobs)
            )
        )
        return 0

    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    for k in keys:
        if k not in MODELS:
            raise SystemExit(f"--models: unknown model {k!r}; choose from {', '.join(MODELS)}")
    sizes = parse_sizes(args.sizes)
    prompts = [int(x) for x in args.prompts.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.retain_freed_memory and not retain_freed_memory():
        raise SystemExit(
            "--retain-freed-memory could not be applied: it needs glibc malloc accepting "
            "mallopt thresholds of 1 GiB, and no preloaded allocator"
        )

    from esam.utils.meta import hardware_info

    hw = hardware_info("cpu")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results: dict[str, Any] = {
        "hardware": hw,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "allocator": allocator_info(),
        "load_avg_1min_at_start": load,
        "repeats": args.repeats,
        "weights": "esam.standin stand-in weights (untrained)",
        "timings": [],
        "memory": [],
    }
    knobs: dict[str, Any] = {
        k: v
        for k, v in (
            ("upsample_chunk", args.upsample_chunk),
            ("queries_per_pass", args.queries_per_pass),
        )
        if v is not None
    }
    knobs["best_only"] = not args.all_masks
    results["fast_path_knobs"] = knobs or "esam defaults"
    lines: list[tuple[str, Pair]] = []
    encoder_flops: dict[str, int] = {}
    for key in keys:
        model = build(key, args.dtype)
        encoder_flops[key] = count_flops(
            lambda m=model: m.get_image_embeddings(torch.rand(1, 3, 64, 64))
        )
        for si, (h, w) in enumerate(sizes):
            calls = Calls(model, synthetic_image(h, w), **knobs)
            tag = f"{LABEL[key]} {h}x{w}"
            if si == 0:
                pair = time_pair(calls.encoder(False), calls.encoder(True), args.repeats)
                lines.append((f"{LABEL[key]} encoder (1 image)", pair))
            for q in prompts:
                bx = boxes_for(q, h, w)
                pair = time_pair(calls.decoder(False, bx), calls.decoder(True, bx), args.repeats)
                lines.append((f"{tag} decoder, {q} box{'es' if q > 1 else ''}", pair))
            box = boxes_for(1, h, w)[0]
            pair = time_pair(
                calls.end_to_end(False, box), calls.end_to_end(True, box), args.repeats
            )
            lines.append((f"{tag} end to end (1 image, 1 box)", pair))
            print(f"... {tag} done", file=sys.stderr, flush=True)
        del model
        gc.collect()

    mem_lines: list[tuple[str, float, float]] = []
    if not args.no_memory:
        for h, w in sizes:
            for q in prompts:
                fast = run_probe("vitt", "fast", q, h, w, args.threads, args.dtype, knobs)
                ref = run_probe("vitt", "reference", q, h, w, args.threads, args.dtype, {})
                name = f"Ti {h}x{w} decoder, {q} box{'es' if q > 1 else ''}"
                mem_lines.append((name, fast["growth_mib"], ref["growth_mib"]))
                results["memory"].append(
                    {
                        "size": [h, w],
                        "prompts": q,
                        "fast_mib": fast["growth_mib"],
                        "reference_mib": ref["growth_mib"],
                        "method": fast["method"],
                    }
                )

    rate = dense_matmul_rate("cpu", args.dtype)
    results["dense_matmul_flop_per_s"] = rate
    print(
        f"EfficientSAM core on CPU: {hw.get('cpu_model')}, {hw.get('cpu_cores')} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.dtype}, load avg "
        f"{load:.2f} at start; {args.repeats} interleaved repeats; stand-in weights; allocator: "
        f"{describe_allocator(results['allocator'])}; fast-path knobs: "
        f"{results['fast_path_knobs']}"
    )
    print(f"{'measurement':<40}{'fast min s':>11}{'ref min s':>11}{'speed-up':>10}{'(median)':>10}")
    for name, pair in lines:
        print(
            f"{name:<40}{pair.fast_min:>11.3f}{pair.ref_min:>11.3f}"
            f"{pair.speedup_min:>9.2f}x{pair.speedup_median:>9.2f}x"
        )
        results["timings"].append(
            {
                "measurement": name,
                "fast_s": pair.fast,
                "reference_s": pair.ref,
                "speedup_min": pair.speedup_min,
                "speedup_median": pair.speedup_median,
            }
        )
    print("(speed-up = reference time / fast time, from the minima; median ratio in brackets)")

    print(
        f"\ncompute floor: dense {args.dtype} matmul here {rate / 1e9:.0f} GFLOP/s "
        f"({torch.get_num_threads()} thread(s))"
    )
    print(f"{'encoder':<40}{'GFLOP':>11}{'floor s':>11}{'fast/floor':>11}{'ref/floor':>10}")
    results["compute_floor"] = []
    for key in keys:
        pair = dict(lines)[f"{LABEL[key]} encoder (1 image)"]
        floor = encoder_flops[key] / rate
        print(
            f"{LABEL[key] + ' encoder (1 image)':<40}{encoder_flops[key] / 1e9:>11.1f}"
            f"{floor:>11.3f}{pair.fast_min / floor:>10.2f}x{pair.ref_min / floor:>9.2f}x"
        )
        results["compute_floor"].append(
            {"model": MODELS[key], "encoder_flops": encoder_flops[key], "floor_s": floor}
        )
    print(
        "(floor = encoder FLOPs / matmul rate; ref/floor bounds the speed-up of any implementation "
        "of the same arithmetic on this machine)"
    )
    if mem_lines:
        print(f"\n{'decoder peak RSS growth':<40}{'fast MiB':>11}{'ref MiB':>11}{'fast/ref':>10}")
        for name, f, r in mem_lines:
            print(f"{name:<40}{f:>11.1f}{r:>11.1f}{f / r if r else float('nan'):>10.3f}")
        print(f"(memory: {results['memory'][0]['method']}; fresh process per measurement)")

    print("\ntargets (EfficientSAM-Ti):")
    for name, pair in lines:
        if not name.startswith("Ti "):
            continue
        if "end to end" in name:
            ok = pair.speedup_min >= 2.5
            print(
                f"  {'PASS' if ok else 'MISS'} end to end >= 2.5x: {name}: {pair.speedup_min:.2f}x"
            )
        if "decoder, 64 boxes" in name:
            ok = pair.speedup_min >= 1.0
            print(
                f"  {'PASS' if ok else 'MISS'} 64-box decoder no slower: {name}: {pair.speedup_min:.2f}x"
            )
    for name, f, r in mem_lines:
        if "64 boxes" in name:
            ok = f <= r / 4
            print(
                f"  {'PASS' if ok else 'MISS'} 64-box peak memory growth <= 1/4: {name}: {f / r:.3f}"
            )

    if args.profile:
        model = build("vitt", args.dtype)
        h, w = sizes[0]
        print(f"\nprofile: fast decoder, Ti, {h}x{w}, {max(prompts)} boxes")
        print(profile_fast_decoder(model, h, w, max(prompts)))
    if args.json:
        from esam.utils.io import write_json_atomic

        write_json_atomic(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
