"""Training-time augmentation (`data.augment`): what a real photo does to a face that
alignment leaves (issue 36, item 3). `photo`: each training image is shifted by up to 5%
of its side, scaled by 0.9-1.1, turned by up to 10 degrees, mirrored half the time, its
brightness and contrast changed by up to 20%, and softened by up to a 3 x 3 Gaussian blur.
Validation, the audit and the device never augment.

Each batch's draws come from a generator seeded by the run's seed and the batch's own
images, a pure function of the training position: a resumed run draws the same.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..config import AUGMENTS

__all__ = ["AUGMENTS", "generator", "photo"]
SHIFT, SCALE, ROTATE_DEG, COLOUR = 0.05, 0.10, 10.0, 0.20


def generator(seed: int, batch_indices: np.ndarray) -> torch.Generator:
    """A CPU generator keyed to the run's seed and the batch (its first image indices)."""
    key = [int(seed), *(int(i) for i in np.asarray(batch_indices)[:4])]
    g = torch.Generator()
    g.manual_seed(int(np.random.default_rng(key).integers(2**62)))
    return g


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def photo(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """x (B, 3, H, W) in [0, 1] -> the same batch as varied photos, in [0, 1]."""
    b = x.shape[0]
    angle = _uniform(g, b, -ROTATE_DEG, ROTATE_DEG) * (math.pi / 180)
    scale = _uniform(g, b, 1 - SCALE, 1 + SCALE)
    shift = _uniform(g, 2 * b, -2 * SHIFT, 2 * SHIFT).view(b, 2)  # grid units: [-1, 1]
    flip = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
    bright = _uniform(g, b, 1 - COLOUR, 1 + COLOUR)
    contrast = _uniform(g, b, 1 - COLOUR, 1 + COLOUR)
    blur = torch.rand(b, generator=g)
    # the output pixel at grid point p reads the input at A p + t: A turns, scales, mirrors
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    dev = x.device
    grid = F.affine_grid(theta.to(dev, x.dtype), list(x.shape), align_corners=False)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * contrast.to(dev, x.dtype).view(b, 1, 1, 1) + mean
    y = y * bright.to(dev, x.dtype).view(b, 1, 1, 1)
    k = torch.tensor([1.0, 2.0, 1.0], device=dev, dtype=x.dtype)
    k = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3)
    soft = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), k, groups=3)
    w = blur.to(dev, x.dtype).view(b, 1, 1, 1)
    return (y + w * (soft - y)).clamp_(0.0, 1.0)
