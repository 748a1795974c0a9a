"""Settings every evaluation run shares: model, data, output, device and loading.

:class:`~esam.eval.zeroshot.ZeroShotConfig` and :class:`~esam.eval.instseg.InstSegConfig` add
their protocol's settings to these. Fields are keyword-only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    workers: int = 2
    """DataLoader worker processes decoding images."""
    skip_bad_images: bool = False
    """Count and skip missing, corrupt or mis-sized images instead of stopping (they leave the
    evaluated set and the results say how many, by reason)."""
    progress: bool = True
    """Show a progress bar (rank 0 only)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form settings recorded under ``config.extra``."""

    def __post_init__(self) -> None:
        if self.limit_images is not None and self.limit_images < 1:
            raise ValueError(f"limit_images must be >= 1, got {self.limit_images}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"unknown device {self.device!r}; choose cpu or cuda")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
