"""Validation figures during training (the training-time adversaries, not the audit's)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..data.base import FaceDataset, to_tensor_batch
from ..metrics import accuracy, balanced_accuracy, roc_auc
from ..models import Models
from ..privacy import MSSSIMSettings, ms_ssim


@torch.no_grad()
def evaluate(models: Models, ds: FaceDataset, task: str, private: list[str], stage: str,
             msssim: MSSSIMSettings, device: torch.device, batch_size: int = 128,
             max_images: int = 0, amp=contextlib.nullcontext,
             attackers: bool = True) -> dict[str, float]:
    """Task accuracy/AUC; once trained, the adversaries' balanced accuracy and the
    reconstructor's MS-SSIM on the defender's validation split. attackers=False (a method
    that trains none): the task's figures only, never an untrained network's."""
    for m in models.named().values():
        m.eval()
    n = len(ds) if not max_images else min(len(ds), max_images)
    with_recon = attackers and stage in ("reconstructor", "adversaries", "adversarial")
    with_adv = (attackers and stage in ("adversaries", "adversarial")
                and len(models.adversaries) > 0)
    task_scores, adv_scores, recon = [], {k: [] for k in private}, []
    for start in range(0, n, batch_size):
        x = to_tensor_batch(ds.images[start:min(start + batch_size, n)]).to(device)
        with amp():
            z = models.encoder(x)
            task_scores.append(models.classifier(z).float().cpu())
            if with_adv:
                for k in private:
                    adv_scores[k].append(models.adversaries[k](z).float().cpu())
            r = models.reconstructor(z) if with_recon else None
        if with_recon:
            recon.append(ms_ssim(r, x, msssim, reduction="none").cpu())
    y = ds.attribute(task)[:n]
    s = torch.cat(task_scores).numpy()
    out = {"val_task_acc": accuracy(y, s), "val_task_auc": roc_auc(y, s)}
    if with_adv:
        for k in private:
            out[f"val_adv_{k}_bal_acc"] = balanced_accuracy(
                ds.attribute(k)[:n], torch.cat(adv_scores[k]).numpy())
    if with_recon:
        out["val_recon_msssim"] = float(torch.cat(recon).mean())
    return {k: round(v, 5) if np.isfinite(v) else v for k, v in out.items()}
