"""Running suites end to end on the shipped sample: resume, reruns on changed data, failures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from esam.cli.main import main
from esam.data.synthetic import SAMPLE_DIR, sample_paths

SUITE = """
name: t
datasets:
  a: {format: coco, annotations: "${ann}", images: "${sample_root}/images",
      detections: "${sample_root}/detections.json"}
  b: {format: coco, annotations: "${sample_root}/annotations/instances.json",
      images: "${sample_root}/images"}
defaults: {workers: 0, progress: false, limit_images: 2}
runs:
  - {task: zeroshot, model: box_fill, dataset: [a, b], protocol: efficientsam}
  - {task: instseg, model: box_fill, dataset: a}
"""


def _ledger(out: Path, name: str = "t") -> dict:
    return json.loads((out / f"{name}.ledger.json").read_text())


def _statuses(out: Path, name: str = "t") -> dict[str, str]:
    return {rid: e["status"] for rid, e in _ledger(out, name)["runs"].items()}


def test_suite_runs_resumes_and_reruns_exactly_the_changed_runs(tmp_path: Path) -> None:
    ann = tmp_path / "a.json"
    shutil.copy(sample_paths()[0], ann)
    suite = tmp_path / "t.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "results"
    argv = ["suite", "run", str(suite), "--out", str(out), "--var", f"ann={ann}"]

    assert main(argv) == 0
    first = _ledger(out)["runs"]
    assert set(_statuses(out).values()) == {"ok"}
    assert len(first) == 3
    for entry in first.values():
        assert Path(entry["output"]).is_file()
        assert json.loads(Path(entry["output"]).read_text())["task"] in ("zeroshot", "instseg")

    assert main(argv) == 0  # nothing changed: every run is skipped
    assert set(_statuses(out).values()) == {"done"}

    data = json.loads(ann.read_text())
    ann.write_text(json.dumps(data, indent=1))  # same content, new bytes: a new sha256
    assert main(argv) == 0
    statuses = _statuses(out)
    assert statuses == {
        "zeroshot/box_fill/a/efficientsam": "ok",
        "zeroshot/box_fill/b/efficientsam": "done",
        "instseg/box_fill/a": "ok",
    }
    again = _ledger(out)["runs"]
    for rid, entry in again.items():
        if statuses[rid] == "ok":  # a new results file; the superseded one is gone
            assert entry["output"] != first[rid]["output"]
            assert not Path(first[rid]["output"]).exists()
        else:
            assert entry["output"] == first[rid]["output"]
    assert len(list((out / "zeroshot").glob("*.json"))) == 2


def test_missing_inputs_and_failures_are_recorded_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "bad.yaml"
    suite.write_text(
        "name: bad\n"
        "datasets:\n"
        "  s: {format: coco, annotations: '${sample_root}/annotations/instances.json',\n"
        "      images: '${sample_root}/images'}\n"
        "  gone: {format: coco, annotations: '${data_root}/nothing.json', images: '${data_root}'}\n"
        "defaults: {workers: 0, progress: false}\n"
        "runs:\n"
        "  - {task: zeroshot, model: efficientsam_vitt, checkpoint: '${data_root}/no.pt',\n"
        "     dataset: s}\n"
        "  - {task: zeroshot, model: box_fill, dataset: gone}\n"
        "  - {task: zeroshot, model: no_such_model, dataset: s}\n"
        "  - {task: coco-maskrcnn, model: sami_vit_tiny}\n"
    )
    out = tmp_path / "results"
    rc = main(
        ["suite", "run", str(suite), "--out", str(out), "--data-root", str(tmp_path / "d"),
         "--jobs", "2"]
    )  # fmt: skip
    assert rc == 1
    runs = _ledger(out, "bad")["runs"]
    by_model = {e["model"]: e for e in runs.values()}
    assert by_model["efficientsam_vitt"]["reason"] == (
        f"not run: missing checkpoint {tmp_path / 'd' / 'no.pt'}"
    )
    assert by_model["box_fill"]["reason"].startswith("not run: missing annotations")
    failed = by_model["no_such_model"]
    assert failed["status"] == "failed"
    assert "no_such_model" in failed["reason"] and "\n" not in failed["reason"]
    assert Path(failed["log"]).is_file()
    # this Python (the suite's default downstream_python) has no esam_downstream
    assert by_model["sami_vit_tiny"]["reason"].startswith(
        "not run: esam_downstream is not installed for "
    )
    assert len(_ledger(out, "bad")["not_run"]) == 4

    pytest.importorskip("pandas")
    from esam.report.build import build_report

    report = build_report([out], tmp_path / "report", published=None, warn=False)
    assert not report.skipped  # the ledger is not taken for a results file
    md = report.report_md.read_text()
    assert "## Not run" in md and "not run: missing checkpoint" in md
    assert "| failed |" in md
    assert 'id="not-run"' in report.index_html.read_text()


def test_smoke_suite_is_weightless_and_uses_the_shipped_sample() -> None:
    from esam.cli.suite import task_options
    from esam.suite import load_suite

    suite = load_suite("smoke", task_options(), environ={})
    assert {r.task for r in suite.runs} == {"zeroshot", "instseg", "proposals", "throughput"}
    for run in suite.runs:
        assert run.checkpoint is None
        assert all(Path(p).exists() and str(SAMPLE_DIR) in p for p in run.inputs.values())


CHEAP = """
name: cheap
datasets:
  s: {format: coco, annotations: "${sample_root}/annotations/instances.json",
      images: "${sample_root}/images", detections: "${sample_root}/detections.json"}
