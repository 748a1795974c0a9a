"""Fine-tuning step speed and memory: batched prompts against a per-prompt loop.

One SAM-style training step on one image with K masks and R prompt rounds (a jittered box or
one click first, then R - 1 corrective clicks), forward + backward + AdamW, computed two ways
on the same model, measured side by side in one run:

* **batched** (``esam.finetune``): the image embedding is computed once; each round decodes
  all K queries in one ``predict_masks`` call; the loss is SAM's (:func:`sam_loss_terms`) on the
  decoder's low-resolution logits (img_size / 4 per side: 256 for the released 1024 px
  models) against targets area-downsampled to that frame; corrective clicks are drawn in that
  frame from the best output's error region and scaled to image pixels. Each round's loss is
  back-propagated as soon as it is computed, into a detached copy of the image embedding whose
  gradient goes through the encoder once at the end: the gradient of the summed loss, with
  one round's decoder activations alive at a time (``--batched-backward end``: one backward
  of the summed loss, all rounds' activations alive).
* **naive**: a straightforward port of a per-mask training loop: for each mask and each round,
  the image is encoded again (as the official ``model(images, points, labels)`` call does for
  every prompt), the single query is decoded, its logits are upsampled to the image size
  (``predict_masks(..., output_h, output_w)``, bicubic) and the same loss is computed there
  against the full-resolution mask; corrective clicks come from the full-resolution error
  region. The losses of all masks and rounds are summed and back-propagated once at the end
  (``--naive-backward each`` back-propagates every prompt's loss at once instead, which keeps
  one prompt's activations alive: the smallest peak of all, at the naive loop's speed).

Both use the same prompt-sampling and loss functions; both losses are the mean over masks and
rounds. Timing: after one untimed step of each, ``--repeats`` steps of each, interleaved
(batched, naive, batched, ...) so that load changes on a shared machine hit both alike; the
minimum of each is reported, with every time in the JSON. Peak memory: one more step of each,
after freed heap memory is handed back to the OS, as the growth of the process's resident set
over the step (``esam.bench.memory``: the kernel's high-water mark, reset before the step; on
CUDA ``max_memory_allocated``).

Weights are esam's deterministic stand-in weights (no download); the arithmetic does not
depend on them. Masks are synthetic: K random unions of rectangles and ellipses (seeded).

Targets: batched >= 3x faster, <= 0.5x the naive peak memory growth.

Usage::

    python benchmarks/bench_finetune_step.py [--k 64] [--rounds 3] [--img-size 256]
        [--encoder-depth 2] [--model efficientsam_vitt] [--repeats 2]
        [--batched-backward round|end] [--naive-backward end|each] [--device cpu]
        [--threads N] [--seed 0] [--output FILE.json]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from esam.bench.memory import PeakMemory
from esam.build import build_model
from esam.finetune.losses import TARGET_THRESHOLD, downsample_masks, sam_loss_terms
from esam.finetune.prompting import (
    append_points,
    corrective_points,
    first_prompts,
    scale_points,
    select_best,
)
from esam.modeling import EfficientSam
from esam.standin import load_standin_weights
from esam.utils.io import write_json_atomic
from esam.utils.meta import run_metadata, utc_now
from esam.utils.results import make_results

TARGET_SPEEDUP = 3.0
TARGET_MEMORY_RATIO = 0.5
#: SAM's box-noise cap, in pixels of its 1024 px input.
SAM_MAX_NOISE_PX = 20.0
SAM_INPUT_SIDE = 1024

Step = Callable[[], float]


def synthetic_masks(k: int, size: int, seed: int) -> torch.Tensor:
    """K non-empty masks of random shapes: unions of 1-3 rectangles and ellipses, KxSxS bool."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.zeros((k, size, size), dtype=bool)
    for i in range(k):
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0, size, 2)
            ry, rx = rng.uniform(size / 40, size / 5, 2)
            if rng.random() < 0.5:
                out[i] |= (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
            else:
                out[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        if not out[i].any():
            out[i, int(cy) % size, int(cx) % size] = True
    return torch.from_numpy(out)


def synthetic_image(size: int, seed: int) -> torch.Tensor:
    """A smooth random 1x3xSxS image in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(coarse, (size, size), mode="bilinear")


def make_model(name: str, img_size: int, encoder_depth: int, device: str) -> EfficientSam:
    model = build_model(name, img_size=img_size, encoder_depth=encoder_depth)
    load_standin_weights(model)
    return model.to(device).train()


def batched_step(
    model: EfficientSam,
    opt: torch.optim.Optimizer,
    image: torch.Tensor,
    masks: torch.Tensor,
    rounds: int,
    seed: int,
    backward: str = "round",
) -> Step:
    """All K queries of a round in one decoder call; loss in the low-resolution frame.

    ``backward="round"`` back-propagates each round's loss as soon as it is computed, into a
    detached copy of the image embedding whose gradient then goes through the encoder once:
    the same gradient as one backward of the summed loss (``"end"``), with one round's decoder
    activations alive at a time instead of all rounds'.
    """
    size = image.shape[-1]
    low = 4 * model.prompt_encoder.image_embedding_size[0]
    max_slots = model.decoder_max_num_input_points
    max_noise = SAM_MAX_NOISE_PX * size / SAM_INPUT_SIDE

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        g = torch.Generator().manual_seed(seed)
        targets = downsample_masks(masks, low)
        gt_low = targets > TARGET_THRESHOLD
        points, labels = first_prompts(masks, g, max_noise=max_noise)
        embedding = model.get_image_embeddings(image)
        decoder_input = embedding.detach().requires_grad_() if backward == "round" else embedding
        total = torch.zeros((), device=image.device)
        for r in range(rounds):
            multimask = r == 0
            logits, iou = model.predict_masks(
                decoder_input, points[None], labels[None], multimask, size, size
            )
            terms = sam_loss_terms(logits[0], iou[0], targets, multimask=multimask)
            loss = terms["loss"] / rounds
            if backward == "round":
                loss.backward()
                loss = loss.detach()
            total = total + loss
            if r + 1 < rounds:
                with torch.no_grad():
                    pred = select_best(logits[0], iou[0]) > 0
                    clicks, click_labels = corrective_points(pred, gt_low, g)
                clicks = scale_points(clicks, (low, low), (size, size))
                points, labels = append_points(points, labels, clicks, click_labels, max_slots)
            del logits, iou, terms
        if backward == "round":
            embedding.backward(decoder_input.grad)
        else:
            total.backward()
        opt.step()
        return float(total.detach())

    return step


def naive_step(
    model: EfficientSam,
    opt: torch.optim.Optimizer,
    image: torch.Tensor,
    masks: torch.Tensor,
    rounds: int,
    seed: int,
    backward: str = "end",
) -> Step:
    """One mask at a time, the image encoded again for every prompt, loss at full resolution."""
    size = image.shape[-1]
    k = masks.shape[0]
    max_slots = model.decoder_max_num_input_points
    max_noise = SAM_MAX_NOISE_PX * size / SAM_INPUT_SIDE

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        g = torch.Generator().manual_seed(seed)
        total = torch.zeros((), device=image.device)
        value = 0.0
        for i in range(k):
            mask = masks[i : i + 1]
            target = mask.float()
            points, labels = first_prompts(mask, g, max_noise=max_noise)
            for r in range(rounds):
                multimask = r == 0
                embedding = model.get_image_embeddings(image)
                logits, iou = model.predict_masks(
                    embedding, points[None], labels[None], multimask, size, size, size, size
                )
                terms = sam_loss_terms(logits[0], iou[0], target, multimask=multimask)
                loss = terms["loss"] / (k * rounds)
                if backward == "each":
                    loss.backward()
                    value += float(loss.detach())
                else:
                    total = total + loss
                if r + 1 < rounds:
                    with torch.no_grad():
                        pred = select_best(logits[0], iou[0]) > 0
                        clicks, click_labels = corrective_points(pred, mask, g)
                    points, labels = append_points(points, labels, clicks, click_labels, max_slots)
        if backward != "each":
            total.backward()
            value = float(total.detach())
        opt.step()
        return value

    return step


def _timed(step: Step, device: str) -> float:
    """Milliseconds of one call of ``step`` (CUDA: synchronised before and after)."""
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    step()
    if cuda:
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) * 1e3


def interleaved_times(
    fast: Step, slow: Step, device: str, repeats: int
) -> tuple[list[float], list[float]]:
    """One untimed call of each, then ``repeats`` timed calls of each, alternating."""
    if repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {repeats}")
    fast()
    slow()
    fast_ms, slow_ms = [], []
    for _ in range(repeats):
        fast_ms.append(_timed(fast, device))
        slow_ms.append(_timed(slow, device))
    return fast_ms, slow_ms


def peak_growth_mib(step: Step, device: str) -> tuple[float, str]:
    """RSS (CPU) or allocated (CUDA) growth over one call of ``step``, MiB."""
    with PeakMemory(device, settle=True) as mem:
        step()
    return mem.growth_mib, mem.method


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientsam_vitt")
    parser.add_argument("--k", type=int, default=64, help="masks per image")
    parser.add_argument("--rounds", type=int, default=3, help="decoder rounds (1 + clicks)")
    parser.add_argument("--img-size", type=int, default=256, help="encoder input and image side")
    parser.add_argument("--encoder-depth", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed steps of each")
    parser.add_argument("--naive-backward", choices=("end", "each"), default="end")
    parser.add_argument("--batched-backward", choices=("round", "end"), default="round")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="write a results JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = utc_now()
    device, size = args.device, args.img_size
    model = make_model(args.model, size, args.encoder_depth, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.1)
    image = synthetic_image(size, args.seed).to(device)
    masks = synthetic_masks(args.k, size, args.seed).to(device)
    low = 4 * model.prompt_encoder.image_embedding_size[0]
    print(
        f"{args.model} (img_size {size}, {args.encoder_depth} encoder blocks, stand-in weights), "
        f"K={args.k} masks, {args.rounds} rounds, device {device}, threads "
        f"{torch.get_num_threads()}; batched loss at {low}x{low}, naive at {size}x{size}"
    )
    fast = batched_step(model, opt, image, masks, args.rounds, args.seed, args.batched_backward)
    slow = naive_step(model, opt, image, masks, args.rounds, args.seed, args.naive_backward)

    t0 = time.perf_counter()
    fast_ms, slow_ms = interleaved_times(fast, slow, device, args.repeats)
    fast_mem, method = peak_growth_mib(fast, device)
    slow_mem, _ = peak_growth_mib(slow, device)
    fast_s = min(fast_ms) / 1e3
    slow_s = min(slow_ms) / 1e3
    speedup = slow_s / fast_s
    mem_ratio = fast_mem / slow_mem if slow_mem > 0 else float("nan")
    ok = speedup >= TARGET_SPEEDUP and mem_ratio <= TARGET_MEMORY_RATIO
    print(f"{'':10}{'step s':>10}{'peak MiB':>12}")
    print(f"{'batched':10}{fast_s:10.3f}{fast_mem:12.1f}")
    print(f"{'naive':10}{slow_s:10.3f}{slow_mem:12.1f}")
    print(
        f"speed-up {speedup:.1f}x (target >= {TARGET_SPEEDUP:.0f}x), peak memory "
        f"{mem_ratio:.3f}x (target <= {TARGET_MEMORY_RATIO}x); memory: {method}"
    )
    print(f"measured in {time.perf_counter() - t0:.0f} s")
    print("PASS" if ok else "FAIL")
    if args.output:
        metrics: dict[str, Any] = {
            "batched_step_s": fast_s,
            "naive_step_s": slow_s,
            "speedup": speedup,
            "batched_peak_growth_mib": fast_mem,
            "naive_peak_growth_mib": slow_mem,
            "memory_ratio": mem_ratio if slow_mem > 0 else None,
            "batched_step_ms_all": fast_ms,
            "naive_step_ms_all": slow_ms,
            "passed": ok,
        }
        results = make_results(
            "finetune_step_speed",
            model={"name": args.model, "checkpoint": None, "weights": "standin (seed 0)"},
            config={
                "k": args.k,
                "rounds": args.rounds,
                "img_size": size,
                "encoder_depth": args.encoder_depth,
                "low_res": low,
                "naive_backward": args.naive_backward,
                "batched_backward": args.batched_backward,
                "repeats": args.repeats,
                "threads": torch.get_num_threads(),
                "seed": args.seed,
                "memory_method": method,
            },
            metrics=metrics,
            meta=run_metadata(device=device, dtype="fp32", start_time=start),
        )
        write_json_atomic(args.output, results)
        print(f"wrote {args.output}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
