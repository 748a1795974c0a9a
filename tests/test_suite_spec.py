"""Suite files: validation (every problem at once) and the paper suite's dry run."""

from __future__ import annotations

from pathlib import Path

import pytest

from esam.cli.main import main
from esam.cli.suite import task_options
from esam.suite import SuiteError, load_suite, suite_names


def test_shipped_suites_validate() -> None:
    assert {"smoke", "paper", "zeroshot-peers"} <= set(suite_names())
    roots = {"data_root": "/DATA", "weights_root": "/W"}
    for name in suite_names():
        suite = load_suite(name, task_options(), roots, environ={})
        assert suite.runs


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "datasets:\n"
        "  d: {format: coco, annotations: '${nowhere}/a.json', images: x}\n"
        "runs:\n"
        "  - {task: zeroshoot, model: box_fill}\n"
        "  - {task: zeroshot, model: box_fill, dataset: d, protocol: efficientsam,\n"
        "     overrides: {limit_imgs: 2}}\n"
        "  - {task: instseg, model: box_fill, dataset: d, protocol: no-such-preset}\n"
        "  - {task: zeroshot, model: box_fill, dataset: d, matrix: {prompt: [box, point9]}}\n"
    )
    with pytest.raises(SuiteError) as e:
        load_suite(bad, task_options(), {}, environ={})
    text = "\n".join(e.value.problems)
    assert "unknown task 'zeroshoot'" in text
    assert "unknown setting 'limit_imgs' (did you mean 'limit_images'?)" in text
    assert "unknown protocol preset 'no-such-preset'" in text
    assert "'point9' is not one of" in text
    assert "undefined variable ${nowhere}" in text
    assert len(e.value.problems) == 5


