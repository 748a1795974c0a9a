"""The end-to-end demo on the embedded default data.

Runs a compact version of every stage esam has, on data the project ships (a small synthetic
COCO-format sample with detector-style boxes) or generates (scenes for pretraining) and with
deterministic stand-in weights (no trained weights can be shipped): single-image prediction;
the benchmarks, as one benchmark suite (docs/suites.md): the ``smoke`` suite (zero-shot
box mIoU of the ``box_fill`` and ``oracle`` references, instance segmentation AP from boxes,
object proposals of ``oracle`` and ``box_grid``, CPU throughput of an untrained 256 px
EfficientSAM-Ti) extended with EfficientSAM-Ti's stand-in weights (box and 1-click mIoU,
instance segmentation AP, proposals, CPU throughput of the fast path against the
official-style reference); SAMI pretraining of a small ViT with its loss curve, fine-tuning,
segment everything, ImageNet-style classification (fine-tuning and a linear probe) on
generated shape/colour classes, and finally the leaderboard report.
Each stage is a call of the ``esam`` command line, so the demo also shows how to use it; the
benchmarks are ``esam suite run``, each run in a fresh process, recorded in the suite's ledger
(``results/demo.ledger.json``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esam.utils.io import write_bytes_atomic

log = logging.getLogger(__name__)

DEMO_MODEL = "efficientsam_vitt"
#: Stand-in checkpoints the demo writes into ``OUT/weights/``.
STANDIN_FILE = f"{DEMO_MODEL}_standin.safetensors"
STANDIN_256PX_FILE = f"{DEMO_MODEL}_standin_256px.pt"
#: Name of the demo's benchmark suite: its ledger is ``results/demo.ledger.json``.
DEMO_SUITE = "demo"


@dataclass
class DemoPlan:
    """What the demo runs; ``quick`` shrinks it for the smoke test."""

    out: Path
    quick: bool = False

    @property
    def weights_root(self) -> Path:
        """Folder of the stand-in checkpoints: the demo suite's ``${weights_root}``."""
        return self.out / "weights"

    @property
    def weights(self) -> Path:
        """EfficientSAM-Ti's stand-in weights at full size (1024 px, 12 blocks)."""
        return self.weights_root / STANDIN_FILE

    @property
    def weights_256px(self) -> Path:
        """Stand-in weights of a 256 px, 2-block EfficientSAM-Ti (fast on one CPU core)."""
        return self.weights_root / STANDIN_256PX_FILE

    @property
    def suite(self) -> Path:
        """The demo's benchmark suite file (see :func:`demo_suite`)."""
        return self.out / "demo_suite.yaml"

    @property
    def results(self) -> Path:
        return self.out / "results"

    @property
    def finetune_run(self) -> Path:
        """The fine-tuning stage's run folder (its ``model.pt``)."""
        return self.out / "finetune" / "run"


def _cli(args: list[str]) -> None:
    from esam.cli.main import main

    log.info("esam %s", " ".join(args))
    rc = main(args)
    if rc != 0:
        raise RuntimeError(f"demo stage failed: esam {' '.join(args)} exited with {rc}")


def stage_weights(plan: DemoPlan) -> None:
    """Write stand-in weights as esam checkpoints (exercises the checkpoint round trip): the
    full-size EfficientSAM-Ti and a 256 px, 2-block one for segment everything and proposals.

    A file already holding the same weights and config is kept: a safetensors file's bytes
    differ from one write to the next (its metadata's order), and the benchmark suite knows
    checkpoints by their SHA-256, so rewriting would redo every stand-in run of a second demo.
    """
    import esam
    from esam.standin import load_standin_weights

    sizes: dict[str, Any]
    for path, sizes in ((plan.weights, {}), (plan.weights_256px, EVERYTHING_MODEL)):
        model = esam.build_model(DEMO_MODEL, **sizes)
        load_standin_weights(model)
        if _holds(path, model):
            print(f"  stand-in weights: {path} (unchanged)")
            continue
        esam.save_checkpoint(model, path, DEMO_MODEL, model.config.to_dict(), weights="standin")
        print(f"  stand-in weights: {path}")


