"""Reconstruction by a learned inverse network: a fresh decoder trained on (z, x) pairs.

The attacker feeds its own images through the frozen obfuscator (it can: the model ships
on every phone) and learns features -> image. The network is deeper and wider at feature
resolution than the training-time decoder R, so a defence that only beat R shows here.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.attack_nets import InversionNetwork
from ..privacy.msssim import ms_ssim, settings_for_size
from .base import (
    FeatureSet,
    FitResult,
    FitSettings,
    batches,
    fit,
    holdout_split,
    in_batches,
)

L1_WEIGHT = 1.0


class InversionAttack:
    """A fresh inverse-network attacker from features (C, h, w) to images (H, W)."""

    def __init__(self, feature_shape: tuple[int, int, int], image_size: tuple[int, int],
                 settings: FitSettings, width: int = 64) -> None:
        self.settings = settings
        self.device = torch.device(settings.device)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.msssim = settings_for_size(*self.image_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            model = InversionNetwork(cast("tuple[int, int, int]", tuple(feature_shape)),
                                     self.image_size, width)
        # channels-last runs oneDNN convolutions ~1.5x faster on CPU (torch's Module.to
        # overloads omit memory_format, which it accepts)
        self.model: InversionNetwork = model.to(  # type: ignore[call-overload]
            self.device, memory_format=torch.channels_last)

    def loss(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """1 - MS-SSIM + L1. MS-SSIM compares luminance only at its coarsest scale and barely
        sees a uniform bias, so trained on it alone reconstructions drift in brightness and
        colour (Zhao et al., "Loss functions for image restoration", 2017); L1 pins pixels."""
        recon, target = recon.float(), target.float()
        return (1 - ms_ssim(recon, target, self.msssim)) + L1_WEIGHT * F.l1_loss(recon, target)

    def fit(self, data: FeatureSet) -> FitResult:
        """Train on `data` (the attacker split); early stopping on a held-out share of it,
        split by identity when identities are known (no face on both sides)."""
        s = self.settings
        if tuple(data.images.shape[-2:]) != self.image_size:
            raise ValueError(f"images are {tuple(data.images.shape[-2:])}, the attack was built "
                             f"for {self.image_size}")
        tr, va = holdout_split(len(data), s.val_fraction, s.seed, data.identities)
        z_tr, x_tr = data.features[tr], data.images[tr]
        z_va, x_va = data.features[va], data.images[va]
        self.model.set_normalization(z_tr.to(self.device))

        def loss_fn(model: nn.Module, batch: tuple) -> torch.Tensor:
            z, x = (t.to(self.device, non_blocking=True) for t in batch)
            return self.loss(model(z), x)

        def train_batches(rng: np.random.Generator) -> list[tuple]:
            return [(z_tr[b], x_tr[b]) for b in batches(len(tr), s.batch_size, rng)]

        val = [(z_va[b], x_va[b]) for b in batches(len(va), 128)]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)
            return fit(self.model, loss_fn, train_batches, val, s, "inversion")

    @torch.no_grad()
    def reconstruct(self, features: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Images (N, 3, H, W), float32 in [0, 1], on the CPU."""
        out = in_batches(self.model, features, batch_size, self.settings.precision,
                         self.device)
        return torch.cat(out) if out else torch.zeros(0, 3, *self.image_size)
