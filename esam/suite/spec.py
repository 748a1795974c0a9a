"""Benchmark suites: a YAML list of runs, validated and resolved into ``esam`` command lines.

A suite file::

    name: smoke
    description: one line
    extends: other               # optional: a suite (shipped name or YAML path) this one adds to
    vars:                        # defaults of ${var}s (the command line and environment win)
      device: cpu
    models:                      # optional names for an adapter + its weights
      efficientsam_ti: {model: efficientsam_vitt, checkpoint: ${weights_root}/efficient_sam_vitt.pt}
    datasets:                    # format (-> --dataset) and the data flags of the harness
      coco: {format: coco, annotations: ${data_root}/coco/annotations/instances_val2017.json,
             images: ${data_root}/coco/val2017, detections: ${data_root}/coco/coco_vitdet.json}
    defaults: {workers: 0}       # settings given to every run whose task takes them
    runs:
      - task: zeroshot           # zeroshot, instseg, proposals, throughput, imagenet, ...
        model: [efficientsam_ti, box_fill]    # a list expands the run (also dataset, protocol)
        dataset: coco
        protocol: efficientsam
        matrix: {prompt: [box, point1]}       # setting -> values, expanded too
        overrides: {limit_images: 10}
        table: Table 4            # optional labels of the paper cell the run fills
        cell: "{model}, {prompt}"
    cannot:                      # cells of the paper no run can fill, and why
      - {table: Table 5, cell: FastSAM, why: no adapter}

A suite that ``extends`` another runs the other's runs first, then its own; its ``vars``,
``models``, ``datasets`` and ``defaults`` entries are added to the other's (an entry of the same
name replaces the other's) and its ``cannot`` cells are added to the other's. A relative path
is read from the extending file's folder.

``${name}`` is filled, in increasing precedence, from built-in variables (``sample_root``: the
shipped sample), the suite's ``vars``, the environment (``ESAM_<NAME>``, e.g. ``ESAM_DATA_ROOT``)
and the command line (``--data-root``, ``--weights-root``, ``--var name=value``).

The suite does not know the harnesses' settings itself: the keys a task accepts come from the
harness's own command-line parser (a :class:`TaskOptions` per task, built by ``esam.cli.suite``
from :func:`esam.cli.main.build_parser`, which is generated from the config dataclasses of
``esam.eval.config`` and the other run kinds). The parser is the one interface every harness
already has, so nothing is declared twice, and this feature package imports no sibling feature
package (``esam.eval``, ``esam.bench``, ``esam.classify``): the layer above passes the options
in as data. :func:`load_suite` collects every problem (unknown task or key, undefined variable,
unknown preset, bad value) and raises them together in one :class:`SuiteError`.

The downstream tasks (``coco-maskrcnn``, ``ade20k-mask2former``: Tables 2 and 3) run
``python -m esam_downstream test`` with the Python named by ``${downstream_python}`` (default:
the one running the suite; ``--var downstream_python=.tox/downstream/bin/python`` for the
``tox -e downstream`` environment); their settings come from :mod:`esam.cli.downstream`'s
parser, which imports no mm* package.

This module imports nothing heavy.
"""

from __future__ import annotations

import fnmatch
import itertools
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from esam.config import ConfigError, read_yaml

#: Folder of the shipped suites: ``esam/configs/suites/<name>.yaml``.
SUITES_DIR = Path(__file__).resolve().parents[1] / "configs" / "suites"

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_RUN_KEYS = (
    "name",
    "task",
    "model",
    "checkpoint",
    "dataset",
    "protocol",
    "overrides",
    "matrix",
    "table",
    "cell",
    "nproc",
)
_TOP_KEYS = (
    "name",
    "description",
    "extends",
    "vars",
    "models",
    "datasets",
    "defaults",
    "runs",
    "cannot",
)
#: Top-level mappings whose entries an extending suite adds to (or replaces in) its base's.
_MERGED_KEYS = ("vars", "models", "datasets", "defaults")


class SuiteError(ConfigError):
    """A suite cannot be used; the message lists every problem found (``problems``)."""


#: Settings the suite sets itself from a run's fields; overrides may not set them.
RESERVED = ("model", "checkpoint", "backbone", "dataset", "protocol", "output")