def _holds(path: Path, model: Any) -> bool:
    """Whether the checkpoint at ``path`` has exactly ``model``'s config and weights."""
    import torch

    from esam.checkpoint import CheckpointError, read_checkpoint

    if not path.is_file():
        return False
    try:
        state, info = read_checkpoint(path)
    except (OSError, CheckpointError):
        return False
    ours = model.state_dict()
    config = json.loads(json.dumps(model.config.to_dict()))
    return (
        info.get("config") == config
        and state.keys() == ours.keys()
        and all(torch.equal(state[k], ours[k]) for k in ours)
    )


def _first_box(annotations: Path) -> tuple[str, list[float]]:
    data = json.loads(annotations.read_text())
    img = min(data["images"], key=lambda i: i["id"])
    ann = max(
        (a for a in data["annotations"] if a["image_id"] == img["id"] and not a.get("iscrowd")),
        key=lambda a: a["area"],
    )
    x, y, w, h = ann["bbox"]
    return img["file_name"], [x, y, x + w, y + h]


def stage_predict(plan: DemoPlan) -> None:
    """Segment the largest object of the first sample image from its box; write an overlay."""
    from esam.data.synthetic import sample_paths

    annotations, images = sample_paths()
    file_name, box = _first_box(annotations)
    out = plan.out / "predict"
    _cli(
        [
            "predict", "--model", DEMO_MODEL, "--checkpoint", str(plan.weights),
            "--image", str(images / file_name), "--box", ",".join(f"{v:.1f}" for v in box),
            "--out", str(out / "mask.png"), "--overlay", str(out / "overlay.png"),
        ]
    )  # fmt: skip


def _smoke_throughput() -> dict[str, Any]:
    """The smoke suite's throughput run (a 256 px, 2-block EfficientSAM-Ti, untrained)."""
    from esam.config import read_yaml
    from esam.suite.spec import suite_path

    runs = read_yaml(suite_path("smoke"))["runs"]
    run: dict[str, Any] = next(r for r in runs if r["task"] == "throughput")
    return run


def demo_suite(quick: bool) -> dict[str, Any]:
    """The demo's benchmark suite: ``smoke`` plus EfficientSAM-Ti with stand-in weights.

    Its runs are the smoke suite's, then the stand-in model's: zero-shot box and 1-click mIoU
    and instance segmentation AP with the full-size weights, object proposals with the 256 px
    ones (the filters of :data:`EVERYTHING_FILTERS`, an 8 x 8 grid), and CPU throughput of
    the fast path against the official-style reference at the same settings. The weights are
    found under ``${weights_root}``. ``quick`` scores 2 images with the stand-in model and
    times the reference at the smoke suite's 256 px, 2-block size (untrained weights), beside
    the smoke suite's run of the fast path.
    """
    limit = {"limit_images": 2} if quick else {}
    standin = "${weights_root}/" + STANDIN_FILE
    smoke = _smoke_throughput()
    if quick:
        throughput = {**smoke, "model": f"{DEMO_MODEL}:reference"}
    else:  # the smoke run's settings (CPU, one image, fp32), full size, one more timed step
        settings = {k: v for k, v in smoke["overrides"].items() if k != "override"}
        throughput = {
            "task": "throughput",
            "model": ["efficientsam_ti_standin", "efficientsam_ti_standin_reference"],
            "overrides": {**settings, "iters": 3},
        }
    return {
        "name": DEMO_SUITE,
        "description": "the smoke suite plus EfficientSAM-Ti with the demo's stand-in weights",
        "extends": "smoke",
        "models": {
            "efficientsam_ti_standin": {"model": DEMO_MODEL, "checkpoint": standin},
            "efficientsam_ti_standin_reference": {
                "model": f"{DEMO_MODEL}:reference",
                "checkpoint": standin,
            },
            # proposals name the model by its checkpoint's architecture: "efficientsam"
            "efficientsam_standin_256px": {
                "model": "efficientsam",
                "checkpoint": "${weights_root}/" + STANDIN_256PX_FILE,
            },
        },
        "runs": [
            {
                "task": "zeroshot",
                "model": "efficientsam_ti_standin",
                "dataset": "sample",
                "protocol": "efficientsam",
                "matrix": {"prompt": ["box", "point1"]},
                "overrides": limit,
            },
            {
                "task": "instseg",
                "model": "efficientsam_ti_standin",
                "dataset": "sample",
                "protocol": "efficientsam",
                "overrides": limit,
            },
            {
                "task": "proposals",
                "model": "efficientsam_standin_256px",
                "dataset": "sample",
                "overrides": {"points_per_side": 8, **EVERYTHING_FILTERS, **limit},
            },
            throughput,
        ],
    }


