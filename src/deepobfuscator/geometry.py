"""The split model's shapes, from the config alone (no torch): VGG16-BN's block widths
under the width multiplier, the map's size after each block's pooling, and the shape at
the split. The defences (defences/) turn the split's shape into the upload's; the
networks (models/) are built from the same widths."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config_schema import Config

# VGG16-BN: five blocks of 3x3 conv + BN + ReLU, each ending in a 2x2 max-pool
VGG16_BLOCKS: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)


def scaled(channels: int, width: float) -> int:
    """Channels after the width multiplier, at least 4 and a multiple of 4 when narrowed."""
    return max(4, int(round(channels * width / 4)) * 4) if width != 1.0 else channels


def block_widths(width: float) -> list[list[int]]:
    return [[scaled(c, width) for c in block] for block in VGG16_BLOCKS]


def pooled_size(size: tuple[int, int], pools: int) -> tuple[int, int]:
    h, w = size
    for _ in range(pools):
        h, w = h // 2, w // 2
    return h, w


def split_shape(cfg: Config) -> tuple[int, int, int]:
    """Shape (C, H, W) of the VGG blocks' output at the split, before any defence."""
    widths = block_widths(cfg.model.width)
    h, w = pooled_size(cfg.data.image_size, cfg.model.split_block)
    return widths[cfg.model.split_block - 1][-1], h, w
