"""The throughput sweep end to end on a tiny model, its results file and the command line."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from esam.bench.settings import RunConfig, SweepSettings
from esam.bench.throughput import best_row, compare, format_table, load_results_file, run_sweep
from esam.cli.main import main
from esam.utils.results import validate_results

REPO = Path(__file__).resolve().parents[1]
TINY = {"img_size": 64, "encoder_depth": 1}
ROW_KEYS = {
    "component",
    "batch_size",
    "dtype",
    "compile",
    "images_per_s",
    "latency_p50_ms",
    "latency_p90_ms",
    "peak_mem_mib",
    "warmup",
    "iters",
}


def _tiny_settings(model: str = "efficientsam_vitt", **kw) -> SweepSettings:
    base = dict(
        model=model,
        batch_sizes=(1, 2),
        dtypes=("fp32", "bf16"),
        warmup=1,
        iters=2,
        accuracy_images=3,
        prompts_per_image=2,
        overrides=dict(TINY),
    )
    base.update(kw)
    return SweepSettings(**base)


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench") / "tiny.json"
    return run_sweep(_tiny_settings(), output=out, in_process=True, progress=False), out


def test_results_schema_and_rows(tiny_results) -> None:
    results, path = tiny_results
    on_disk = json.loads(path.read_text())
    assert on_disk == results
    validate_results(results)
    assert results["task"] == "throughput" and results["complete"] is True
    assert results["failures"] == []
    rows = results["metrics"]
    assert len(rows) == 4 * 3  # 2 batch sizes x 2 dtypes x 3 components
    for r in rows:
        assert set(r) >= ROW_KEYS
        assert r["images_per_s"] > 0 and r["latency_p90_ms"] >= r["latency_p50_ms"] > 0
        assert r["peak_mem_mib"] > 0
    e2e = [r for r in rows if r["component"] == "end_to_end"]
    assert all("miou_vs_fp32" in r for r in e2e)
    fp32 = [r for r in e2e if r["dtype"] == "fp32"]
    assert all(r["miou_vs_fp32"] == 100.0 for r in fp32)
    assert all(0 <= r["miou_vs_fp32"] <= 100 for r in e2e)


def test_results_record_model_hardware_and_settings(tiny_results) -> None:
    results, _ = tiny_results
    model = results["model"]
    assert model["weights"] == "standin (seed 0)" and model["checkpoint"] is None
    assert set(model["params"]) == {"total", "image_encoder", "prompt_encoder", "mask_decoder"}
    assert model["macs"]["end_to_end"] == model["flops"]["end_to_end"] // 2
    assert "FlopCounterMode" in model["flop_counter"]
    cfg = results["config"]
    assert cfg["batch_sizes"] == [1, 2] and cfg["dtypes"] == ["fp32", "bf16"]
    assert cfg["prompts_per_image"] == 2 and cfg["timer"] == "perf_counter"
    assert "on the device" in cfg["inputs"]
    assert cfg["accuracy"]["set"]["n_images"] == 3
    hw = results["meta"]["hardware"]
    assert hw["cpu_model"] and hw["cpu_cores"]
    assert len(results["runs"]) == 4


def test_report_layer_reads_the_results(tiny_results) -> None:
    pytest.importorskip("pandas")
    from esam.report.load import results_to_rows

    results, path = tiny_results
    rows = results_to_rows(results, str(path))
    ips = [r for r in rows if r["task"] == "throughput" and r["metric"] == "images_per_s"]
    assert len(ips) == 12
    assert {r["component"] for r in ips} == {"image_encoder", "decoder", "end_to_end"}
    assert any(r["task"] == "model" and r["metric"] == "macs" for r in rows)


def test_compare_best_row_and_table(tiny_results) -> None:
    results, _ = tiny_results
    ratios = compare(results, results)
    assert len(ratios) == 12 and all(r["speedup"] == pytest.approx(1.0) for r in ratios)
    best = best_row(results, max_miou_drop=0.0)
    assert best is not None and best["dtype"] == "fp32"
    text = format_table(results)
    assert "end_to_end" in text and "efficientsam_vitt" in text


def test_reference_mode_and_explicit_configs(tmp_path) -> None:
    settings = _tiny_settings(
        "efficientsam_vitt:reference",
        configs=(RunConfig(3, "fp32", False),),  # a batch size not in batch_sizes
        components=("decoder", "end_to_end"),
        accuracy_images=2,
    )
    results = run_sweep(settings, output=None, in_process=True, progress=False)
    assert results["model"]["mode"] == "reference"
    assert [r["component"] for r in results["metrics"]] == ["decoder", "end_to_end"]
    assert results["metrics"][1]["miou_vs_fp32"] == 100.0


def test_failures_are_recorded_not_fatal(tmp_path, monkeypatch) -> None:
    import esam.bench.worker as worker

    real = worker.run_measure

    def flaky(spec):
        if spec["config"]["dtype"] == "bf16":
            raise RuntimeError("simulated out of memory")
        return real(spec)

    monkeypatch.setattr(worker, "run_measure", flaky)
    settings = _tiny_settings(batch_sizes=(1,), accuracy_images=1, components=("image_encoder",))
    results = run_sweep(settings, output=tmp_path / "r.json", in_process=True, progress=False)
    assert [f["dtype"] for f in results["failures"]] == ["bf16"]
    assert "simulated out of memory" in results["failures"][0]["error"]
    assert len(results["metrics"]) == 1


def test_cli_end_to_end_in_fresh_processes(tmp_path, capsys) -> None:
    out = tmp_path / "cli.json"
    cmd = [
        sys.executable, "-m", "esam.cli.main", "bench", "throughput",
        "--model", "efficientsam_vitt", "--override", "img_size=64", "--override", "encoder_depth=1",
        "--device", "cpu", "--batch-sizes", "2", "--dtypes", "fp32", "--prompts-per-image", "1",
        "--warmup", "1", "--iters", "2", "--accuracy-images", "2", "--no-progress",
        "--retain-freed-memory", "--threads", "1", "--output", str(out),
    ]  # fmt: skip
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "end_to_end" in res.stdout
    results = load_results_file(out)
    assert results["config"]["fresh_process_per_config"] is True
    assert len(results["metrics"]) == 3
    assert results["runs"][0]["environment"]["timer"] == "perf_counter"
    # the threads the timed worker used, not the orchestrating process's default
    assert results["runs"][0]["environment"]["torch_threads"] == 1
    assert results["meta"]["hardware"]["torch_threads"] == 1
    assert results["config"]["retain_freed_memory"] is True
    allocator = results["runs"][0]["environment"]["allocator"]
    assert allocator["retain_freed_memory"] is (platform.libc_ver()[0] == "glibc")
    assert main(["bench", "compare", str(out), str(out)]) == 0
    assert "1.00x" in capsys.readouterr().out


def test_timed_threads_come_from_the_workers() -> None:
    from esam.bench.throughput import timed_threads

    def run(n: int) -> dict:
        return {"environment": {"torch_threads": n}}

    assert timed_threads([run(1), run(1)], 0) == 1
    assert timed_threads([run(1), run(4)], 1) == [1, 4]
    assert timed_threads([], 3) == 3 and timed_threads([], 0) is None


def test_compare_refuses_runs_under_different_settings(tiny_results, tmp_path, capsys) -> None:
    results, path = tiny_results
    other = json.loads(json.dumps(results))
    other["config"]["threads"] = 1
    other["config"]["retain_freed_memory"] = True
    with pytest.raises(ValueError, match="threads: 'torch default' vs 1; retain_freed_memory"):
        compare(results, other)
    older = json.loads(json.dumps(results))
    del older["config"]["retain_freed_memory"]  # files from before the setting existed
    assert len(compare(results, older)) == 12
    other_path = tmp_path / "other.json"
    other_path.write_text(json.dumps(other))
    assert main(["bench", "compare", str(path), str(other_path)]) != 0
    assert "not comparable" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dtypes", "fp8"], "unknown dtype 'fp8'"),
        (["--batch-sizes", "0"], "--batch-sizes must be positive integers, got 0"),
        (["--iters", "0"], "--iters must be a positive integer"),
        (["--model", "no_such_model"], "unknown model 'no_such_model'"),
        (["--checkpoint", "/nonexistent/w.pt"], "checkpoint file not found"),
        (["--compile", "--warmup", "0"], "--warmup must be at least 1 with --compile"),
    ],
)
def test_cli_bad_arguments(tmp_path, capsys, args: list[str], message: str) -> None:
    base = [
        "bench",
        "throughput",
        "--model",
        "efficientsam_vitt",
        "--override",
        "img_size=64",
        "--in-process",
        "--no-progress",
        "--output",
        str(tmp_path / "x.json"),
    ]
    if "--model" in args:
        base = base[:2] + base[4:]
    rc = main(base + args)
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_gpu(tmp_path, capsys) -> None:
    rc = main(
        [
            "bench",
            "throughput",
            "--model",
            "efficientsam_vitt",
            "--device",
            "cuda",
            "--output",
            str(tmp_path / "x.json"),
        ]
    )
    assert rc == 2
    assert "no CUDA device is available" in capsys.readouterr().err


def test_cli_lists_models(capsys) -> None:
    assert main(["bench", "models"]) == 0
    out = capsys.readouterr().out
    assert "efficientsam_vitt:reference" in out and "sam_vit_b" in out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tiny_sweep_on_gpu(tmp_path) -> None:
    settings = _tiny_settings(device="cuda", dtypes=("fp32", "bf16", "fp16"), compile=(False,))
    results = run_sweep(settings, output=tmp_path / "gpu.json", in_process=True, progress=False)
    assert results["failures"] == []
    assert results["config"]["timer"] == "cuda_events"
    assert results["meta"]["hardware"].get("gpu_name")


@pytest.mark.slow
@pytest.mark.sam
def test_sam_vit_b_paths_on_cpu() -> None:
    pytest.importorskip("segment_anything")
    from esam.bench.accuracy import synthetic_set
    from esam.bench.models import build_bench_model

    bm = build_bench_model("sam_vit_b")
    acc = synthetic_set(1, bm.image_size, 2, seed=0)
    inputs = bm.make_inputs(acc.images, acc.boxes)
    with torch.inference_mode():
        emb = bm.encode(inputs)
        low, iou = bm.decode(emb, inputs)
        masks = bm.masks_numpy(bm.end_to_end(inputs))
    assert low.shape == (1, 2, 3, 256, 256) and iou.shape == (1, 2, 3)
    assert masks.shape == (1, 2, 3, 1024, 1024) and masks.dtype == bool


@pytest.mark.slow
def test_compiled_config_on_cpu(tmp_path) -> None:
    settings = _tiny_settings(
        configs=(RunConfig(2, "fp32", True),),
        components=("decoder", "end_to_end"),
        accuracy_images=2,
    )
    results = run_sweep(settings, output=tmp_path / "c.json", in_process=True, progress=False)
    assert results["failures"] == []
    e2e = results["metrics"][-1]
    assert e2e["compile"] is True and e2e["miou_vs_fp32"] > 99.0
