"""Settings of a throughput sweep: parsing and checks with messages that name the argument.

A sweep times one model over the product of batch sizes, dtypes and compile settings; each
point of that product is a :class:`RunConfig` and runs in its own process.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from esam.errors import InputError
from esam.utils.results import LATER_SETTING_DEFAULTS  # noqa: F401  (re-exported)

#: Precision names accepted by ``--dtypes`` and what each means.
DTYPES: dict[str, str] = {
    "fp32": "float32 everywhere; CUDA matmuls at full fp32 precision (no TF32)",
    "tf32": "float32 tensors; CUDA matmuls and convolutions may use TF32 (CUDA only)",
    "bf16": "torch.autocast to bfloat16 (weights stay float32)",
    "fp16": "torch.autocast to float16 (weights stay float32)",
}
#: Values of ``--compile``: off, on, or both (each dtype and batch size once eager, once compiled).
COMPILE_CHOICES: tuple[str, ...] = ("off", "on", "both")
#: Components timed by default, in the order they are timed.
COMPONENTS: tuple[str, ...] = ("image_encoder", "decoder", "end_to_end")
#: torch.compile modes accepted by ``--compile-mode``.
COMPILE_MODES: tuple[str, ...] = (
    "default",
    "reduce-overhead",
    "max-autotune",
    "max-autotune-no-cudagraphs",
)


@dataclass(frozen=True)
class RunConfig:
    """One measured configuration (one worker process)."""

    batch_size: int
    dtype: str
    compile: bool

    def label(self) -> str:
        """Short human label, e.g. ``b8/bf16/compiled``."""
        return f"b{self.batch_size}/{self.dtype}/{'compiled' if self.compile else 'eager'}"


@dataclass
class SweepSettings:
    """Everything that defines a sweep (recorded in the results file's ``config``).

    Attributes:
        model: benchmark model name (see :func:`esam.bench.models.available_models`).
        checkpoint: weights file, or None for untrained weights (timing is unaffected).
        device: ``cpu`` or ``cuda`` (``cuda:N`` accepted).
        batch_sizes: images per timed call.
        dtypes: precisions (keys of :data:`DTYPES`).
        compile: compile settings to run (False = eager, True = ``torch.compile``).
        compile_mode: ``torch.compile`` mode.
        prompts_per_image: box prompts per image for the decoder and end to end.
        warmup: untimed calls before timing, per component.
        iters: timed calls per component.
        accuracy_images: images of the fixed synthetic accuracy set (0 skips accuracy).
        seed: seed of the synthetic accuracy set and of untrained weights.
        overrides: architecture overrides for esam models (e.g. ``img_size`` for tiny tests).
        components: components to time.
        threads: torch CPU threads in each worker (0: torch's default).
        retain_freed_memory: CPU workers keep freed memory mapped
            (:func:`esam.utils.allocator.retain_freed_memory`), removing the page-fault cost
            of large temporary buffers that glibc's defaults impose.
        configs: explicit configurations; when empty, the product of batch sizes, dtypes and
            compile settings.
    """

    model: str
    device: str = "cpu"
    checkpoint: str | None = None
    batch_sizes: tuple[int, ...] = (1,)
    dtypes: tuple[str, ...] = ("fp32",)
    compile: tuple[bool, ...] = (False,)
    compile_mode: str = "default"
    prompts_per_image: int = 1
    warmup: int = 3
    iters: int = 10
    accuracy_images: int = 8
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    components: tuple[str, ...] = COMPONENTS
    threads: int = 0
    retain_freed_memory: bool = False
    configs: tuple[RunConfig, ...] = ()

    def run_configs(self) -> list[RunConfig]:
        """The configurations of the sweep, in run order."""
        if self.configs:
            return list(self.configs)
        return [
            RunConfig(b, d, c)
            for c, d, b in itertools.product(self.compile, self.dtypes, self.batch_sizes)
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = dataclasses.asdict(self)
        d["configs"] = [dataclasses.asdict(c) for c in self.configs]
        for k in ("batch_sizes", "dtypes", "compile", "components"):
            d[k] = list(d[k])
        return d

    def __post_init__(self) -> None:
        self.check_values()  # a sweep with impossible values cannot be constructed

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepSettings:
        """Inverse of :meth:`to_dict`; an unknown key is a named error."""
        d = dict(d)
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise InputError(f"unknown sweep settings {unknown}")
        d["configs"] = tuple(RunConfig(**c) for c in d.get("configs", ()))
        for k in ("batch_sizes", "dtypes", "compile", "components"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def validate(self) -> SweepSettings:
        """Check every setting, the model name and the device too (raises ValueError naming
        the argument); returns self."""
        self.check_values()
        from esam.bench.models import check_model_name

        check_model_name(self.model)
        check_device(self.device, {c.dtype for c in self.run_configs()})
        return self

    def check_values(self) -> None:
        """Check the settings' values alone (no model lookup, no device query)."""
        check_batch_sizes(self.batch_sizes)
        check_dtypes(self.dtypes)
        for c in self.configs:
            check_batch_sizes([c.batch_size])
            check_dtypes([c.dtype])
        check_positive(self.prompts_per_image, "--prompts-per-image")
        check_positive(self.iters, "--iters")
        check_non_negative(self.warmup, "--warmup")
        check_non_negative(self.accuracy_images, "--accuracy-images")
        check_non_negative(self.threads, "--threads")
        if self.compile_mode not in COMPILE_MODES:
            raise InputError(
                f"--compile-mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}"
            )
        if self.retain_freed_memory and not self.device.startswith("cpu"):
            raise InputError(
                f"--retain-freed-memory applies to CPU runs only, not --device {self.device}"
            )
        compiled = any(c.compile for c in self.run_configs())
        if compiled and self.warmup < 1:
            raise InputError("--warmup must be at least 1 with --compile (the first call compiles)")
        unknown = [c for c in self.components if c not in COMPONENTS]
        if unknown or not self.components:
            raise InputError(
                f"--components must be a non-empty subset of {', '.join(COMPONENTS)}, got {list(self.components)}"
            )


def check_positive(value: int, name: str) -> int:
    """``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_non_negative(value: int, name: str) -> int:
    """``value`` is an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def check_batch_sizes(values: Iterable[int]) -> tuple[int, ...]:
    """Batch sizes are positive integers (at least one)."""
    out = tuple(values)
    if not out:
        raise InputError("--batch-sizes must list at least one batch size")
    for v in out:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"--batch-sizes must be positive integers, got {v!r}")
    return out


def check_dtypes(values: Iterable[str]) -> tuple[str, ...]:
    """Every dtype is a key of :data:`DTYPES` (at least one)."""
    out = tuple(values)
    if not out:
        raise InputError("--dtypes must list at least one dtype")
    for v in out:
        if v not in DTYPES:
            raise InputError(f"--dtypes: unknown dtype {v!r}; choose from {', '.join(DTYPES)}")
    return out


def parse_int_list(text: str, name: str) -> tuple[int, ...]:
    """``"1,8,32"`` -> ``(1, 8, 32)``; raises ValueError naming ``name`` on bad items."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    out = []
    for t in items:
        try:
            out.append(int(t))
        except ValueError:
            raise InputError(f"{name} must be comma-separated integers, got {t!r}") from None
    return tuple(out)


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """Parse and check ``--batch-sizes``."""
    return check_batch_sizes(parse_int_list(text, "--batch-sizes"))


def parse_dtypes(text: str) -> tuple[str, ...]:
    """Parse and check ``--dtypes`` (case-insensitive)."""
    return check_dtypes(tuple(t.strip().lower() for t in str(text).split(",") if t.strip()))


def parse_compile(value: str | bool | None) -> tuple[bool, ...]:
    """``--compile`` value -> compile settings: off (False,), on (True,), both (False, True)."""
    if value is None or value is False:
        return (False,)
    if value is True:
        return (True,)
    v = str(value).strip().lower()
    if v not in COMPILE_CHOICES:
        raise InputError(f"--compile must be one of {', '.join(COMPILE_CHOICES)}, got {value!r}")
    return {"off": (False,), "on": (True,), "both": (False, True)}[v]


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["img_size=128", "encoder_depth=1"]`` -> ``{"img_size": 128, "encoder_depth": 1}``.

    Values are read as int, then float, then kept as text.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = str(item).partition("=")
        if not sep or not key.strip():
            raise InputError(f"--override must look like KEY=VALUE, got {item!r}")
        value: Any = raw.strip()
        for conv in (int, float):
            try:
                value = conv(raw)
                break
            except ValueError:
                continue
        out[key.strip()] = value
    return out


def check_device(device: str, dtypes: Iterable[str] = ()) -> str:
    """``device`` is ``cpu`` or an available CUDA device; tf32 needs CUDA.

    Raises:
        ValueError: unknown device, CUDA requested without a usable GPU, or tf32 on CPU.
    """
    import torch

    d = str(device)
    if d != "cpu" and not d.startswith("cuda"):
        raise InputError(f"--device must be cpu or cuda (cuda:N), got {device!r}")
    if d.startswith("cuda"):
        try:
            index = torch.device(d).index or 0
        except RuntimeError:
            raise InputError(f"--device must be cpu or cuda (cuda:N), got {device!r}") from None
        if not torch.cuda.is_available():
            raise InputError(
                f"--device {device}: no CUDA device is available (torch.cuda.is_available() is False); "
                "use --device cpu"
            )
        if index >= torch.cuda.device_count():
            raise InputError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    elif "tf32" in set(dtypes):
        raise InputError("--dtypes tf32 needs --device cuda (TF32 is a CUDA matmul mode)")
    return d
