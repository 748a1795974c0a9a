"""``esam finetune export``: the model of any training checkpoint of a fine-tuning run.

A run writes ``model.pt`` only when it ends; its training checkpoints (``checkpoints/``, kept
by ``train.keep_last``) hold the model of earlier steps too, beside the optimizer's state. The
export writes one of them as the same kind of file as ``model.pt``, an esam checkpoint that
stores its architecture, so a snapshot in the middle of a run (a learning curve, a preempted
job) is evaluated like the final model: ``--model efficientsam --checkpoint FILE``.

The architecture comes from the run config stored in the checkpoint; neither the data nor
the files the run started from (``model.backbone``, ``model.init_checkpoint``) are read.
"""

from __future__ import annotations

import os
from pathlib import Path

from esam.checkpoint import CheckpointError, load_state_dict_strict
from esam.config import from_dict
from esam.finetune.config import FinetuneConfig
from esam.finetune.model import build_architecture, save_finetuned, weights_note
from esam.train.checkpointing import find_run_checkpoint, load_checkpoint

#: The trained module wraps the model as ``model`` (:class:`~esam.finetune.task.InteractiveTraining`).
MODEL_PREFIX = "model."


def export_finetuned(
    run_dir: str | os.PathLike[str], out: str | os.PathLike[str]
) -> tuple[Path, int]:
    """Write the model of a run's newest checkpoint (or of a checkpoint file) to ``out``.

    Returns:
        (the model file, the optimizer step of the checkpoint).

    Raises:
        FileNotFoundError: no run folder or checkpoint.
        CheckpointError: the file is not a checkpoint of ``esam finetune``, or its weights do
            not fit the architecture of its config (every key named).
    """
    path = find_run_checkpoint(run_dir, "esam finetune")
    state = load_checkpoint(path)
    weights, config = state.get("model"), state.get("config")
    if not isinstance(weights, dict) or not isinstance(config, dict):
        raise CheckpointError(f"{path}: not a training checkpoint (no 'model' state or 'config')")
    foreign = sorted(k for k in weights if not k.startswith(MODEL_PREFIX))
    if foreign or not weights or not isinstance(config.get("prompts"), dict):
        raise CheckpointError(
            f"{path}: not a checkpoint of esam finetune (its weights are not all under "
            f"{MODEL_PREFIX!r}: {foreign[:3]}, or its config has no 'prompts'); for a "
            "pretraining run use esam pretrain export"
        )
    cfg = from_dict(FinetuneConfig, config)
    model = build_architecture(cfg)
    load_state_dict_strict(
        model, {k[len(MODEL_PREFIX) :]: v for k, v in weights.items()}, str(path)
    )
    step = int(state.get("global_step", 0))
    note = f"{weights_note(cfg)}, step {step} ({path.name})"
    return save_finetuned(model.eval(), Path(out), note), step
