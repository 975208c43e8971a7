"""The prior-guided inversion (attacks/prior_inversion.py, audit/attacks/prior_inversion.py):
a VAE face prior searched through a frozen obfuscator, on planted low-dimensional images."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from deepobfuscator.attackers.base import FitSettings
from deepobfuscator.attackers.prior_inversion import FaceVAE, PriorInversionAttack
from deepobfuscator.audit import AuditSettings
from deepobfuscator.audit.attacks import ATTACKS, run_attacks
from deepobfuscator.audit.image_metrics import image_scores

SIZE = 32
FAST = FitSettings(max_epochs=8, patience=3, batch_size=16, progress=False, precision="fp32")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def planted_faces(n: int, seed: int, k: int = 3) -> torch.Tensor:
    """Images on a k-dimensional manifold: mid-grey plus k fixed coloured Gaussian blobs
    (the same for every call), each scaled by a coefficient drawn uniformly in [-1, 1]."""
    g = torch.Generator().manual_seed(123)
    axis = torch.linspace(-1, 1, SIZE)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    blobs = []
    for _ in range(k):
        cy, cx = ((torch.rand(2, generator=g) - 0.5) * 1.2).tolist()
        width = 0.2 + 0.25 * float(torch.rand(1, generator=g))
        colour = torch.rand(3, 1, 1, generator=g) * 2 - 1
        blobs.append(colour * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width ** 2)))
    coef = torch.rand(n, k, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return (0.5 + 0.45 * torch.einsum("nk,kchw->nchw", coef, torch.stack(blobs))).clamp(0, 1)


def random_obfuscator() -> nn.Module:
    """A fixed random conv net, 4x downsampling: (3, 32, 32) -> (4, 8, 8), 256 numbers."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 4, 3, 2, 1)).eval()


@pytest.fixture(scope="module")
def trained():
    """A prior trained on 192 planted images, and 16 others to invert with their uploads."""
    torch.set_num_threads(1)
    enc = random_obfuscator()
    # lr 0.1: the search starts from the latent mean 0, far from most targets
    atk = PriorInversionAttack(enc, (SIZE, SIZE), FAST, steps=150, seconds=0, lr=0.1, width=16)
    curve = atk.fit(planted_faces(192, seed=1))
    test = planted_faces(16, seed=2)
    with torch.no_grad():
        z = enc(test)
    return atk, curve, test, z


def test_the_prior_reconstructs_a_planted_face_better_than_the_mean_face(trained):
    """Known answer: the images live on a 3-d manifold the VAE learns, and E (256 numbers)
    pins the 3 coordinates down; the search from the prior's mean finds them, so its
    reconstructions beat the mean training image by a wide margin."""
    atk, curve, test, z = trained
    assert curve.val_loss and curve.best_epoch >= 0
    recon = atk.reconstruct(z)
    assert recon.shape == test.shape and recon.dtype == torch.float32
    assert 0 <= float(recon.min()) and float(recon.max()) <= 1
    prior = image_scores(recon, test)
    mean = image_scores(planted_faces(192, seed=1).mean(0, keepdim=True).expand_as(test), test)
    assert prior["ssim"].mean() > mean["ssim"].mean() + 0.08, (prior["ssim"].mean(),
                                                              mean["ssim"].mean())
    assert prior["msssim"].mean() > mean["msssim"].mean() + 0.15
    assert atk.stats.steps == 150 and atk.stats.stopped == "steps"


def test_a_learned_guess_is_never_made_worse(trained):
    """Started from a guess, the search keeps each image's best latent: its features match
    the upload at least as well as the guess's own encoding does."""
    atk, _, test, z = trained
    guess = test + 0.05 * torch.randn(test.shape, generator=torch.Generator().manual_seed(3))
    atk.steps = 20
    try:
        recon = atk.reconstruct(z, start=guess.clamp(0, 1))
    finally:
        atk.steps = 150
    with torch.no_grad():
        start = atk.vae.decode(atk.encode(guess.clamp(0, 1)))
        err = lambda x: (atk.encoder(x) - z).pow(2).flatten(1).sum(1)  # noqa: E731
        assert torch.all(err(recon) <= err(start) * (1 + 1e-4) + 1e-6)


def test_feature_noise_weights_the_prior(trained):
    """Under E's feature noise the MAP weight of the prior grows with the noise's power: an
    upload that is nearly all noise keeps the search at the prior's mean face."""
    atk, _, _, z = trained
    with torch.no_grad():
        mean_face = atk.vae.decode(torch.zeros(1, atk.vae.latent_dim))
    moved = {}
    atk.steps = 20
    try:
        for std in (0.0, 1e3):
            atk.noise_std = std
            moved[std] = float((atk.reconstruct(z[:4]) - mean_face).abs().mean())
    finally:
        atk.steps, atk.noise_std = 150, 0.0
    assert moved[1e3] < 0.1 * moved[0.0], moved


def test_the_search_keeps_to_its_time_budget(trained):
    atk, _, _, z = trained
    atk.steps, atk.seconds = 100_000, 0.5
    try:
        t0 = time.time()
        recon = atk.reconstruct(torch.cat([z, z, z]), batch_size=16)  # three batches share it
        elapsed = time.time() - t0
    finally:
        atk.steps, atk.seconds = 150, 0
    assert atk.stats.stopped == "time_limit" and 0 < atk.stats.steps < 100_000
    assert elapsed < 0.5 + 0.5  # the VAE encodes and decodes once beside the search
    assert recon.shape == (48, 3, SIZE, SIZE)


@pytest.mark.parametrize("size", [(SIZE, SIZE), (37, 29), (109, 89)])
def test_the_prior_decodes_any_image_size(size):
    vae = FaceVAE(size, latent_dim=8, width=8).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        mu, logvar = vae.encode(x)
        assert mu.shape == logvar.shape == (2, 8)
        assert vae.decode(mu).shape == (2, 3, *size)
        assert torch.isfinite(vae.loss(x))


def test_prior_images_0_skips_the_attack():
    cls = ATTACKS["prior_inversion"]
    assert cls.needs == ("reconstructions",) and list(ATTACKS).index("prior_inversion") == \
        list(ATTACKS).index("whitebox") + 1
    ctx = SimpleNamespace(settings=AuditSettings(prior_images=0), products={})
    assert not cls().applies(ctx)  # type: ignore[arg-type]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("deepobfuscator.audit.attacks.ATTACKS", {"prior_inversion": cls})
        assert run_attacks(ctx) == {}  # type: ignore[arg-type]
    assert cls().applies(SimpleNamespace(settings=AuditSettings()))  # type: ignore[arg-type]


def test_the_settings_are_flags():
    from deepobfuscator.audit.settings import from_flags
    from deepobfuscator.cli import build_parser

    s = from_flags(build_parser().parse_args(
        ["audit", "RUN", "--prior-images", "0", "--prior-steps", "50", "--prior-seconds", "9"]))
    assert (s.prior_images, s.prior_steps, s.prior_seconds) == (0, 50, 9.0)
    assert AuditSettings().prior_images > 0 and np.isfinite(AuditSettings().prior_seconds)