defaults: {workers: 0, progress: false, limit_images: 2}
runs:
  - {task: zeroshot, model: [box_fill, oracle], dataset: s, protocol: efficientsam}
  - {task: instseg, model: box_fill, dataset: s}
  - {task: proposals, model: box_grid, dataset: s}
"""


def _measured(out: Path, name: str) -> dict[str, dict]:
    """Each run's metrics and per-sample rows (without their timings), by run id."""
    got = {}
    for rid, entry in _ledger(out, name)["runs"].items():
        results = Path(entry["output"])
        rows = results.with_name(results.stem + ".rows.jsonl")
        lines = rows.read_text().splitlines() if rows.is_file() else []
        got[rid] = {
            "metrics": json.loads(results.read_text())["metrics"],
            "rows": [{k: v for k, v in json.loads(ln).items() if k != "seconds"} for ln in lines],
        }
    return got


def test_jobs_run_at_once_and_give_the_results_of_one_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    import esam.suite.runner as runner

    suite = tmp_path / "cheap.yaml"
    suite.write_text(CHEAP)
    real_run = runner._run_in_own_group
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def timed_run(*args, **kwargs):  # the real process, with its start and end times
        t0 = time.perf_counter()
        try:
            return real_run(*args, **kwargs)
        finally:
            with lock:
                spans.append((t0, time.perf_counter()))

    monkeypatch.setattr(runner, "_run_in_own_group", timed_run)
    outs = {}
    for jobs in (1, 2):
        spans.clear()
        outs[jobs] = tmp_path / f"jobs{jobs}"
        assert (
            main(["suite", "run", str(suite), "--out", str(outs[jobs]), "--jobs", str(jobs)]) == 0
        )
        assert len(spans) == 4  # one fresh process per run
        first, second = sorted(spans)[:2]
        overlapped = second[0] < first[1]
        assert overlapped == (jobs == 2)
    one, two = _measured(outs[1], "cheap"), _measured(outs[2], "cheap")
    assert list(two) == list(one) and len(one) == 4  # every run recorded, in suite order
    assert two == one
    assert all(m["rows"] for m in one.values())
    for out in outs.values():
        assert set(_statuses(out, "cheap").values()) == {"ok"}
    # the same key names the same inputs, whatever the number of jobs
    names = [
        {Path(e["output"]).name for e in _ledger(o, "cheap")["runs"].values()}
        for o in outs.values()
    ]
    assert names[0] == names[1]


def test_a_run_with_several_processes_runs_under_torchrun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "dist.yaml"
    suite.write_text(
        "name: dist\n"
        "datasets:\n"
        "  s: {format: coco, annotations: '${sample_root}/annotations/instances.json',\n"
        "      images: '${sample_root}/images'}\n"
        "defaults: {workers: 0, progress: false}\n"
        "runs:\n"
        "  - {name: one, task: zeroshot, model: box_fill, dataset: s, overrides: {prompt: box}}\n"
        "  - {name: two, task: zeroshot, model: box_fill, dataset: s, overrides: {prompt: box},\n"
        "     nproc: 2}\n"
    )
    out = tmp_path / "results"
    assert main(["suite", "run", str(suite), "--out", str(out), "--dry-run"]) == 0
    printed = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("python")]
    assert printed[0].startswith("python -m esam.cli.main eval zeroshot ")
    assert printed[1].startswith(
        "python -m torch.distributed.run --standalone --nproc_per_node=2 -m esam.cli.main "
        "eval zeroshot "
    )

    assert main(["suite", "run", str(suite), "--out", str(out)]) == 0
    runs = _ledger(out, "dist")["runs"]
    assert " -m torch.distributed.run --standalone --nproc_per_node=2 " in runs["two"]["command"]
    assert "torch.distributed.run" not in runs["one"]["command"]
    one, two = (json.loads(Path(runs[r]["output"]).read_text()) for r in ("one", "two"))
    assert one["config"]["world_size"] == 1 and two["config"]["world_size"] == 2
    assert two["metrics"] == one["metrics"] and one["metrics"]["n_instances"] > 0
    measured = _measured(out, "dist")
    assert measured["two"]["rows"] == measured["one"]["rows"]


