"""results.json files of both tasks written by ``python -m esam_downstream train`` then ``test``.

The core test suite renders them in esam's report (tests/test_report_downstream.py) beside the
paper's Tables 2 and 3; test_report_fixtures.py checks that the committed copies have the
layout the command writes today. Regenerate the committed copies with::

    cd downstream && OMP_NUM_THREADS=1 python tests/report_fixtures.py ../tests/fixtures/downstream

A tiny seeded ViT (conftest.TINY_ARCH) on 4 generated images per task, trained 20 iterations on
the CPU: the numbers only show that the files flow through the report.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from conftest import TINY_ARCH, tiny_vit
from esam_downstream.cli import main
from esam_downstream.runtime import config_path
from esam_downstream.synth import write_ade20k, write_coco_instances

from esam.checkpoint import save_backbone

#: task -> (tiny config, file name of the committed copy)
FIXTURES = {
    "coco-maskrcnn": ("tiny_mask-rcnn_esam-vit_cpu", "coco-maskrcnn_tiny.json"),
    "ade20k-mask2former": ("tiny_mask2former_esam-vit_cpu", "ade20k-mask2former_tiny.json"),
}
MODEL_NAME = "tiny test ViT"
ITERS = 20


def write_results(task: str, work: Path) -> dict[str, Any]:
    """Generate data and a backbone in ``work``, train, test; the results object written."""
    backbone = save_backbone(work / "backbone.pt", tiny_vit().state_dict(), TINY_ARCH)
    root = work / "data"
    opts = [f"train_cfg.max_iters={ITERS}", f"train_cfg.val_interval={ITERS}"]
    if task == "coco-maskrcnn":
        write_coco_instances(root, "train", num_images=4, seed=0)
        ann = f"{root}/annotations/instances_train.json"
        opts += [f"val_evaluator.ann_file={ann}", f"test_evaluator.ann_file={ann}"]
    else:
        write_ade20k(root, "training", num_images=4, seed=0)
    opts += ["optim_wrapper.optimizer.lr=0.001", f"default_hooks.checkpoint.interval={ITERS}"]
    common = [
        "--task", task, "--config", str(config_path(FIXTURES[task][0])),
        "--backbone", str(backbone), "--data-root", str(root), "--work-dir", str(work / "run"),
    ]  # fmt: skip
    if main(["train", *common, "--cfg-options", *opts]) != 0:
        raise RuntimeError(f"{task}: train failed")
    ckpt = work / "run" / f"iter_{ITERS}.pth"
    test = ["test", *common, "--checkpoint", str(ckpt), "--model", MODEL_NAME]
    if main([*test, "--cfg-options", *opts]) != 0:
        raise RuntimeError(f"{task}: test failed")
    results: dict[str, Any] = json.loads((work / "run" / "results.json").read_text())
    return results


def write_fixtures(out: Path, scratch: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for task, (_, name) in FIXTURES.items():
        work = scratch / task
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        results = write_results(task, work)
        (out / name).write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
        print(f"{out / name}: {results['metrics']}")


if __name__ == "__main__":
    import tempfile

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "../tests/fixtures/downstream")
    with tempfile.TemporaryDirectory() as tmp:
        write_fixtures(target, Path(tmp))