@dataclass(frozen=True)
class TaskDef:
    """A task a suite may name and the command that runs it.

    Attributes:
        name: the task's name in suites.
        command: subcommand words of ``python -m <module>`` (``("eval", "zeroshot")``);
            ``None``: esam has no harness for the task yet, and ``why_not`` says so.
        output: ``file``: the output flag names the results JSON; ``dir``: a run folder
            holding ``results.json``.
        checkpoint_flag: the harness's flag for the weights file.
        why_not: why a task without a command cannot run.
        module: the module run with ``python -m``: ``esam.cli.main`` (esam's command line) or a
            separately installed package's (``esam_downstream``).
        python_var: the suite variable naming the Python that runs ``module`` (a package of
            another environment); ``None``: the Python running the suite.
        output_flag: the harness's flag for where results go.
        reserved: settings the suite sets from the run's fields (overrides may not).
        launcher: arguments added when the run has ``nproc > 1`` (under torchrun).
        file_options: settings (overrides) that name a file the run reads, such as the
            downstream tasks' trained-head ``checkpoint``: checked for existence before the run
            (a missing one makes it ``not run``) and identified by content in its hash.
        neutral: settings that change how a run goes but not what it measures (loader
            workers, progress bars, how many prompts one decoder call takes): left out of
            its identity, so changing them does not redo a finished run.
        model_key: the ``KEY=VALUE`` key that names the model where the harness has no
            ``--model`` option (``eval imagenet``: ``model.name``), so its results carry the
            suite run's model name, not the weights file's stem.
        hardware_bound: the results are measurements of the machine (throughput): the
            machine's CPU model, core count and GPU name join the run's identity, so the
            same suite on another machine measures again instead of reusing another
            machine's numbers.
    """

    name: str
    command: tuple[str, ...] | None
    output: Literal["file", "dir"] = "file"
    checkpoint_flag: str = "checkpoint"
    why_not: str = ""
    module: str = "esam.cli.main"
    python_var: str | None = None
    output_flag: str = "--output"
    reserved: tuple[str, ...] = RESERVED
    launcher: tuple[str, ...] = ()
    file_options: tuple[str, ...] = ()
    neutral: tuple[str, ...] = ("workers", "progress")
    model_key: str | None = None
    hardware_bound: bool = False


#: The package of the downstream tasks and the suite variable naming the Python that has it.
DOWNSTREAM_MODULE = "esam_downstream"
DOWNSTREAM_PYTHON_VAR = "downstream_python"


def _downstream(task: str) -> TaskDef:
    """``python -m esam_downstream test --task TASK`` in the downstream environment's Python."""
    return TaskDef(
        task,
        ("test", "--task", task),
        output="dir",
        checkpoint_flag="backbone",
        module=DOWNSTREAM_MODULE,
        python_var=DOWNSTREAM_PYTHON_VAR,
        output_flag="--work-dir",
        reserved=("model", "backbone", "dataset", "protocol", "work_dir", "task"),
        launcher=("--launcher", "pytorch"),
        file_options=("checkpoint",),
    )


#: Every task a suite may name.
TASKS: dict[str, TaskDef] = {
    t.name: t
    for t in (
        TaskDef("zeroshot", ("eval", "zeroshot")),
        TaskDef("instseg", ("eval", "instseg")),
        TaskDef(
            "proposals", ("eval", "proposals"), neutral=("workers", "progress", "points_per_batch")
        ),
        TaskDef(
            "throughput",
            ("bench", "throughput"),
            neutral=("no_progress", "worker_timeout"),
            hardware_bound=True,
        ),
        TaskDef(
            "imagenet",
            ("eval", "imagenet"),
            output="dir",
            checkpoint_flag="backbone",
            reserved=(*RESERVED, "model.name"),
            model_key="model.name",
        ),
        _downstream("coco-maskrcnn"),
        _downstream("ade20k-mask2former"),
    )
}


