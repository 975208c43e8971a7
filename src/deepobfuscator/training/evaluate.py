"""Validation figures during training (the training-time adversaries, not the audit's)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..data.base import FaceDataset, to_tensor_batch
from ..metrics import balanced_accuracy, finite_mean, task_scores
from ..models import Models
from ..privacy import MSSSIMSettings, ms_ssim
from ..tasks import TaskSet


@torch.no_grad()
def evaluate(models: Models, ds: FaceDataset, tasks: TaskSet, private: list[str],
             stage: str, msssim: MSSSIMSettings, device: torch.device, batch_size: int = 128,
             max_images: int = 0, amp=contextlib.nullcontext,
             attackers: bool = True) -> dict[str, float]:
    """Task accuracy/AUC (with several tasks: their means, and each task's own); once
    trained, the adversaries' balanced accuracy and the reconstructor's MS-SSIM on the
    defender's validation split. attackers=False (a method that trains none): the task's
    figures only, never an untrained network's."""
    for m in models.named().values():
        m.eval()
    n = len(ds) if not max_images else min(len(ds), max_images)
    with_recon = attackers and stage in ("reconstructor", "adversaries", "adversarial")
    with_adv = (attackers and stage in ("adversaries", "adversarial")
                and len(models.adversaries) > 0)
    logits: list[torch.Tensor] = []
    adv_scores: dict[str, list[torch.Tensor]] = {k: [] for k in private}
    recon: list[torch.Tensor] = []
    for start in range(0, n, batch_size):
        x = to_tensor_batch(ds.images[start:min(start + batch_size, n)]).to(device)
        with amp():
            z = models.encoder(x)
            logits.append(models.classifier(z).float().cpu())
            if with_adv:
                for k in private:
                    adv_scores[k].append(models.adversaries[k](z).float().cpu())
            r = models.reconstructor(z) if with_recon else None
        if r is not None:
            recon.append(ms_ssim(r, x, msssim, reduction="none").cpu())
    y = tasks.labels(ds)[:n]
    # binary tasks are scored on their logits (threshold 0): no float saturation ties
    cols = tasks.columns(torch.cat(logits))
    scores = [task_scores(y[:, k], (c if t.binary else c.softmax(1)).numpy(), 0.0)
              for k, (t, c) in enumerate(zip(tasks, cols, strict=True))]
    out = {"val_task_acc": finite_mean([s["accuracy"] for s in scores]),
           "val_task_auc": finite_mean([s["auc"] for s in scores])}
    if len(tasks) > 1:
        out["val_task_bal_acc"] = finite_mean([s["balanced_accuracy"] for s in scores])
        for t, s in zip(tasks, scores, strict=True):
            out[f"val_{t.name}_bal_acc"] = s["balanced_accuracy"]
    if with_adv:
        for k in private:
            out[f"val_adv_{k}_bal_acc"] = balanced_accuracy(
                ds.attribute(k)[:n], torch.cat(adv_scores[k]).numpy())
    if with_recon:
        out["val_recon_msssim"] = float(torch.cat(recon).mean())
    return {k: round(v, 5) if np.isfinite(v) else v for k, v in out.items()}
