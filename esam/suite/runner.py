"""Running a suite: one fresh ``esam`` process per run, results named by what they measured.

Each run's results file is ``<out>/<task>/<run id>-<key>.json`` (a folder for run-folder tasks),
where ``key`` is the first 12 hex digits of the SHA-256 of the run's resolved identity: task,
model, checkpoint SHA-256, the SHA-256 of each data file (annotations, detections, ...), data
format, protocol and the settings that change what is measured (not loader workers or progress
bars), and for throughput the machine (:func:`run_identity`). A results file already there means the
run was done with identical inputs and is skipped; changed inputs give a new name, so the run
is done again and the file it replaces is removed.

Every run ends in one of these states, kept in the suite's ledger
(``<out>/<suite>.ledger.json``, rewritten atomically after each run):

* ``ok``: ran now and wrote its results; ``done``: skipped, the results were already there;
* ``not run``: an input is missing (``not run: missing checkpoint /w/x.pt``), esam has no
  harness for the task, or the Python meant to run it lacks its package (a downstream task
  whose ``${downstream_python}`` has no ``esam_downstream``);
* ``failed``: the process failed; the reason is its one-line error (its full output is kept in
  ``<out>/logs/``).

The ledger's ``not_run`` list (run, task, model, dataset, status, reason) is what the report
layer reads for its "Not run" table; the report never imports this package.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esam.suite.spec import ResolvedRun, Suite, TaskOptions
from esam.utils.io import sha256_file, write_json_atomic
from esam.utils.meta import hardware_info, utc_now

log = logging.getLogger(__name__)

#: Version of the ledger layout (``format`` key).
LEDGER_FORMAT = 1
#: States in which a run counts as having run.
RAN = ("ok", "done")
#: Side files a results file may have (removed with it when it is superseded).
_SIDE_SUFFIXES = (".rows.jsonl", ".segm.json")


def ledger_path(out: Path, suite: Suite) -> Path:
    """The suite's ledger in ``out``."""
    return out / f"{suite.name}.ledger.json"


@dataclass
class RunRecord:
    """What happened to one run."""

    run: ResolvedRun
    status: str
    reason: str = ""
    output: Path | None = None
    key: str | None = None
    command: list[str] = field(default_factory=list)
    seconds: float | None = None
    log: Path | None = None
    machine: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        r = self.run
        return {
            "task": r.task,
            "model": r.model,
            "dataset": r.dataset,
            "protocol": r.protocol,
            "table": r.table,
            "cell": r.cell,
            "status": self.status,
            "reason": self.reason,
            "key": self.key,
            "output": str(self.output) if self.output is not None else None,
            "command": shlex.join(self.command) if self.command else None,
            "seconds": self.seconds,
            "log": str(self.log) if self.log is not None else None,
            "machine": self.machine,
        }


class _HashCache:
    """SHA-256 of files, computed once per (path, size, mtime) and kept in the ledger."""

    def __init__(self, known: dict[str, Any] | None = None) -> None:
        self.known: dict[str, Any] = dict(known or {})
        self._lock = threading.Lock()

    def sha256(self, path: Path) -> str:
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        key = str(path.resolve())
        with self._lock:
            hit = self.known.get(key)
            if isinstance(hit, dict) and hit.get("stamp") == stamp:
                return str(hit["sha256"])
        digest = sha256_file(path)
        with self._lock:
            self.known[key] = {"stamp": stamp, "sha256": digest}
        return digest


def missing_inputs(run: ResolvedRun) -> list[str]:
    """What a run needs that is not there (checkpoint, data files or folders)."""
    missing = []
    if run.checkpoint is not None and not Path(run.checkpoint).exists():
        missing.append(f"checkpoint {run.checkpoint}")
    for key, value in run.inputs.items():
        if not Path(value).exists():
            missing.append(f"{key} {value}")
    for key in run.definition.file_options:
        path = run.overrides.get(key)
        if path is not None and not Path(str(path)).exists():
            missing.append(f"{key} {path}")
    return missing


