"""The information cap's first half (privacy.normalize_features): every upload scaled to
unit root-mean-square per image on the phone, inside the exported graph. The feature noise
(defences/noise.py) is then relative to a signal power E cannot raise, which bounds what
one upload carries (`capacity_bits`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from .base import Defence, Shape, feature_shape, register_defence, sent_positions

if TYPE_CHECKING:
    from ..config_schema import Config


def unit_rms(z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each image's features scaled to root-mean-square 1, computed in float32; plain ops,
    so it exports to ONNX."""
    zf = z.float()
    rms = zf.pow(2).mean(dim=(1, 2, 3), keepdim=True).add(eps).sqrt()
    return (zf / rms).to(z.dtype)


def capacity_bits(elements: int, noise_std: float, kept: int = 0) -> float | None:
    """Upper bound on what a unit-RMS upload of `elements` numbers with Gaussian noise of
    `noise_std` can carry: the Gaussian channel's D/2 * log2(1 + 1/s^2) bits (power
    constraint per image). With only `kept` of them uploaded (model.upload_positions),
    those carry at most the whole power D: K/2 * log2(1 + D / (K s^2)). None when there is
    no noise (no finite bound)."""
    if noise_std <= 0:
        return None
    k = kept or elements
    return k / 2 * math.log2(1 + elements / (k * noise_std ** 2))


class UnitRMS(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return unit_rms(z)


@register_defence
class InformationCap(Defence):
    name = "cap"
    summary = "scale every upload to unit RMS (with the noise: a bound in bits per image)"
    order = 40
    keys = ("privacy.normalize_features",)
    baseline = ("privacy.normalize_features=false",)

    def enabled(self, cfg: Config) -> bool:
        return cfg.privacy.normalize_features

    def build(self, cfg: Config, shape: Shape) -> nn.Module:
        return UnitRMS()

    def manifest(self, cfg: Config, stage: nn.Module) -> dict | None:
        c, h, w = feature_shape(cfg)
        bits = capacity_bits(c * h * w, cfg.privacy.feature_noise, sent_positions(cfg))
        return {"normalization": "unit_rms", "bits_per_image": bits}
