"""A learned gain on every uploaded number (model.position_gain).

Faces are aligned, and the cap fixes the upload's total power: a gain per position lets E
spend that power where the task is (for Smiling, the mouth) and starve the rest, raising
the task's signal-to-noise ratio at the same bit budget. C*H*W weights, no MACs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ConfigError
from .base import Defence, Shape, register_defence

if TYPE_CHECKING:
    from ..config_schema import Config


class GainStage(nn.Module):
    """z * (1 + rate * delta): rate r makes the optimiser move the gain r times as fast as
    E's other weights (Adam's steps are about lr in delta), so the allocation can sharpen
    within a few epochs."""

    def __init__(self, shape: Shape, rate: float) -> None:
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(1, *shape))
        self.rate = float(rate)

    @property
    def gain(self) -> torch.Tensor:
        """The gain on each uploaded number (1, C, H, W)."""
        return 1 + self.rate * self.delta.detach()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * (1 + self.rate * self.delta)


@register_defence
class PositionGain(Defence):
    name = "gain"
    summary = "a learned gain per uploaded number (model.position_gain: its learning rate)"
    order = 30
    keys = ("model.position_gain",)
    baseline = ("model.position_gain=0",)
    legacy_state = {"gain_delta": "stages.gain.delta"}

    def enabled(self, cfg: Config) -> bool:
        return cfg.model.position_gain > 0

    def validate(self, cfg: Config) -> None:
        if cfg.model.position_gain < 0:
            raise ConfigError(f"model.position_gain={cfg.model.position_gain} must be >= 0 "
                              "(0: no gain; 1: the gain learns at E's rate, 10: ten times "
                              "faster)")

    def build(self, cfg: Config, shape: Shape) -> nn.Module:
        return GainStage(shape, cfg.model.position_gain)