def run_identity(run: ResolvedRun, hashes: _HashCache) -> dict[str, Any]:
    """Everything that decides a run's numbers; its hash names the results file.

    Files are identified by content (SHA-256), folders by path. The task's neutral settings
    (workers, progress) are left out; a hardware-bound task's identity holds the machine
    (:func:`machine_identity`).
    """

    def ident(value: str) -> str:
        p = Path(value)
        return f"sha256:{hashes.sha256(p)}" if p.is_file() else f"path:{value}"

    tdef = run.definition
    identity: dict[str, Any] = {
        "task": run.task,
        "model": run.model,
        "checkpoint_sha256": ident(run.checkpoint) if run.checkpoint is not None else None,
        "format": run.data_format,
        "inputs": {k: ident(v) for k, v in sorted(run.inputs.items())},
        "protocol": run.protocol,
        "overrides": {
            k: ident(str(v)) if k in tdef.file_options else v
            for k, v in sorted(run.overrides.items())
            if k not in tdef.neutral
        },
        "nproc": run.nproc,
    }
    if tdef.hardware_bound:
        identity["machine"] = machine_identity(str(run.overrides.get("device", "cpu")))
    return identity


@functools.lru_cache(maxsize=8)
def machine_identity(device: str) -> dict[str, Any]:
    """What a measurement of speed or memory depends on: the CPU model and its logical core
    count, and for a CUDA device the GPU's name and memory."""
    info = hardware_info(device)
    keys = ("cpu_model", "cpu_cores", "gpu_name", "gpu_memory_gib")
    return {k: info[k] for k in keys if k in info}


