"""Writing a benchmark run: the results JSON and its per-instance rows, as one atomic set.

The rows go to ``<output stem>.rows.jsonl`` beside the results file (one JSON object per line,
sorted by image id then annotation or detection index); the results file names it in
``rows_file``, relative to its own folder. All files of a run are written completely under
temporary names first, then renamed into place, the results file last: a failure leaves the
previous run's files as they were, never new rows beside old results.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from esam.adapters.base import SegmentationAdapter
from esam.data.coco import AnnotationSet
from esam.utils.io import sha256_file, write_json_atomic, write_text_atomic
from esam.utils.meta import run_metadata
from esam.utils.results import make_results


def rows_path_for(output: str | Path) -> Path:
    """``results.json`` -> ``results.rows.jsonl`` in the same folder."""
    out = Path(output)
    return out.with_name(f"{out.stem}.rows.jsonl")


def write_rows(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write rows as JSON lines, atomically."""
    text = "".join(json.dumps(r, allow_nan=False, separators=(",", ":")) + "\n" for r in rows)
    return write_text_atomic(path, text)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Read a rows file written by :func:`write_rows`."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def model_block(adapter: SegmentationAdapter, name: str | None = None) -> dict[str, Any]:
    """``model`` block: name, checkpoint, its sha256, and the adapter's processing facts."""
    ckpt = getattr(adapter, "checkpoint", None)
    sha = sha256_file(ckpt) if ckpt is not None and Path(ckpt).is_file() else None
    return {
        "name": name or adapter.name,
        "checkpoint": str(ckpt) if ckpt is not None else None,
        "checkpoint_sha256": sha,
        "weights": getattr(adapter, "weights_note", None),
        "adapter": f"{type(adapter).__module__}.{type(adapter).__qualname__}",
        "processing": adapter.describe(),
    }


def dataset_block(aset: AnnotationSet, n_images: int, n_images_skipped: int) -> dict[str, Any]:
    """``dataset`` block: name, annotation file and its sha256, image folder, image counts.

    Args:
        aset: the loaded annotations.
        n_images: images evaluated (skipped images excluded).
        n_images_skipped: images selected for the run but skipped (missing, corrupt, or of
            another size than the annotation file says).
    """
    return {
        "name": aset.dataset,
        "annotations": str(aset.annotations),
        "annotations_sha256": sha256_file(aset.annotations),
        "images": str(aset.images_dir),
        "n_images": n_images,
        "n_images_skipped": n_images_skipped,
        "n_images_selected": len(aset.images),
        "n_images_in_file": aset.n_images_in_file,
        **aset.info,
    }


def assemble_and_write(
    *,
    task: str,
    output: str | Path | None,
    model: dict[str, Any],
    dataset: dict[str, Any],
    config: dict[str, Any],
    metrics: dict[str, Any],
    skips: Mapping[str, int],
    rows: list[dict[str, Any]],
    device: str,
    start_time: str,
    extra: dict[str, Any] | None = None,
    extra_files: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the results object and, when ``output`` is set, write rows then results.

    Args:
        extra: more top-level keys of the results object.
        extra_files: ``{suffix: json_object}`` written beside the output as
            ``<stem><suffix>`` (e.g. the segmentation results of ``instseg``), named in the
            results under ``files``.
    """
    rows_file = None
    files: dict[str, str] = {}
    staged: list[tuple[Path, Path]] = []  # (temporary file, final name)

    def stage(final: Path) -> Path:
        tmp = final.with_name(f".{final.name}.{os.getpid()}.staged")
        staged.append((tmp, final))
        return tmp

    try:
        if output is not None:
            out = Path(output)
            rows_path = rows_path_for(out)
            write_rows(stage(rows_path), rows)
            rows_file = rows_path.name
            for suffix, obj in (extra_files or {}).items():
                final = out.with_name(f"{out.stem}{suffix}")
                write_json_atomic(stage(final), obj, indent=0)
                files[suffix.lstrip(".").split(".")[0]] = final.name
        results = make_results(
            task,
            model=model,
            config=config,
            metrics=metrics,
            meta=run_metadata(device=device, dtype="fp32", start_time=start_time),
            dataset=dataset,
            skips=dict(sorted(skips.items())),
            rows_file=rows_file,
            **({"files": files} if files else {}),
            **(extra or {}),
        )
        if output is not None:
            write_json_atomic(stage(Path(output)), results)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    # every file is complete before any replaces its previous version; the results file,
    # which names the others, goes last
    for tmp, final in staged:
        os.replace(tmp, final)
    return results