def test_a_partial_or_failed_results_file_is_never_taken_as_done(tmp_path: Path) -> None:
    from esam.suite.runner import _complete_results

    path = tmp_path / "r.json"
    assert not _complete_results(path)
    path.write_text(json.dumps({"task": "throughput", "complete": False}))
    assert not _complete_results(path)  # a sweep killed between configurations
    path.write_text('{"task": "throughput", "compl')
    assert not _complete_results(path)
    path.write_text(json.dumps({"task": "throughput", "complete": True}))
    assert _complete_results(path)
    path.write_text(json.dumps({"task": "zeroshot"}))  # files without the flag are whole
    assert _complete_results(path)


def test_a_timed_out_run_is_stopped_with_every_process_it_started(tmp_path: Path) -> None:
    import os
    import sys
    import time

    from esam.suite.runner import _run_in_own_group

    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(120)\n"
    )
    t0 = time.perf_counter()
    text, rc = _run_in_own_group([sys.executable, "-c", script], dict(os.environ), timeout=3)
    assert rc is None and "started" in text and "timed out after 3 s" in text
    assert time.perf_counter() - t0 < 60
    child = int(pid_file.read_text())
    for _ in range(50):  # the grandchild goes with its group (reaped by init shortly after)
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{child}/stat") as f:
            if f.read().split()[2] == "Z":
                break
        time.sleep(0.1)
    else:
        pytest.fail(f"process {child} outlived the timed-out run")


def test_an_interrupted_suite_stops_the_runs_it_started(tmp_path: Path) -> None:
    """Runs live in sessions of their own (no terminal Ctrl-C reaches them): an interrupted
    suite stops them itself, SIGTERM first, and starts no new run."""
    import os
    import sys
    import threading
    import time

    from esam.suite import runner

    marker = tmp_path / "terminated"
    script = (
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, 'w').close(), "
        "sys.exit(0)))\n"
        "print('started', flush=True)\n"
        "time.sleep(120)\n"
    )
    outcome: list[tuple[str, int | None]] = []
    worker = threading.Thread(
        target=lambda: outcome.append(
            runner._run_in_own_group([sys.executable, "-c", script], dict(os.environ), None)
        )
    )
    t0 = time.perf_counter()
    worker.start()
    for _ in range(100):
        if runner._LIVE:
            break
        time.sleep(0.05)
    time.sleep(1.0)  # the script installs its handler
    runner.stop_all_runs(grace_s=20)
    worker.join(timeout=30)
    assert not worker.is_alive() and time.perf_counter() - t0 < 30
    assert marker.exists()  # it got SIGTERM (torchrun stops its ranks on it), not only SIGKILL
    assert outcome and "started" in outcome[0][0] and not runner._LIVE
    runner._STOPPING.clear()


def test_an_interrupted_imagenet_run_resumes(
    tmp_path: Path,
) -> None:
    from esam.cli.suite import task_options
    from esam.suite.runner import _HashCache, build_argv, run_identity
    from esam.suite.spec import load_suite

    suite = tmp_path / "i.yaml"
    suite.write_text(
        "name: i\n"
        "datasets:\n"
        "  shapes: {train: '${data_root}/train', val: '${data_root}/val'}\n"
        "runs:\n"
        "  - {task: imagenet, model: sami_vit_tiny, dataset: shapes,\n"
        "     overrides: {mode: finetune, config: tiny}}\n"
    )
    opts = task_options()
    (run,) = load_suite(suite, opts, variables={"data_root": str(tmp_path)}).runs
    argv = build_argv(run, opts["imagenet"], tmp_path / "out" / "run")
    # a rerun continues from the run folder's checkpoints (or starts when it has none)
    assert "--resume" in argv
    # eval imagenet names its model by KEY=VALUE: the results carry the suite's model name
    assert "model.name=sami_vit_tiny" in argv and "--model" not in argv
    from esam.cli.imagenet import parser, resolve_config

    assert resolve_config(parser().parse_intermixed_args(argv[2:])).model.name == "sami_vit_tiny"
    reserved = tmp_path / "r.yaml"
    reserved.write_text(suite.read_text().replace("config: tiny", "config: tiny, model.name: x"))
    with pytest.raises(ValueError, match=r"model\.name"):
        load_suite(reserved, opts, variables={"data_root": str(tmp_path)})
    # resuming is how a run is carried out, not what it computes: not in its identity
    assert "resume" not in json.dumps(run_identity(run, _HashCache(None)))


