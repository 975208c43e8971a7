"""How many uploaded numbers a trained capped run needs: where its signal power sits, and
its task accuracy when only the K strongest positions are sent, without retraining.

    python benchmarks/sparse_upload.py RUN [RUN ...] --k 0 64 32 16 8

For each run (trained with the information cap, `model.upload_positions=0`):
- the Gaussian-channel bits each position carries, 1/2 log2(1 + P_i / s^2), with P_i its
  mean signal power on the test split (noise off), and how many positions hold 90 / 99 /
  99.9% of the total;
- for each K: the positions chosen exactly as training chooses them (models/upload.py,
  on the defender's training images), then the audit's own task-accuracy figure (the
  cloud classifier on the test split through the int8 upload, the run's seed). K = 0 is
  the run as trained. The classifier never saw zeros at the dropped positions: a lower
  bound on what `model.upload_positions=K` (which trains on the choice) reaches.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch


def signal_bits(encoder, images: np.ndarray) -> torch.Tensor:
    """Per-position bits (flattened map) on uint8 (N, H, W, 3) images, noise off."""
    std = encoder.noise_std
    encoder.eval()
    encoder.noise_std = 0.0
    try:
        with torch.no_grad():
            z = torch.cat([encoder(torch.from_numpy(images[i:i + 128]).permute(0, 3, 1, 2)
                                   .float().div(255.0)) for i in range(0, len(images), 128)])
    finally:
        encoder.noise_std = std
    return 0.5 * torch.log2(1 + z.double().pow(2).mean(0).flatten() / std ** 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--k", type=int, nargs="+", default=[0, 64, 32, 16, 8])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from deepobfuscator.audit.attacks.utility import CloudUtility
    from deepobfuscator.audit.runner import AuditJob, _load, _splits, attack_context
    from deepobfuscator.audit.settings import AuditSettings
    from deepobfuscator.defences.sparse_upload import UploadMask, choose_upload_positions

    scratch = Path(tempfile.mkdtemp(prefix="sparse-upload-"))
    for run in args.runs:
        cfg, models = _load(run, torch.device("cpu"))
        if cfg.privacy.feature_noise <= 0 or cfg.model.upload_positions:
            raise SystemExit(f"{run}: needs a capped run (feature noise > 0) uploading "
                             "every number")
        roles = _splits(cfg, run)
        bits = signal_bits(models.encoder, roles["test"].images)
        cum = bits.sort(descending=True).values.cumsum(0) / bits.sum()
        held = {f: int((cum < f).sum()) + 1 for f in (0.9, 0.99, 0.999)}
        print(f"{run}: {bits.sum():.2f} bits over {len(bits)} positions; 90 / 99 / 99.9% "
              f"of them in {held[0.9]} / {held[0.99]} / {held[0.999]} positions", flush=True)
        train_images = torch.from_numpy(np.ascontiguousarray(roles["defender_train"].images))
        for k in args.k:
            cfg, models = _load(run, torch.device("cpu"))
            enc = models.encoder
            if k:  # a run trained without a mask: give it the buffer training would have
                shape = _map_shape(models, roles)
                enc.stages["upload"] = UploadMask(shape)
                choose_upload_positions(enc, train_images, k)
            s = AuditSettings(seed=cfg.seed, wire="int8", progress=False, threads=args.threads)
            job = AuditJob("obfuscated", cfg, models, roles, [cfg.data.task, *cfg.data.private],
                           s, torch.device("cpu"), "fp32")
            acc = CloudUtility().run(attack_context(job, scratch, None))["utility"]["accuracy"]
            print(f"  K = {k or 'all'}: task accuracy {acc:.3f}", flush=True)


def _map_shape(models, roles) -> tuple[int, int, int]:
    x = torch.from_numpy(roles["test"].images[:1]).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        return tuple(models.encoder.eval()(x).shape[1:])  # type: ignore[return-value]


if __name__ == "__main__":
    main()
