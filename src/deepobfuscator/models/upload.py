"""The sparse upload on the wire (model.upload_positions; the defence itself, and how the
positions are chosen, is defences/sparse_upload.py).

Training and the audit keep the (C, H, W) layout with zeros where nothing is sent. The
export packs the K sent numbers as a (1, 1, K) feature tensor and the cloud model
scatters them back: the wire format and every client stay as they are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


def kept_positions(encoder: Any) -> np.ndarray | None:
    """Flat indices into (C, H, W) of an obfuscator's uploaded numbers, ascending; None:
    all of them."""
    stage = encoder.stage("upload")
    if stage is None:
        return None
    return np.flatnonzero(stage.mask.detach().cpu().numpy().reshape(-1) > 0.5)


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
