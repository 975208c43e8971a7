"""Prior-guided inversion: search a generative face prior for a face that E maps onto z.

The idea of GLASS (Li et al., "GAN You See Me? Enhanced Data Reconstruction Attacks
against Split Inference", NeurIPS 2023), with a small VAE as the prior instead of a
StyleGAN: the attacker

1. trains a convolutional VAE from scratch on its own photos (the attacker split's raw
   images; no features needed), so its decoder D maps a 64-d latent w to a plausible face;
2. for each upload z, starts from a learned guess (the VAE's encoding of the inverse
   network's reconstruction, when there is one; else the prior's mean 0) and runs Adam on w:

       w^ = argmin_w  ||E(D(w)) - z||^2 / ||z||^2  +  lambda * ||w||^2 / d

   through the frozen obfuscator E with its feature noise off (the attacker holds E's
   weights), lambda = prior_weight + d s^2 / ||z||^2: a small floor plus the MAP weight
   of the N(0, I) prior when E adds feature noise of std s to every number (the noise is
   part of E's published contract). x^ = D(w^) stays on the prior's face manifold, where
   the pixel-space white-box search (attackers/whitebox.py) fills what E cannot see with
   noise or blur.

Positions a sparse upload does not send are zero both in z and in E(x), so they add
nothing to the feature term: it is taken over the uploaded positions only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..models.vgg import conv_bn_relu
from ..precision import autocast, resolve_precision
from .base import FitResult, FitSettings, batches, fit, holdout_split

# the VAE works at most at this shorter side, and the decoder resizes to (H, W): its faces
# are blurrier than 48 px anyway, and at 64 px an epoch on ~3,600 CelebA photos cost 68 s
# on one core where the inverse network's whole training cost ~250 s
WORK_SIZE = 48
LATENT_DIM = 64
BOTTOM = 4  # the encoder halves the work size down to about this many pixels
# the ELBO's terms: a Gaussian likelihood of this std per pixel (MSE / (2 sigma^2)) against
# the KL of the latent; sigma 0.1 keeps faces sharp enough that the KL does not collapse
# the latent, and the aggregate posterior close enough to N(0, I) for a ||w||^2 prior
PIXEL_SIGMA = 0.1
# an epoch cap and a photo cap, never a time cap by default (like the re-identification
# embedder): on ~3,600 CelebA photos the held-out loss fell from 0.65 at epoch 8 to 0.58
# at 15, slowly, and 15 epochs cost ~6 min on one core; 8 epochs on at most 4,096 photos
# (a seeded subset) keep a full audit within twice its time before this attack existed
# (issue 33; BENCHMARKS.md "The strongest attacker"), at a slightly blurrier prior
MAX_EPOCHS = 8
MAX_PHOTOS = 4096


class FaceVAE(nn.Module):
    """A convolutional VAE at the work size: images (3, H, W) in [0, 1] <-> latents (d,).

    Encoder: conv-BN-ReLU stem, then per stage a stride-2 conv-BN-ReLU and a conv-BN-ReLU
    (width doubling, at most 8x) down to ~4x4 -> linear -> (mu, log-variance). Decoder: the
    mirror image, upsampling bilinearly to each stage's exact size (odd and non-square
    sizes work) -> conv to RGB -> sigmoid, resized to (H, W) when the work size differs.
    """

    def __init__(self, image_size: tuple[int, int], latent_dim: int = LATENT_DIM,
                 width: int = 16) -> None:
        super().__init__()
        self.image_size = (int(image_size[0]), int(image_size[1]))
        scale = min(1.0, WORK_SIZE / min(self.image_size))
        self.work = (max(16, round(self.image_size[0] * scale)),
                     max(16, round(self.image_size[1] * scale)))
        n_down = max(1, int(math.log2(min(self.work) / BOTTOM)))
        # a stride-2 3x3 conv with padding 1 maps n pixels to ceil(n / 2)
        self.sizes = [self.work]
        for _ in range(n_down):
            self.sizes.append(((self.sizes[-1][0] + 1) // 2, (self.sizes[-1][1] + 1) // 2))
        widths = [min(width * 2 ** k, width * 8) for k in range(n_down + 1)]
        enc: list[nn.Module] = [*conv_bn_relu(3, widths[0])]
        for c_in, c_out in zip(widths, widths[1:], strict=False):
            enc += [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True), *conv_bn_relu(c_out, c_out)]
        self.encoder = nn.Sequential(*enc)
        bh, bw = self.sizes[-1]
        self.bottom = (widths[-1], bh, bw)
        self.to_latent = nn.Linear(widths[-1] * bh * bw, 2 * latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(latent_dim, widths[-1] * bh * bw),
                                         nn.ReLU(inplace=True))
        self.stages = nn.ModuleList(
            nn.Sequential(*conv_bn_relu(c_in, c_out), *conv_bn_relu(c_out, c_out))
            for c_in, c_out in zip(widths[::-1], widths[::-1][1:], strict=False))
        self.out = nn.Conv2d(widths[0], 3, 3, padding=1)
        self.latent_dim = latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log-variance), each (B, d), of images (B, 3, H, W)."""
        if tuple(x.shape[-2:]) != self.work:
            x = F.interpolate(x, self.work, mode="bilinear", antialias=True, align_corners=False)
        h = self.encoder((x - 0.5).contiguous(memory_format=torch.channels_last))
        mu, logvar = self.to_latent(h.flatten(1)).float().chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def decode(self, w: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] from latents (B, d)."""
        x = self.from_latent(w).view(len(w), *self.bottom)
        for size, stage in zip(self.sizes[-2::-1], self.stages, strict=True):
            x = stage(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
        with torch.autocast(x.device.type, enabled=False):  # float32 pixels, as the others
            x = torch.sigmoid(self.out(x.float()))
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, self.image_size, mode="bilinear", align_corners=False)
        return x

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The negative ELBO per pixel, averaged over the batch: a sampled latent while
        training, the mean latent in eval mode (a deterministic validation loss)."""
        mu, logvar = self.encode(x)
        w = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        recon = self.decode(w)
        nll = (recon - x.float()).pow(2).flatten(1).sum(1) / (2 * PIXEL_SIGMA ** 2)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return (nll + kl).mean() / x[0].numel()


