"""Privacy losses: NaN-free MS-SSIM reconstruction privacy and attribute-privacy losses."""

from deepobfuscator.privacy.losses import (
    bce_logits,
    distance_correlation,
    entropy_privacy,
    fixed_noise_image,
    neg_ce_privacy,
    reconstruction_loss,
)
from deepobfuscator.privacy.msssim import (
    STANDARD_BETAS,
    MSSSIMSettings,
    ms_ssim,
    settings_for_size,
    ssim,
)

__all__ = [
    "STANDARD_BETAS",
    "MSSSIMSettings",
    "bce_logits",
    "distance_correlation",
    "entropy_privacy",
    "fixed_noise_image",
    "ms_ssim",
    "neg_ce_privacy",
    "reconstruction_loss",
    "settings_for_size",
    "ssim",
]