@dataclass(frozen=True)
class OptionInfo:
    """One flag of a harness: ``--flag`` and how a value is written.

    Attributes:
        flag: the option string (``--limit-images``).
        kind: ``value`` (``--flag V``), ``bool`` (``--flag`` / ``--no-flag``), ``switch``
            (``--flag`` when true, nothing when false), ``append`` (``--flag V`` per item)
            or ``list`` (``--flag V1 V2 ...``, an option taking several values).
        choices: the allowed values, when the parser restricts them.
    """

    flag: str
    kind: Literal["value", "bool", "switch", "append", "list"]
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TaskOptions:
    """What a harness's command line accepts: named flags, and whether ``KEY=VALUE`` works."""

    options: Mapping[str, OptionInfo]
    key_value: bool = False


@dataclass
class ResolvedRun:
    """One run of a suite with every variable filled: what runs, on what, with what.

    ``inputs`` maps the harness's data flags (``annotations``, ``images``, ...) to paths;
    ``overrides`` holds the other settings (defaults, matrix values and the run's overrides).
    """

    id: str
    task: str
    model: str
    checkpoint: str | None
    dataset: str | None
    data_format: str | None
    inputs: dict[str, str]
    protocol: str | None
    overrides: dict[str, Any]
    nproc: int = 1
    table: str | None = None
    cell: str | None = None
    python: str | None = None

    @property
    def definition(self) -> TaskDef:
        return TASKS[self.task]


@dataclass(frozen=True)
class CannotCell:
    """A paper cell no run of the suite can fill, and why."""

    table: str
    cell: str
    why: str


@dataclass
class Suite:
    """A validated suite: its resolved runs and the cells it cannot fill."""

    name: str
    description: str
    source: str
    runs: list[ResolvedRun] = field(default_factory=list)
    cannot: list[CannotCell] = field(default_factory=list)

    def select(self, pattern: str | None) -> list[ResolvedRun]:
        """The runs whose id matches ``pattern`` (a glob; plain text matches anywhere)."""
        if not pattern:
            return list(self.runs)
        glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
        return [r for r in self.runs if fnmatch.fnmatchcase(r.id, glob)]