@dataclass
class SearchStats:
    """How the last latent search went."""

    steps: int = 0  # Adam steps run (the fewest of any batch)
    stopped: str = ""  # "steps" or "time_limit"
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """What audit.json keeps: no seconds, so a seeded audit repeats exactly."""
        return {"steps": self.steps, "stopped": self.stopped}


class PriorInversionAttack:
    """A VAE prior trained on the attacker's photos, searched through a frozen encoder.

    `encoder` is E as the attacker runs it (noise off: audit/attacks/whitebox.without_noise);
    it must take images of `image_size`; `noise_std` is the std of the feature noise E adds
    on the phone (it weights the prior). Each image's loss is its own (E and the VAE run in
    eval mode, so no image of a batch sees another), and the loss of a batch is their sum.
    """

    def __init__(self, encoder: nn.Module, image_size: tuple[int, int], settings: FitSettings,
                 steps: int = 200, seconds: float = 60.0, lr: float = 0.02,
                 prior_weight: float = 1e-3, latent_dim: int = LATENT_DIM,
                 width: int = 16, noise_std: float = 0.0) -> None:
        self.encoder = encoder
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.settings = replace(settings, max_epochs=min(settings.max_epochs, MAX_EPOCHS))
        self.device = torch.device(settings.device)
        self.precision = resolve_precision(settings.precision, self.device)
        self.steps, self.seconds, self.lr, self.prior_weight = steps, seconds, lr, prior_weight
        # lr 0.02: from the inverse network's guess on CelebA (256 faces), lr 0.05 left
        # re-identification at 0.028 on a noisy cap run where 0.02 kept 0.049 (no-privacy
        # baseline: 0.130 and 0.126); searching from the latent mean 0 wants a larger step
        self.noise_std = noise_std
        self.stats = SearchStats()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            vae = FaceVAE(self.image_size, latent_dim, width)
        # channels-last runs oneDNN convolutions faster on CPU (as attackers/inversion.py)
        self.vae = vae.to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]

    def fit(self, images: torch.Tensor, identities: np.ndarray | None = None) -> FitResult:
        """Train the VAE on raw photos (N, 3, H, W) in [0, 1]; early stopping on a held-out
        share of them (by identity when given: no face on both sides)."""
        s = self.settings
        if tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(f"images are {tuple(images.shape[-2:])}, the attack was built "
                             f"for {self.image_size}")
        tr, va = holdout_split(len(images), s.val_fraction, s.seed, identities)
        if len(tr) + len(va) > MAX_PHOTOS:  # the same share of each side, seeded
            rng = np.random.default_rng(s.seed)
            keep = MAX_PHOTOS / (len(tr) + len(va))
            tr = np.sort(rng.permutation(tr)[:max(1, round(len(tr) * keep))])
            va = np.sort(rng.permutation(va)[:max(1, round(len(va) * keep))])

        def loss_fn(model: nn.Module, batch: tuple) -> torch.Tensor:
            return model.loss(batch[0].to(self.device, non_blocking=True))  # type: ignore[operator]

        def train_batches(rng: np.random.Generator) -> list[tuple]:
            return [(images[tr[b]],) for b in batches(len(tr), s.batch_size, rng)]

        val = [(images[va[b]],) for b in batches(len(va), 128)]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)  # the reparameterisation's draws
            return fit(self.vae, loss_fn, train_batches, val, s, "prior VAE")

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """The VAE's mean latents (N, d) of images (N, 3, H, W)."""
        self.vae.eval()
        out = [torch.zeros(0, self.vae.latent_dim)]
        for i in range(0, len(images), batch_size):
            with autocast(self.precision, self.device):
                out.append(self.vae.encode(images[i:i + batch_size].to(self.device))[0].cpu())
        return torch.cat(out)

    def reconstruct(self, features: torch.Tensor, start: torch.Tensor | None = None,
                    batch_size: int = 64) -> torch.Tensor:
        """Images (N, 3, H, W), float32 in [0, 1], on the CPU, for uploads (N, C, h, w).
        `start`: images to start each search from (their VAE encoding); None = latent 0.
        The searches of all batches together keep to `seconds` (0 = no limit)."""
        w0 = self.encode(start) if start is not None else torch.zeros(
            len(features), self.vae.latent_dim)
        modules = (self.encoder, self.vae)
        state = [(m.training, [p.requires_grad for p in m.parameters()]) for m in modules]
        for m in modules:
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)  # only the latents get gradients
        t0, deadline = time.time(), time.time() + self.seconds if self.seconds > 0 else math.inf
        self.stats = SearchStats(steps=self.steps if len(features) else 0, stopped="steps")
        try:
            out = []
            starts = range(0, len(features), batch_size)
            for n, i in enumerate(starts):
                # what is left of the budget, shared evenly by the batches still to come
                end = time.time() + (deadline - time.time()) / (len(starts) - n)
                out.append(self._search(features[i:i + batch_size], w0[i:i + batch_size], end))
        finally:
            for m, (training, grads) in zip(modules, state, strict=True):
                m.train(training)
                for p, g in zip(m.parameters(), grads, strict=True):
                    p.requires_grad_(g)
        self.stats.seconds = time.time() - t0
        return torch.cat(out) if out else torch.zeros(0, 3, *self.image_size)

    def _search(self, z: torch.Tensor, w0: torch.Tensor, deadline: float) -> torch.Tensor:
        z = z.to(self.device).float()
        norm = z.pow(2).flatten(1).sum(1).clamp_min(1e-8)  # (B,): one prior_weight, any scale
        # the MAP weight of the prior under E's feature noise N(0, s^2) on every number:
        # ||E - z||^2 / (2 s^2) + ||w||^2 / 2, divided by ||z||^2 / (2 s^2)
        weight = self.prior_weight + w0.shape[1] * self.noise_std ** 2 / norm
        w = w0.to(self.device).float().clone().requires_grad_()
        opt = torch.optim.Adam([w], lr=self.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(self.steps, 1),
                                                           eta_min=0.1 * self.lr)
        best_loss = torch.full((len(z),), math.inf, device=self.device)
        best_w = w.detach().clone()
        step_time, done = 0.0, 0
        bar = tqdm(range(self.steps + 1), desc="prior inversion", unit="step", leave=False,
                   disable=not self.settings.progress)
        for step in bar:
            if time.time() + step_time > deadline:  # the next step would end past the budget
                self.stats.stopped = "time_limit"
                break
            t = time.time()
            with autocast(self.precision, self.device):
                zx = self.encoder(self.vae.decode(w))
            err = (zx.float() - z).pow(2).flatten(1).sum(1) / norm
            loss = err + weight * w.pow(2).mean(1)
            with torch.no_grad():  # the loss is w's, before this step moves it: keep the best
                better = loss < best_loss
                best_loss = torch.where(better, loss, best_loss)
                best_w[better] = w[better]
            if step == self.steps:  # the last evaluation scores the last step's latents
                break
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            sched.step()
            done, step_time = step + 1, time.time() - t
            bar.set_postfix(feature_err=f"{float(err.detach().mean()):.4f}")
        self.stats.steps = min(self.stats.steps, done)
        with torch.no_grad(), autocast(self.precision, self.device):
            return self.vae.decode(best_w).float().clamp(0, 1).cpu()
