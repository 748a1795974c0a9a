"""Sweep settings: parsing, and clear errors for bad arguments."""

from __future__ import annotations

import pytest
import torch

from esam.bench.settings import (
    RunConfig,
    SweepSettings,
    check_device,
    parse_batch_sizes,
    parse_compile,
    parse_dtypes,
    parse_overrides,
)


def test_parse_lists() -> None:
    assert parse_batch_sizes("1, 8,32") == (1, 8, 32)
    assert parse_dtypes("FP32,bf16") == ("fp32", "bf16")
    assert parse_compile(None) == (False,)
    assert parse_compile("on") == (True,)
    assert parse_compile("both") == (False, True)
    assert parse_overrides(["img_size=128", "mlp_ratio=2.5", "x=abc"]) == {
        "img_size": 128,
        "mlp_ratio": 2.5,
        "x": "abc",
    }


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: parse_batch_sizes("1,0"), "--batch-sizes must be positive integers, got 0"),
        (lambda: parse_batch_sizes("1,x"), "--batch-sizes must be comma-separated integers"),
        (lambda: parse_batch_sizes(""), "--batch-sizes must list at least one"),
        (lambda: parse_dtypes("fp32,fp8"), "--dtypes: unknown dtype 'fp8'"),
        (lambda: parse_compile("maybe"), "--compile must be one of"),
        (lambda: parse_overrides(["img_size"]), "--override must look like KEY=VALUE"),
        (lambda: check_device("tpu"), "--device must be cpu or cuda"),
        (lambda: check_device("cpu", ["tf32"]), "tf32 needs --device cuda"),
    ],
)
def test_bad_arguments(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no CUDA device is available"):
        check_device("cuda")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"iters": 0}, "--iters must be a positive integer"),
        ({"warmup": -1}, "--warmup must be a non-negative integer"),
        ({"prompts_per_image": 0}, "--prompts-per-image must be a positive integer"),
        ({"compile": (True,), "warmup": 0}, "--warmup must be at least 1 with --compile"),
        ({"compile_mode": "fastest"}, "--compile-mode must be one of"),
        ({"components": ("encoder",)}, "--components must be a non-empty subset"),
        ({"batch_sizes": (0,)}, "--batch-sizes must be positive"),
    ],
)
def test_validate(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SweepSettings(model="efficientsam_vitt", **kwargs).validate()


def test_run_configs_and_round_trip() -> None:
    s = SweepSettings(model="m", batch_sizes=(1, 8), dtypes=("fp32", "bf16"), compile=(False, True))
    configs = s.run_configs()
    assert len(configs) == 8
    assert configs[0] == RunConfig(1, "fp32", False)
    assert configs[-1] == RunConfig(8, "bf16", True)
    assert configs[-1].label() == "b8/bf16/compiled"
    again = SweepSettings.from_dict(s.to_dict())
    assert again == s
    explicit = SweepSettings(model="m", configs=(RunConfig(4, "bf16", True),))
    assert explicit.run_configs() == [RunConfig(4, "bf16", True)]
    assert SweepSettings.from_dict(explicit.to_dict()) == explicit


def test_retaining_freed_memory_is_a_cpu_setting() -> None:
    SweepSettings(model="efficientsam_vitt", retain_freed_memory=True).validate()
    with pytest.raises(ValueError, match="--retain-freed-memory applies to CPU runs only"):
        SweepSettings(model="efficientsam_vitt", device="cuda", retain_freed_memory=True).validate()


def test_settings_that_make_two_runs_incomparable() -> None:
    from esam.bench.throughput import setting_mismatches

    def run(**config):
        return {"config": {"device": "cuda", "threads": 4, "prompts_per_image": 1, **config}}

    assert setting_mismatches(run(), run(device="cuda:0")) == []
    assert setting_mismatches(run(), run(retain_freed_memory=False)) == []
    assert setting_mismatches(run(), run(device="cuda:1", prompts_per_image=8)) == [
        "device: 'cuda' vs 'cuda:1'",
        "prompts_per_image: 1 vs 8",
    ]
    # another model variant, compile mode, machine or torch: not a speed-up either
    assert setting_mismatches(run(), run(overrides={"encoder_depth": 1})) == [
        "overrides: None vs {'encoder_depth': 1}"
    ]
    assert setting_mismatches(run(compile_mode="default"), run(compile_mode="max-autotune")) == [
        "compile_mode: 'default' vs 'max-autotune'"
    ]

    def on(gpu: str, torch_version: str) -> dict:
        return run() | {
            "meta": {"hardware": {"gpu_name": gpu}, "versions": {"torch": torch_version}}
        }

    assert setting_mismatches(on("H100", "2.14.1"), on("H100", "2.14.1")) == []
    assert setting_mismatches(on("H100", "2.14.1"), on("A100", "2.13.0")) == [
        "hardware.gpu_name: 'H100' vs 'A100'",
        "versions.torch: '2.14.1' vs '2.13.0'",
    ]

    def cpu(cores: int, threads: int) -> dict:
        hardware = {"cpu_model": "AMD EPYC", "cpu_cores": cores, "torch_threads": threads}
        return run() | {"meta": {"hardware": hardware, "versions": {"torch": "2.14.1"}}}

    # a generic CPU name: the cores and the threads timed with tell the machines apart
    assert setting_mismatches(cpu(2, 2), cpu(2, 2)) == []
    assert setting_mismatches(cpu(64, 64), cpu(2, 2)) == [
        "hardware.cpu_cores: 64 vs 2",
        "hardware.torch_threads: 64 vs 2",
    ]


def test_command_line_defaults_are_the_settings_defaults() -> None:
    """``esam bench throughput`` with only the required flags builds the default sweep: its
    flags read their defaults from SweepSettings instead of repeating them."""
    import argparse

    from esam.bench.settings import SweepSettings
    from esam.cli import bench

    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers())
    args = parser.parse_args(
        ["bench", "throughput", "--model", "efficientsam_vitt", "--output", "o.json"]
    )
    assert bench.settings_from_args(args) == SweepSettings(model="efficientsam_vitt")
