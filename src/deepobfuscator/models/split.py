"""The four networks of DeepObfuscator: obfuscator E, classifier C, adversaries P, decoder R."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..config import Config
from ..errors import UserError
from ..methods import method_for
from ..privacy.erasure import erase, erase_width
from .vgg import MLPHead, block_widths, pooled_size, vgg_block


class Obfuscator(nn.Module):
    """E: the device part. VGG blocks [0, split) and an optional 1x1 bottleneck.

    The bottleneck (conv 1x1 + BN + ReLU) shrinks the uploaded features: fewer
    channels is fewer bytes on the wire and less room for private information. With
    `context`, a linear map of the block's spatial mean is added at every position; with
    `gain_shape` (C, H, W), every uploaded number has a learned gain.
    """

    def __init__(self, widths: list[list[int]], split_block: int, bottleneck: int = 0,
                 noise_std: float = 0.0, normalize: bool = False, upload_pool: int = 1,
                 context: bool = False,
                 gain_shape: tuple[int, int, int] | None = None, gain_rate: float = 1.0,
                 upload_shape: tuple[int, int, int] | None = None,
                 erase_shape: tuple[int, int] | None = None) -> None:
        super().__init__()
        # Shredder-like defence: Gaussian noise on every upload, in training and in use (the
        # attacker sees noisy features). Export leaves it out of the ONNX graph (parity needs
        # a deterministic model) and the manifest tells the device to add it.
        self.noise_std = float(noise_std)
        blocks, c_in = [], 3
        for ws in widths[:split_block]:
            blocks.append(vgg_block(c_in, ws))
            c_in = ws[-1]
        self.blocks = nn.Sequential(*blocks)
        # with the information cap the bottleneck stays linear (signed values carry twice the
        # signal of rectified ones at the same power)
        tail: list[nn.Module] = [] if normalize else [nn.ReLU(inplace=True)]
        self.bottleneck = (
            nn.Sequential(nn.Conv2d(c_in, bottleneck, 1, bias=False), nn.BatchNorm2d(bottleneck),
                          *tail)
            if bottleneck > 0 else nn.Identity()
        )
        # A 1x1 bottleneck at the paper's split sees a patch, not the face: a whole-image
        # answer (smiling) exists only near the mouth, where the cap's noise drowns it. The
        # context term lets E repeat one global signal over every position, which the cloud
        # can average back out of the noise (c_in x bottleneck MACs).
        self.context = nn.Linear(c_in, bottleneck) if context and bottleneck > 0 else None
        # fewer numbers on the wire for 4 adds each; before the cap, so the cap's noise is
        # drawn on what is uploaded
        self.pool = nn.AvgPool2d(upload_pool) if upload_pool > 1 else nn.Identity()
        # Faces are aligned, and the cap fixes the upload's total power: a gain per position
        # lets E spend that power where the task is (the mouth) and starve the rest, raising
        # the task's signal-to-noise ratio at the same bit budget. C*H*W weights, no MACs.
        # gain = 1 + rate * delta: rate r makes the optimiser move the gain r times as fast
        # as E's other weights (Adam's steps are about lr in delta), so the allocation can
        # sharpen within a few epochs
        self.gain_delta = nn.Parameter(torch.zeros(1, *gain_shape)) if gain_shape else None
        self.gain_rate = float(gain_rate)
        # model.upload_positions: 1 where a number is uploaded, 0 where it is not sent. All
        # ones until the trainer chooses, after the last stage (models/upload.py), so
        # training computes exactly what it would without it
        self.upload_mask: torch.Tensor | None
        if upload_shape is not None:
            self.register_buffer("upload_mask", torch.ones(1, *upload_shape))
        else:
            self.upload_mask = None
        # privacy.erase: orthonormal directions (C*H*W, k) the phone projects out of the
        # upload, after the cap and before the noise. Zeros (the identity) until the trainer
        # fits them after the last stage (privacy/erasure.py), so training computes exactly
        # what it would without them
        self.erase_basis: torch.Tensor | None
        if erase_shape is not None:
            self.register_buffer("erase_basis", torch.zeros(*erase_shape))
        else:
            self.erase_basis = None
        self.erase_fitted = False  # a plain flag (not the basis's values): export traces it
        self.out_channels = bottleneck if bottleneck > 0 else c_in
        self.normalize = bool(normalize)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # a checkpoint from before the choice (another run's task stage, reused) has no
        # mask: it is all ones there
        key = prefix + "upload_mask"
        if self.upload_mask is not None and key not in state_dict:
            state_dict[key] = torch.ones_like(self.upload_mask)
        key = prefix + "erase_basis"  # a checkpoint from before the fit: the identity
        if self.erase_basis is not None:
            if key not in state_dict:
                state_dict[key] = torch.zeros_like(self.erase_basis)
            self.erase_fitted = bool(state_dict[key].any())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def gain(self) -> torch.Tensor | None:
        """The gain on each uploaded number (1, C, H, W), or None without one."""
        if self.gain_delta is None:
            return None
        return 1 + self.gain_rate * self.gain_delta.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(x)
        z = self.bottleneck(h)
        if self.context is not None:
            z = z + self.context(h.mean(dim=(2, 3)))[:, :, None, None]
        z = self.pool(z)
        if self.gain_delta is not None:
            z = z * (1 + self.gain_rate * self.gain_delta)
        if self.normalize:
            z = unit_rms(z)
        if self.erase_basis is not None and self.erase_fitted:
            # after the cap: a projection only removes power, so the cap's bound holds.
            # Skipped until fitted, so training computes exactly what it would without it
            z = erase(z, self.erase_basis)
        if self.noise_std > 0:
            z = z + self.noise_std * torch.randn_like(z)
        if self.upload_mask is not None:
            # after the cap and the noise: the sent numbers are exactly those of the full
            # upload, so an attacker of the sparse upload knows a subset of what an attacker
            # of the full one knows
            z = z * self.upload_mask
        return z


def unit_rms(z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each image's features scaled to root-mean-square 1 (the information cap's first half:
    a fixed signal power, so the feature noise sets a signal-to-noise ratio E cannot raise).
    Computed in float32; plain ops, so it exports to ONNX."""
    zf = z.float()
    rms = zf.pow(2).mean(dim=(1, 2, 3), keepdim=True).add(eps).sqrt()
    return (zf / rms).to(z.dtype)


