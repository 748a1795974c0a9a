"""``python -m esam_downstream train|test`` (see :mod:`esam_downstream.cli`)."""

from esam_downstream.cli import main

raise SystemExit(main())