def stage_benchmarks(plan: DemoPlan) -> None:
    """The benchmarks as one suite: ``smoke`` plus the stand-in EfficientSAM-Ti's runs.

    Writes the suite (:func:`demo_suite`) to ``OUT/demo_suite.yaml`` and runs it with ``esam
    suite run`` into the results folder the report stage renders: one fresh process per run,
    results named by a hash of their inputs, and the ledger ``results/demo.ledger.json``. A
    second demo into the same folder reruns only the runs whose inputs changed.
    """
    import yaml

    header = (
        "# The demo's benchmarks, written by `esam demo`: the smoke suite plus EfficientSAM-Ti\n"
        "# with the demo's stand-in weights. Run again with\n"
        f"#   esam suite run {plan.suite} --weights-root {plan.weights_root} --out {plan.results}\n"
    )
    plan.suite.write_text(header + yaml.safe_dump(demo_suite(plan.quick), sort_keys=False))
    _cli(
        ["suite", "run", str(plan.suite), "--weights-root", str(plan.weights_root),
         "--out", str(plan.results)]
    )  # fmt: skip


def stage_pretrain(plan: DemoPlan) -> None:
    """SAMI on a CPU: a small ViT distils a frozen 4-block EfficientSAM-Ti encoder (stand-in
    weights) on generated scenes, then is evaluated on held-out scenes and exported.

    The held-out reconstruction error falls below half of the mean-feature baseline's (the
    quick setting trains less and only shows that the pipeline runs).
    """
    import esam
    from esam.data.scenes import write_scene_folder
    from esam.standin import load_standin_weights

    root = plan.out / "pretrain"
    n_train, epochs = (64, 2) if plan.quick else (512, 40)
    train = write_scene_folder(root / "scenes_train", n_train, seed=0, size=96)
    heldout = write_scene_folder(root / "scenes_heldout", 64, seed=0, size=96, start=100_000)
    teacher = esam.build_model(DEMO_MODEL, img_size=96, encoder_depth=4)
    load_standin_weights(teacher)
    teacher_path = root / "teacher_standin.pt"
    esam.save_checkpoint(
        teacher, teacher_path, DEMO_MODEL, teacher.config.to_dict(), weights="standin"
    )
    run = root / "run"
    if run.exists():
        import shutil

        shutil.rmtree(run)  # a fresh run each time the demo runs
    _cli(
        [
            "pretrain", "--config", "tiny", "--data", str(train), "--eval-data", str(heldout),
            "--output", str(run), "--teacher", DEMO_MODEL, "--teacher-checkpoint",
            str(teacher_path), f"train.epochs={epochs}", "train.progress=false",
            *(["train.log_every=1"] if plan.quick else []),
        ]
    )  # fmt: skip
    _cli(["pretrain", "export", str(run), "--out", str(root / "backbone.pt")])
    results = plan.results / "pretrain"
    write_bytes_atomic(results / "sami_tiny_scenes.json", (run / "results.json").read_bytes())


