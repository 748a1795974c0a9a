"""The report page in a real browser: headless Chromium renders it, sorts it, and logs nothing.

How console errors are detected (two independent checks):

1. Chromium runs with ``--enable-logging=stderr --v=0``, which writes every console message and
   every uncaught exception of the page to stderr as a ``CONSOLE`` line (for example
   ``INFO:CONSOLE:1] "Uncaught ReferenceError: ..."``). The page logs nothing on its own, so any
   ``CONSOLE`` or ``Uncaught`` line fails the test.
2. The page installs a ``window`` error listener in its first script that writes errors into
   ``<div id="js-errors" hidden>``; ``--dump-dom`` must show that box still hidden and empty, and
   ``<body data-js="ready">`` proves the sorting script ran to its end.

Sorting is checked by appending a script that clicks a header and records the resulting
column into the DOM before it is dumped.

Chromium is found at ``$ESAM_CHROMIUM``, ``/usr/bin/chromium``, or ``chromium`` /
``chromium-browser`` on ``PATH``. Without it the browser tests are skipped, except in CI (the
``CI`` environment variable set, as CI services do): there they fail, because the browser test
is required to run in the test environment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from esam.report.build import build_report

FIXTURES = Path(__file__).parent / "fixtures" / "results"
PUBLISHED = Path(__file__).resolve().parents[1] / "reports" / "published.json"


def _chromium(env: Mapping[str, str] = os.environ) -> str | None:
    """Path of headless Chromium: ``$ESAM_CHROMIUM``, ``/usr/bin/chromium``, or on ``PATH``."""
    if "ESAM_CHROMIUM" in env:
        path = env["ESAM_CHROMIUM"]
        return path if path and Path(path).is_file() else None
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def in_ci(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the tests run in CI: ``CI`` set to anything but empty, ``0``, ``false``, ``no``."""
    return env.get("CI", "").strip().lower() not in ("", "0", "false", "no")


MISSING = (
    "headless Chromium not found ($ESAM_CHROMIUM, /usr/bin/chromium, or chromium on PATH; "
    "apt install chromium)"
)


def missing_chromium_action(chromium: str | None, env: Mapping[str, str]) -> str:
    """``"run"`` with Chromium; without it ``"fail"`` in CI, else ``"skip"``."""
    if chromium is not None:
        return "run"
    return "fail" if in_ci(env) else "skip"


CHROMIUM = _chromium()
browser = pytest.mark.browser


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium binary; skips the test without one, or fails it in CI."""
    action = missing_chromium_action(CHROMIUM, os.environ)
    if action == "fail":
        pytest.fail(
            f"{MISSING}, and CI is set: the browser test must run in CI; install chromium "
            "in the test environment",
            pytrace=False,
        )
    if action == "skip":
        pytest.skip(MISSING)
    assert CHROMIUM is not None
    return CHROMIUM


def _run_chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile.mkdir(parents=True, exist_ok=True)
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *extra,
        page.as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def built(chromium, tmp_path_factory):
    out = tmp_path_factory.mktemp("browser-report")
    outputs = build_report([FIXTURES], out, published=PUBLISHED, warn=False)
    return out, outputs


@browser
def test_screenshot_is_a_real_page(built, tmp_path):
    from PIL import Image

    out, _ = built
    shot = tmp_path / "shot.png"
    proc = _run_chromium(
        out / "index.html", tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,2000"
    )
    assert shot.is_file(), proc.stderr[-2000:]
    assert shot.stat().st_size > 50_000
    with Image.open(shot) as img:
        assert img.size == (1400, 2000)
        gray = np.asarray(img.convert("L"), dtype=np.float64)
        rgb = np.asarray(img.convert("RGB"))
    assert gray.std() > 10.0  # not a uniform image
    assert (
        len(np.unique(rgb.reshape(-1, 3), axis=0)) > 100
    )  # text, tables and colour, not a blank frame
    # the first band of the page (header and first table) holds ink, not just background
    assert (gray[:600] < 128).mean() > 0.01


@browser
def test_dom_rendered_without_console_errors(built, tmp_path):
    out, outputs = built
    proc = _run_chromium(
        out / "index.html", tmp_path / "profile", "--dump-dom", "--enable-logging=stderr", "--v=0"
    )
    dom = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]

    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
    assert re.search(r'<body[^>]*data-js="ready"', dom)
    assert re.search(r'<div id="js-errors" hidden="">\s*</div>', dom)

    boards = [b for task_boards in outputs.boards.values() for b in task_boards]
    n_measured = sum(b.n_measured for b in boards)
    n_published = sum(len(b.rows) - b.n_measured for b in boards)
    assert dom.count('<tr class="measured">') == n_measured
    assert dom.count('<tr class="published">') == n_published
    assert dom.count('<table class="leaderboard sortable"') == len(boards)
    drawn = [p for p in outputs.plots if p.drawn]
    assert len(drawn) >= 3
    assert len(re.findall(r'<img src="data:image/svg\+xml;base64,', dom)) == len(drawn)
    assert dom.count('class="num best"') >= 10
    assert "missing_commit.json" in dom and "foreign.json" in dom and "malformed.json" in dom


@browser
def test_clicking_a_header_sorts_the_table(built, tmp_path):
    out, outputs = built
    board = next(
        b
        for b in outputs.boards["throughput"]
        if b.group == {"hardware": "Fixture GPU (synthetic)", "component": "end_to_end"}
    )
    col = 1 + len(board.keys) + [m.name for m in board.metrics].index("latency_p50_ms")
    probe = f"""
