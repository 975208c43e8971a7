"""Linear erasure of private attributes from the upload (privacy.erase): a closed-form
adversary, fitted once when training ends.

Inside each class of the task labels (with several tasks: each combination of answers),
the uploaded numbers' mean differs between, say,
men and women along some direction; a linear attacker reads the attribute there. The
phone projects that direction out: an orthogonal projection I - Q Q^T, with Q an
orthonormal basis of the within-task-class cross-covariance between the upload and the
attributes (pooled over the classes: one direction per attribute), less its component
along the task's own direction (the difference of the two classes' mean uploads). That
guard keeps the task's direction exactly: without it, on LFW, where men's and women's
smiles differ along the smile's own direction, the erasure took 85% of the task's
separation with it (validation accuracy 0.88 -> 0.61). What the guard leaves, the
attribute's trace along the task's direction, an attacker can still read; on the
defender's data nothing else of it is linear. Per-class directions (two per attribute)
and a whitened, oblique projection were tried; the first cost a fresh task probe 12.5
points on CelebA, the second gained nothing measurable and can add power (docs/notebook.md "Erasing
Male").

Where it sits: after the information cap (unit RMS), before the feature noise. An
orthogonal projection never adds power, so the cap's bound on what the upload carries
still holds; the noise then falls on every sent number as before, and the exported graph
stays deterministic (the device adds the noise after it, as it always did).

Fitting is a pure function of the trained obfuscator and the defender's training images
(float64, a fixed image count), so a resumed run or `choose-upload --erase` computes the
same basis; the cloud then re-fits to the erased upload (train.upload_tune_epochs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .base import Defence, FitContext, Shape, register_defence

if TYPE_CHECKING:
    from ..config_schema import Config

# images of the defender's training split the erasure is fitted on (the first ones)
ERASE_IMAGES = 10_000
# singular values below this share of the largest span no direction worth removing
_RANK_TOL = 1e-6


def erasure_basis(features: np.ndarray, task: np.ndarray, private: np.ndarray,
                  positions: np.ndarray | None = None) -> np.ndarray:
    """Orthonormal directions (D, k <= r) to project out of `features` (N, D): the span of
    the cross-covariance between the features and the columns of `private` (N, r),
    computed inside each cell of the task labels and summed over the cells, less its
    component along the tasks' own directions, which the projection therefore keeps.
    `task` is (N,) for one task or (N, T) for several (0/1, or class indices); a cell is
    one combination of answers, a task's directions are the differences between each of
    its classes' mean features and the rest's (one for a binary task). Only the
    `positions` (flat indices; None: all) are fitted; Q is zero elsewhere, so the numbers
    that are not sent stay untouched."""
    x = np.asarray(features, dtype=np.float64)
    z = np.asarray(private, dtype=np.float64).reshape(len(x), -1)
    t = np.asarray(task).astype(np.int64).reshape(len(task), -1)
    if len(x) != len(t) or len(x) != len(z):
        raise ValueError(f"{len(x)} feature rows, {len(t)} task labels and {len(z)} "
                         "attribute rows: give one of each per image")
    cols = np.arange(x.shape[1]) if positions is None else np.asarray(positions)
    xs = x[:, cols]
    cross = np.zeros((xs.shape[1], z.shape[1]))
    _, cell = np.unique(t, axis=0, return_inverse=True)
    cell = cell.reshape(-1)
    for c in range(int(cell.max()) + 1 if len(cell) else 0):
        m = cell == c
        if m.sum() < 2:
            continue  # a cell with one image has no spread to remove
        cross += (xs[m] - xs[m].mean(0)).T @ (z[m] - z[m].mean(0)) / len(x)
    q = np.zeros((x.shape[1], 0))
    # the task guard: the directions removed are orthogonal to the tasks' own (the
    # differences of class means), so the projection leaves them exactly as they were
    dirs = [xs[y == k].mean(0) - xs[y != k].mean(0)
            for y in t.T for k in np.unique(y)[1:]]
    dirs = [d / n for d in dirs if (n := np.linalg.norm(d)) > 0]
    if len(dirs) == 1:
        cross -= np.outer(dirs[0], dirs[0] @ cross)
    elif dirs:
        g, sv, _ = np.linalg.svd(np.stack(dirs, 1), full_matrices=False)
        g = g[:, sv > _RANK_TOL * sv[0]]
        cross -= g @ (g.T @ cross)
    u, s, _ = np.linalg.svd(cross, full_matrices=False)
    if s.size == 0 or s[0] <= 0:
        return q
    u = u[:, s > _RANK_TOL * s[0]]
    # a sign convention, so that the same data gives the same stored basis everywhere
    u = u * np.where(u[np.abs(u).argmax(0), np.arange(u.shape[1])] < 0, -1.0, 1.0)
    q = np.zeros((x.shape[1], u.shape[1]))
    q[cols] = u
    return q


def erase(features: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """features (N, ...) with the directions of `basis` (D, k) projected out; D is the
    product of the feature dimensions. A zero basis leaves the features as they are."""
    flat = features.flatten(1)
    b = basis.to(flat.dtype)
    return (flat - (flat @ b) @ b.T).view_as(features)


class ErasureStage(nn.Module):
    """Projects the fitted directions `basis` (C*H*W, k) out of the upload. Until the finish
    phase fits them (`fitted`), the stage passes the upload through untouched, so training
    computes exactly what it would without it."""

    def __init__(self, elements: int, k: int) -> None:
        super().__init__()
        self.basis: torch.Tensor
        self.register_buffer("basis", torch.zeros(elements, k))
        self.fitted = False  # a plain flag: the finish phase and load_run set it

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # a state from before this stage existed (a reused task stage of a run without
        # it): the stage starts unfitted
        state_dict.setdefault(prefix + "basis", self.basis.clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return erase(z, self.basis) if self.fitted else z


@torch.no_grad()
def fit_erasure(encoder: Any, images: torch.Tensor, task: torch.Tensor,
                private: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Fit the encoder's erasure on its noise-free, unerased upload of the first
    ERASE_IMAGES of `images` (N, H, W, 3) uint8, with their `task` (N, T) and `private` (N, r)
    labels (the attributes to erase); store it in the encoder's erase stage and return the
    basis (D, k). The mask of a sparse upload must be chosen first: only the sent numbers
    are fitted."""
    stage = encoder.stage("erase")
    if stage is None:
        raise ValueError("the obfuscator was built without privacy.erase")
    basis = stage.basis
    basis.zero_()
    stage.fitted = False  # the features before any erasure
    with encoder.noise_free():
        n = min(len(images), ERASE_IMAGES)
        feats = []
        for i in range(0, n, batch_size):
            x = images[i:i + batch_size].permute(0, 3, 1, 2).float().div(255.0)
            feats.append(encoder(x.to(basis.device)).float().flatten(1).cpu().double())
        x_all = torch.cat(feats).numpy()
    upload = encoder.stage("upload")
    positions = None if upload is None else \
        np.flatnonzero(upload.mask.flatten().cpu().numpy() > 0.5)
    q = erasure_basis(x_all, task[:n].cpu().numpy(), private[:n].cpu().numpy(), positions)
    k = min(q.shape[1], basis.shape[1])
    basis[:, :k] = torch.from_numpy(q[:, :k]).to(basis)
    stage.fitted = True
    return q[:, :k]


