"""Feature noise (privacy.feature_noise, Shredder-like): Gaussian noise on every upload, in
training and in use, so an attacker sees noisy features. With the cap it sets the
signal-to-noise ratio of the upload.

It runs on the device after the exported graph (`runs_on = "runtime"`): the parity check
needs a deterministic graph, random ops differ between runtimes, and onnxruntime's
RandomNormalLike without a seed drew the same noise in every new session (1.32.0,
2026-12-04), which an attacker could subtract. The manifest's features.noise_std tells the
device to add it from the OS's entropy. The stage is always built (std 0 is no noise), so
`Obfuscator.noise_std` always names the device's contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ConfigError
from .base import Defence, Shape, register_defence

if TYPE_CHECKING:
    from ..config_schema import Config


class NoiseStage(nn.Module):
    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = float(std)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.std > 0:
            z = z + self.std * torch.randn_like(z)
        return z


@register_defence
class FeatureNoise(Defence):
    name = "noise"
    summary = "Gaussian noise of std privacy.feature_noise on every upload, added on the device"
    order = 60
    # noise_warmup: the task stage ramps the noise up over its first epochs (trainer)
    keys = ("privacy.feature_noise", "privacy.noise_warmup")
    # a warm-up of no noise is no warm-up; pinned to 0, the value every baseline had
    # before the key existed, so its hash stays put
    baseline = ("privacy.feature_noise=0", "privacy.noise_warmup=0")
    runs_on = "runtime"

    def enabled(self, cfg: Config) -> bool:
        return True

    def validate(self, cfg: Config) -> None:
        for key, value in (("privacy.feature_noise", cfg.privacy.feature_noise),
                           ("privacy.noise_warmup", cfg.privacy.noise_warmup)):
            if not value >= 0:  # NaN too
                raise ConfigError(f"{key} must be >= 0, got {value}")

    def build(self, cfg: Config, shape: Shape) -> nn.Module:
        return NoiseStage(cfg.privacy.feature_noise)

    def manifest(self, cfg: Config, stage: nn.Module) -> dict | None:
        return {"noise_std": float(getattr(stage, "std", 0.0))}
