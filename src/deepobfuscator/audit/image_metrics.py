"""Reconstruction quality as the audit reports it: MS-SSIM, SSIM and PSNR per image.

Measured with torchmetrics (its Gaussian windows and local statistics), not with the
MS-SSIM we train with, so a defence cannot flatter itself through a quirk of its own loss.

Conventions (written into audit.json through `msssim_settings_for` and `SSIM_SETTINGS`):

* Inputs are clamped to [0, 1]; data_range 1.0; everything in float32.
* Windows are *valid*: only windows that lie inside the image count (Wang et al. 2003,
  the MATLAB reference, pytorch_msssim). Since 1.5, torchmetrics' SSIM averages the map
  over a reflect-padded image instead; its `multiscale_structural_similarity_index_measure`
  does so at the coarsest scale, which at 64 px (16 px there, an 11-wide window) moved
  scores by up to 0.1 from the standard value. So SSIM is the mean of torchmetrics' full
  SSIM map with the padded border cropped, and MS-SSIM is built from torchmetrics'
  per-scale contrast-structure terms (already cropped) and that cropped SSIM at the
  coarsest scale. Both then match pytorch_msssim to about 1e-5.
* Each scale's term is averaged over channels and pixels, then ReLU-clipped (torchmetrics'
  `normalize="relu"`) before the fractional power: a negative correlation (e.g. x vs 1-x)
  would give NaN, and means "no structural similarity", so it scores 0.
* PSNR of an exact reconstruction is infinite; it is capped at `PSNR_CAP_DB`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from ..privacy.msssim import settings_for_size

__all__ = ["PSNR_CAP_DB", "SSIM_SETTINGS", "image_scores", "msssim_settings_for", "summarize"]

PSNR_CAP_DB = 100.0  # MSE 1e-10: identical images score this instead of inf
SSIM_SETTINGS: dict[str, Any] = {"sigma": 1.5, "kernel_size": 11, "data_range": 1.0,
                                 "border": "valid"}
BATCH = 128  # images per metric call; bounds memory of the 5 x (B, 3, H, W) local moments


def msssim_settings_for(height: int, width: int) -> dict:
    """MS-SSIM settings used at this image size: torchmetrics kwargs (betas finest first,
    sigma, kernel_size, data_range, normalize) and the border rule. Follows
    `settings_for_size` (64 px: 3 scales, 11-wide window; 128: 4; >= 176: the standard 5)."""
    st = settings_for_size(height, width)
    return {"scales": st.scales, "betas": list(st.effective_betas),
            "sigma": st.sigma, "kernel_size": st.window, "data_range": 1.0,
            "normalize": "relu", "border": "valid"}


def _half_window(sigma: float, kernel_size: int) -> int:
    # torchmetrics sizes its Gaussian from sigma, not kernel_size; the two must agree
    pad = int(3.5 * sigma + 0.5)
    if 2 * pad + 1 != kernel_size:
        raise ValueError(f"sigma {sigma} gives a {2 * pad + 1}-wide window in torchmetrics, "
                         f"not {kernel_size}")
    return pad


def _ssim_valid(x: Tensor, y: Tensor, sigma: float, kernel_size: int) -> Tensor:
    """Mean SSIM over valid windows, per image (B,)."""
    pad = _half_window(sigma, kernel_size)
    _, full = structural_similarity_index_measure(
        x, y, sigma=sigma, kernel_size=kernel_size, data_range=1.0, reduction="none",
        return_full_image=True)
    return full[..., pad:-pad, pad:-pad].flatten(1).mean(1)


def _cs_valid(x: Tensor, y: Tensor, sigma: float, kernel_size: int) -> Tensor:
    """Mean contrast-structure term over valid windows, per image (B,)."""
    _, cs = structural_similarity_index_measure(
        x, y, sigma=sigma, kernel_size=kernel_size, data_range=1.0, reduction="none",
        return_contrast_sensitivity=True)
    return cs


def _msssim(x: Tensor, y: Tensor, kw: dict) -> Tensor:
    terms = []
    for scale in range(kw["scales"]):
        if scale < kw["scales"] - 1:
            terms.append(_cs_valid(x, y, kw["sigma"], kw["kernel_size"]))
            # the same 2x2 average pool as torchmetrics (an odd last row/column is dropped)
            x, y = torch.nn.functional.avg_pool2d(x, 2), torch.nn.functional.avg_pool2d(y, 2)
        else:
            terms.append(_ssim_valid(x, y, kw["sigma"], kw["kernel_size"]))
    stacked = torch.stack(terms).clamp_min(0.0)  # the ReLU normalisation: no NaN from 0 < beta < 1
    betas = torch.tensor(kw["betas"], dtype=torch.float32, device=x.device).view(-1, 1)
    return (stacked ** betas).prod(0)


@torch.no_grad()
def image_scores(recon: Tensor, target: Tensor) -> dict[str, np.ndarray]:
    """Per-image "msssim", "ssim" and "psnr" (dB) of reconstructions against the originals,
    float32 arrays (N,). Both inputs (N, 3, H, W); values are clamped to [0, 1]. Computed
    on recon's device."""
    if recon.shape != target.shape or recon.ndim != 4:
        raise ValueError(f"expected two (N, C, H, W) tensors of one shape, got "
                         f"{tuple(recon.shape)} and {tuple(target.shape)}")
    if not (torch.isfinite(recon).all() and torch.isfinite(target).all()):
        raise ValueError("reconstructions or targets contain NaN/inf: the attacker diverged?")
    kw = msssim_settings_for(*recon.shape[-2:])
    out: dict[str, list[Tensor]] = {"msssim": [], "ssim": [], "psnr": []}
    for i in range(0, len(recon), BATCH):
        # channels-last: torchmetrics' grouped 2-D Gaussian conv runs ~1.5x faster on CPU
        x, y = (t[i:i + BATCH].detach().to(recon.device, torch.float32).clamp(0, 1)
                .contiguous(memory_format=torch.channels_last) for t in (recon, target))
        out["msssim"].append(_msssim(x, y, kw))
        out["ssim"].append(_ssim_valid(x, y, SSIM_SETTINGS["sigma"],
                                       SSIM_SETTINGS["kernel_size"]))
        psnr = peak_signal_noise_ratio(x, y, data_range=1.0, reduction="none", dim=(1, 2, 3))
        out["psnr"].append(torch.nan_to_num(psnr, posinf=PSNR_CAP_DB).clamp(max=PSNR_CAP_DB))
    scores = {k: (torch.cat(v).cpu() if v else torch.zeros(0)).numpy().astype(np.float32)
              for k, v in out.items()}
    for k, v in scores.items():
        if not np.isfinite(v).all():  # cannot happen by construction; say so loudly if it does
            raise RuntimeError(f"image metric {k} produced a non-finite value")
    return scores


def summarize(scores: dict[str, np.ndarray]) -> dict:
    """Mean, std and median of each per-image metric (plain floats, for audit.json)."""
    out = {}
    for k, v in scores.items():
        v = np.asarray(v, dtype=np.float64)
        out[k] = ({"mean": float(v.mean()), "std": float(v.std()), "median": float(np.median(v))}
                  if len(v) else {"mean": float("nan"), "std": float("nan"),
                                  "median": float("nan")})
    return out
