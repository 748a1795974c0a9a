"""Parameter groups: weight-decay exemptions, layer-wise lr decay, frozen parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from esam.train.param_groups import LayerDecayError, param_groups


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, dim)


class ToyViT(nn.Module):
    """ViT-shaped: patch embedding, position embedding, blocks, final norm, head."""

    def __init__(self, depth: int = 3, dim: int = 4) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 2, 2)
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(Block(dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 2)
        self.frozen = nn.Linear(dim, dim)
        self.frozen.requires_grad_(False)

    @property
    def num_layer_ids(self) -> int:
        return len(self.blocks) + 2

    def layer_id(self, name: str) -> int:
        if name.startswith(("patch_embed", "pos_embed", "cls_token")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.num_layer_ids - 1

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}


def _by_name(groups: list[dict]) -> dict[str, dict]:
    return {n: g for g in groups for n in g["param_names"]}


def test_no_weight_decay_on_norms_biases_and_embeddings() -> None:
    model = ToyViT()
    groups = param_groups(model, weight_decay=0.05)
    named = _by_name(groups)
    decayed = {n for n, g in named.items() if g["weight_decay"] > 0}
    assert decayed == {"patch_embed.weight", "head.weight"} | {
        f"blocks.{i}.fc.weight" for i in range(3)
    }
    assert all(g["wd_scale"] == (1.0 if g["weight_decay"] else 0.0) for g in groups)
    assert not any(n.startswith("frozen") for n in named)  # frozen parameters left out
    assert {g["lr_scale"] for g in groups} == {1.0} and len(groups) == 2
    extra = _by_name(param_groups(model, weight_decay=0.05, no_weight_decay=("blocks.1",)))
    assert extra["blocks.1.fc.weight"]["weight_decay"] == 0.0
    assert extra["blocks.0.fc.weight"]["weight_decay"] == 0.05


def test_exemptions_declared_inside_a_wrapper_count() -> None:
    """A wrapper (fine-tuning's, a task's) that does not forward ``no_weight_decay()`` still
    leaves its ViT's position embedding and class token undecayed."""

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = nn.ModuleDict({"encoder": ToyViT()})
            self.table = nn.Parameter(torch.zeros(3, 4))

    named = _by_name(param_groups(Wrapper(), weight_decay=0.1))
    assert named["model.encoder.pos_embed"]["weight_decay"] == 0.0
    assert named["model.encoder.cls_token"]["weight_decay"] == 0.0
    assert named["model.encoder.patch_embed.weight"]["weight_decay"] == 0.1
    assert named["table"]["weight_decay"] == 0.1


def test_finetuning_leaves_the_image_encoders_position_embedding_undecayed() -> None:
    from esam.config import load_config
    from esam.finetune.config import FinetuneConfig
    from esam.finetune.model import build_finetune_model
    from esam.finetune.task import InteractiveTraining

    cfg = load_config(FinetuneConfig, "tiny", kind="finetune")
    model, _ = build_finetune_model(cfg)
    wrapped = InteractiveTraining(model, cfg.prompts, cfg.loss)
    named = _by_name(param_groups(wrapped, weight_decay=0.1))
    pos = [n for n in named if n.endswith("image_encoder.pos_embed")]
    assert len(pos) == 1 and named[pos[0]]["weight_decay"] == 0.0


def test_layer_decay_scales() -> None:
    model = ToyViT(depth=3)  # ids 0 (embeddings) .. 4 (norm, head)
    named = _by_name(param_groups(model, weight_decay=0.05, layer_decay=0.5))
    assert named["pos_embed"]["lr_scale"] == 0.5**4
    assert named["patch_embed.weight"]["lr_scale"] == 0.5**4
    assert [named[f"blocks.{i}.fc.weight"]["lr_scale"] for i in range(3)] == [0.5**3, 0.25, 0.5]
    assert named["head.weight"]["lr_scale"] == named["norm.weight"]["lr_scale"] == 1.0
    assert named["blocks.0.norm.bias"]["weight_decay"] == 0.0


def test_layer_decay_needs_layer_ids() -> None:
    with pytest.raises(LayerDecayError, match="Sequential lacks layer_id\\(name\\) and num_layer"):
        param_groups(nn.Sequential(nn.Linear(2, 2)), weight_decay=0.1, layer_decay=0.75)
    bad = ToyViT()
    bad.layer_id = lambda name: 99  # type: ignore[method-assign]
    with pytest.raises(LayerDecayError, match="outside"):
        param_groups(bad, weight_decay=0.1, layer_decay=0.75)
    groups = param_groups(ToyViT(), weight_decay=0.1, layer_decay=0.75)
    optimizer = torch.optim.AdamW(groups)  # the groups are valid optimizer groups
    assert len(optimizer.param_groups) == len(groups)
