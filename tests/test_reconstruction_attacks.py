"""Reconstruction attacks and the image metrics that score them (fast: small images)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepobfuscator.attackers.base import FeatureSet, FitSettings
from deepobfuscator.attackers.inversion import InversionAttack
from deepobfuscator.attackers.whitebox import WhiteBoxAttack
from deepobfuscator.audit.image_metrics import (
    PSNR_CAP_DB,
    image_scores,
    msssim_settings_for,
    summarize,
)
from deepobfuscator.models.attack_nets import InversionNetwork


def smooth_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Random low-frequency colour patterns (two octaves of upsampled noise) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(size, size),
                           mode="bicubic", align_corners=False)
    fine = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(size, size),
                         mode="bicubic", align_corners=False)
    return (0.7 * coarse + 0.3 * fine).clamp(0, 1)


# ---- image metrics -------------------------------------------------------------------------

def test_identical_images_score_perfectly() -> None:
    x = smooth_images(4)
    s = image_scores(x, x)
    assert np.allclose(s["msssim"], 1, atol=1e-5) and np.allclose(s["ssim"], 1, atol=1e-5)
    assert np.all(s["psnr"] == PSNR_CAP_DB)  # inf is capped, so means stay finite
    assert all(v.dtype == np.float32 and v.shape == (4,) for v in s.values())


def test_independent_noise_scores_near_zero() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(4, 3, 64, 64, generator=g), torch.rand(4, 3, 64, 64, generator=g)
    s = image_scores(a, b)
    assert np.all(np.abs(s["msssim"]) < 0.1) and np.all(np.abs(s["ssim"]) < 0.1)


def test_anticorrelated_pairs_are_finite() -> None:
    x = smooth_images(4)
    s = image_scores(1 - x, x)  # negative cs at every scale: NaN with a bare fractional power
    assert all(np.isfinite(v).all() for v in s.values())
    assert np.all(s["msssim"] == 0) and np.all(s["ssim"] < 0)


def test_metrics_agree_with_pytorch_msssim() -> None:
    """pytorch_msssim uses valid windows, as we do; torchmetrics' own padded averages would
    differ (SSIM by ~0.03-0.07 at 64 px). Channels are compared one at a time for MS-SSIM:
    pytorch_msssim raises each channel's terms to the powers, we (and torchmetrics) pool the
    channels first. Its ms_ssim also insists on > (win-1)*16 px whatever the number of
    scales, so MS-SSIM is compared at 176 px with the standard 5-scale settings."""
    pm = pytest.importorskip("pytorch_msssim")
    g = torch.Generator().manual_seed(2)
    x = smooth_images(3, 64, seed=3)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ref = pm.ssim(y, x, data_range=1.0, win_size=11, win_sigma=1.5, size_average=False)
    assert np.allclose(image_scores(y, x)["ssim"], ref.numpy(), atol=1e-3)

    big = smooth_images(2, 176, seed=4)[:, :1]
    noisy = (big + 0.1 * torch.randn(big.shape, generator=g)).clamp(0, 1)
    kw = msssim_settings_for(176, 176)
    assert kw["scales"] == 5 and kw["kernel_size"] == 11
    ref = pm.ms_ssim(noisy, big, data_range=1.0, win_size=11, win_sigma=1.5,
                     weights=kw["betas"], size_average=False)
    assert np.allclose(image_scores(noisy, big)["msssim"], ref.numpy(), atol=1e-3)


def test_msssim_settings_follow_the_design() -> None:
    assert msssim_settings_for(64, 64)["scales"] == 3
    assert msssim_settings_for(64, 64)["kernel_size"] == 11
    assert msssim_settings_for(128, 128)["scales"] == 4
    assert msssim_settings_for(218, 178)["scales"] == 5
    assert abs(sum(msssim_settings_for(64, 64)["betas"]) - 1) < 1e-5


def test_summarize() -> None:
    out = summarize({"msssim": np.array([0.2, 0.4, 0.9], np.float32)})
    assert out["msssim"]["median"] == pytest.approx(0.4)
    assert out["msssim"]["mean"] == pytest.approx(0.5)


# ---- inverse network -----------------------------------------------------------------------

@pytest.mark.parametrize("feat,image", [((8, 6, 5), (23, 19)), ((3, 32, 32), (32, 32))])
def test_inversion_network_handles_odd_and_unscaled_sizes(feat, image) -> None:
    net = InversionNetwork(feat, image, width=16).eval()
    out = net(torch.randn(2, *feat))
    assert out.shape == (2, 3, *image) and out.min() >= 0 and out.max() <= 1


def _inversion_known_answer(features: torch.Tensor, images: torch.Tensor) -> float:
    n_train = 240
    ids = np.arange(len(images)) // 4  # 4 images per "identity": the holdout splits by it
    data = FeatureSet(features[:n_train], images[:n_train], {}, ids[:n_train])
    fs = FitSettings(max_epochs=8, patience=3, lr=3e-3, batch_size=32, progress=False)
    atk = InversionAttack(tuple(features.shape[1:]), (32, 32), fs, width=16)
    result = atk.fit(data)
    assert result.stopped in ("early_stopping", "max_epochs") and result.best_epoch >= 0
    recon = atk.reconstruct(features[n_train:])
    assert recon.dtype == torch.float32 and recon.shape == images[n_train:].shape
    return float(image_scores(recon, images[n_train:])["msssim"].mean())


def test_inversion_reconstructs_informative_features() -> None:
    torch.manual_seed(0)
    images = smooth_images(300, seed=5)
    features = F.avg_pool2d(images, 2)  # features that carry (almost) everything
    assert _inversion_known_answer(features, images) > 0.8


def test_inversion_learns_nothing_from_uninformative_features() -> None:
    torch.manual_seed(0)
    images = smooth_images(300, seed=5)
    features = torch.randn(300, 3, 16, 16)  # independent of the images
    assert _inversion_known_answer(features, images) < 0.3


# ---- white-box optimisation ----------------------------------------------------------------

def test_whitebox_inverts_a_known_encoder_and_leaves_it_untouched() -> None:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                            nn.MaxPool2d(2), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())
    encoder.train()
    encoder[0].bias.requires_grad_(False)  # a mixed requires_grad state must come back as is
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    grads = [p.requires_grad for p in encoder.parameters()]
    images = smooth_images(4, seed=6)
    encoder.eval()
    with torch.no_grad():
        z = encoder(images)
    encoder.train()
    attack = WhiteBoxAttack(encoder, steps=60, progress=False)
    recon = attack.reconstruct(z, batch_size=3)  # two batches, the last one short
    assert recon.shape == images.shape and recon.min() >= 0 and recon.max() <= 1
    got = image_scores(recon, images)
    blank = image_scores(torch.full_like(images, 0.5), images)
    assert got["msssim"].mean() > blank["msssim"].mean() + 0.3
    assert got["ssim"].mean() > blank["ssim"].mean() + 0.2
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert [p.requires_grad for p in encoder.parameters()] == grads
    assert encoder.training and all(p.grad is None for p in encoder.parameters())


def test_whitebox_image_size_for_odd_inputs() -> None:
    encoder = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2)).eval()
    with torch.no_grad():
        z = encoder(torch.rand(2, 3, 35, 33))
    recon = WhiteBoxAttack(encoder, steps=2, progress=False, image_size=(35, 33)).reconstruct(z)
    assert recon.shape == (2, 3, 35, 33)
    assert WhiteBoxAttack(encoder, steps=2, progress=False).reconstruct(z).shape == (2, 3, 34, 32)


def test_whitebox_images_of_a_batch_do_not_interact() -> None:
    torch.manual_seed(0)
    # average pooling: from the flat grey start, max-pool ties would be broken differently
    # by batched and single-image kernels, which is kernel detail, not images interacting
    encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                            nn.AvgPool2d(2)).eval()
    images = smooth_images(3, seed=7)
    with torch.no_grad():
        z = encoder(images)
    # no TV term: |0| at the flat start has no defined slope, and float noise picks its sign
    attack = WhiteBoxAttack(encoder, steps=20, progress=False, precision="fp32", tv_weight=0.0)
    together = attack.reconstruct(z, batch_size=3)
    alone = attack.reconstruct(z, batch_size=1)
    # equal up to float noise (batched kernels sum in another order; Adam magnifies the
    # noise on pixels whose gradient is near zero), far below any real interaction
    assert (together - alone).abs().mean() < 1e-4
    assert (together - alone).abs().max() < 2e-2
    diff = image_scores(together, images)["msssim"] - image_scores(alone, images)["msssim"]
    assert np.abs(diff).max() < 1e-3


def test_image_scores_on_odd_non_square_images() -> None:
    x = smooth_images(2, 48, seed=8)[..., :35, :47]
    y = (x + 0.05).clamp(0, 1)
    s = image_scores(y, x)
    assert all(np.isfinite(v).all() and v.shape == (2,) for v in s.values())
    assert 0.5 < s["msssim"].min() < 1 and 0.5 < s["ssim"].min() < 1
