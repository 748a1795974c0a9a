"""``esam report`` end to end through ``esam.cli.main.main``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

from esam.cli.main import main
from esam.report.load import read_tidy_csv

FIXTURES = Path(__file__).parent / "fixtures" / "results"
PUBLISHED = Path(__file__).resolve().parents[1] / "reports" / "published.json"


def test_cli_builds_everything(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(
        ["report", "--results", str(FIXTURES), "--out", str(out), "--published", str(PUBLISHED)]
    )
    assert rc == 0
    captured = capsys.readouterr()
    assert f"report: {out / 'index.html'}" in captured.out
    assert "Zero-shot promptable segmentation · coco · box" in captured.out
    assert re.search(r"^1\s+sam_vit_h\s+fp32\s+78\.6\*", captured.out, re.MULTILINE)
    assert "warning: skipped" in captured.err and "malformed.json" in captured.err

    for rel in (
        "index.html",
        "report.md",
        "results.csv",
        "leaderboards/zeroshot.md",
        "leaderboards/zeroshot.csv",
        "leaderboards/throughput.md",
        "leaderboards/sami_pretrain.csv",
    ):
        assert (out / rel).is_file(), rel
    pngs = sorted((out / "plots").glob("*.png"))
    svgs = sorted((out / "plots").glob("*.svg"))
    assert len(pngs) >= 3 and len(pngs) == len(svgs)

    tidy = read_tidy_csv(out / "results.csv")
    assert set(tidy["source"]) == {"measured", "published"}

    page = (out / "index.html").read_text()
    for name in ("malformed.json", "foreign.json", "missing_commit.json"):
        assert name in page
    assert page.count("<table") >= 10
    assert 'class="num best"' in page and "<strong>78.6</strong>" in page
    assert page.count('<img src="data:image/svg+xml;base64,') == len(svgs)
    # self-contained: nothing is fetched from anywhere
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"(?!data:)", page)

    md = (out / "report.md").read_text()
    assert "## Skipped files" in md and "foreign.json" in md and "**78.6**" in md


def test_cli_no_published_and_strict(tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(
            [
                "report",
                "--results",
                str(FIXTURES / "fixture_gpu"),
                "--out",
                str(out),
                "--no-published",
            ]
        )
        == 0
    )
    tidy = pd.read_csv(out / "results.csv")
    assert set(tidy["source"]) == {"measured"}
    assert "not included" in (out / "index.html").read_text()
    assert (
        main(
            [
                "report",
                "--results",
                str(FIXTURES / "fixture_gpu"),
                "--out",
                str(out),
                "--strict",
                "--no-published",
            ]
        )
        == 0
    )
    assert (
        main(
            ["report", "--results", str(FIXTURES), "--out", str(out), "--strict", "--no-published"]
        )
        == 1
    )
    assert (out / "index.html").is_file()  # still written


def test_cli_several_results_folders(tmp_path):
    out = tmp_path / "out"
    rc = main(
        [
            "report",
            "--results",
            str(FIXTURES / "fixture_gpu"),
            "--results",
            str(FIXTURES / "cpu"),
            "--out",
            str(out),
            "--no-published",
        ]
    )
    assert rc == 0
    tidy = read_tidy_csv(out / "results.csv")
    assert set(tidy["device"]) == {"cuda:0", "cpu"}


def test_cli_errors(tmp_path, capsys):
    assert (
        main(["report", "--results", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    )
    assert "results folder not found" in capsys.readouterr().err
    rc = main(
        [
            "report",
            "--results",
            str(FIXTURES),
            "--out",
            str(tmp_path / "o"),
            "--published",
            str(tmp_path / "nope.json"),
        ]
    )
    assert rc == 2
    assert "published numbers file not found" in capsys.readouterr().err


def test_empty_results_folder_still_builds(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    assert (
        main(["report", "--results", str(tmp_path / "empty"), "--out", str(out), "--no-published"])
        == 0
    )
    page = (out / "index.html").read_text()
    assert "No usable results" in page and "not drawn" in page
    assert "no leaderboard" in capsys.readouterr().out


def test_cli_module_imports_no_heavy_dependencies():
    code = (
        "import sys, esam.cli.report, esam.report, esam.report.tasks;"
        "print(sorted(m for m in ('pandas', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