def identity_key(identity: dict[str, Any]) -> str:
    """The first 12 hex digits of the SHA-256 of an identity's canonical JSON."""
    text = json.dumps(identity, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def output_path(out: Path, run: ResolvedRun, key: str) -> Path:
    """Where a run writes: ``<out>/<task>/<id>-<key>.json`` (or a folder for run-folder tasks)."""
    stem = run.id.replace("/", "_")
    if run.definition.output == "dir":
        return out / run.task / f"{stem}-{key}"
    return out / run.task / f"{stem}-{key}.json"


def results_file(output: Path, run: ResolvedRun) -> Path:
    """The results JSON of a run's output."""
    return output / "results.json" if run.definition.output == "dir" else output


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def build_argv(run: ResolvedRun, opts: TaskOptions, output: Path) -> list[str]:
    """The ``esam`` arguments of a run (without the program)."""
    tdef = run.definition
    assert tdef.command is not None
    argv = list(tdef.command)
    if "model" in opts.options:
        argv += ["--model", run.model]
    elif tdef.model_key is not None:
        argv.append(f"{tdef.model_key}={run.model}")
    if run.checkpoint is not None:
        argv += [opts.options[tdef.checkpoint_flag].flag, run.checkpoint]
    if run.data_format is not None:
        argv += ["--dataset", run.data_format]
    for key, value in run.inputs.items():
        argv += [opts.options[key].flag, value]
    if run.protocol is not None:
        argv += ["--protocol", run.protocol]
    tail: list[str] = []
    for key, value in run.overrides.items():
        info = opts.options.get(key)
        if info is None:  # a dotted KEY=VALUE (validated against the parser already)
            tail.append(f"{key}={_value_text(value)}")
        elif info.kind == "bool":
            argv.append(info.flag if value else "--no-" + info.flag[2:])
        elif info.kind == "switch":
            if value:
                argv.append(info.flag)
        elif info.kind == "append":
            for item in value if isinstance(value, list) else [value]:
                argv += [info.flag, _value_text(item)]
        elif info.kind == "list":
            argv += [info.flag, *(_value_text(v) for v in _as_list(value))]
        else:
            argv += [info.flag, _value_text(value)]
    argv += [tdef.output_flag, str(output)]
    if tdef.output == "dir" and "resume" in opts.options:
        # an interrupted run continues from its checkpoints (a new folder starts fresh); not
        # part of the run's identity, which names what it computes
        argv.append(opts.options["resume"].flag)
    return argv + tail


def command_of(run: ResolvedRun, argv: Sequence[str]) -> list[str]:
    """The full command line: ``python -m <module> ...`` (``esam.cli.main`` for esam's own
    tasks), under torchrun for nproc > 1; a downstream task's Python is ``run.python``."""
    tdef = run.definition
    python = run.python or sys.executable
    if run.nproc > 1:
        return [
            python,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={run.nproc}",
            "-m",
            tdef.module,
            *argv,
            *tdef.launcher,
        ]
    return [python, "-m", tdef.module, *argv]


_HAS_MODULE: dict[tuple[str, str], str] = {}


def missing_package(run: ResolvedRun) -> str:
    """Why ``run.python`` cannot run the task's module (``""`` when it can).

    Checked once per (Python, module) in a subprocess that only looks the module up
    (``importlib.util.find_spec``), so nothing of it is imported here.
    """
    tdef = run.definition
    if run.python is None or tdef.module == "esam.cli.main":
        return ""
    key = (run.python, tdef.module)
    if key not in _HAS_MODULE:
        if shutil.which(run.python) is None and not Path(run.python).is_file():
            _HAS_MODULE[key] = f"Python {run.python} ({tdef.python_var}) not found"
        else:
            probe = (
                "import importlib.util, sys; "
                f"sys.exit(importlib.util.find_spec({tdef.module!r}) is None)"
            )
            rc = subprocess.run([run.python, "-c", probe], capture_output=True, check=False)
            _HAS_MODULE[key] = (
                ""
                if rc.returncode == 0
                else f"{tdef.module} is not installed for {run.python}: install downstream/ "
                f"there, or pass --var {tdef.python_var}=PYTHON of an environment that has it "
                "(tox -e downstream builds .tox/downstream/bin/python)"
            )
    return _HAS_MODULE[key]


def one_line_error(text: str) -> str:
    """The error line of a failed ``esam`` process (its last ``error:`` line, else its last line)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "error:" in ln.lower() or ln.split(":", 1)[0].endswith(("Error", "Exception")):
            return ln
    return lines[-1] if lines else "no output"


@dataclass
class SuiteResult:
    """Every run's record, in suite order, and the ledger written."""

    records: list[RunRecord]
    ledger: Path | None

    @property
    def complete(self) -> bool:
        """Whether every run ran (now or before)."""
        return all(r.status in RAN for r in self.records)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.records:
            out[r.status] = out.get(r.status, 0) + 1
        return out


def plan_run(
    run: ResolvedRun, opts: TaskOptions | None, out: Path, hashes: _HashCache
) -> RunRecord:
    """The record of a run before it runs: ``not run`` (why), ``done``, or ``pending``."""
    tdef = run.definition
    if tdef.command is None or opts is None:
        return RunRecord(run, "not run", f"not run: {tdef.why_not}")
    why = missing_package(run)
    if why:
        return RunRecord(run, "not run", f"not run: {why}")
    missing = missing_inputs(run)
    if missing:
        return RunRecord(run, "not run", f"not run: missing {'; '.join(missing)}")
    identity = run_identity(run, hashes)
    key = identity_key(identity)
    output = output_path(out, run, key)
    argv = build_argv(run, opts, output)
    status = "done" if _complete_results(results_file(output, run)) else "pending"
    return RunRecord(
        run,
        status,
        output=output,
        key=key,
        command=command_of(run, argv),
        machine=identity.get("machine"),
    )


def _complete_results(path: Path) -> bool:
    """A results file that exists, parses and is not marked ``"complete": false`` (a sweep
    rewrites its file after each configuration, so a killed one leaves a partial file)."""
    if not path.is_file():
        return False
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict) and obj.get("complete", True) is not False