#: The fine-tuning stage's generated SA-1B-format set: default scenes (10-21 overlapping shapes,
#: visible parts of at least 16 px) at the tiny config's 128 px; (training images, epochs) full
#: and quick. Full: 2000 images x 3 epochs at batch 4, 1500 steps (6.7-7.4 minutes on a 2-core
#: AMD EPYC). The held-out images (seed 1) are scored as the fine-tuning proof.
FINETUNE_SET = {"full": (2000, 3), "quick": (16, 1)}
FINETUNE_SIZE = 128
FINETUNE_HELDOUT = {"full": 40, "quick": 8}
#: The fine-tuning stage's results files, under ``results/finetune/``.
FINETUNE_RESULTS = {
    "train": "train_tiny_synth.json",
    "box": "synth_box_efficientsam_synth.json",
    "point1": "synth_point1_efficientsam_synth.json",
    "box_fill": "synth_box_box_fill.json",
    "coco_sample": "coco_sample_box_efficientsam_synth.json",
}


def stage_finetune(plan: DemoPlan, epochs: int | None = None) -> None:
    """EfficientSAM from scratch on a generated SA-1B-format set, then evaluated like COCO.

    ``epochs`` replaces the setting's (:data:`FINETUNE_SET`); the schedule spans them.

    The held-out synthetic images are scored through ``esam eval zeroshot --dataset sa1b``
    (box and one click) beside ``box_fill``, and the model is also scored on the shipped
    COCO-format sample; every row is marked as trained on synthetic data.
    ``benchmarks/bench_finetune_scratch.py`` runs this stage alone and checks its targets.
    """
    from esam.data.synthetic import sample_paths

    root = plan.out / "finetune"
    setting = "quick" if plan.quick else "full"
    n_train, default_epochs = FINETUNE_SET[setting]
    epochs = epochs or default_epochs
    n_heldout = FINETUNE_HELDOUT[setting]
    # named by count and size, so a folder of another setting is never reused
    train = root / f"synth_train_{n_train}x{FINETUNE_SIZE}px"
    heldout = root / f"synth_heldout_{n_heldout}x{FINETUNE_SIZE}px"
    for folder, n, seed in ((train, n_train, 0), (heldout, n_heldout, 1)):
        if not folder.exists():
            _cli(["data", "synth-sa1b", "--out", str(folder), "--images", str(n),
                  "--seed", str(seed), "--size", str(FINETUNE_SIZE), "--no-progress"])  # fmt: skip
    run = plan.finetune_run
    if run.exists():
        import shutil

        shutil.rmtree(run)
    _cli(
        [
            "finetune", "--config", "tiny", "--data", str(train), "--output", str(run),
            f"train.epochs={epochs}", "train.progress=false",
            "data.note=synthetic data (esam data synth-sa1b)",
            *(["train.log_every=1", "train.schedule.warmup_steps=1"] if plan.quick else []),
        ]
    )  # fmt: skip
    model = ["--model", "efficientsam", "--checkpoint", str(run / "model.pt")]
    results = plan.results / "finetune"
    write_bytes_atomic(results / FINETUNE_RESULTS["train"], (run / "results.json").read_bytes())
    data = ["--dataset", "sa1b", "--annotations", str(heldout), "--images", str(heldout)]
    for key, extra, prompt in (
        ("box", model, "box"),
        ("point1", model, "point1"),
        ("box_fill", ["--model", "box_fill"], "box"),
    ):
        _cli(
            ["eval", "zeroshot", *extra, *data, "--prompt", prompt, "--workers", "0",
             "--no-progress", "--output", str(results / FINETUNE_RESULTS[key])]
        )  # fmt: skip
    annotations, images = sample_paths()
    _cli(
        ["eval", "zeroshot", *model, "--dataset", "coco", "--annotations", str(annotations),
         "--images", str(images), "--workers", "0", "--no-progress",
         "--output", str(results / FINETUNE_RESULTS["coco_sample"])]
    )  # fmt: skip


