"""Per-sample random token masking for masked image pretraining (MAE / SAMI).

Every sample keeps exactly ``K = floor(N * (1 - mask_ratio))`` of its ``N`` tokens, as MAE
does (``int(L * (1 - mask_ratio))``): 49 of 196 at the paper's 75 %. Which tokens are kept is
drawn per sample by sorting uniform noise, so samples differ, and the draw is reproducible from
a :class:`torch.Generator`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from esam.errors import InputError


class Masking(NamedTuple):
    """One masking draw for a batch of B samples of N tokens, K of them visible.

    ``ids_keep`` lists the visible tokens in the (random) order the encoder sees them;
    ``ids_shuffle[:, K:]`` (see :meth:`ids_masked`) the masked ones in the order the decoder
    sees them. ``ids_restore`` inverts the shuffle: concatenating per-token values in shuffled
    order (visible first, then masked) and gathering with ``ids_restore`` gives token order.
    """

    ids_keep: torch.Tensor
    """BxK long: grid indices (row-major) of the visible tokens."""
    ids_restore: torch.Tensor
    """BxN long: position of each token (in grid order) in the shuffled order."""
    mask: torch.Tensor
    """BxN bool in grid order: True where the token is masked (hidden from the encoder)."""

    def ids_shuffle(self) -> torch.Tensor:
        """BxN long: grid indices in shuffled order (visible first, then masked)."""
        return torch.argsort(self.ids_restore, dim=1)

    def ids_masked(self) -> torch.Tensor:
        """BxM long (M = N - K): grid indices of the masked tokens, in decoder order."""
        return self.ids_shuffle()[:, self.ids_keep.shape[1] :]


def num_visible(num_tokens: int, mask_ratio: float) -> int:
    """Visible tokens per sample: ``floor(num_tokens * (1 - mask_ratio))`` (MAE's rule)."""
    if not 0.0 <= mask_ratio < 1.0:
        raise InputError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    if num_tokens < 1:
        raise InputError(f"num_tokens must be >= 1, got {num_tokens}")
    keep = int(num_tokens * (1.0 - mask_ratio))
    if keep < 1:
        raise InputError(
            f"mask_ratio {mask_ratio} leaves no visible token of {num_tokens}; lower it"
        )
    return keep


def random_masking(
    batch: int,
    num_tokens: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    noise: torch.Tensor | None = None,
) -> Masking:
    """Draw an independent random mask for each of ``batch`` samples.

    Args:
        batch: number of samples B.
        num_tokens: tokens per sample N (e.g. 196 for a 14x14 grid).
        mask_ratio: fraction to hide, in [0, 1); exactly ``K = floor(N * (1 - mask_ratio))``
            tokens stay visible in every sample.
        generator: source of the noise (its device is where the noise is drawn); the same
            generator state gives the same masks. None uses torch's global RNG.
        device: where the returned tensors live (default: the generator's device, else CPU).
        noise: BxN uniform noise to sort instead of drawing it (e.g. drawn per sample by the
            data loader from (seed, epoch, index), so a sample's mask does not depend on the
            batch or the process it lands in); ``generator`` is then unused.

    Returns:
        :class:`Masking` ``(ids_keep BxK, ids_restore BxN, mask BxN bool)``.
    """
    if batch < 0:
        raise InputError(f"batch must be >= 0, got {batch}")
    keep = num_visible(num_tokens, mask_ratio)
    if noise is not None:
        if tuple(noise.shape) != (batch, num_tokens):
            raise InputError(
                f"noise must have shape {batch}x{num_tokens}, got {tuple(noise.shape)}"
            )
    else:
        noise_device = generator.device if generator is not None else device
        noise = torch.rand(batch, num_tokens, generator=generator, device=noise_device)
    if device is not None:
        noise = noise.to(device)
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: the K smallest are kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = ids_restore >= keep  # a token is masked when it lands after the K kept ones
    return Masking(ids_shuffle[:, :keep], ids_restore, mask)