def _execute(record: RunRecord, out: Path, timeout: float | None) -> None:
    """Run one pending record in a fresh process; sets its status, reason and timing."""
    run = record.run
    assert record.output is not None and record.key is not None
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    record.log = logs / f"{run.id.replace('/', '_')}-{record.key}.log"
    env = dict(os.environ)
    t0 = time.perf_counter()
    text, rc = _run_in_own_group(record.command, env, timeout)  # rc None: timed out
    record.seconds = round(time.perf_counter() - t0, 3)
    record.log.write_text(shlex.join(record.command) + "\n\n" + text, encoding="utf-8")
    if rc is None:
        record.status, record.reason = "failed", f"timed out after {timeout} s"
        _remove_results(record.output, run)
    elif rc != 0:
        record.status, record.reason = "failed", one_line_error(text)
        # whatever results it left (a sweep's partial file, a file written before a failing
        # exit) must not count as done next time; a run folder keeps its checkpoints
        _remove_results(record.output, run)
    elif not results_file(record.output, run).is_file():
        record.status = "failed"
        record.reason = f"exited 0 but wrote no results file {results_file(record.output, run)}"
    else:
        record.status = "ok"


#: Seconds a timed-out run's processes get between SIGTERM and SIGKILL.
KILL_GRACE_S = 10.0

# The runs' processes alive now (each the leader of its own session), so that an interrupted
# suite stops them: started in their own sessions, they do not get the terminal's Ctrl-C.
_LIVE: dict[int, subprocess.Popen[str]] = {}
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()