def _check_erase(cfg: Config) -> None:
    erase_, private = cfg.privacy.erase, cfg.data.private
    unknown = [a for a in erase_ if a not in private]
    if unknown:
        raise ConfigError(f"privacy.erase names {unknown}, not in data.private {private}: "
                          "erase only attributes the defender has labels for (add them to "
                          "data.private), or set privacy.erase=[] for no erasure")
    if len(set(erase_)) != len(erase_):
        raise ConfigError(f"privacy.erase lists an attribute twice: {erase_}")
    if erase_ and cfg.train.upload_tune_epochs == 0:
        raise ConfigError("privacy.erase changes every upload when training ends, and the "
                          "cloud re-fits to it for train.upload_tune_epochs epochs, which is "
                          "0: give it 1 or more")


@register_defence
class Erasure(Defence):
    name = "erase"
    summary = ("project out of the upload the linear trace of the privacy.erase attributes "
               "inside the task classes (fitted when training ends)")
    order = 50  # after the cap (a projection only removes power), before the noise
    keys = ("privacy.erase",)
    baseline = ("privacy.erase=[]",)
    in_task_stage = False
    fit_order = 20
    finish_step = "erasure"
    legacy_state = {"erase_basis": "stages.erase.basis"}

    def enabled(self, cfg: Config) -> bool:
        return bool(cfg.privacy.erase)

    def validate(self, cfg: Config) -> None:
        _check_erase(cfg)

    def build(self, cfg: Config, shape: Shape) -> nn.Module:
        return ErasureStage(int(np.prod(shape)), len(cfg.privacy.erase))

    def extra_macs(self, cfg: Config, shape: Shape) -> int:
        # x @ Q and (x Q) @ Q^T over the flat upload, k directions
        return 2 * int(np.prod(shape)) * len(cfg.privacy.erase)

    def manifest(self, cfg: Config, stage: nn.Module) -> dict | None:
        from ..tasks import task_set

        where, kept = (("each task class", "the task's own direction") if task_set(cfg).single
                       else ("each combination of the tasks' answers",
                             "the tasks' own directions"))
        return {"attributes": list(cfg.privacy.erase),
                "rule": "obfuscator.onnx projects out, after the unit-RMS cap and before the "
                        "noise, the direction along which each of these attributes moves the "
                        f"upload inside {where} on the defender's data, less its part "
                        f"along {kept}, which is kept (privacy.erase)"}

    def fit(self, stage: nn.Module, ctx: FitContext) -> dict:
        cols = [ctx.cfg.data.private.index(a) for a in ctx.cfg.privacy.erase]
        basis = fit_erasure(ctx.encoder, ctx.images, ctx.task, ctx.private[:, cols])
        return {"erased": list(ctx.cfg.privacy.erase), "directions": int(basis.shape[1]),
                "nothing_erased": not bool(basis.any())}
