"""The phone budget of a split model: compute on each side and bytes on the wire.

Split inference only makes sense when the phone runs a light part, so every run, audit,
sweep and plot reports these figures beside its privacy figures. MACs are counted from
the torch modules (convolutions and linear layers, at batch 1), so they hold for any
width, split and image size; the deploy side's ONNX count (deploy/bench.py) agrees.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..config import Config


@dataclass(frozen=True)
class PhoneBudget:
    phone_macs: int  # the obfuscator (device)
    cloud_macs: int  # the task classifier (cloud)
    upload_numbers: int  # features per image
    upload_bytes: int  # one image in the default wire format (int8, header included)
    split_block: int
    bottleneck: int
    info_cap_bits: float | None  # capacity bound of the information cap (None: no cap)
    upload_pool: int = 1  # the phone's average-pooling of the upload (model.upload_pool)

    @property
    def phone_share(self) -> float:
        total = self.phone_macs + self.cloud_macs
        return self.phone_macs / total if total else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "phone_share": round(self.phone_share, 4)}

    def line(self) -> str:
        cap = (f", cap {self.info_cap_bits:.0f} bits" if self.info_cap_bits is not None
               else "")
        return (f"phone {self.phone_macs / 1e6:.1f} M MACs ({self.phone_share:.0%}), cloud "
                f"{self.cloud_macs / 1e6:.1f} M, upload {self.upload_numbers} numbers = "
                f"{self.upload_bytes} B int8{cap}")


def count_macs(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of every Conv2d and Linear in one forward pass of `x` (batch 1)."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        k = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        total += out[0].numel() * k

    def linear_hook(m: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += out[0].numel() * m.in_features

    hooks = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
             for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            out = module(x)
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)
    del out
    return total


def phone_budget(cfg: Config) -> PhoneBudget:
    """The budget of a config's split model (weights do not matter, shapes do)."""
    from ..defences import feature_shape, sent_positions
    from ..defences.base import extra_macs
    from ..defences.cap import capacity_bits
    from ..geometry import split_shape
    from ..wire import encoded_size
    from .split import build_models

    with torch.random.fork_rng(devices=[]):
        models = build_models(cfg)
    x = torch.zeros(1, 3, *cfg.data.image_size)
    phone = count_macs(models.encoder, x)
    c, h, w = feature_shape(cfg)
    phone += extra_macs(cfg, split_shape(cfg))  # stages that are matrix products
    cloud = count_macs(models.classifier, torch.zeros(1, c, h, w))
    n, k = c * h * w, sent_positions(cfg)
    cap = (capacity_bits(n, cfg.privacy.feature_noise, k) if cfg.privacy.normalize_features
           else None)
    # a sparse upload travels as (1, 1, K): models/upload.py
    wire_shape = (1, 1, 1, k) if k else (1, c, h, w)
    return PhoneBudget(phone, cloud, k or n, encoded_size(wire_shape, "int8"),
                       cfg.model.split_block, cfg.model.bottleneck, cap,
                       cfg.model.upload_pool)