def _signal_group(proc: subprocess.Popen[str], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _stop_groups(procs: Sequence[subprocess.Popen[str]], grace_s: float) -> None:
    """SIGTERM to each process group (torchrun then stops its ranks, which live in sessions of
    their own), up to ``grace_s`` seconds for all of them, then SIGKILL to what is left."""
    import signal

    for proc in procs:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        _signal_group(proc, signal.SIGKILL)


def stop_all_runs(grace_s: float = KILL_GRACE_S) -> None:
    """Stop every run's process group (:func:`_stop_groups`); no new run starts."""
    _STOPPING.set()
    with _LIVE_LOCK:
        procs = list(_LIVE.values())
    _stop_groups(procs, grace_s)


def _run_in_own_group(
    command: Sequence[str], env: dict[str, str], timeout: float | None
) -> tuple[str, int | None]:
    """Run ``command`` in a new session; on timeout stop its whole process group (workers,
    torchrun's children), SIGTERM first. Returns (output, exit code; None on timeout)."""
    proc = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    with _LIVE_LOCK:
        _LIVE[proc.pid] = proc
    try:
        return _wait_for(proc, timeout)
    finally:
        with _LIVE_LOCK:
            _LIVE.pop(proc.pid, None)


def _wait_for(proc: subprocess.Popen[str], timeout: float | None) -> tuple[str, int | None]:
    import signal

    try:
        out, _ = proc.communicate(timeout=timeout)
        return out or "", proc.returncode
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGTERM)
        try:  # the output is collected while the group stops
            out, _ = proc.communicate(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            out = None  # collected below, once the group is killed
        _signal_group(proc, signal.SIGKILL)  # the rest, and children that outlived it
        if out is None:
            out, _ = proc.communicate()
        return (out or "") + f"\ntimed out after {timeout} s", None
    except BaseException:  # an interrupt: stop the group as a timeout does
        _stop_groups([proc], KILL_GRACE_S)
        raise


def _remove_results(output: Path, run: ResolvedRun) -> None:
    """Delete the results a failed run left: its results file with its side files (the
    folder's other files, such as checkpoints, stay for a resume)."""
    _remove_results_file(results_file(output, run))


def _remove_results_file(path: Path) -> None:
    """Delete a results file and its side files (those that exist)."""
    for p in [path, *(path.with_name(path.stem + s) for s in _SIDE_SUFFIXES)]:
        p.unlink(missing_ok=True)


def _remove_output(path: Path) -> None:
    """Delete a superseded results file (with its side files) or run folder."""
    if path.is_dir():
        shutil.rmtree(path)
        return
    _remove_results_file(path)


def run_suite(
    suite: Suite,
    task_options: dict[str, TaskOptions],
    out: str | os.PathLike[str],
    *,
    only: str | None = None,
    jobs: int = 1,
    timeout: float | None = None,
    on_record: Callable[[int, int, RunRecord], None] | None = None,
) -> SuiteResult:
    """Run the selected runs of ``suite`` into ``out`` and write its ledger.

    Args:
        suite: a validated suite.
        task_options: each task's harness options (as given to the suite's loader).
        out: results folder.
        only: run only the runs whose id matches (see :meth:`Suite.select`).
        jobs: runs at once (each in its own process).
        timeout: seconds before a run's process is killed (recorded as failed).
        on_record: called with (index, total, record) as each run finishes or is skipped.
    """
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    ledger_file = ledger_path(root, suite)
    previous = _read_ledger(ledger_file)
    hashes = _HashCache(previous.get("file_hashes"))
    prev_runs: dict[str, Any] = (
        previous.get("runs", {}) if previous.get("suite") == suite.name else {}
    )
    selected = suite.select(only)
    records = [plan_run(r, task_options.get(r.task), root, hashes) for r in selected]
    entries: dict[str, Any] = {r.id: prev_runs[r.id] for r in suite.runs if r.id in prev_runs}
    lock = threading.Lock()
    total = len(records)
    finished = 0

    def settle(record: RunRecord) -> None:
        nonlocal finished
        with lock:
            old = entries.get(record.run.id) or {}
            old_output = old.get("output") or old.get("kept_output")
            entry = record.to_json()
            if old_output and record.output is not None and Path(old_output) != record.output:
                if old.get("machine") != record.machine:
                    # measured on another machine: those numbers stay valid for it
                    log.info(
                        "%s: measured on another machine before; keeping %s",
                        record.run.id,
                        old_output,
                    )
                else:
                    # the inputs changed: the old results describe other inputs, whether or
                    # not the new run succeeds
                    log.info("%s: inputs changed; removing %s", record.run.id, old_output)
                    _remove_output(Path(old_output))
            elif old_output and record.output is None:
                # not run here (inputs or packages missing): the last results stay, tracked
                entry["kept_output"] = old_output
            entries[record.run.id] = entry
            finished += 1
            _write_ledger(ledger_file, suite, entries, hashes)
            if on_record is not None:
                on_record(finished, total, record)

    pending = [r for r in records if r.status == "pending"]
    for r in records:
        if r.status != "pending":
            settle(r)

    def work(record: RunRecord) -> None:
        if _STOPPING.is_set():
            return  # the suite is being interrupted: start nothing new
        _execute(record, root, timeout)
        settle(record)

    _STOPPING.clear()
    with _sigterm_as_interrupt():
        if jobs <= 1:
            for r in pending:
                work(r)
        else:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(work, r) for r in pending]
                try:
                    for future in futures:
                        future.result()
                except BaseException:  # Ctrl-C or SIGTERM: stop the running jobs, then leave
                    for future in futures:
                        future.cancel()
                    stop_all_runs()
                    raise
    _write_ledger(ledger_file, suite, entries, hashes)
    return SuiteResult(records, ledger_file)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Any:
    """In the main thread, turn SIGTERM into KeyboardInterrupt while the suite runs, so that a
    terminated suite stops its runs' processes as Ctrl-C does."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _read_ledger(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("ignoring unreadable ledger %s", path)
        return {}
    return data if isinstance(data, dict) else {}


def _write_ledger(path: Path, suite: Suite, entries: dict[str, Any], hashes: _HashCache) -> None:
    # in the suite's order, whatever order the runs finished in (--jobs)
    entries = {r.id: entries[r.id] for r in suite.runs if r.id in entries}
    not_run = [
        {"run": rid, **{k: e.get(k) for k in ("task", "model", "dataset", "status", "reason")}}
        for rid, e in entries.items()
        if e.get("status") not in RAN
    ]
    write_json_atomic(
        path,
        {
            "format": LEDGER_FORMAT,
            "kind": "esam suite ledger",
            "suite": suite.name,
            "source": suite.source,
            "updated": utc_now(),
            "runs": entries,
            "not_run": not_run,
            "file_hashes": hashes.known,
        },
    )
