"""Attribute inference: a fresh probe that reads a private attribute off uploaded features.

Its balanced accuracy and AUC on the test split are the privacy figure for that attribute,
so the probe must be strong: a weak one flatters the defence. It comes in three families
(`FAMILIES`): linear (a logistic regression on every number), MLP (two hidden layers on
every number) and CNN (conv stages that keep where things are); the audit trains each and
reports the one that reads the most, since a defence may hold against one family and not
another (a linear erasure guarantees nothing against a nonlinear reader). It trains class-balanced,
so it cannot score by always answering the majority class. Besides the fixed 0.5 cut it
picks its own threshold on its held-out split (as an attacker with that split would):
under a tight cap a probe can rank well (AUC 0.59) and still answer one class at 0.5.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..metrics import accuracy, balanced_accuracy, best_threshold, majority_rate, roc_auc
from ..models.attack_nets import probe_network
from .base import (
    FeatureSet,
    FitResult,
    FitSettings,
    batches,
    fit,
    holdout_split,
    in_batches,
)

ROC_POINTS = 101


class AttributeProbe:
    """A fresh binary attribute attacker on features of shape (C, h, w)."""

    def __init__(self, feature_shape: tuple[int, int, int], settings: FitSettings,
                 width: int = 64, family: str = "cnn") -> None:
        self.settings = settings
        self.family = family
        self.device = torch.device(settings.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            model = probe_network(family, feature_shape, width)
        # channels-last runs oneDNN convolutions ~1.5x faster on CPU
        self.model = model.to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        # the cut with the best balanced accuracy on the held-out split (set by fit)
        self.threshold = 0.5

    def fit(self, data: FeatureSet, attribute: str) -> FitResult:
        """Train on `data` (the attacker split) to predict `attribute`; early stopping on a
        held-out share of it, split by identity when identities are known (no person on
        both sides, so the probe cannot score by recognising people)."""
        s = self.settings
        y_all = torch.as_tensor(np.asarray(data.attributes[attribute]), dtype=torch.float32)
        tr, va = holdout_split(len(data), s.val_fraction, s.seed, data.identities)
        x_tr, y_tr = data.features[tr], y_all[tr]
        x_va, y_va = data.features[va], y_all[va]
        self.model.set_normalization(x_tr.to(self.device))
        n_pos = float(y_tr.sum())
        # positives weigh n_neg/n_pos: both classes count equally in the loss, on both splits
        pos_weight = torch.tensor((len(y_tr) - n_pos) / n_pos if n_pos > 0 else 1.0,
                                  device=self.device)

        def loss_fn(model: nn.Module, batch: tuple) -> torch.Tensor:
            x, y = (t.to(self.device, non_blocking=True) for t in batch)
            return F.binary_cross_entropy_with_logits(model(x).float(), y,
                                                      pos_weight=pos_weight)

        def train_batches(rng: np.random.Generator) -> list[tuple]:
            return [(x_tr[b], y_tr[b]) for b in batches(len(tr), s.batch_size, rng)]

        val = [(x_va[b], y_va[b]) for b in batches(len(va), 256)]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)  # dropout masks: same seed, same probe
            result = fit(self.model, loss_fn, train_batches, val, s, f"probe {attribute}")
        self.threshold = best_threshold(y_va.numpy(), self.infer(x_va), default=0.5)
        return result

    @torch.no_grad()
    def infer(self, features: torch.Tensor, batch_size: int = 512) -> np.ndarray:
        """Probability of the attribute for each feature map, float64 (N,)."""
        out = in_batches(self.model, features, batch_size, self.settings.precision,
                         self.device)
        return torch.sigmoid(torch.cat(out)).double().numpy() if out else np.zeros(0)


def roc_curve(labels: np.ndarray, scores: np.ndarray,
              max_points: int = ROC_POINTS) -> tuple[list[float], list[float]]:
    """(fpr, tpr) from (0, 0) to (1, 1), one point per distinct score, thinned to at most
    max_points evenly in the number of samples called positive (keeps both ends)."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return [], []
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each tied score
    tpr = np.r_[0.0, np.cumsum(y)[last] / n_pos]
    fpr = np.r_[0.0, np.cumsum(~y)[last] / n_neg]
    if len(fpr) > max_points:
        called = np.r_[0, last + 1]  # samples called positive at each point
        keep = np.unique(np.searchsorted(called, np.linspace(0, len(s), max_points)))
        fpr, tpr = fpr[keep], tpr[keep]
    return [round(float(v), 5) for v in fpr], [round(float(v), 5) for v in tpr]


def score_attribute(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict:
    """Test-split figures for one attribute attacker (probabilities): at the fixed cut 0.5,
    and at `threshold`, the cut the attacker chose on its own held-out split (never on
    these labels)."""
    y = np.asarray(labels).astype(np.int64)
    p = np.asarray(probs, dtype=np.float64)
    fpr, tpr = roc_curve(y, p)
    return {
        "accuracy": accuracy(y, p, 0.5),
        "balanced_accuracy": balanced_accuracy(y, p, 0.5),
        "threshold": round(float(threshold), 6),
        "balanced_accuracy_tuned": balanced_accuracy(y, p, threshold),
        "roc_auc": roc_auc(y, p),
        "majority_rate": majority_rate(y),
        "n": int(len(y)),
        "positive_rate": float(y.mean()) if len(y) else float("nan"),
        "roc": {"fpr": fpr, "tpr": tpr},
    }
