"""Does a trained run's cloud trail its phone? Validation task accuracy and ROC AUC as
trained, then with only the cloud's (or only the phone's) BatchNorm statistics
re-estimated on the defender's training photos, no weight changed.

    python benchmarks/stale_cloud.py RUN [RUN ...]

A game that trains the phone and the cloud in training mode can leave the cloud's
running statistics behind the phone as deployed (eval mode): the AUC stays while the
accuracy at the cloud's fixed 0.5 cut falls. Where re-estimating the cloud's statistics
restores the accuracy, `deepobfuscator choose-upload RUN --refit-epochs 1 --out NEW`
re-fits the cloud to the phone properly (the phone and every privacy figure unchanged).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

# photos the statistics are re-estimated on (the first of the defender's training split)
RECAL_IMAGES = 4096


@torch.no_grad()
def scores(models, ds, task: str) -> tuple[float, float, float]:
    """(accuracy, ROC AUC, share predicted positive) on `ds`, the run's own noise drawn
    under a fixed seed."""
    from deepobfuscator.data.base import to_tensor_batch
    from deepobfuscator.metrics import accuracy, roc_auc

    torch.manual_seed(0)
    logits = torch.cat([models.classifier(models.encoder(to_tensor_batch(ds.images[i:i + 256])))
                        .float() for i in range(0, len(ds), 256)]).numpy()
    y = ds.attribute(task)
    return accuracy(y, logits), roc_auc(y, logits), float((logits > 0).mean())


@torch.no_grad()
def reestimate(models, part: str, ds) -> None:
    """Re-estimate `part`'s BatchNorm running statistics (cumulative average) on the first
    RECAL_IMAGES of `ds`, everything else in eval mode."""
    from deepobfuscator.data.base import to_tensor_batch

    module = getattr(models, part)
    for bn in module.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
    torch.manual_seed(0)
    for i in range(0, min(len(ds), RECAL_IMAGES), 128):
        models.classifier(models.encoder(to_tensor_batch(ds.images[i:i + 128])))
    module.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from deepobfuscator.data.splits import make_splits
    from deepobfuscator.runs import load_run, read_run_config

    print("| run | as trained: acc. / AUC / predicted positive | cloud's statistics "
          "re-estimated | phone's statistics re-estimated | true positive share |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        cfg = read_run_config(run)
        roles = make_splits(cfg)
        _, models = load_run(run)
        for module in models.named().values():
            module.eval()
        val, task = roles["defender_val"], cfg.data.task
        cells = [scores(models, val, task)]
        for part in ("classifier", "encoder"):
            m = copy.deepcopy(models)
            reestimate(m, part, roles["defender_train"])
            cells.append(scores(m, val, task))
        fmt = [f"{a:.3f} / {u:.3f} / {p:.3f}" for a, u, p in cells]
        print(f"| {run} | {' | '.join(fmt)} | {float(val.attribute(task).mean()):.3f} |")


if __name__ == "__main__":
    main()
