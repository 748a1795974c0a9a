"""``esam report``: leaderboards, plots and one static HTML page from results files.

pandas and matplotlib are imported inside the handler, so building the parser stays cheap and
works without the ``report`` extra installed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from esam.utils.results import DEFAULT_MAX_SKIPPED_IMAGES


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``report`` subcommand to the ``esam`` parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="build leaderboards, plots and an HTML page from results files",
        description=(
            "Read every *.json results file below the --results folders (recursively), validate "
            "them, and write per-task leaderboards (Markdown, CSV), plots (PNG, SVG), the tidy "
            "results.csv and a self-contained index.html into --out. Unreadable or invalid files "
            "are listed as skipped; the report is still built."
        ),
    )
    parser.add_argument(
        "--results",
        action="append",
        required=True,
        metavar="DIR",
        help="folder with results files, searched recursively (repeatable)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--published",
        metavar="FILE",
        default=None,
        help="published reference numbers (default: reports/published.json when found)",
    )
    group.add_argument(
        "--no-published", action="store_true", help="leave published reference numbers out"
    )
    parser.add_argument("--title", default="esam benchmark report", help="page title")
    parser.add_argument(
        "--max-skipped-images",
        type=_fraction,
        default=DEFAULT_MAX_SKIPPED_IMAGES,
        metavar="FRACTION",
        help=(
            "largest share of its images (0-1) a run may skip (missing, corrupt or mis-sized) "
            "and still be ranked; runs above it are listed under 'Partial runs' "
            f"(default: {DEFAULT_MAX_SKIPPED_IMAGES})"
        ),
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 when any file was skipped (the report is still written)",
    )
    parser.set_defaults(func=run)
    return parser


def _fraction(text: str) -> float:
    """``--max-skipped-images`` value: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    """Handler of ``esam report``: build the report, print where it is and the main table."""
    try:
        from esam.report.build import DEFAULT, build_report, summary_text
    except ModuleNotFoundError as e:  # pandas / matplotlib missing
        print(
            f"esam report: error: {e.name} is required (pip install 'esam[report]')",
            file=sys.stderr,
        )
        return 2

    published = None if args.no_published else (args.published or DEFAULT)
    outputs = build_report(
        args.results,
        args.out,
        published=published,
        title=args.title,
        max_skipped_images=args.max_skipped_images,
    )
    print(summary_text(outputs))
    if args.strict and outputs.skipped:
        return 1
    return 0
