"""Turn a frozen run into what an attacker sees: features of each data split."""

from __future__ import annotations

import numpy as np
import torch

from ..attackers.base import FeatureSet
from ..data.base import FaceDataset, to_tensor_batch
from ..models import Models
from ..precision import autocast


@torch.no_grad()
def extract(models: Models, ds: FaceDataset, attributes: list[str], device: torch.device,
            precision: str = "fp32", batch_size: int = 256) -> FeatureSet:
    """Features as uploaded (float32), the images they came from, and the labels."""
    models.encoder.eval()
    feats, imgs = [], []
    for start in range(0, len(ds), batch_size):
        x = to_tensor_batch(ds.images[start:start + batch_size])
        with autocast(precision, device):
            z = models.encoder(x.to(device))
        feats.append(z.float().cpu().contiguous())
        imgs.append(x)
    return FeatureSet(
        features=torch.cat(feats), images=torch.cat(imgs),
        attributes={a: ds.attribute(a) for a in attributes},
        identities=ds.identities.copy() if ds.has_identities else None,
    )


def check_wire(encoding: str) -> None:
    from ..errors import RunError
    from ..wire import DTYPES

    if encoding not in DTYPES:
        raise RunError(f"unknown upload format {encoding!r} for the audit: use one of "
                       f"{', '.join(sorted(DTYPES))}")


def through_wire(fs: FeatureSet, encoding: str, batch_size: int = 256) -> FeatureSet:
    """The features as the cloud (and an eavesdropper) receive them: encoded in the wire
    format and decoded again, per request of `batch_size` images as a phone would send."""
    if encoding == "float32":
        return fs  # lossless: skip the copy
    from ..wire import decode, encode

    x = fs.features.numpy()
    parts = [decode(encode(x[i:i + batch_size], encoding)) for i in range(0, len(x), batch_size)]
    return FeatureSet(features=torch.from_numpy(np.concatenate(parts)), images=fs.images,
                      attributes=fs.attributes, identities=fs.identities)


def wire_change(sent: FeatureSet, received: FeatureSet) -> dict[str, float]:
    """How far the round trip moved the features, relative to their largest magnitude."""
    scale = float(sent.features.abs().max()) or 1.0
    diff = (received.features - sent.features).abs()
    return {"max_change": float(diff.max()) / scale, "mean_change": float(diff.mean()) / scale}


@torch.no_grad()
def cloud_logits(models: Models, features: torch.Tensor, device: torch.device,
                 batch_size: int = 256) -> torch.Tensor:
    """The cloud classifier's outputs for each feature map: (N,) for one binary task,
    (N, outputs) for several (tasks.py)."""
    models.classifier.eval()
    return torch.cat([models.classifier(features[i:i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(features), batch_size)])


def cloud_scores(models: Models, features: torch.Tensor, device: torch.device,
                 batch_size: int = 256) -> np.ndarray:
    """The cloud classifier's task probability for each feature map (one binary task)."""
    return torch.sigmoid(cloud_logits(models, features, device, batch_size)).numpy()


@torch.no_grad()
def training_adversary_scores(models: Models, features: torch.Tensor, private: list[str],
                              device: torch.device, batch_size: int = 256) -> dict[str, np.ndarray]:
    """The run's own (training-time) adversaries on the test features: compared with the
    fresh attackers, they show whether the defence only beat its own adversary."""
    out = {}
    for name in private:
        adv = models.adversaries[name].eval()
        out[name] = torch.cat([
            torch.sigmoid(adv(features[i:i + batch_size].to(device)).float()).cpu()
            for i in range(0, len(features), batch_size)]).numpy()
    return out


@torch.no_grad()
def training_reconstructions(models: Models, features: torch.Tensor, device: torch.device,
                             batch_size: int = 128) -> torch.Tensor:
    models.reconstructor.eval()
    return torch.cat([models.reconstructor(features[i:i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(features), batch_size)])
