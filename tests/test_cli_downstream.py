"""``esam downstream``: an alias of python -m esam_downstream, and esam stays free of mm*."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import esam.cli.downstream as downstream
from esam.cli.main import main


def test_without_the_package_one_line_names_the_fix(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(downstream, "installed", lambda: False)
    rc = main(["downstream", "test", "--task", "coco-maskrcnn", "--work-dir", "w"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert err.startswith("esam downstream: error: the esam_downstream package is not installed")
    assert "install downstream/" in err and "tox -e downstream" in err


def test_esam_and_its_cli_import_no_mm_package() -> None:
    """esam, its whole parser (with `downstream`) and the suites' task options load no mm*."""
    code = (
        "import sys, esam\n"
        "from esam.cli.main import build_parser\n"
        "from esam.cli.suite import task_options\n"
        "build_parser(); task_options()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('mmcv', 'mmdet', 'mmseg', 'mmengine', 'esam_downstream')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.replace("'", '"')) == []


def test_the_parser_is_the_downstream_command_line() -> None:
    args = downstream.parser().parse_args(
        ["test", "--task", "ade20k-mask2former", "--work-dir", "w", "--cfg-options", "a=1"]
    )
    assert (args.command, args.task, args.arch, args.cfg_options) == (
        "test", "ade20k-mask2former", None, ["a=1"],
    )  # fmt: skip
