"""Measure one configuration; meant to run in a fresh process.

``python -m esam.bench.worker --spec SPEC.json --out OUT.json``

The spec is a JSON object: ``role`` (``reference`` or ``measure``), ``settings`` (a
:class:`~esam.bench.settings.SweepSettings` as a dict) and, for ``measure``, ``config`` (batch
size, dtype, compile) and ``reference_masks`` (the fp32 masks written by the reference role
at that batch size).

* ``reference``: builds the model in fp32, eager, counts parameters and FLOPs (one image), and
  writes the fp32 masks of the accuracy set at each batch size of the sweep (``save_masks``, a
  path with ``{batch}`` in it): batched kernels round differently, so each configuration is
  compared with fp32 at its own batch size.
* ``measure``: builds the model, applies the dtype and compile setting, times every component
  (warm-up excluded), and scores the accuracy set's masks against the fp32 masks.

The output JSON always has ``ok``; on failure ``error`` holds the exception text and the exit
status is 1. A fresh process per configuration keeps caches, allocator state, compiled graphs
and heat of one configuration from affecting the next.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("esam.bench.worker")

#: Sweep dtypes run under autocast (tf32 and fp32 are float32 computations).
_AUTOCAST = ("bf16", "fp16")


def configure_precision(device: str, dtype: str) -> dict[str, Any]:
    """Set the global matmul precision flags for ``dtype``; return what was set."""
    import torch

    cuda = str(device).startswith("cuda")
    tf32 = dtype == "tf32"
    info: dict[str, Any] = {"precision_mode": "autocast" if dtype in _AUTOCAST else "float32"}
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True
        info.update(
            cuda_matmul_allow_tf32=tf32,
            cudnn_allow_tf32=tf32,
            cudnn_benchmark=True,
        )
    info["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    return info


@contextlib.contextmanager
def precision_context(device: str, dtype: str) -> Iterator[None]:
    """``torch.autocast`` for bf16 / fp16, nothing for fp32 / tf32."""
    import torch

    from esam.runtime.precision import parse_precision

    if dtype in _AUTOCAST:
        # timing may autocast to fp16 on a CPU too (training may not: esam.runtime.precision)
        dev_type = "cuda" if str(device).startswith("cuda") else "cpu"
        with torch.autocast(device_type=dev_type, dtype=parse_precision(dtype)):
            yield
    else:
        yield


def _cycle(n_have: int, n_want: int) -> list[int]:
    return [i % n_have for i in range(n_want)]


def _sync(device: str) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def _accuracy_masks(bm: Any, acc: Any, batch_size: int) -> Any:
    """End-to-end masks of the whole accuracy set, ``batch_size`` images per call (last padded)."""
    import numpy as np

    out = []
    n = len(acc)
    for start in range(0, n, batch_size):
        real = min(batch_size, n - start)
        idx = [start + (i % real) for i in range(batch_size)]
        inputs = bm.make_inputs(acc.images[idx], acc.boxes[idx])
        out.append(bm.masks_numpy(bm.end_to_end(inputs))[:real])
    return np.concatenate(out)


def _build(settings: Any) -> Any:
    import torch

    from esam.bench.models import build_bench_model

    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    if settings.retain_freed_memory:
        from esam.utils.allocator import retain_freed_memory

        if not retain_freed_memory():
            raise RuntimeError(
                "--retain-freed-memory could not be applied here: it needs glibc malloc "
                "accepting mallopt thresholds of 1 GiB, and no preloaded allocator"
            )

    return build_bench_model(
        settings.model,
        device=settings.device,
        checkpoint=settings.checkpoint,
        overrides=settings.overrides,
        seed=settings.seed,
    )


def run_reference(spec: dict[str, Any]) -> dict[str, Any]:
    """Model facts (params, FLOPs) and the fp32 masks of the accuracy set."""
    import torch

    from esam.bench.accuracy import save_masks, synthetic_set
    from esam.bench.flops import COUNTER_NAME, count_flops, flops_and_macs, parameter_counts
    from esam.bench.settings import SweepSettings

    settings = SweepSettings.from_dict(spec["settings"])
    configure_precision(settings.device, "fp32")
    bm = _build(settings)
    s = bm.image_size
    q = settings.prompts_per_image
    n_acc = settings.accuracy_images
    info: dict[str, Any] = {
        "name": bm.name,
        "family": bm.family,
        "mode": bm.mode,
        "checkpoint": bm.checkpoint,
        "weights": bm.weights,
        "image_size": s,
        "params": parameter_counts(bm.module(), bm.components()),
        **({"weights_init": bm.weights_init} if bm.weights_init else {}),
        "implementation": bm.describe(),
        "inputs_on_device": bm.inputs_on_device,
    }
    probe = synthetic_set(1, s, q, settings.seed)
    t0 = time.perf_counter()
    inputs = bm.make_inputs(probe.images, probe.boxes)
    with torch.inference_mode():
        emb = bm.encode(inputs)
    flops = {
        "image_encoder": count_flops(lambda: bm.encode(inputs)),
        "decoder": count_flops(lambda: bm.decode(emb, inputs)),
        "end_to_end": count_flops(lambda: bm.end_to_end(inputs)),
    }
    info["flops"] = {k: v for k, v in flops.items()}
    info["macs"] = {k: flops_and_macs(v)["macs"] for k, v in flops.items()}
    info["flop_counter"] = COUNTER_NAME
    info["flops_setting"] = f"1 image at {s}x{s}, {q} box prompt(s), 3 masks per prompt, fp32"
    log.info("flops counted in %.1f s", time.perf_counter() - t0)
    if n_acc > 0:
        acc = synthetic_set(n_acc, s, q, settings.seed)
        for b in dict.fromkeys(c.batch_size for c in settings.run_configs()):
            # per batch size: batched kernels round differently from one image at a time
            with torch.inference_mode():
                masks = _accuracy_masks(bm, acc, b)
            save_masks(spec["save_masks"].format(batch=b), masks)
        info["accuracy_set"] = acc.describe()
    return {"ok": True, "model": info}


def _timed(
    fn: Callable[[], Any], device: str, warmup: int, iters: int
) -> tuple[Any, dict[str, Any]]:
    """Warm up, then time ``iters`` calls while measuring peak memory (warm-up excluded)."""
    from esam.bench.memory import PeakMemory
    from esam.bench.timing import time_callable

    for _ in range(warmup):
        fn()
    _sync(device)
    with PeakMemory(device, settle=True) as pm:
        timing = time_callable(fn, device, 0, iters)
    return timing, {
        "peak_mem_mib": pm.peak_mib,
        "peak_mem_growth_mib": pm.growth_mib,
        "memory_method": pm.method,
    }


def _component_call(bm: Any, component: str, inputs: dict[str, Any]) -> Callable[[], Any]:
    """The timed call of ``component``; the decoder gets a precomputed (untimed) embedding."""
    import torch

    if component == "image_encoder":
        return lambda: bm.encode(inputs)
    if component == "decoder":
        emb = bm.encode(inputs)
        emb = emb.clone() if isinstance(emb, torch.Tensor) else emb
        return lambda: bm.decode(emb, inputs)
    return lambda: bm.end_to_end(inputs)


def run_measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Time every component of one configuration and score its accuracy."""
    import torch

    from esam.bench.accuracy import load_masks, miou_percent, synthetic_set
    from esam.bench.settings import RunConfig, SweepSettings
    from esam.bench.timing import timer_name
    from esam.utils.allocator import allocator_info

    settings = SweepSettings.from_dict(spec["settings"])
    cfg = RunConfig(**spec["config"])
    device = settings.device
    env = configure_precision(device, cfg.dtype)
    bm = _build(settings)
    if cfg.compile:
        if not bm.supports_compile:
            raise ValueError(f"model {bm.name!r} does not support --compile")
        bm.compile(settings.compile_mode)
    s, q, b = bm.image_size, settings.prompts_per_image, cfg.batch_size
    n_acc = settings.accuracy_images
    acc = synthetic_set(n_acc if n_acc > 0 else min(b, 4), s, q, settings.seed)
    idx = _cycle(len(acc), b)
    inputs = bm.make_inputs(acc.images[idx], acc.boxes[idx])
    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    t_start = time.perf_counter()
    with torch.inference_mode(), precision_context(device, cfg.dtype):
        for comp in settings.components:
            t0 = time.perf_counter()
            timing, mem = _timed(
                _component_call(bm, comp, inputs), device, settings.warmup, settings.iters
            )
            summary = timing.summary(b)
            row: dict[str, Any] = {
                "component": comp,
                "batch_size": b,
                "dtype": cfg.dtype,
                "compile": cfg.compile,
                **summary,
                "peak_mem_mib": mem["peak_mem_mib"],
                "peak_mem_growth_mib": mem["peak_mem_growth_mib"],
                "warmup": settings.warmup,
                "iters": settings.iters,
            }
            rows.append(row)
            raw[comp] = {
                "latencies_ms": timing.latencies_ms,
                "memory_method": mem["memory_method"],
            }
            log.info(
                "%s %s: %.2f img/s (%.1f s incl. warm-up)",
                cfg.label(),
                comp,
                summary["images_per_s"],
                time.perf_counter() - t0,
            )
        miou = None
        if n_acc > 0 and spec.get("reference_masks"):
            masks = _accuracy_masks(bm, acc, b)
            miou = miou_percent(masks, load_masks(spec["reference_masks"]))
    for row in rows:
        if row["component"] == "end_to_end" and miou is not None:
            row["miou_vs_fp32"] = miou
    env["timer"] = timer_name(device)
    env["torch_threads"] = torch.get_num_threads()
    env["allocator"] = allocator_info()
    if cfg.compile:
        env["compile_mode"] = settings.compile_mode
    return {
        "ok": True,
        "rows": rows,
        "miou_vs_fp32": miou,
        "raw": raw,
        "environment": env,
        "seconds": time.perf_counter() - t_start,
    }


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Run a spec in this process; exceptions become ``{"ok": False, "error": ...}``."""
    try:
        if spec.get("role") == "reference":
            return run_reference(spec)
        if spec.get("role") == "measure":
            return run_measure(spec)
        raise ValueError(f"unknown worker role {spec.get('role')!r}")
    except Exception as e:  # reported to the orchestrator, which records the failure
        log.debug("worker failed", exc_info=True)
        return {
            "ok": False,
            "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc(limit=8),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m esam.bench.worker", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--spec", required=True, help="spec JSON file")
    parser.add_argument("--out", required=True, help="output JSON file")
    args = parser.parse_args(argv)
    spec = json.loads(Path(args.spec).read_text())
    logging.basicConfig(
        level=spec.get("log_level", os.environ.get("ESAM_BENCH_LOG_LEVEL", "WARNING")),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    result = run_spec(spec)
    from esam.utils.io import write_json_atomic

    write_json_atomic(args.out, result)
    if not result["ok"]:
        print(f"esam bench worker: {result['error']}", file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
