"""Upload pooling (model.upload_pool): the phone average-pools the upload, so fewer numbers
go on the wire for 4 adds each; before the cap, so the cap's noise is drawn on what is
uploaded. The cloud scales the map back up before its first block (models/split.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from ..errors import ConfigError
from .base import Defence, Shape, register_defence

if TYPE_CHECKING:
    from ..config_schema import Config


@register_defence
class UploadPool(Defence):
    name = "pool"
    summary = "average-pool the upload by model.upload_pool (2: a quarter of the numbers)"
    order = 20
    keys = ("model.upload_pool",)
    baseline = ("model.upload_pool=1",)

    def enabled(self, cfg: Config) -> bool:
        return cfg.model.upload_pool > 1

    def validate(self, cfg: Config) -> None:
        pool = cfg.model.upload_pool
        h, w = (n >> cfg.model.split_block for n in cfg.data.image_size)
        if pool < 1 or h % pool or w % pool:
            raise ConfigError(f"model.upload_pool={pool} must be >= 1 and divide the split's "
                              f"feature map ({h} x {w} at split_block={cfg.model.split_block})"
                              "; try 1 or 2")

    def build(self, cfg: Config, shape: Shape) -> nn.Module:
        return nn.AvgPool2d(cfg.model.upload_pool)

    def out_shape(self, cfg: Config, shape: Shape) -> Shape:
        p = cfg.model.upload_pool
        return shape[0], shape[1] // p, shape[2] // p
