"""Settings every evaluation run shares: model, data, output, device and loading.

:class:`~esam.eval.zeroshot.ZeroShotConfig` and :class:`~esam.eval.instseg.InstSegConfig` add
their protocol's settings to these. Fields are keyword-only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from esam.errors import InputError


@dataclass(kw_only=True)
class EvalRunConfig:
    """Model, data, output and execution settings of one evaluation run."""

    model: str
    """Adapter name (``esam eval models`` lists them)."""
    dataset: str
    """``coco`` or ``lvis``."""
    annotations: str
    """Ground-truth instance annotation json."""
    images: str
    """Image folder (for LVIS: COCO's image root or split folder)."""
    output: str | None = None
    """Results JSON path; rows go to ``<stem>.rows.jsonl`` beside it. None: write nothing."""
    checkpoint: str | None = None
    """Model weights file."""
    limit_images: int | None = None
    """Evaluate the first N images by id."""
    device: str = "cpu"
    """``cpu`` or ``cuda`` (``cuda:<local rank>`` under torchrun)."""
    workers: int | None = None
    """DataLoader worker processes decoding images; None chooses from the device and the
    cores available (:func:`esam.eval.loader.default_workers`)."""
    skip_bad_images: bool = False
    """Count and skip missing, corrupt or mis-sized images instead of stopping (they leave the
    evaluated set and the results say how many, by reason)."""
    progress: bool = True
    """Show a progress bar (rank 0 only)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form settings recorded under ``config.extra``."""
    workers_auto: bool = field(default=False, init=False)
    """Whether ``workers`` was chosen automatically (set on construction)."""

    def __post_init__(self) -> None:
        if self.limit_images is not None and self.limit_images < 1:
            raise InputError(f"limit_images must be >= 1, got {self.limit_images}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise InputError(f"unknown device {self.device!r}; choose cpu or cuda")
        if self.output is not None:
            from esam.eval.outputs import rows_path_for
            from esam.utils.io import check_writable_file

            check_writable_file(self.output, "results file")
            check_writable_file(rows_path_for(self.output), "rows file")
        if self.workers is None:
            from esam.eval.loader import default_workers

            self.workers = default_workers(self.device)
            self.workers_auto = True
        if self.workers < 0:
            raise InputError(f"workers must be >= 0, got {self.workers}")