def suite_names() -> list[str]:
    """The shipped suites (``esam/configs/suites/*.yaml`` stems), sorted."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def suite_path(source: str | os.PathLike[str]) -> Path:
    """The file of ``source``: an existing YAML path, or the name of a shipped suite.

    Raises:
        SuiteError: neither.
    """
    text = os.fspath(source)
    p = Path(text)
    if p.suffix in (".yaml", ".yml") or "/" in text or os.sep in text:
        if not p.is_file():
            raise SuiteError([f"suite file {text} not found"])
        return p
    if text in suite_names():
        return SUITES_DIR / f"{text}.yaml"
    raise SuiteError(
        [f"unknown suite {text!r}; shipped suites: {', '.join(suite_names())} (or a YAML path)"]
    )


def builtin_vars() -> dict[str, str]:
    """Variables every suite may use: ``sample_root``, the shipped sample's folder, and
    ``downstream_python``, the Python that runs the downstream tasks (default: this one; the
    downstream environment's is ``.tox/downstream/bin/python``)."""
    import sys

    from esam.data.synthetic import SAMPLE_DIR

    return {"sample_root": str(SAMPLE_DIR), DOWNSTREAM_PYTHON_VAR: sys.executable}


def env_vars(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``ESAM_<NAME>`` environment variables as suite variables (``ESAM_DATA_ROOT`` -> data_root)."""
    env = os.environ if environ is None else environ
    return {k[5:].lower(): v for k, v in env.items() if k.startswith("ESAM_") and len(k) > 5}


def _words(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


class _Collector:
    """Collects problems and fills ``${var}`` references."""

    def __init__(self, variables: Mapping[str, str]) -> None:
        self.variables = dict(variables)
        self.problems: list[str] = []
        self._undefined: dict[str, list[str]] = {}

    def fill(self, value: Any, where: str) -> Any:
        """``value`` with every ``${var}`` replaced (recursively in lists and mappings)."""
        if isinstance(value, str):

            def sub(m: re.Match[str]) -> str:
                name = m.group(1)
                if name in self.variables:
                    return self.variables[name]
                self._undefined.setdefault(name, [])
                if where not in self._undefined[name]:
                    self._undefined[name].append(where)
                return m.group(0)

            return _VAR.sub(sub, value)
        if isinstance(value, list):
            return [self.fill(v, where) for v in value]
        if isinstance(value, dict):
            return {k: self.fill(v, where) for k, v in value.items()}
        return value

    def finish(self) -> list[str]:
        for name, places in self._undefined.items():
            shown = ", ".join(places[:3]) + (
                f" and {len(places) - 3} more" if len(places) > 3 else ""
            )
            flag = {"data_root": "--data-root DIR", "weights_root": "--weights-root DIR"}.get(
                name, f"--var {name}=VALUE"
            )
            self.problems.append(
                f"undefined variable ${{{name}}} (in {shown}): pass {flag} or set "
                f"ESAM_{name.upper()}"
            )
        return self.problems


def _slug(value: Any) -> str:
    text = str(value)
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_") or "x"


def load_suite(
    source: str | os.PathLike[str],
    task_options: Mapping[str, TaskOptions],
    variables: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Suite:
    """Read, validate and resolve a suite.

    Args:
        source: a shipped suite's name or a YAML path.
        task_options: the options of each runnable task's harness (``esam.cli.suite`` builds
            them from the command-line parser).
        variables: variables from the command line (they win over everything else).
        environ: the environment (default: ``os.environ``).

    Raises:
        SuiteError: every problem of the suite at once.
    """
    path = suite_path(source)
    problems: list[str] = []
    data, runs_raw = _read_suite(path, problems)
    suite_vars = data.get("vars") or {}
    if not isinstance(suite_vars, dict):
        problems.append("vars must be a mapping of name: value")
        suite_vars = {}
    merged = {**builtin_vars(), **{str(k): str(v) for k, v in suite_vars.items()}}
    merged.update(env_vars(environ))
    merged.update(variables or {})
    col = _Collector(merged)
    col.problems = problems

    models = _mapping(data, "models", problems)
    datasets = _mapping(data, "datasets", problems)
    defaults = _mapping(data, "defaults", problems)

    runs: list[ResolvedRun] = []
    used_defaults: set[str] = set()
    for where, raw in runs_raw:
        if not isinstance(raw, dict):
            problems.append(f"{where}: expected a mapping, got {type(raw).__name__}")
            continue
        runs += _expand_run(
            raw, where, models, datasets, defaults, task_options, col, used_defaults
        )
    unused = [k for k in defaults if k not in used_defaults]
    if unused and runs:
        problems.append(f"defaults: no run's task takes {', '.join(sorted(unused))}")
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.id] = seen.get(r.id, 0) + 1
    for rid, n in seen.items():
        if n > 1:
            problems.append(f"{n} runs resolve to the same id {rid!r}; give them distinct names")

    cannot: list[CannotCell] = []
    cannot_raw = data.get("cannot") or []
    if not isinstance(cannot_raw, list):
        problems.append("cannot must be a list")
        cannot_raw = []
    for j, c in enumerate(cannot_raw, 1):
        if not isinstance(c, dict) or not all(
            isinstance(c.get(k), str) for k in ("table", "cell", "why")
        ):
            problems.append(f"cannot {j}: expected a mapping with table, cell and why (text)")
            continue
        cannot.append(CannotCell(c["table"], c["cell"], c["why"]))

    col.finish()
    if problems:
        raise SuiteError(problems, source=f"suite {path}")
    return Suite(
        name=str(data.get("name") or path.stem),
        description=str(data.get("description") or ""),
        source=str(path),
        runs=runs,
        cannot=cannot,
    )


def _read_suite(
    path: Path, problems: list[str], chain: tuple[Path, ...] = ()
) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """A suite file's mapping with the suite it ``extends`` merged in, and every run (base
    runs first) with the place it is reported under (``run 2``, ``smoke run 1``)."""
    data = read_yaml(path)
    where = f"{path.stem}: " if chain else ""
    for k in data:
        if k not in _TOP_KEYS:
            problems.append(
                f"{where}unknown top-level key {k!r}; expected one of {', '.join(_TOP_KEYS)}"
            )
    own = data.get("runs") or []
    if not isinstance(own, list):
        problems.append(f"{where}runs must be a list")
        own = []
    runs = [(f"{path.stem} run {i}" if chain else f"run {i}", raw) for i, raw in enumerate(own, 1)]
    base = data.get("extends")
    if base is None:
        return data, runs
    if not isinstance(base, str) or not base:
        problems.append(f"{where}extends must name a suite (a shipped suite or a YAML path)")
        return data, runs
    chain = (*chain, path.resolve())
    try:
        base_path = suite_path(_relative_to(base, path.parent))
    except SuiteError as e:
        problems += [f"{where}extends: {p}" for p in e.problems]
        return data, runs
    if base_path.resolve() in chain:
        cycle = " -> ".join(p.stem for p in (*chain, base_path))
        problems.append(f"{where}extends {base!r} makes a cycle ({cycle})")
        return data, runs
    base_data, base_runs = _read_suite(base_path, problems, chain)
    merged = dict(data)
    for key in _MERGED_KEYS:
        inherited, own_value = base_data.get(key) or {}, data.get(key) or {}
        if not isinstance(inherited, dict):
            problems.append(f"{base_path.stem}: {key} must be a mapping")
        elif isinstance(own_value, dict):  # else the checks of the merged suite report it
            merged[key] = {**inherited, **own_value}
    base_cannot, own_cannot = base_data.get("cannot") or [], data.get("cannot") or []
    if not isinstance(base_cannot, list):
        problems.append(f"{base_path.stem}: cannot must be a list")
    elif isinstance(own_cannot, list):
        merged["cannot"] = [*base_cannot, *own_cannot]
    return merged, [*base_runs, *runs]


def _relative_to(source: str, folder: Path) -> str:
    """A relative suite path read from ``folder``; a shipped suite's name unchanged."""
    p = Path(source)
    is_path = p.suffix in (".yaml", ".yml") or "/" in source or os.sep in source
    return str(folder / p) if is_path and not p.is_absolute() else source