#: Size of the demo's segment-everything and proposals model: a 256 px, 2-block
#: EfficientSAM-Ti (fast on one CPU core; :attr:`DemoPlan.weights_256px`).
EVERYTHING_MODEL: dict[str, Any] = {"img_size": 256, "encoder_depth": 2}
#: Filters of the demo's segment-everything stage and proposals, lifted because stand-in
#: masks never pass segment-anything's defaults (0.88 / 0.95).
EVERYTHING_FILTERS = {"pred_iou_thresh": 0, "stability_score_thresh": 0}


def stage_everything(plan: DemoPlan) -> None:
    """Segment everything in a shipped sample image.

    ``esam everything`` writes COCO-RLE records (``everything/masks.json``) and a coloured
    overlay (``everything/overlay.png``) with the 256 px stand-in weights, so the masks are not
    meaningful. The same generator is scored as object proposals in the benchmark stage.
    """
    from esam.data.synthetic import sample_paths

    _, images = sample_paths()
    root = plan.out / "everything"
    filters = [
        x for k, v in EVERYTHING_FILTERS.items() for x in ("--" + k.replace("_", "-"), str(v))
    ]
    generator = ["--model", "efficientsam", "--checkpoint", str(plan.weights_256px), *filters]
    image = images / min(p.name for p in images.glob("*.png"))
    _cli(
        ["everything", *generator, "--image", str(image),
         "--points-per-side", "8" if plan.quick else "16",
         "--out", str(root / "masks.json"), "--overlay", str(root / "overlay.png")]
    )  # fmt: skip


#: The demo's generated classification set: (classes, train / val images per class, side in
#: px), full and quick. 8 shape/colour classes, 100 + 25 images each, at 32 px.
IMAGENET_SET = {"full": (8, 100, 25, 32), "quick": (4, 16, 4, 32)}
#: Dataset name of the demo's classification rows: the report's table says the data is synthetic.
IMAGENET_DATASET = "synthetic shapes (esam data synth-classes)"


def stage_imagenet(plan: DemoPlan) -> None:
    """ImageNet-style classification on a generated set of shape/colour classes.

    ``esam data synth-classes`` writes ImageFolder ``train/`` and ``val/`` splits; ``esam eval
    imagenet --config tiny`` (a 2-block, 64-wide ViT at 32 px, random initial weights) then
    fine-tunes the whole classifier (``--mode finetune``) and, separately, trains a linear
    probe on the frozen random backbone's cached features (``--mode linear``). Both results
    files go to the report's ImageNet table under the dataset name
    :data:`IMAGENET_DATASET`: they say the pipeline runs, nothing about ImageNet-1K accuracy.
    """
    import shutil

    n_classes, per_class, n_val, size = IMAGENET_SET["quick" if plan.quick else "full"]
    root = plan.out / "imagenet"
    data = root / f"shapes_{n_classes}x{per_class}_{size}px"
    if not data.exists():
        _cli(["data", "synth-classes", "--out", str(data), "--classes", str(n_classes),
              "--per-class", str(per_class), "--val-per-class", str(n_val), "--size", str(size),
              "--seed", "0"])  # fmt: skip
    quick = (
        ["train.epochs=1", "linear.train.epochs=2", "linear.train.batch_size=32",
         "train.log_every=1"]
        if plan.quick else []
    )  # fmt: skip
    results = plan.results / "imagenet"
    names = {"finetune": "tiny ViT trained from random init", "linear": "tiny ViT, random frozen"}
    for mode, name in names.items():
        run = root / f"run_{mode}"
        if run.exists():
            shutil.rmtree(run)  # a fresh run each time the demo runs
        _cli(
            ["eval", "imagenet", "--mode", mode, "--config", "tiny",
             "--train", str(data / "train"), "--val", str(data / "val"), "--output", str(run),
             f"data.name={IMAGENET_DATASET}", f"model.name={name}",
             "train.progress=false", "linear.train.progress=false", *quick]
        )  # fmt: skip
        copy = results / mode
        for name in ("results.json", "results.rows.jsonl"):
            write_bytes_atomic(copy / name, (run / name).read_bytes())


