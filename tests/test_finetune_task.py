"""The fine-tuning step module: recomputed rounds give the step's loss and gradients unchanged."""

from __future__ import annotations

import copy

import pytest
import torch

from esam.build import build_model
from esam.errors import InputError
from esam.finetune.config import LossConfig, PromptConfig
from esam.finetune.task import InteractiveTraining


def _batch(b: int = 2, k: int = 3, t: int = 16, img: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(b, k, t, t, dtype=torch.bool)
    for i in range(b):
        for j in range(k):
            r, c = torch.randint(0, t - 5, (2,), generator=g).tolist()
            masks[i, j, r : r + 4 + j, c : c + 5] = True
    valid = torch.ones(b, k, dtype=torch.bool)
    valid[1, 2] = False  # a padding query
    return {
        "image": torch.rand(b, 3, img, img, generator=g),
        "masks": masks,
        "valid": valid,
        "prompt_seed": torch.tensor([11, 12]),
    }


@pytest.mark.parametrize("rounds", [0, 2])
def test_recomputed_rounds_give_the_same_loss_and_gradients(rounds: int) -> None:
    torch.manual_seed(0)
    model = build_model("efficientsam_vitt", img_size=64, encoder_depth=1)
    prompts = PromptConfig(corrective_rounds=rounds)
    plain = InteractiveTraining(model, prompts, LossConfig())
    recomputed = InteractiveTraining(
        copy.deepcopy(model), prompts, LossConfig(), recompute_rounds=True
    )
    batch = _batch()
    grads = []
    for module in (plain, recomputed):
        loss, logs = module(batch)
        loss.backward()
        grads.append({n: p.grad for n, p in module.named_parameters() if p.grad is not None})
        grads[-1]["loss"] = loss.detach()
        grads[-1].update({f"log_{k}": v.detach() for k, v in logs.items()})
    a, b = grads
    assert a.keys() == b.keys() and len(a) > 10
    # the same operations on the same inputs, run again: equal on a CPU
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _saved_bytes(module: InteractiveTraining, batch: dict[str, torch.Tensor]) -> int:
    """Bytes of the tensors autograd keeps from the forward pass for the backward pass."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[(t.untyped_storage().data_ptr(), t.numel())] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(batch)
    return sum(seen.values())


def test_recomputed_rounds_keep_far_fewer_activations() -> None:
    torch.manual_seed(0)
    model = build_model("efficientsam_vitt", img_size=64, encoder_depth=1)
    prompts = PromptConfig(corrective_rounds=2)
    batch = _batch()
    kept = _saved_bytes(InteractiveTraining(model, prompts, LossConfig()), batch)
    fewer = _saved_bytes(
        InteractiveTraining(model, prompts, LossConfig(), recompute_rounds=True), batch
    )
    # what remains is the encoder's activations and each round's inputs
    assert fewer < 0.5 * kept, (fewer, kept)


class _Unreadable:
    """A data set whose every json fails to parse."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def record(self, i: int) -> None:
        raise InputError(f"img{i}.json: not valid JSON")

    def locations(self, i: int) -> tuple[str, str]:
        return f"img{i}.jpg", f"img{i}.json"


def test_a_long_run_of_unreadable_images_stops_with_a_named_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import esam.finetune.data as data

    settings = data.SampleSettings(img_size=32, mask_size=8, max_masks=2, min_area=1, seed=0)
    monkeypatch.setattr(data, "MAX_UNREADABLE_IN_A_ROW", 3)
    with pytest.raises(InputError, match=r"3 images in a row cannot be read, the last img2.json"):
        data.FinetuneSamples(_Unreadable(10), settings)[0]
    with pytest.raises(InputError, match=r"no image of the fine-tuning data can be read"):
        data.FinetuneSamples(_Unreadable(3), settings)[0]  # all of them: the plain message
