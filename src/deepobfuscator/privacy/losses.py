"""Privacy losses for adversarial obfuscator training (pure functions, float32 results).

Sign convention: every ``*_privacy`` function is a loss the *obfuscator* minimises.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from deepobfuscator.privacy.msssim import MSSSIMSettings, ms_ssim, settings_for_size

__all__ = [
    "bce_logits",
    "distance_correlation",
    "entropy_privacy",
    "fixed_noise_image",
    "neg_ce_privacy",
    "reconstruction_loss",
]

_LOG2 = math.log(2.0)


def reconstruction_loss(
    recon: Tensor,
    target: Tensor,
    settings: MSSSIMSettings | None = None,
    reduction: str = "mean",
) -> Tensor:
    """L = 1 - MS-SSIM(recon, target), in [0, 1].

    R1 when ``target`` is the input batch x; R2 when it is the fixed noise image n, given as
    (C, H, W) or (1, C, H, W) and broadcast over the batch. ``settings=None`` picks
    ``settings_for_size(H, W)``.
    """
    if target.ndim == 3:
        target = target.unsqueeze(0)
    if target.ndim == 4 and target.shape[0] == 1 and recon.shape[0] != 1:
        target = target.expand(recon.shape[0], -1, -1, -1)
    if settings is None:
        settings = settings_for_size(recon.shape[-2], recon.shape[-1])
    return 1.0 - ms_ssim(recon, target.to(recon.device), settings, reduction=reduction)


def fixed_noise_image(
    shape: tuple[int, int, int], seed: int, device: torch.device | str | None = None
) -> Tensor:
    """n ~ U[0, 1]^(C, H, W), float32, identical for the same seed on every device.

    Drawn on the CPU generator (device RNGs differ) and then moved to ``device``.
    """
    if len(shape) != 3:
        raise ValueError(f"shape must be (C, H, W), got {shape}")
    gen = torch.Generator().manual_seed(int(seed))
    return torch.rand(tuple(shape), generator=gen, dtype=torch.float32).to(device)


def _check_logits_labels(logits: Tensor, labels: Tensor) -> None:
    # Refuse broadcasting: (B,) labels vs (B, 1) logits would silently give a (B, B) loss.
    if logits.shape != labels.shape:
        raise ValueError(
            f"logits and labels must have the same shape, got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )


def bce_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """BCE = mean[-y log s(z) - (1 - y) log(1 - s(z))], s = sigmoid, from logits z; float32."""
    _check_logits_labels(logits, labels)
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


def neg_ce_privacy(logits: Tensor, labels: Tensor) -> Tensor:
    """L = -BCE(z, y): the paper's attribute-privacy loss; the obfuscator minimises it,
    i.e. maximises the adversary's cross-entropy. Unbounded below."""
    return -bce_logits(logits, labels)


def entropy_privacy(logits: Tensor) -> Tensor:
    """L = log 2 - mean H(sigmoid(z)), H(p) = -p log p - (1 - p) log(1 - p).

    In [0, log 2]; 0 when the adversary outputs p = 0.5 everywhere (Roy & Boddeti 2019
    style maximum-entropy objective). Uses log p = logsigmoid(z), log(1 - p) = logsigmoid(-z),
    so large |z| neither overflows nor yields 0 * log 0.
    """
    z = logits.float()
    p = torch.sigmoid(z)
    entropy = -(p * F.logsigmoid(z) + (1.0 - p) * F.logsigmoid(-z))
    return _LOG2 - entropy.mean()


def _centred_distances(x: Tensor, eps: float) -> Tensor:
    """Double-centred Euclidean distance matrix of the rows of x (B, D)."""
    # Centring first shrinks the norms, which limits cancellation in |a|^2 + |b|^2 - 2ab.
    x = x - x.mean(0, keepdim=True)
    sq = (x * x).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0)
    # eps inside the sqrt keeps its gradient finite at coincident points. It is relative to
    # the mean squared distance so the result stays scale invariant, and sqrt(e) is
    # subtracted so coincident points keep distance 0 (a constant input gives A = 0).
    e = eps * d2.detach().mean() + 1e-30
    off_diag = 1.0 - torch.eye(x.shape[0], dtype=x.dtype, device=x.device)
    d = (torch.sqrt(d2 + e) - torch.sqrt(e)) * off_diag  # no gradient via self-distances
    return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()


def distance_correlation(a: Tensor, b: Tensor, eps: float = 1e-10) -> Tensor:
    """Sample distance correlation (Szekely et al. 2007), the NoPeek leakage measure.

    With A, B the double-centred pairwise distance matrices of the flattened rows of a, b:
    dCov^2 = mean(A * B), dVar^2_a = mean(A * A), and
    dCor = sqrt(dCov^2 / sqrt(dVar^2_a * dVar^2_b)), in [0, 1]; ~1e-6 if a side is constant.
    ``eps`` is the relative regulariser inside the distance square roots.
    Differentiable, float32, scale invariant, needs B >= 2. This is the (biased) V-statistic:
    with few samples and high-dimensional rows it stays well above 0 even for independent
    data, so compare values at a fixed batch size and feature shape.
    """
    if a.shape[0] != b.shape[0] or a.shape[0] < 2:
        raise ValueError(
            f"a and b need the same batch size >= 2, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    with torch.autocast(device_type=a.device.type, enabled=False):
        big_a = _centred_distances(a.flatten(1).float(), eps)
        big_b = _centred_distances(b.flatten(1).float(), eps)
        dcov2 = (big_a * big_b).mean()
        denom = torch.sqrt((big_a * big_a).mean() * (big_b * big_b).mean())
        # A constant side has no spread and no dependence: 0, with a NaN-free gradient.
        ok = denom > 0
        dcor2 = torch.where(ok, dcov2 / torch.where(ok, denom, 1.0), 0.0).clamp(0.0, 1.0)
        return torch.sqrt(dcor2 + 1e-12)
