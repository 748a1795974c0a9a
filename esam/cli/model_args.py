"""The model flags of the single-image commands (``esam predict``, ``esam everything``):
a registry name, a weights file or stand-in weights, and building the model from them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from esam.errors import InputError

#: Where the official weights come from, for the error that asks for them.
_NO_WEIGHTS = (
    "no weights: pass --checkpoint PATH (official weights: efficient_sam_vitt.pt / "
    "efficient_sam_vits.pt.zip from github.com/yformer/EfficientSAM) or --standin-weights for a demo"
)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """``--model``, ``--checkpoint`` and ``--standin-weights``."""
    p.add_argument(
        "--model", default="efficientsam_vitt", help="registry name (default: efficientsam_vitt)"
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="weights file (official .pt/.pt.zip, esam .pt or .safetensors)",
    )
    p.add_argument(
        "--standin-weights",
        action="store_true",
        help="use deterministic stand-in weights instead of a checkpoint (demos and tests only: masks are not meaningful)",
    )


def check_weights_given(args: argparse.Namespace) -> None:
    """Raise :class:`InputError` (saying where weights come from) when neither
    ``--checkpoint`` nor ``--standin-weights`` was given, or both were."""
    if args.checkpoint is None and not args.standin_weights:
        raise InputError(_NO_WEIGHTS)
    if args.checkpoint is not None and args.standin_weights:
        raise InputError("pass either --checkpoint or --standin-weights, not both")


def build_cli_model(args: argparse.Namespace) -> Any:
    """The model of ``--model`` with the weights of ``--checkpoint``, else stand-in weights."""
    import esam
    from esam.standin import load_standin_weights

    model = esam.build_model(args.model, args.checkpoint)
    if args.checkpoint is None:
        load_standin_weights(model)
    return model