def capacity_bits(elements: int, noise_std: float, kept: int = 0) -> float | None:
    """Upper bound on what a unit-RMS upload of `elements` numbers with Gaussian noise of
    `noise_std` can carry: the Gaussian channel's D/2 * log2(1 + 1/s^2) bits (power
    constraint per image). With only `kept` of them uploaded (model.upload_positions),
    those carry at most the whole power D: K/2 * log2(1 + D / (K s^2)). None when there is
    no noise (no finite bound)."""
    import math

    if noise_std <= 0:
        return None
    k = kept or elements
    return k / 2 * math.log2(1 + elements / (k * noise_std ** 2))


class Classifier(nn.Module):
    """C (and each attribute adversary P): VGG blocks [split, 5) then the MLP head."""

    def __init__(self, widths: list[list[int]], split_block: int, in_channels: int,
                 image_size: tuple[int, int], fc_hidden: int, dropout: float,
                 upload_pool: int = 1) -> None:
        super().__init__()
        # a pooled upload is scaled back to the split's size: the cloud's blocks and head
        # stay those of the unpooled model
        self.expand = (nn.Upsample(size=pooled_size(image_size, split_block), mode="nearest")
                       if upload_pool > 1 else nn.Identity())
        blocks, c_in = [], in_channels
        for ws in widths[split_block:]:
            blocks.append(vgg_block(c_in, ws))
            c_in = ws[-1]
        self.blocks = nn.Sequential(*blocks)
        h, w = pooled_size(image_size, len(widths))
        if h < 1 or w < 1:
            raise UserError(f"image size {image_size} is too small for {len(widths)} pooling "
                             "stages; use at least 32 px")
        self.head = MLPHead(c_in * h * w, fc_hidden, dropout)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.expand(z)))


