"""``esam suite``: run a named benchmark suite (many harness runs) and report it.

Subcommands::

    esam suite run SUITE --out RESULTS_DIR [--data-root DIR] [--weights-root DIR]
                   [--var NAME=VALUE] [--only PATTERN] [--dry-run] [--report REPORT_DIR]
                   [--jobs N] [--timeout SECONDS]
    esam suite report RESULTS_DIR --out REPORT_DIR
    esam suite list

SUITE is a shipped suite (``esam suite list``) or a YAML file (docs/suites.md). Every run is
an ``esam`` command in a fresh process; a second invocation skips the runs already done with
identical inputs. The exit status is 0 only when every run ran.

The harnesses' settings are read from their own parsers here, in the command-line layer
(:func:`task_options`), and handed to :mod:`esam.suite` as data: the suite validates a run's
keys against exactly what its command accepts, without importing the harness packages.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from esam.errors import InputError

if TYPE_CHECKING:
    from esam.suite.spec import TaskOptions


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``esam suite`` with its ``run``, ``report`` and ``list`` subcommands."""
    p = sub.add_parser(
        "suite",
        help="run a benchmark suite (e.g. the paper's tables) and report it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tasks = p.add_subparsers(dest="suite_task", metavar="TASK", required=True)
    r = tasks.add_parser("run", help="run a suite's runs, skipping those already done")
    r.add_argument("suite", metavar="SUITE", help="shipped suite name or YAML file")
    r.add_argument("--out", required=True, metavar="RESULTS_DIR", help="results folder")
    r.add_argument("--data-root", metavar="DIR", help="value of ${data_root}")
    r.add_argument("--weights-root", metavar="DIR", help="value of ${weights_root}")
    r.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="value of ${NAME} (repeatable; wins over ESAM_NAME and the suite's vars)",
    )
    r.add_argument("--only", metavar="PATTERN", help="runs whose id matches (glob or text)")
    r.add_argument("--dry-run", action="store_true", help="print the resolved commands only")
    r.add_argument("--report", metavar="REPORT_DIR", help="build the report here afterwards")
    r.add_argument("--jobs", type=int, default=1, metavar="N", help="runs at once (default: 1)")
    r.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="kill a run after this long (failed)"
    )
    r.set_defaults(func=run_cli)

    rep = tasks.add_parser("report", help="build the report of a suite's results folder")
    rep.add_argument("results", metavar="RESULTS_DIR")
    rep.add_argument("--out", required=True, metavar="REPORT_DIR")
    rep.set_defaults(func=report_cli)

    ls = tasks.add_parser("list", help="list the shipped suites")
    ls.set_defaults(func=list_cli)