def _mapping(data: Mapping[str, Any], key: str, problems: list[str]) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        problems.append(f"{key} must be a mapping")
        return {}
    return value


def _expand_run(
    raw: dict[str, Any],
    where: str,
    models: dict[str, Any],
    datasets: dict[str, Any],
    defaults: dict[str, Any],
    task_options: Mapping[str, TaskOptions],
    col: _Collector,
    used_defaults: set[str],
) -> list[ResolvedRun]:
    """The runs one suite entry stands for (lists and ``matrix`` expanded), checked."""
    problems = col.problems
    n_before = len(problems)
    for k in raw:
        if k not in _RUN_KEYS:
            problems.append(f"{where}: unknown key {k!r}; expected one of {', '.join(_RUN_KEYS)}")
    task = raw.get("task")
    if task not in TASKS:
        problems.append(f"{where}: unknown task {task!r}; choose from {', '.join(TASKS)}")
        return []
    where = f"{where} ({task})"
    tdef = TASKS[task]
    opts = task_options.get(task) if tdef.command is not None else None
    if tdef.command is not None and opts is None:
        problems.append(f"{where}: the options of task {task} are not known")
        return []
    overrides = raw.get("overrides") or {}
    matrix = raw.get("matrix") or {}
    if not isinstance(overrides, dict) or not isinstance(matrix, dict):
        problems.append(f"{where}: overrides and matrix must be mappings")
        return []
    if "model" not in raw:
        problems.append(f"{where}: no model")
    nproc = raw.get("nproc", 1)
    if not isinstance(nproc, int) or nproc < 1:
        problems.append(f"{where}: nproc must be a positive integer, got {nproc!r}")
        nproc = 1
    axes: dict[str, list[Any]] = {
        "model": _words(raw.get("model")),
        "dataset": _words(raw.get("dataset")),
        "protocol": _words(raw.get("protocol")),
    }
    for key, values in matrix.items():
        axes[f"overrides.{key}"] = _words(values)
    if opts is not None:
        for key in [*overrides, *matrix]:
            _check_key(key, where, opts, problems, tdef.reserved)
        if any(v is not None for v in axes["protocol"]):
            proto = opts.options.get("protocol")
            if proto is None:
                problems.append(f"{where}: task {task} takes no protocol preset")
            elif proto.choices is not None:
                for p in axes["protocol"]:
                    if p not in proto.choices:
                        problems.append(
                            f"{where}: unknown protocol preset {p!r}; choose from "
                            f"{', '.join(proto.choices)}"
                        )
    for d in axes["dataset"]:
        if d is not None and d not in datasets:
            problems.append(
                f"{where}: unknown dataset {d!r}; defined: {', '.join(datasets) or 'none'}"
            )
    if len(problems) > n_before:
        return []

    out: list[ResolvedRun] = []
    names = list(axes)
    for combo in itertools.product(*(axes[n] for n in names)):
        chosen = dict(zip(names, combo, strict=True))
        run_overrides: dict[str, Any] = {}
        if opts is not None:
            for k, v in defaults.items():
                if k in opts.options:
                    run_overrides[k] = v
                    used_defaults.add(k)
        run_overrides.update(overrides)
        for k, v in chosen.items():
            if k.startswith("overrides."):
                run_overrides[k.removeprefix("overrides.")] = v
        model_key = str(chosen["model"])
        entry = models.get(model_key)
        if isinstance(entry, dict):
            model = str(entry.get("model", model_key))
            checkpoint = entry.get("checkpoint")
        else:
            model, checkpoint = model_key, None
        if raw.get("checkpoint") is not None:
            checkpoint = raw["checkpoint"]
        ds_name = chosen["dataset"]
        ds = dict(datasets.get(ds_name) or {}) if ds_name is not None else {}
        data_format = ds.pop("format", None)
        inputs: dict[str, str] = {}
        for k, v in ds.items():
            if opts is None or k in opts.options:
                inputs[k] = str(v)
        if opts is not None and data_format is not None and "dataset" not in opts.options:
            data_format = None
        label = [task, model_key]
        if ds_name is not None:
            label.append(str(ds_name))
        if chosen["protocol"] is not None:
            label.append(str(chosen["protocol"]))
        label += [
            f"{k.removeprefix('overrides.')}={_slug(v)}"
            for k, v in chosen.items()
            if k.startswith("overrides.")
        ]
        single = math.prod(len(v) for v in axes.values()) == 1
        rid = str(raw["name"]) if raw.get("name") and single else "/".join(map(_slug, label))
        fmt_values = {k.removeprefix("overrides."): v for k, v in chosen.items()}
        cell = raw.get("cell")
        if isinstance(cell, str):
            try:
                cell = cell.format_map(fmt_values)
            except (KeyError, IndexError, ValueError) as e:
                problems.append(f"{where}: cell label {cell!r} names an unknown field: {e}")
        run_where = f"{where} [{rid}]"
        filled_overrides = col.fill(run_overrides, run_where)
        if opts is not None:
            for k, v in filled_overrides.items():
                info = opts.options.get(k)
                if info is not None and info.choices is not None and str(v) not in info.choices:
                    problems.append(
                        f"{run_where}: {k}={v!r} is not one of {', '.join(info.choices)}"
                    )
        out.append(
            ResolvedRun(
                id=rid,
                task=task,
                model=col.fill(model, run_where),
                checkpoint=col.fill(str(checkpoint), run_where) if checkpoint is not None else None,
                dataset=str(ds_name) if ds_name is not None else None,
                data_format=str(data_format) if data_format is not None else None,
                inputs={k: col.fill(v, run_where) for k, v in inputs.items()},
                protocol=str(chosen["protocol"]) if chosen["protocol"] is not None else None,
                overrides=filled_overrides,
                nproc=nproc,
                table=str(raw["table"]) if raw.get("table") is not None else None,
                cell=str(cell) if cell is not None else None,
                python=(
                    col.fill(f"${{{tdef.python_var}}}", run_where)
                    if tdef.python_var is not None
                    else None
                ),
            )
        )
    return out


def _check_key(
    key: str, where: str, opts: TaskOptions, problems: list[str], reserved: tuple[str, ...]
) -> None:
    if key in reserved:
        problems.append(f"{where}: {key!r} is set from the run's own fields, not overrides")
    elif key not in opts.options and not (opts.key_value and "." in key):
        import difflib

        close = difflib.get_close_matches(key, list(opts.options), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(f"{where}: unknown setting {key!r}{hint}")