<script>
(function () {{
  var table = document.getElementById({json.dumps(board.slug)});
  var th = table.tHead.rows[0].cells[{col}];
  function column() {{
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) {{
      return r.cells[{col}].getAttribute('data-sort');
    }});
  }}
  th.click();
  var first = column();
  th.click();
  var second = column();
  document.body.setAttribute('data-sort-check', JSON.stringify({{first: first, second: second}}));
}})();
</script>
</body>"""
    page = out / "sortcheck.html"
    page.write_text((out / "index.html").read_text().replace("</body>", probe))
    proc = _run_chromium(page, tmp_path / "profile", "--dump-dom")
    match = re.search(r"data-sort-check=\"([^\"]*)\"", proc.stdout)
    assert match, proc.stderr[-2000:]
    result = json.loads(match.group(1).replace("&quot;", '"'))
    first = [float(v) for v in result["first"]]
    second = [float(v) for v in result["second"]]
    assert first == sorted(
        first
    )  # latency: lower is better, so the first click puts the lowest on top
    assert second == sorted(second, reverse=True)
    assert first[0] == pytest.approx(4.71)


@pytest.mark.parametrize(
    ("chromium", "env", "action"),
    [
        ("/usr/bin/chromium", {"CI": "true"}, "run"),
        ("/usr/bin/chromium", {}, "run"),
        (None, {"CI": "true"}, "fail"),
        (None, {"CI": "1"}, "fail"),
        (None, {}, "skip"),
        (None, {"CI": ""}, "skip"),
        (None, {"CI": "false"}, "skip"),
    ],
)
def test_missing_chromium_fails_in_ci_and_skips_elsewhere(chromium, env, action):
    assert missing_chromium_action(chromium, env) == action


def test_missing_chromium_fails_the_browser_tests_under_ci(tmp_path):
    """End to end: with Chromium unavailable, CI=true fails the browser tests, no CI skips them."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        "browser",
        __file__,
    ]
    base = {**os.environ, "ESAM_CHROMIUM": str(tmp_path / "no-chromium")}
    base.pop("CI", None)
    ci = subprocess.run(
        cmd, env={**base, "CI": "true"}, capture_output=True, text=True, timeout=300
    )
    assert ci.returncode == 1, ci.stdout[-2000:]
    assert "3 errors" in ci.stdout and "the browser test must run in CI" in ci.stdout
    local = subprocess.run(cmd, env=base, capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stdout[-2000:]
    assert "3 skipped" in local.stdout