def test_changed_inputs_drop_the_old_results_even_when_the_new_run_fails(tmp_path: Path) -> None:
    ann = tmp_path / "a.json"
    shutil.copy(sample_paths()[0], ann)
    suite = tmp_path / "t.yaml"
    suite.write_text(
        "name: t\n"
        "datasets:\n"
        "  a: {format: coco, annotations: '${ann}', images: '${sample_root}/images'}\n"
        "defaults: {workers: 0, progress: false, limit_images: 2}\n"
        "runs:\n"
        "  - {task: zeroshot, model: box_fill, dataset: a, protocol: efficientsam}\n"
    )
    out = tmp_path / "results"
    argv = ["suite", "run", str(suite), "--out", str(out), "--var", f"ann={ann}"]
    assert main(argv) == 0
    (entry,) = _ledger(out)["runs"].values()
    first = Path(entry["output"])
    assert first.is_file()
    # the annotations become unusable: the new run fails, and the old results (of the old
    # annotations) are gone, so the report cannot show them beside the failure
    ann.write_text('{"images": "not a list"}')
    assert main(argv) == 1
    (entry,) = _ledger(out)["runs"].values()
    assert entry["status"] == "failed" and not first.exists()
    assert not list((out / "zeroshot").glob("*.json"))
    # fixed again, then the file vanishes from this machine: not run, the last results stay
    shutil.copy(sample_paths()[0], ann)
    assert main(argv) == 0
    (entry,) = _ledger(out)["runs"].values()
    kept = Path(entry["output"])
    ann.unlink()
    assert main(argv) == 1
    (entry,) = _ledger(out)["runs"].values()
    assert entry["status"] == "not run" and entry["kept_output"] == str(kept) and kept.is_file()


THROUGHPUT_SUITE = """
name: m
runs:
  - task: throughput
    model: efficientsam_vitt
    overrides: {device: cpu, batch_sizes: 1, iters: 2, no_progress: true, worker_timeout: 60}
"""


def test_identity_ignores_neutral_settings_and_holds_the_machine_for_throughput(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from esam.cli.suite import task_options
    from esam.suite import runner
    from esam.suite.runner import _HashCache, identity_key, run_identity
    from esam.suite.spec import load_suite

    def key_of(text: str, **env: str) -> str:
        path = tmp_path / "s.yaml"
        path.write_text(text)
        (run,) = load_suite(path, task_options(), environ=env).runs
        return identity_key(run_identity(run, _HashCache(None)))

    zeroshot = (
        "runs:\n  - {task: zeroshot, model: box_fill, dataset: d, overrides: {%s}}\n"
        "datasets: {d: {format: coco, annotations: /a.json, images: /im}}\n"
    )
    base = key_of(zeroshot % "workers: 0, progress: false, limit_images: 2")
    assert key_of(zeroshot % "workers: 8, progress: true, limit_images: 2") == base
    assert key_of(zeroshot % "workers: 0, progress: false, limit_images: 3") != base

    machine = {"cpu_model": "CPU A", "cpu_cores": 2}
    monkeypatch.setattr(runner, "machine_identity", lambda device: dict(machine))
    on_a = key_of(THROUGHPUT_SUITE)
    assert key_of(THROUGHPUT_SUITE.replace("worker_timeout: 60", "worker_timeout: 600")) == on_a
    assert key_of(THROUGHPUT_SUITE.replace("iters: 2", "iters: 3")) != on_a
    machine["cpu_model"] = "CPU B"
    assert key_of(THROUGHPUT_SUITE) != on_a


def test_another_machines_throughput_results_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from esam.suite import runner

    suite = tmp_path / "m.yaml"
    suite.write_text(THROUGHPUT_SUITE)
    out = tmp_path / "results"
    argv = ["suite", "run", str(suite), "--out", str(out)]
    machine = {"cpu_model": "CPU A", "cpu_cores": 2}
    monkeypatch.setattr(runner, "machine_identity", lambda device: dict(machine))

    def pretend_measured() -> Path:
        # results already there: the suite skips the run ("done") and records its output
        from esam.cli.suite import task_options
        from esam.suite.runner import _HashCache, identity_key, output_path, run_identity
        from esam.suite.spec import load_suite

        (run,) = load_suite(suite, task_options(), environ={}).runs
        key = identity_key(run_identity(run, _HashCache(None)))
        path = output_path(out, run, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"task": "throughput", "complete": True}))
        return path

    on_a = pretend_measured()
    assert main(argv) == 0
    (entry,) = _ledger(out, "m")["runs"].values()
    assert entry["machine"] == machine and entry["output"] == str(on_a)
    machine["cpu_model"] = "CPU B"
    on_b = pretend_measured()
    assert main(argv) == 0
    (entry,) = _ledger(out, "m")["runs"].values()
    assert entry["output"] == str(on_b) and entry["machine"]["cpu_model"] == "CPU B"
    assert on_a.is_file() and on_b.is_file()  # the first machine's numbers stay