class Reconstructor(nn.Module):
    """R: features -> image. Mirrors E: per pooling stage, upsample (bilinear) to the
    size that stage had, then two [ReLU, BN, conv 3x3] layers; a sigmoid keeps
    the output in [0, 1], where MS-SSIM is defined."""

    def __init__(self, widths: list[list[int]], split_block: int, in_channels: int,
                 image_size: tuple[int, int], width: float = 1.0) -> None:
        super().__init__()
        self.sizes = [pooled_size(image_size, k) for k in range(split_block - 1, -1, -1)]
        stages, c_in = [], in_channels
        for k in range(split_block - 1, -1, -1):
            mid = max(4, int(widths[k][-1] * width))
            out = max(4, int(widths[k - 1][-1] * width)) if k > 0 else 3
            stages.append(nn.Sequential(
                nn.ReLU(), nn.BatchNorm2d(c_in), nn.Conv2d(c_in, mid, 3, padding=1),
                nn.ReLU(), nn.BatchNorm2d(mid), nn.Conv2d(mid, out, 3, padding=1),
            ))
            c_in = out
        self.stages = nn.ModuleList(stages)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z
        for size, stage in zip(self.sizes, self.stages, strict=True):
            x = stage(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
        return torch.sigmoid(x)


@dataclass
class Models:
    encoder: Obfuscator
    classifier: Classifier
    adversaries: nn.ModuleDict  # one Classifier per private attribute
    reconstructor: Reconstructor

    def named(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "classifier": self.classifier,
                "adversaries": self.adversaries, "reconstructor": self.reconstructor}

    def to(self, device: torch.device) -> Models:
        for m in self.named().values():
            m.to(device)
        return self


def feature_shape(cfg: Config) -> tuple[int, int, int]:
    """Shape (C, H, W) of the uploaded features for a config."""
    widths = block_widths(cfg.model.width)
    c = cfg.model.bottleneck or widths[cfg.model.split_block - 1][-1]
    h, w = pooled_size(tuple(cfg.data.image_size), cfg.model.split_block)
    return c, h // cfg.model.upload_pool, w // cfg.model.upload_pool


def sent_positions(cfg: Config) -> int:
    """K of a sparse upload (model.upload_positions), or 0 when every number is sent."""
    c, h, w = feature_shape(cfg)
    k = cfg.model.upload_positions
    return k if 0 < k < c * h * w else 0


def init_weights(module: nn.Module) -> None:
    """He init for convs (fan-out, as VGG papers do), small normal for linears. PyTorch's
    default init trains a 13-layer plain VGG slowly and erratically from scratch."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def build_models(cfg: Config) -> Models:
    """All networks for a config; call under a seeded RNG for reproducible init."""
    m = cfg.model
    widths = block_widths(m.width)
    size = tuple(cfg.data.image_size)
    encoder = Obfuscator(widths, m.split_block, m.bottleneck, cfg.privacy.feature_noise,
                         cfg.privacy.normalize_features, m.upload_pool, m.bottleneck_context,
                         feature_shape(cfg) if m.position_gain > 0 else None, m.position_gain,
                         feature_shape(cfg) if sent_positions(cfg) else None,
                         erase_width(cfg, feature_shape(cfg)))
    c_feat = encoder.out_channels
    classifier = Classifier(widths, m.split_block, c_feat, size, m.fc_hidden, m.dropout,
                            m.upload_pool)
    names = cfg.data.private
    for net in (encoder, classifier):
        init_weights(net)
    # The attackers are drawn from the RNG state that follows E and C without advancing it,
    # so every method leaves the same RNG state behind: runs that differ only in their
    # attackers train stage 1 identically (training/reuse.py).
    with torch.random.fork_rng(devices=[]):
        if method_for(cfg).attackers == "robust":
            # the audit's own attacker architectures, standardising their input
            from .attackers import robust_attackers

            adversaries, reconstructor = robust_attackers(cfg, feature_shape(cfg), names)
        else:
            adversaries = nn.ModuleDict({
                n: Classifier(widths, m.split_block, c_feat, size, m.fc_hidden, m.dropout,
                              m.upload_pool)
                for n in names})
            reconstructor = Reconstructor(widths, m.split_block, c_feat, size, m.decoder_width)
            for net in (adversaries, reconstructor):
                init_weights(net)
    return Models(encoder, classifier, adversaries, reconstructor)


def reinit_attackers(models: Models) -> None:
    """Fresh weights for the training-time attackers (P and R), for adversary refresh."""
    for net in (models.adversaries, models.reconstructor):
        for m in net.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                m.reset_running_stats()
        init_weights(net)


def init_adversaries_from_classifier(models: Models) -> None:
    """The paper starts each attribute adversary from the trained task classifier."""
    state = copy.deepcopy(models.classifier.state_dict())
    for adv in models.adversaries.values():
        adv.load_state_dict(state)