def _subparser(parser: argparse.ArgumentParser, word: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and word in action.choices:
            sub: argparse.ArgumentParser = action.choices[word]
            return sub
    raise KeyError(word)


def parser_options(parser: argparse.ArgumentParser) -> TaskOptions:
    """The :class:`~esam.suite.spec.TaskOptions` of one harness's parser."""
    from esam.suite.spec import OptionInfo, TaskOptions

    options: dict[str, OptionInfo] = {}
    key_value = False
    for action in parser._actions:
        if not action.option_strings:
            key_value = key_value or (action.nargs == "*" and action.dest == "overrides")
            continue
        longs = [s for s in action.option_strings if s.startswith("--") and s != "--help"]
        if not longs:
            continue
        flag = longs[0]
        kind: Literal["value", "bool", "switch", "append", "list"]
        if isinstance(action, argparse.BooleanOptionalAction):
            kind = "bool"
        elif isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            kind = "switch"
        elif isinstance(action, argparse._AppendAction):
            kind = "append"
        elif action.nargs in ("*", "+"):
            kind = "list"
        else:
            kind = "value"
        choices = tuple(str(c) for c in action.choices) if action.choices else None
        options[flag[2:].replace("-", "_")] = OptionInfo(flag, kind, choices)
    return TaskOptions(options, key_value)


def task_options() -> dict[str, TaskOptions]:
    """Each runnable task's options, read from the ``esam`` parser (imagenet: its own parser)."""
    from esam.cli.downstream import parser as downstream_parser
    from esam.cli.imagenet import parser as imagenet_parser
    from esam.cli.main import build_parser
    from esam.suite.spec import DOWNSTREAM_MODULE, TASKS

    root = build_parser()
    out: dict[str, TaskOptions] = {}
    for name, tdef in TASKS.items():
        if tdef.command is None:
            continue
        if tdef.command == ("eval", "imagenet"):
            out[name] = parser_options(imagenet_parser())
            continue
        if tdef.module == DOWNSTREAM_MODULE:  # esam_downstream's parser, defined in esam
            out[name] = parser_options(downstream_parser())
            continue
        p = root
        for word in tdef.command:
            p = _subparser(p, word)
        out[name] = parser_options(p)
    return out


def _variables(args: argparse.Namespace) -> dict[str, str]:
    variables: dict[str, str] = {}
    if args.data_root:
        variables["data_root"] = args.data_root
    if args.weights_root:
        variables["weights_root"] = args.weights_root
    bad = []
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            bad.append(item)
        else:
            variables[name.strip()] = value
    if bad:
        raise InputError(f"--var takes NAME=VALUE, got {', '.join(map(repr, bad))}")
    return variables


def run_cli(args: argparse.Namespace) -> int:
    from esam.suite import load_suite, run_suite
    from esam.suite.runner import build_argv, command_of, missing_package, output_path

    if args.jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {args.jobs}")
    opts = task_options()
    suite = load_suite(args.suite, opts, _variables(args))
    selected = suite.select(args.only)
    if not selected:
        raise InputError(f"no run of suite {suite.name} matches --only {args.only!r}")
    out = Path(args.out)
    if args.dry_run:
        cannot = []
        print(f"# suite {suite.name}: {len(selected)} runs ({suite.source})")
        for run in selected:
            label = f"{run.table}: {run.cell}" if run.table else run.id
            if run.definition.command is None:
                cannot.append((label, run.definition.why_not))
                continue
            output = output_path(out, run, "KEY")
            cmd = command_of(run, build_argv(run, opts[run.task], output))
            if cmd[0] == sys.executable:
                cmd[0] = "python"
            print(f"# {label}\n{shlex.join(cmd)}")
            why = missing_package(run)
            if why:
                print(f"#   not run here: {why}")
        cannot += [(f"{c.table}: {c.cell}", c.why) for c in suite.cannot]
        if cannot:
            print(f"\n# cells this suite cannot produce ({len(cannot)}):")
            for label, why in cannot:
                print(f"#   {label}: {why}")
        return 0

    def show(i: int, n: int, record: object) -> None:
        from esam.suite.runner import RunRecord

        assert isinstance(record, RunRecord)
        took = f" in {record.seconds:.1f} s" if record.seconds is not None else ""
        why = f": {record.reason}" if record.reason else ""
        print(f"[{i}/{n}] {record.run.id}: {record.status}{took}{why}", flush=True)

    result = run_suite(
        suite,
        opts,
        out,
        only=args.only,
        jobs=args.jobs,
        timeout=args.timeout,
        on_record=show,
    )
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.counts().items()))
    print(f"suite {suite.name}: {counts}; ledger {result.ledger}")
    if args.report:
        rc = _report(out, Path(args.report))
        if rc != 0:
            return rc
    return 0 if result.complete else 1


def _report(results: Path, out: Path) -> int:
    """``esam report`` on a suite's results folder, in a fresh process."""
    cmd = [sys.executable, "-m", "esam.cli.main", "report", "--results", str(results)]
    return subprocess.run([*cmd, "--out", str(out)], check=False).returncode


def report_cli(args: argparse.Namespace) -> int:
    results = Path(args.results)
    if not results.is_dir():
        raise InputError(f"results folder {results} not found")
    return _report(results, Path(args.out))


def list_cli(args: argparse.Namespace) -> int:
    from esam.config import read_yaml
    from esam.suite.spec import suite_names, suite_path

    for name in suite_names():
        data = read_yaml(suite_path(name))
        print(f"{name:<16} {data.get('description', '')}")
    return 0
