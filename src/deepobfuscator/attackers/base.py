"""What every fresh attacker gets, and the one training loop they all share.

Attackers are trained from scratch after the obfuscator is frozen, on features of
the attacker's own split, with early stopping on a held-out part of that split,
and scored on the test split, which nobody trained on.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm


@dataclass
class FeatureSet:
    """One split as an attacker sees it: the uploaded features beside the ground truth.

    features: float32 (N, C, h, w), the frozen obfuscator's output on `images`.
    images: float32 (N, 3, H, W) in [0, 1].
    attributes: name -> int64 (N,) 0/1 labels. identities: int64 (N,) or None.
    """

    features: torch.Tensor
    images: torch.Tensor
    attributes: dict[str, np.ndarray]
    identities: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.features)

    def subset(self, index: np.ndarray) -> FeatureSet:
        t = torch.from_numpy(np.asarray(index, dtype=np.int64))
        return FeatureSet(
            self.features[t], self.images[t],
            {k: v[index] for k, v in self.attributes.items()},
            None if self.identities is None else self.identities[index],
        )


@dataclass
class FitSettings:
    """How an attacker trains: Adam, early stopping on a held-out share of its data."""

    max_epochs: int = 30
    patience: int = 4  # epochs without validation improvement before stopping
    lr: float = 1e-3
    batch_size: int = 64
    val_fraction: float = 0.15
    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"  # bf16 autocast for speed where the hardware has it
    max_seconds: float = 0.0  # 0 = no time cap; otherwise stop (and say so) after this long
    progress: bool = True


@dataclass
class FitResult:
    """Training curve of one attacker, stored in audit.json."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped: str = ""  # "early_stopping", "max_epochs" or "time_limit"
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"train_loss": [round(v, 5) for v in self.train_loss],
                "val_loss": [round(v, 5) for v in self.val_loss],
                "best_epoch": self.best_epoch, "stopped": self.stopped,
                "seconds": round(self.seconds, 2)}


def holdout_split(n: int, val_fraction: float, seed: int,
                  groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, val) indices; by group (identity) when groups are given."""
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(n)
        n_val = max(1, int(round(val_fraction * n)))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    uniq = rng.permutation(np.unique(groups))
    n_val = max(1, int(round(val_fraction * len(uniq))))
    val = np.isin(groups, uniq[:n_val])
    return np.flatnonzero(~val), np.flatnonzero(val)


def fit(model: nn.Module, loss_fn: Callable[[nn.Module, tuple], torch.Tensor],
        train_batches: Callable[[np.random.Generator], list[tuple]],
        val_batches: list[tuple], settings: FitSettings, desc: str) -> FitResult:
    """Train `model` with Adam until the validation loss stops improving; restore the
    best weights. `loss_fn(model, batch)` returns a scalar mean loss for a batch;
    `train_batches(rng)` returns one epoch of batches (shuffled with rng)."""
    import time

    from ..precision import autocast

    device = torch.device(settings.device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    rng = np.random.default_rng(settings.seed)
    result, best, best_state, bad = FitResult(), math.inf, None, 0
    start = time.time()
    bar = tqdm(range(settings.max_epochs), desc=desc, unit="epoch", leave=False,
               disable=not settings.progress)
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for batch in train_batches(rng):
            with autocast(settings.precision, device):
                loss = loss_fn(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count = total + loss.item(), count + 1
        model.eval()
        with torch.no_grad():
            vals = []
            for batch in val_batches:
                with autocast(settings.precision, device):
                    vals.append(loss_fn(model, batch).item())
        val = float(np.mean(vals))
        result.train_loss.append(total / max(count, 1))
        result.val_loss.append(val)
        bar.set_postfix(val=f"{val:.4f}")
        if val < best - 1e-4:
            best, best_state, bad, result.best_epoch = val, copy.deepcopy(model.state_dict()), 0, \
                epoch
        else:
            bad += 1
        if bad >= settings.patience:
            result.stopped = "early_stopping"
            break
        if settings.max_seconds and time.time() - start > settings.max_seconds:
            result.stopped = "time_limit"
            break
    else:
        result.stopped = "max_epochs"
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.time() - start
    return result


def batches(n: int, batch_size: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Index batches over n items, shuffled when rng is given; drops a last batch of 1
    (BatchNorm cannot train on a single sample)."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    out = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    return [b for b in out if len(b) > 1 or rng is None]


@torch.no_grad()
def in_batches(model: nn.Module, x: torch.Tensor, batch_size: int, precision: str,
               device: torch.device,
               forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
               ) -> list[torch.Tensor]:
    """`model` (or `forward(model, batch)`) over `x` in eval mode, batch by batch under the
    attacker's autocast: its outputs as float32 on the CPU, one tensor a batch."""
    from ..precision import autocast

    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        batch = x[i:i + batch_size].to(device)
        with autocast(precision, device):
            y = forward(model, batch) if forward is not None else model(batch)
        out.append(y.float().cpu())
    return out
