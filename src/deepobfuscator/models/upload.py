"""A sparse upload (model.upload_positions): only the numbers that carry the signal.

With the information cap and a learned gain per position, the phone puts nearly all of
the cap's power on a few positions (the mouth, for `Smiling`); the others are noise. When
training ends, the trainer keeps the K positions with the most signal power on the
defender's training images and the obfuscator sends only those: the mask comes after the
cap and the noise, so the K numbers are exactly those of the full upload (a subset: an
attacker of the sparse upload knows no more than one of the full upload), and no weight
of the obfuscator changes. The cloud gets zeros where nothing was sent; it re-fits to
them (train.upload_tune_epochs, in the trainer).

Training and the audit keep the (C, H, W) layout with zeros, so attackers see the
spatial map they would rebuild from the manifest's positions. The export packs the K
numbers as a (1, 1, K) feature tensor and the cloud model scatters them back: the
wire format and every client stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from .split import Obfuscator

# images scored to choose the positions (the first ones of the defender's training split)
CHOOSE_IMAGES = 2048


@torch.no_grad()
def position_power(encoder: Obfuscator, images: torch.Tensor,
                   batch_size: int = 256) -> torch.Tensor:
    """Mean signal power (before the noise, every position sent) of each position of the
    upload, over the first CHOOSE_IMAGES of `images` (N, H, W, 3) uint8; shape (C, H, W).
    Leaves the encoder's mask at all ones."""
    mask = encoder.upload_mask
    if mask is None:
        raise ValueError("the obfuscator was built without model.upload_positions")
    was_training, std = encoder.training, encoder.noise_std
    mask.fill_(1.0)
    encoder.eval()
    encoder.noise_std = 0.0
    try:
        power = torch.zeros(mask.shape[1:], dtype=torch.float64, device=mask.device)
        n = min(len(images), CHOOSE_IMAGES)
        for i in range(0, n, batch_size):
            x = images[i:i + batch_size].permute(0, 3, 1, 2).float().div(255.0)
            z = encoder(x.to(mask.device)).float()
            power += z.double().pow(2).sum(0)
    finally:
        encoder.train(was_training)
        encoder.noise_std = std
    return power


def keep_strongest(encoder: Obfuscator, power: torch.Tensor, k: int) -> torch.Tensor:
    """Set `encoder.upload_mask` to the k positions of highest `power`; ties go to the
    lower index. Returns the mask."""
    mask = encoder.upload_mask
    assert mask is not None
    order = torch.argsort(-power.flatten().cpu(), stable=True)[:k]
    chosen = torch.zeros(power.numel())
    chosen[order] = 1.0
    mask.copy_(chosen.view_as(mask))
    return mask


def choose_upload_positions(encoder: Obfuscator, images: torch.Tensor, k: int) -> torch.Tensor:
    """Set `encoder.upload_mask` to the k positions of highest mean signal power over
    `images`. A pure function of the encoder's weights and the images, so a resumed run
    recomputes the same choice."""
    return keep_strongest(encoder, position_power(encoder, images), k)


def fewest_positions(encoder: Obfuscator, power: torch.Tensor, most: int,
                     score: Callable[[], float], tolerance: float
                     ) -> tuple[int, dict[str, float]]:
    """The fewest of the strongest positions, halving from `most`, whose task score
    (`score()` with the encoder's current mask; higher is better) stays within
    `tolerance` of the full upload's; stops at the first count that falls short. Returns
    (count, the score of every count tried, "all" for the full upload). Leaves the mask
    at all ones."""
    mask = encoder.upload_mask
    assert mask is not None
    mask.fill_(1.0)
    tried = {"all": score()}
    best, k = most, most
    while k >= 1:
        keep_strongest(encoder, power, k)
        tried[str(k)] = score()
        if tried[str(k)] < tried["all"] - tolerance:
            break
        best, k = k, k // 2
    mask.fill_(1.0)
    return best, tried


def kept_positions(encoder: nn.Module) -> np.ndarray | None:
    """Flat indices into (C, H, W) of the uploaded numbers, ascending; None: all of them."""
    mask = getattr(encoder, "upload_mask", None)
    if mask is None:
        return None
    return np.flatnonzero(mask.detach().cpu().numpy().reshape(-1) > 0.5)


def _one_hot(positions: np.ndarray, elements: int) -> torch.Tensor:
    m = torch.zeros(len(positions), elements)
    m[torch.arange(len(positions)), torch.as_tensor(positions, dtype=torch.long)] = 1.0
    return m


class PackUpload(nn.Module):
    """The phone's side: features (N, C, H, W) -> the kept numbers (N, 1, 1, K). A matrix
    product with a 0/1 matrix (exact in float32, and every runtime has MatMul)."""

    def __init__(self, encoder: nn.Module, positions: np.ndarray, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.encoder = encoder
        self.pick: torch.Tensor
        self.register_buffer("pick", _one_hot(positions, int(np.prod(shape))).T.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        return (z.flatten(1) @ self.pick)[:, None, None, :]


class UnpackUpload(nn.Module):
    """The cloud's side: the kept numbers (N, 1, 1, K) -> (N, C, H, W), zeros elsewhere
    (what the classifier was trained on), then the cloud model."""

    def __init__(self, net: nn.Module, positions: np.ndarray, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.net, self.shape = net, tuple(int(s) for s in shape)
        self.place: torch.Tensor
        self.register_buffer("place", _one_hot(positions, int(np.prod(shape))))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        z = (f.flatten(1) @ self.place).view(-1, *self.shape)
        return self.net(z)


def unpack_numpy(f: np.ndarray, positions: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """UnpackUpload's scatter in numpy: (N, 1, 1, K) -> (N, C, H, W)."""
    out = np.zeros((len(f), int(np.prod(shape))), np.float32)
    out[:, positions] = f.reshape(len(f), -1)
    return out.reshape(len(f), *shape)
