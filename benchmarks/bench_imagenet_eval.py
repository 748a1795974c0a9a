"""ImageNet evaluation and linear-probe speed: the eval loop against the model alone, cached
features against re-encoding.

1. **Eval loop vs forward**: ``esam.classify.evaluate.evaluate_model`` (images decoded and
   transformed in DataLoader workers, batched forward, top-5 scoring, per-image rows) against
   the classifier's forward alone on a pre-built batch of the same size and precision, in the
   same process. The ratio (loop images/s over forward images/s) says how much of the model's
   speed the harness keeps (the target: >= 0.7).
2. **Linear probe, 10 epochs**: features extracted once (one backbone pass per image, written
   to the fp16 cache) plus 10 epochs of the probe on cached vectors, against a probe that
   re-encodes every image every epoch (10 backbone passes).

Data: a generated shape/colour set (``esam.data.synth_classes``) at ``--src-size`` px,
resized to the model's input. Model: a random ViT of ``--arch`` at ``--img-size``. Run with
``OMP_NUM_THREADS=1`` and ``--threads 1`` on a shared CPU. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="vit_tiny", choices=["vit_tiny", "vit_small", "vit_base"])
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--src-size", type=int, default=256, help="side of the generated images")
    p.add_argument("--images", type=int, default=128, help="val images (and probe train images)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from esam.classify.config import ModelConfig
    from esam.classify.data import ClassificationSet, eval_transform, train_images
    from esam.classify.evaluate import evaluate_model, run_batches
    from esam.classify.linear import FeatureSet, Probe, extract_features
    from esam.classify.model import build_classifier
    from esam.data.synth_classes import write_synthetic_classes
    from esam.runtime.distributed import DistContext
    from esam.runtime.precision import autocast
    from esam.utils.meta import run_metadata

    ctx, device = DistContext(), torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        per_class = max(1, args.images // 8)
        root = write_synthetic_classes(tmp, 8, per_class, args.src_size, seed=0, split="val")
        images = train_images(root)
        data = ClassificationSet(
            images, eval_transform(args.img_size, 0.875), train=False, size=args.img_size
        )
        torch.manual_seed(0)
        model, _ = build_classifier(
            ModelConfig(arch=args.arch, img_size=args.img_size, drop_path=0.0), 8
        )
        model.eval().requires_grad_(False)
        n = len(data)

        # 1. eval loop against the forward alone (same batch, precision, process)
        x = torch.stack([data[i]["image"] for i in range(args.batch)])
        with torch.no_grad(), autocast(device, args.precision):
            model(x)  # warm-up
        evaluate_model(model, data, args.batch, args.workers, device, args.precision, ctx)
        t0 = time.perf_counter()
        reps = max(1, n // args.batch)
        with torch.no_grad(), autocast(device, args.precision):
            for _ in range(reps):
                model(x)
        forward_ips = reps * args.batch / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        out = evaluate_model(model, data, args.batch, args.workers, device, args.precision, ctx)
        loop_s = time.perf_counter() - t0
        loop_ips = len(out.rows) / loop_s

        # 2. linear probe: cached features vs re-encoding every epoch
        def probe_epochs(features: torch.Tensor, labels: torch.Tensor) -> None:
            probe = Probe(model.trunk.embed_dim, 8)
            opt = torch.optim.SGD(probe.parameters(), lr=0.1, momentum=0.9)
            for i in range(0, len(labels) - args.batch + 1, args.batch):
                loss = torch.nn.functional.cross_entropy(
                    probe(features[i : i + args.batch].float()), labels[i : i + args.batch]
                )
                opt.zero_grad()
                loss.backward()
                opt.step()

        t0 = time.perf_counter()
        feats = extract_features(
            model, data, Path(tmp) / "cache", "train", {}, args.batch, args.workers, device,
            args.precision, ctx,
        )  # fmt: skip
        fs = FeatureSet(feats["features"], feats["labels"])
        for _ in range(args.epochs):
            probe_epochs(fs.features, fs.labels)
        cached_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(args.epochs):
            outs, labels, *_ = run_batches(
                model.features, data, args.batch, args.workers, device, args.precision, ctx
            )
            probe_epochs(torch.cat(outs), torch.cat(labels))
        reencode_s = time.perf_counter() - t0

    print(
        json.dumps(
            {
                "arch": args.arch,
                "img_size": args.img_size,
                "images": n,
                "batch": args.batch,
                "workers": args.workers,
                "precision": args.precision,
                "threads": args.threads,
                "forward_images_per_s": round(forward_ips, 2),
                "eval_loop_images_per_s": round(loop_ips, 2),
                "eval_loop_over_forward": round(loop_ips / forward_ips, 3),
                "probe_epochs": args.epochs,
                "probe_cached_s": round(cached_s, 2),
                "probe_reencode_s": round(reencode_s, 2),
                "probe_speedup": round(reencode_s / cached_s, 2),
                "meta": run_metadata(str(device), args.precision),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
