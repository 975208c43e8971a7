"""A metric embedder on the features: identity learned straight from the uploads.

Trained from scratch on the attacker split's uploads and identities (CosFace, as the
photo embedder in reid.py), it maps each upload to an embedding where photos of one person
lie close; on the test split's people, whom it never saw, it re-identifies probes against
a gallery and verifies pairs. Nearest neighbour on the raw numbers needs no training but
weighs every number alike; this attacker learns which numbers carry identity.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.attack_nets import Standardized
from ..models.vgg import conv_bn_relu
from .base import FitResult, FitSettings, batches, fit, holdout_split, in_batches
from .reid import MAX_EPOCHS, _per_identity, cosface_loss


class FeatureEmbeddingNet(Standardized):
    """Standardise -> two conv-BN-ReLU (max-pooled while the map is larger than 4x4) ->
    flatten -> dropout -> linear + BN -> embedding."""

    def __init__(self, feature_shape: tuple[int, int, int], embedding_dim: int = 128,
                 width: int = 64) -> None:
        c, h, w = feature_shape
        super().__init__(c)
        layers: list[nn.Module] = [*conv_bn_relu(c, width)]
        ch = width
        while min(h, w) > 4:
            layers += [nn.MaxPool2d(2), *conv_bn_relu(ch, min(ch * 2, width * 2))]
            ch, h, w = min(ch * 2, width * 2), h // 2, w // 2
        self.body = nn.Sequential(*layers)
        self.neck = nn.Sequential(nn.Flatten(), nn.Dropout(0.2),
                                  nn.Linear(ch * h * w, embedding_dim, bias=False),
                                  nn.BatchNorm1d(embedding_dim))
        self.classes = nn.Parameter(torch.zeros(0, embedding_dim))  # set by fit

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.neck(self.body(self.standardize(z)))


class FeatureEmbedder:
    """Identity embedding of uploads (C, h, w), trained on the attacker split's people."""

    def __init__(self, feature_shape: tuple[int, int, int], settings: FitSettings,
                 embedding_dim: int = 128) -> None:
        from dataclasses import replace

        self.settings = replace(settings, max_epochs=min(settings.max_epochs, 2 * MAX_EPOCHS))
        self.device = torch.device(settings.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            model = FeatureEmbeddingNet(feature_shape, embedding_dim)
            self.model = model.to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]

    def fit(self, features: torch.Tensor, identities: np.ndarray) -> FitResult:
        """CosFace identity classification; early stopping on held-out uploads of the same
        people (or held-out people when everyone has one upload)."""
        s = self.settings
        names, y_np = np.unique(np.asarray(identities), return_inverse=True)
        tr, va = _per_identity(y_np, s.seed,
                               lambda n: min(n - 1, max(1, round(s.val_fraction * n))))
        if len(va) == 0:
            tr, va = holdout_split(len(y_np), s.val_fraction, s.seed)
        y = torch.from_numpy(y_np.astype(np.int64))
        self.model.set_normalization(features[tr].to(self.device))

        def loss_fn(model: nn.Module, batch: tuple) -> torch.Tensor:
            x, t = (b.to(self.device) for b in batch)
            return cosface_loss(model(x), self.model.classes, t)

        def train_batches(rng: np.random.Generator) -> list[tuple]:
            return [(features[tr[b]], y[tr[b]]) for b in batches(len(tr), s.batch_size, rng)]

        val = [(features[va[b]], y[va[b]]) for b in batches(len(va), 256)]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)  # class centres and dropout masks
            self.model.classes = nn.Parameter(
                torch.randn(len(names), self.model.neck[-1].num_features).to(self.device))
            return fit(self.model, loss_fn, train_batches, val, s, "feature embedder")

    @torch.no_grad()
    def embed(self, features: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """(N, D) L2-normalised float32 embeddings."""
        out = in_batches(self.model, features, batch_size, self.settings.precision,
                         self.device)
        return torch.cat([torch.zeros(0, self.model.neck[-1].num_features),
                          *(F.normalize(e, dim=1) for e in out)])