def stage_report(plan: DemoPlan) -> None:
    """Leaderboards, plots and the HTML page from every results file above.

    Results committed in the checkout's ``results/`` folder (measured runs on CPU and GPU
    machines) are shown beside the demo's own.
    """
    committed = Path(__file__).resolve().parents[1] / "results"
    extra = ["--results", str(committed)] if committed.is_dir() and not plan.quick else []
    _cli(["report", "--results", str(plan.results), *extra, "--out", str(plan.out / "report")])


STAGES: list[tuple[str, Callable[[DemoPlan], None]]] = [
    ("stand-in weights", stage_weights),
    ("predict one object", stage_predict),
    ("benchmark suite: smoke + stand-in EfficientSAM-Ti", stage_benchmarks),
    ("SAMI pretraining", stage_pretrain),
    ("EfficientSAM fine-tuning", stage_finetune),
    ("segment everything", stage_everything),
    ("ImageNet classification (synthetic classes)", stage_imagenet),
    ("report", stage_report),
]


def _stage_metrics(files: dict[str, Path]) -> dict[str, dict[str, Any]] | None:
    """The ``metrics`` of each results file of a stage, by key; None unless all were written."""
    if not all(p.is_file() for p in files.values()):
        return None
    return {k: json.loads(p.read_text())["metrics"] for k, p in files.items()}


def run_demo(out: Path, quick: bool = False) -> Path:
    """Run every stage into ``out``; returns the report folder."""
    plan = DemoPlan(Path(out), quick)
    plan.out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    for i, (title, fn) in enumerate(STAGES, 1):
        print(f"[{i}/{len(STAGES)}] {title}", flush=True)
        t0 = time.perf_counter()
        fn(plan)
        print(f"[{i}/{len(STAGES)}] {title}: done in {time.perf_counter() - t0:.1f} s", flush=True)
    report = plan.out / "report"
    print(f"\ndemo finished in {time.perf_counter() - t_all:.0f} s")
    print(f"  overlay: {plan.out / 'predict' / 'overlay.png'}")
    print(f"  results: {plan.results}")
    print(f"  benchmark suite: {plan.suite} (ledger {plan.results / f'{DEMO_SUITE}.ledger.json'})")
    print(f"  report:  {report / 'index.html'}")
    pretrain = plan.results / "pretrain" / "sami_tiny_scenes.json"
    if pretrain.is_file():
        m = json.loads(pretrain.read_text())["metrics"]
        if m.get("eval_mse_ratio") is not None:
            print(
                f"  SAMI pretraining ({m['steps']} steps on generated scenes): held-out MSE "
                f"{m['eval_mse']:.3f} against {m['eval_mean_feature_mse']:.3f} for the teacher's "
                f"mean feature (ratio {m['eval_mse_ratio']:.2f})"
            )
    ft = _stage_metrics(
        {k: plan.results / "finetune" / name for k, name in FINETUNE_RESULTS.items()}
    )
    if ft is not None:
        print(
            f"  EfficientSAM fine-tuned from scratch ({ft['train']['steps']} steps on generated "
            f"images): held-out box mIoU {ft['box']['miou']:.1f}% (box_fill "
            f"{ft['box_fill']['miou']:.1f}%), 1-click {ft['point1']['miou']:.1f}%"
        )
    top1 = _stage_metrics(
        {m: plan.results / "imagenet" / m / "results.json" for m in ("finetune", "linear")}
    )
    if top1 is not None:
        print(
            f"  classification of {top1['finetune']['n_classes']} synthetic shape classes: "
            f"top-1 {top1['finetune']['top1']:.1f}% fine-tuned, {top1['linear']['top1']:.1f}% "
            f"linear probe of the random backbone (chance {100 / top1['linear']['n_classes']:.1f}%)"
        )
    print(
        "  note: the EfficientSAM rows use stand-in weights, so their accuracy is not meaningful;"
    )
    print("        pass real checkpoints to 'esam eval' for real numbers.")
    return report
