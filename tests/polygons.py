"""Ground truth with polygon parts too short to enclose area, as some real annotation files have."""

from __future__ import annotations

import json
from pathlib import Path


def with_short_polygon_parts(ann: Path, out: Path) -> Path:
    """Copy the COCO file ``ann`` to ``out`` with a 2-point part (4 numbers: pycocotools would
    read the list as boxes) before the first polygon and a 1-point part before the second."""
    data = json.loads(ann.read_text())
    polygons = [a for a in data["annotations"] if isinstance(a["segmentation"], list)]
    assert len(polygons) >= 2
    polygons[0]["segmentation"] = [[1.0, 1.0, 2.0, 2.0], *polygons[0]["segmentation"]]
    polygons[1]["segmentation"] = [[3.0, 3.0], *polygons[1]["segmentation"]]
    out.write_text(json.dumps(data))
    return out
