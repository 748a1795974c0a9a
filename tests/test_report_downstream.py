"""Downstream results (python -m esam_downstream test) in the report, beside Tables 2 and 3.

The files in tests/fixtures/downstream/ were written by the real command (train, then test, on
generated data with a tiny ViT; downstream/tests/report_fixtures.py writes them and
downstream/tests/test_report_fixtures.py checks their layout against the command's).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from esam.cli.main import main

FIXTURES = Path(__file__).parent / "fixtures" / "downstream"
#: The paper's names of the backbones, kept beside the alias in published rows.
PAPER_NAME = {
    "sami_vit_tiny": "SAMI ViT-Ti",
    "sami_vit_small": "SAMI ViT-S",
    "sami_vit_base": "SAMI ViT-B",
}


def _rows(section: str) -> dict[str, list[str]]:
    """Markdown table rows by model name -> their cells."""
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) > 2 and not (cells[0] and set(cells[0]) <= {"-", ":"}):
            rows[cells[1]] = cells
    return rows


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("pandas")
    tmp = tmp_path_factory.mktemp("downstream")
    shutil.copytree(FIXTURES, tmp / "results")
    out = tmp / "report"
    assert main(["report", "--results", str(tmp / "results"), "--out", str(out)]) == 0
    return out


def test_coco_maskrcnn_table_has_the_run_and_table_2(report: Path) -> None:
    text = (report / "leaderboards" / "coco-maskrcnn.md").read_text()
    header = next(ln for ln in text.splitlines() if ln.startswith("| # |"))
    for column in ("box AP", "box AP small", "box AP medium", "mask AP", "mask AP small"):
        assert f"| {column} ↑ |" in header
    rows = _rows(text)
    measured = json.loads((FIXTURES / "coco-maskrcnn_tiny.json").read_text())["metrics"]
    cols = [c.strip() for c in header.split("|")[1:-1]]
    run = rows["tiny test ViT"]
    assert run[cols.index("box AP ↑")].strip("*") == f"{measured['bbox_mAP']:.1f}"
    assert run[cols.index("mask AP ↑")].strip("*") == f"{measured['segm_mAP']:.1f}"
    # published rows carry the name esam's suites give the backbones (reports/published.json
    # aliases "SAMI ViT-Ti" to sami_vit_tiny), so a paper-suite run sits beside its row
    published = {
        "sami_vit_tiny": (44.7, 40.0),
        "sami_vit_small": (49.8, 44.2),
        "sami_vit_base": (52.5, 46.5),
    }
    for model, (box, mask) in published.items():
        row = rows[f"*{model}* ({PAPER_NAME[model]}, published)"]
        assert row[cols.index("box AP ↑")] == f"*{box}*"
        assert row[cols.index("mask AP ↑")] == f"*{mask}*"
        assert "EfficientSAM paper, Table 2" in row[-1]


def test_ade20k_mask2former_table_has_the_run_and_table_3(report: Path) -> None:
    text = (report / "leaderboards" / "ade20k-mask2former.md").read_text()
    header = next(ln for ln in text.splitlines() if ln.startswith("| # |"))
    cols = [c.strip() for c in header.split("|")[1:-1]]
    assert "mIoU ↑" in cols and "pixel accuracy ↑" in cols
    rows = _rows(text)
    measured = json.loads((FIXTURES / "ade20k-mask2former_tiny.json").read_text())["metrics"]
    run = rows["tiny test ViT"]
    assert run[cols.index("mIoU ↑")].strip("*") == f"{measured['mIoU']:.1f}"
    assert run[cols.index("pixel accuracy ↑")].strip("*") == f"{measured['aAcc']:.1f}"
    for model, miou in {
        "sami_vit_tiny": 42.7,
        "sami_vit_small": 48.8,
        "sami_vit_base": 51.8,
    }.items():
        row = rows[f"*{model}* ({PAPER_NAME[model]}, published)"]
        assert row[cols.index("mIoU ↑")] == f"*{miou}*"
        assert "EfficientSAM paper, Table 3" in row[-1]
