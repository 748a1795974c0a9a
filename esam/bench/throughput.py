"""Throughput sweep: one reference process, then one fresh process per configuration.

:func:`run_sweep` first runs a *reference* worker (fp32, eager) that counts parameters and FLOPs
and writes the fp32 masks of the fixed accuracy set; then one *measure* worker per
(batch size, dtype, compile) configuration. Each worker is a new Python process
(``python -m esam.bench.worker``) exchanging JSON files with this one, so no configuration
inherits caches, compiled graphs, allocator state or heat from another. The results file is
rewritten atomically after every configuration (``"complete": false`` until the last one), so
an interrupted sweep keeps what it measured.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from esam.bench.settings import DTYPES, LATER_SETTING_DEFAULTS, RunConfig, SweepSettings
from esam.errors import InputError

log = logging.getLogger(__name__)

TASK = "throughput"
#: Numbers of a metrics row rounded to this many decimals in the results file.
_DECIMALS = 4
ACCURACY_METRIC = (
    "mean IoU (percent) of every end-to-end mask (each image, prompt and multimask index) against "
    "the fp32 eager mask of the same model at the same position and batch size (so an fp32 row "
    "is 100 and a lower precision's row measures the precision alone, not batching's rounding); "
    "two empty masks count as identical"
)


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def run_worker(
    spec: dict[str, Any],
    workdir: Path,
    tag: str,
    in_process: bool = False,
    timeout_s: float | None = None,
    python: str | None = None,
) -> dict[str, Any]:
    """Run one worker spec, in a fresh process unless ``in_process``.

    Returns the worker's output; a crash, a kill or a timeout becomes ``{"ok": False, "error": ...}``.
    """
    if in_process:
        from esam.bench.worker import run_spec

        return run_spec(spec)
    spec_path = workdir / f"{tag}.spec.json"
    out_path = workdir / f"{tag}.out.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (_package_root(), env.get("PYTHONPATH", "")) if p
    )
    cmd = [
        python or sys.executable,
        "-m",
        "esam.bench.worker",
        "--spec",
        str(spec_path),
        "--out",
        str(out_path),
    ]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return {"ok": False, "error": f"worker timed out after {timeout_s:.0f} s"}
    except BaseException:
        _kill_group(proc)
        raise
    if out_path.is_file():
        try:
            out: dict[str, Any] = json.loads(out_path.read_text())
            return out
        except json.JSONDecodeError:
            pass
    return {
        "ok": False,
        "error": f"worker exited with status {rc} without a result (crash or out of memory?)",
    }


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, _DECIMALS)
    return value


def _progress(items: list[RunConfig], enabled: bool) -> Iterable[RunConfig]:
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc="configs", unit="config", file=sys.stderr)


def sweep_config(
    settings: SweepSettings, model_info: dict[str, Any], in_process: bool
) -> dict[str, Any]:
    """The ``config`` block of the results: every setting that influences the numbers."""
    from esam.bench.timing import timer_name

    on_device = bool(model_info.get("inputs_on_device", True))
    return {
        "device": settings.device,
        "batch_sizes": sorted({c.batch_size for c in settings.run_configs()}),
        "dtypes": list(dict.fromkeys(c.dtype for c in settings.run_configs())),
        "compile": list(dict.fromkeys(c.compile for c in settings.run_configs())),
        "compile_mode": settings.compile_mode,
        "prompt": "box",
        "prompts_per_image": settings.prompts_per_image,
        "multimask_output": True,
        "image_size": model_info.get("image_size"),
        "components": list(settings.components),
        "warmup": settings.warmup,
        "iters": settings.iters,
        "seed": settings.seed,
        "overrides": dict(settings.overrides),
        "threads": settings.threads or "torch default",
        "retain_freed_memory": settings.retain_freed_memory,
        "timer": timer_name(settings.device),
        "inputs": (
            "already on the device before timing (uint8 to float conversion and host-to-device copy not timed); "
            "outputs stay on the device"
            if on_device
            else "host numpy arrays through the adapter interface; outputs copied to the host"
        ),
        "warmup_excluded": True,
        "latency": "milliseconds per call of batch_size images; p50/p90 over the timed calls",
        "images_per_s": "batch_size * iters / time from the start of the first timed call to the end of the last",
        "peak_memory": (
            "torch.cuda.max_memory_allocated during the timed calls (weights and inputs included)"
            if settings.device.startswith("cuda")
            else "peak process RSS during the timed calls (interpreter, weights and inputs included)"
        ),
        "precision": {d: DTYPES[d] for d in dict.fromkeys(c.dtype for c in settings.run_configs())},
        "fresh_process_per_config": not in_process,
        "accuracy": {
            "metric": ACCURACY_METRIC,
            "set": model_info.get("accuracy_set"),
            "column": "miou_vs_fp32 (end_to_end rows)",
        },
    }


def _model_block(info: dict[str, Any]) -> dict[str, Any]:
    model = dict(info)
    model.pop("accuracy_set", None)
    model.pop("inputs_on_device", None)
    ckpt = model.get("checkpoint")
    model["checkpoint_sha256"] = None
    if ckpt:
        from esam.utils.io import sha256_file

        model["checkpoint_sha256"] = sha256_file(ckpt)
    return model


def run_sweep(
    settings: SweepSettings,
    output: str | Path | None = None,
    in_process: bool = False,
    worker_timeout_s: float | None = None,
    progress: bool = True,
    log_level: str = "WARNING",
    skip_reason: Callable[[RunConfig], str | None] | None = None,
) -> dict[str, Any]:
    """Run the sweep and return (and write to ``output``) the results object.

    ``skip_reason(config)``, when given, is asked before each configuration; a non-empty answer
    skips it (recorded under ``skipped`` with that reason), e.g. when a time budget runs out.

    Raises:
        ValueError: a bad setting, or the model cannot be built (the reference worker failed).
    """
    from esam.utils.io import write_json_atomic
    from esam.utils.meta import run_metadata, utc_now
    from esam.utils.results import make_results

    settings.validate()
    start = utc_now()
    configs = settings.run_configs()
    with tempfile.TemporaryDirectory(prefix="esam-bench-") as tmp:
        workdir = Path(tmp)
        ref_masks = str(workdir / "fp32_masks_b{batch}.npz")  # one file per batch size
        base = {"settings": settings.to_dict(), "log_level": log_level}
        log.info("reference run (fp32, eager): parameters, FLOPs, fp32 masks of the accuracy set")
        ref = run_worker(
            {**base, "role": "reference", "save_masks": ref_masks},
            workdir,
            "reference",
            in_process,
            worker_timeout_s,
        )
        if not ref.get("ok"):
            raise InputError(f"model {settings.model!r} could not be prepared: {ref.get('error')}")
        info = ref["model"]
        rows: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        runs: list[dict[str, Any]] = []
        results: dict[str, Any] = {}

        def assemble(complete: bool) -> dict[str, Any]:
            meta = run_metadata(
                settings.device, ",".join(dict.fromkeys(c.dtype for c in configs)), start
            )
            # the timed processes' thread count, not this orchestrating process's
            meta["hardware"]["torch_threads"] = timed_threads(runs, settings.threads)
            return make_results(
                TASK,
                _model_block(info),
                sweep_config(settings, info, in_process),
                [{k: _round(v) for k, v in r.items()} for r in rows],
                meta,
                failures=failures,
                skipped=skipped,
                runs=runs,
                complete=complete,
            )

        for i, cfg in enumerate(_progress(configs, progress)):
            reason = skip_reason(cfg) if skip_reason is not None else None
            if reason:
                skipped.append(
                    {
                        "batch_size": cfg.batch_size,
                        "dtype": cfg.dtype,
                        "compile": cfg.compile,
                        "reason": reason,
                    }
                )
                log.warning("%s skipped: %s", cfg.label(), reason)
                continue
            ref_file = ref_masks.format(batch=cfg.batch_size)
            spec: dict[str, Any] = {
                **base,
                "role": "measure",
                "config": {
                    "batch_size": cfg.batch_size,
                    "dtype": cfg.dtype,
                    "compile": cfg.compile,
                },
                "reference_masks": ref_file if Path(ref_file).is_file() else None,
            }
            out = run_worker(spec, workdir, f"config{i}", in_process, worker_timeout_s)
            if out.get("ok"):
                rows.extend(out["rows"])
                runs.append(
                    {
                        "config": cfg.label(),
                        "environment": out.get("environment"),
                        "seconds": _round(out.get("seconds")),
                        "latencies_ms": {
                            k: [_round(x) for x in v["latencies_ms"]] for k, v in out["raw"].items()
                        },
                        "memory_method": {k: v["memory_method"] for k, v in out["raw"].items()},
                    }
                )
                log.info("%s: %s", cfg.label(), summarize_rows(out["rows"]))
            else:
                failures.append({**spec["config"], "error": out.get("error")})
                log.warning("%s failed: %s", cfg.label(), out.get("error"))
            if output is not None:
                write_json_atomic(output, assemble(complete=False))
        results = assemble(complete=True)
    if output is not None:
        write_json_atomic(output, results)
    return results


def timed_threads(runs: list[dict[str, Any]], requested: int) -> int | list[int] | None:
    """The torch threads the timed worker processes used.

    Every worker reports ``torch.get_num_threads()`` after applying ``--threads``; one number
    when they agree, the sorted distinct values when they do not, and ``requested`` (or None
    for torch's default) before any worker has run.
    """
    seen = sorted(
        {
            int(r["environment"]["torch_threads"])
            for r in runs
            if isinstance(r.get("environment"), dict) and "torch_threads" in r["environment"]
        }
    )
    if not seen:
        return requested if requested > 0 else None
    return seen[0] if len(seen) == 1 else seen


def summarize_rows(rows: list[dict[str, Any]]) -> str:
    """One line: images/s per component and the accuracy."""
    parts = [f"{r['component']} {r['images_per_s']:.2f} img/s" for r in rows]
    miou = next((r.get("miou_vs_fp32") for r in rows if r.get("miou_vs_fp32") is not None), None)
    if miou is not None:
        parts.append(f"mIoU vs fp32 {miou:.2f}")
    return ", ".join(parts)


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def format_table(results: dict[str, Any]) -> str:
    """Plain-text table of a results object's rows (plus failures)."""
    head = (
        "component",
        "batch",
        "dtype",
        "compile",
        "img/s",
        "p50 ms",
        "p90 ms",
        "peak MiB",
        "mIoU vs fp32",
    )
    lines = [[str(h) for h in head]]
    for r in results["metrics"]:
        lines.append(
            [
                r["component"],
                _fmt(r["batch_size"]),
                r["dtype"],
                _fmt(r["compile"]),
                _fmt(r["images_per_s"]),
                _fmt(r["latency_p50_ms"]),
                _fmt(r["latency_p90_ms"]),
                _fmt(r["peak_mem_mib"], 0),
                _fmt(r.get("miou_vs_fp32")),
            ]
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = [
        f"model {results['model']['name']} ({results['model'].get('mode')}), device {results['config']['device']}, "
        f"weights {results['model'].get('weights')}"
    ]
    out += [
        "  ".join(
            c.rjust(w) if j >= 4 else c.ljust(w)
            for j, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in lines
    ]
    for f in results.get("failures", []):
        out.append(
            f"FAILED b{f['batch_size']}/{f['dtype']}/{'compiled' if f['compile'] else 'eager'}: {f['error']}"
        )
    for f in results.get("skipped", []):
        out.append(
            f"SKIPPED b{f['batch_size']}/{f['dtype']}/{'compiled' if f['compile'] else 'eager'}: {f['reason']}"
        )
    return "\n".join(out)


def _key(r: dict[str, Any]) -> tuple[str, int, str, bool]:
    return (r["component"], int(r["batch_size"]), str(r["dtype"]), bool(r["compile"]))


#: Settings two results files must share for their speeds to be compared.
COMPARABLE_SETTINGS: tuple[str, ...] = (
    "device",
    "threads",
    "prompts_per_image",
    "image_size",
    "retain_freed_memory",
    "compile_mode",
    "overrides",
)

#: What the two runs' machines must share: ``meta.hardware`` keys, then ``meta.versions``.
#: (``cpu_model`` is often generic, "AMD EPYC": the core count and the threads torch timed with
#: tell two such machines apart.)
COMPARABLE_HARDWARE: tuple[str, ...] = ("cpu_model", "cpu_cores", "torch_threads", "gpu_name")
COMPARABLE_VERSIONS: tuple[str, ...] = ("torch",)


def setting_mismatches(fast: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """``"key: a vs b"`` for each of :data:`COMPARABLE_SETTINGS`, :data:`COMPARABLE_HARDWARE`
    and :data:`COMPARABLE_VERSIONS` the two results differ in: speeds from two machines, two
    torch versions or two model variants are not a speed-up."""
    out = []
    for key in COMPARABLE_SETTINGS:
        default = LATER_SETTING_DEFAULTS.get(key)
        a = fast["config"].get(key, default)
        b = baseline["config"].get(key, default)
        if key == "device":  # "cuda" is "cuda:0"
            a, b = (str(v).removesuffix(":0") for v in (a, b))
        if a != b:
            out.append(f"{key}: {a!r} vs {b!r}")
    for block, keys in (("hardware", COMPARABLE_HARDWARE), ("versions", COMPARABLE_VERSIONS)):
        for key in keys:
            a = (fast.get("meta") or {}).get(block, {}).get(key)
            b = (baseline.get("meta") or {}).get(block, {}).get(key)
            if a != b:
                out.append(f"{block}.{key}: {a!r} vs {b!r}")
    return out


def compare(fast: dict[str, Any], baseline: dict[str, Any]) -> list[dict[str, Any]]:
    """Speed ratios ``fast / baseline`` at identical (component, batch size, dtype, compile).

    Raises:
        ValueError: the two runs differ in a setting of :data:`COMPARABLE_SETTINGS`.
    """
    mismatches = setting_mismatches(fast, baseline)
    if mismatches:
        raise InputError(
            "the two results were measured under different settings, so their speeds are not "
            "comparable: " + "; ".join(mismatches)
        )
    base = {_key(r): r for r in baseline["metrics"]}
    out = []
    for r in fast["metrics"]:
        b = base.get(_key(r))
        if b is None or not b.get("images_per_s"):
            continue
        out.append(
            {
                "component": r["component"],
                "batch_size": r["batch_size"],
                "dtype": r["dtype"],
                "compile": r["compile"],
                "images_per_s": r["images_per_s"],
                "baseline_images_per_s": b["images_per_s"],
                "speedup": r["images_per_s"] / b["images_per_s"],
                "peak_mem_ratio": (r["peak_mem_mib"] / b["peak_mem_mib"])
                if b.get("peak_mem_mib")
                else None,
            }
        )
    return out


def best_row(
    results: dict[str, Any], component: str = "end_to_end", max_miou_drop: float = 0.5
) -> dict[str, Any] | None:
    """The fastest row of ``component`` whose mIoU vs fp32 is within ``max_miou_drop`` of 100.

    Rows without an accuracy number qualify only when they are fp32 without compile.
    """
    best = None
    for r in results["metrics"]:
        if r["component"] != component:
            continue
        miou = r.get("miou_vs_fp32")
        ok = (miou is not None and miou >= 100.0 - max_miou_drop) or (
            miou is None and r["dtype"] == "fp32" and not r["compile"]
        )
        if ok and (best is None or r["images_per_s"] > best["images_per_s"]):
            best = r
    return best


def load_results_file(path: str | Path) -> dict[str, Any]:
    """Read and validate a throughput results file."""
    from esam.utils.results import validate_results

    obj = validate_results(json.loads(Path(path).read_text()), source=str(path))
    if obj["task"] != TASK:
        raise InputError(f"{path}: task is {obj['task']!r}, expected {TASK!r}")
    return obj
