"""The four networks of DeepObfuscator: obfuscator E, classifier C, adversaries P, decoder R."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..config import Config
from ..defences import all_defences, feature_shape, pipeline
from ..errors import UserError
from ..geometry import block_widths, pooled_size, split_shape
from ..methods import method_for
from ..tasks import task_set
from .critics import InfoCritics, info_term_on
from .vgg import MLPHead, vgg_block


class Obfuscator(nn.Module):
    """E: the device part. VGG blocks [0, split), then the config's upload defences in
    pipeline order (defences/: bottleneck, pooling, gain, cap, erasure, noise, sparse
    upload), each a stage under `stages.<name>`."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        widths = block_widths(cfg.model.width)
        blocks, c_in = [], 3
        for ws in widths[:cfg.model.split_block]:
            blocks.append(vgg_block(c_in, ws))
            c_in = ws[-1]
        self.blocks = nn.Sequential(*blocks)
        self.stages = nn.ModuleDict()
        shape = split_shape(cfg)
        for defence in pipeline(cfg):
            self.stages[defence.name] = defence.build(cfg, shape)
            shape = defence.out_shape(cfg, shape)
        self.out_channels = shape[0]

    def stage(self, name: str) -> Any:
        """The stage of defence `name` (its module: defences/<name>.py), or None when the
        config has it off."""
        return self.stages[name] if name in self.stages else None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # runs made before defences/ existed name the stages' weights the old way
        for defence in all_defences():
            for old, new in defence.legacy_state.items():
                for key in [k for k in state_dict if k.startswith(prefix + old)]:
                    state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def noise_std(self) -> float:
        """The feature noise's std (privacy.feature_noise): the device's contract."""
        stage = self.stage("noise")
        return float(stage.std) if stage is not None else 0.0

    @noise_std.setter
    def noise_std(self, value: float) -> None:
        stage = self.stage("noise")
        assert stage is not None, "every obfuscator has a noise stage"
        stage.std = float(value)

    @property
    def gain(self) -> torch.Tensor | None:
        """The gain on each uploaded number (1, C, H, W), or None without one."""
        stage = self.stage("gain")
        return None if stage is None else stage.gain

    @property
    def normalize(self) -> bool:
        """Whether the upload has the information cap's unit RMS."""
        return "cap" in self.stages

    def mark_finished(self) -> None:
        """Final weights (load_run) hold the finish phase's fits: use them."""
        for stage in self.stages.values():
            if hasattr(stage, "fitted"):
                setattr(stage, "fitted", True)  # noqa: B010 (a flag, not a weight)

    @contextmanager
    def noise_free(self) -> Iterator[None]:
        """Eval mode and no feature noise, restored after: the noise-free upload that the
        finish phase's fits are computed on."""
        was_training, std = self.training, self.noise_std
        self.eval()
        self.noise_std = 0.0
        try:
            yield
        finally:
            self.train(was_training)
            self.noise_std = std

    def upload_noise(self, shape: tuple[int, ...],
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw of the device's feature noise as it reaches the upload (N, C, H, W):
        the noise stage's Gaussian through the stages after it (the sparse upload's mask,
        which is linear). forward() in eval mode = the noise-free upload + this."""
        std = self.noise_std
        z = std * torch.randn(shape, generator=generator) if std > 0 else torch.zeros(shape)
        names = list(self.stages)
        later = names[names.index("noise") + 1:] if "noise" in names else []
        if later:
            device = next(self.parameters()).device
            z = z.to(device)
            for name in later:
                z = self.stages[name](z)
        return z.cpu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.blocks(x)
        for stage in self.stages.values():
            z = stage(z)
        return z


class Classifier(nn.Module):
    """C (and each attribute adversary P): VGG blocks [split, 5) then the MLP head."""

    def __init__(self, widths: list[list[int]], split_block: int, in_channels: int,
                 image_size: tuple[int, int], fc_hidden: int, dropout: float,
                 upload_pool: int = 1, outputs: int = 1) -> None:
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
        self.head = MLPHead(c_in * h * w, fc_hidden, dropout, outputs)

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
    reconstructor: nn.Module  # Reconstructor, or the robust method's decoder
    # the robust method's information critics (critics.py), only when info_weight > 0: the
    # other runs keep the four networks, their checkpoints and weight files as they were
    critics: nn.Module | None = None

    def named(self) -> dict[str, nn.Module]:
        nets = {"encoder": self.encoder, "classifier": self.classifier,
                "adversaries": self.adversaries, "reconstructor": self.reconstructor}
        if self.critics is not None:
            nets["critics"] = self.critics
        return nets

    def to(self, device: torch.device) -> Models:
        for m in self.named().values():
            m.to(device)
        return self


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
    size = cfg.data.image_size
    encoder = Obfuscator(cfg)
    c_feat = encoder.out_channels
    classifier = Classifier(widths, m.split_block, c_feat, size, m.fc_hidden, m.dropout,
                            m.upload_pool, task_set(cfg).outputs)
    names = cfg.data.private
    init_weights(encoder)
    init_weights(classifier)
    # The attackers are drawn from the RNG state that follows E and C without advancing it,
    # so every method leaves the same RNG state behind: runs that differ only in their
    # attackers train stage 1 identically (training/reuse.py).
    adversaries: nn.ModuleDict
    reconstructor: nn.Module
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
            reconstructor = Reconstructor(widths, m.split_block, c_feat, size,
                                          cfg.privacy.paper.decoder_width)
            init_weights(adversaries)
            init_weights(reconstructor)
        critics: nn.Module | None = None
        if info_term_on(cfg):  # drawn after the attackers: theirs stay what they were
            critics = InfoCritics(feature_shape(cfg))
    return Models(encoder, classifier, adversaries, reconstructor, critics)


def reinit_attackers(models: Models) -> None:
    """Fresh weights for the training-time attackers (P and R), for adversary refresh."""
    for net in (models.adversaries, models.reconstructor):
        for m in net.modules():
            if callable(reset := getattr(m, "reset_parameters", None)):
                reset()
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                m.reset_running_stats()
        init_weights(net)


def init_adversaries_from_classifier(models: Models) -> None:
    """The paper starts each attribute adversary from the trained task classifier (all but
    the output layer where the cloud answers several tasks: an adversary has one output)."""
    state = copy.deepcopy(models.classifier.state_dict())
    for adv in models.adversaries.values():
        own = adv.state_dict()
        adv.load_state_dict({k: v if v.shape == own[k].shape else own[k]
                             for k, v in state.items()})