def test_variables_from_command_line_win_over_environment(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(
        "vars: {root: suite}\n"
        "datasets:\n  d: {format: coco, annotations: '${root}/a.json', images: '${root}'}\n"
        "runs:\n  - {task: zeroshot, model: box_fill, dataset: d}\n"
    )
    opts = task_options()
    assert load_suite(f, opts, environ={}).runs[0].inputs["images"] == "suite"
    env = {"ESAM_ROOT": "env"}
    assert load_suite(f, opts, environ=env).runs[0].inputs["images"] == "env"
    assert load_suite(f, opts, {"root": "cli"}, environ=env).runs[0].inputs["images"] == "cli"


def test_paper_dry_run_prints_one_command_per_cell(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        ["suite", "run", "paper", "--out", "OUT", "--dry-run",
         "--data-root", "/DATA", "--weights-root", "/WEIGHTS"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    commands = [ln for ln in out.splitlines() if ln.startswith("python -m esam")]
    labels = [ln[2:] for ln in out.splitlines() if ln.startswith("# Table")]
    # Table 1: 6 backbones; Tables 2 and 3: 3 each; Table 4: 4 models x 3 prompts; Table 5:
    # 4 models; Table 8: 3 models
    assert len(commands) == len(labels) == 6 + 3 + 3 + 12 + 4 + 3
    assert sum(lab.startswith("Table 4") for lab in labels) == 12
    assert all("/WEIGHTS/" in c and "/DATA/" in c for c in commands if "bench" not in c)
    downstream = [c for c in commands if c.startswith("python -m esam_downstream test")]
    assert [c.split("--task ")[1].split()[0] for c in downstream] == 3 * ["coco-maskrcnn"] + 3 * [
        "ade20k-mask2former"
    ]
    assert all("--backbone /WEIGHTS/sami_vit_" in c and "--work-dir OUT/" in c for c in downstream)
    assert (
        "--data-root /DATA/coco --checkpoint /WEIGHTS/mask-rcnn_sami_vit_tiny_coco.pth"
        in (downstream[0])
    )
    cannot = out.split("# cells this suite cannot produce (1):")[1]
    assert "Table 5: FastSAM: no adapter" in cannot


def test_downstream_runs_use_the_downstream_python(capsys: pytest.CaptureFixture[str]) -> None:
    """--var downstream_python: the Python (of another environment) that runs Tables 2 and 3."""
    rc = main(
        ["suite", "run", "paper", "--out", "OUT", "--dry-run", "--only", "ade20k",
         "--data-root", "/DATA", "--weights-root", "/WEIGHTS",
         "--var", "downstream_python=/nowhere/python"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    commands = [
        ln for ln in out.splitlines() if ln.startswith("/nowhere/python -m esam_downstream")
    ]
    assert len(commands) == 3
    assert "not run here: Python /nowhere/python (downstream_python) not found" in out


def test_paper_without_roots_names_the_undefined_variables(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ESAM_DATA_ROOT", raising=False)
    monkeypatch.delenv("ESAM_WEIGHTS_ROOT", raising=False)
    assert main(["suite", "run", "paper", "--out", "OUT", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "--data-root DIR" in err and "--weights-root DIR" in err


def test_a_suite_extends_another_with_its_runs_first(tmp_path: Path) -> None:
    opts = task_options()
    smoke = load_suite("smoke", opts, environ={})
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "name: mine\n"
        "extends: smoke\n"
        "vars: {limit: '2'}\n"
        "models:\n  ti: {model: efficientsam_vitt, checkpoint: '${weights_root}/ti.pt'}\n"
        "runs:\n"
        "  - {task: zeroshot, model: ti, dataset: sample, overrides: {limit_images: '${limit}'}}\n"
        "cannot:\n  - {table: T, cell: c, why: no adapter}\n"
    )
    suite = load_suite(mine, opts, {"weights_root": "/W"}, environ={})
    assert suite.name == "mine" and suite.source == str(mine)
    assert [r.id for r in suite.runs] == [r.id for r in smoke.runs] + ["zeroshot/ti/sample"]
    own = suite.runs[-1]
    assert own.checkpoint == "/W/ti.pt" and own.inputs == smoke.runs[0].inputs  # smoke's dataset
    assert own.overrides == {"workers": 0, "progress": False, "limit_images": "2"}  # + defaults
    assert [c.cell for c in suite.cannot] == ["c"]

    deeper = tmp_path / "sub" / "deeper.yaml"  # a relative path is read from the file's folder
    deeper.parent.mkdir()
    deeper.write_text("extends: ../mine.yaml\ndefaults: {workers: 1}\n")
    runs = load_suite(deeper, opts, {"weights_root": "/W"}, environ={}).runs
    assert len(runs) == len(suite.runs) and all(r.overrides["workers"] == 1 for r in runs[:3])


def test_extends_problems_are_listed(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("extends: b.yaml\nruns: []\n")
    b.write_text(
        "extends: a.yaml\nbogus: 1\nruns:\n  - {task: zeroshot, model: x, dataset: nope}\n"
    )
    with pytest.raises(SuiteError) as e:
        load_suite(a, task_options(), environ={})
    text = "\n".join(e.value.problems)
    assert "extends 'a.yaml' makes a cycle (a -> b -> a)" in text
    assert "b: unknown top-level key 'bogus'" in text
    assert "b run 1 (zeroshot): unknown dataset 'nope'" in text
    c = tmp_path / "c.yaml"
    c.write_text("extends: no-such-suite\nruns: []\n")
    with pytest.raises(SuiteError, match="extends: unknown suite 'no-such-suite'"):
        load_suite(c, task_options(), environ={})


def test_downstream_head_checkpoint_is_an_input(tmp_path: Path) -> None:
    """The trained-head checkpoint of a Table 2/3 run is checked like data: missing, the run is
    not run (and says which file); present, its content names the results file."""
    from esam.suite.runner import _HashCache, identity_key, missing_inputs, run_identity

    head = tmp_path / "head.pth"
    backbone = tmp_path / "backbone.pt"
    backbone.write_bytes(b"backbone")
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "runs:\n"
        "  - {task: coco-maskrcnn, model: sami_vit_tiny, checkpoint: '${weights_root}/backbone.pt',\n"
        "     overrides: {checkpoint: '${weights_root}/head.pth'}}\n"
    )
    (run,) = load_suite(suite, task_options(), {"weights_root": str(tmp_path)}, environ={}).runs
    assert missing_inputs(run) == [f"checkpoint {head}"]
    head.write_bytes(b"weights one")
    assert missing_inputs(run) == []
    hashes = _HashCache({})
    first = identity_key(run_identity(run, hashes))
    assert run_identity(run, hashes)["overrides"]["checkpoint"].startswith("sha256:")
    head.write_bytes(b"weights two")
    assert identity_key(run_identity(run, _HashCache({}))) != first
