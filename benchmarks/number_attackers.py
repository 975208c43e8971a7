"""Attackers of the sent numbers alone: a linear, a quadratic and an MLP read-out of each
private attribute (and an MLP of the task), trained on the attacker split's upload and
scored on the test split's (balanced accuracy), for one or more runs.

    python benchmarks/number_attackers.py RUN [RUN ...] [--seed S]

The audit's probes are CNNs on the (C, H, W) map; this is a second kind of attacker for a
sparse upload, which is a short vector: where `privacy.erase` removes only what a linear
read-out finds, the quadratic terms and the MLP test what is left beyond it. The uploads
go through the int8 wire format with the run's noise, drawn under `--seed` (the same
draws for every run of one call). Each attacker stops early on a fifth of its training
split, class-balanced (pos_weight), Adam at 1e-3.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def sent_numbers(run: Path, seed: int) -> dict:
    """{role: (numbers (N, K) float64, {attribute: labels})} of the attacker and test
    splits, as uploaded (noise, int8)."""
    from deepobfuscator.audit.features import extract, through_wire
    from deepobfuscator.audit.runner import _load, _splits
    from deepobfuscator.models.upload import kept_positions

    cfg, models = _load(run, torch.device("cpu"))
    roles = _splits(cfg, run)
    attrs = [cfg.data.task, *cfg.data.private]
    kept = kept_positions(models.encoder)
    out = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for role in ("attacker", "test"):
            fs = through_wire(extract(models, roles[role], attrs, torch.device("cpu")), "int8")
            x = fs.features.flatten(1).double()
            out[role] = (x if kept is None else x[:, torch.from_numpy(kept)],
                         {a: np.asarray(fs.attributes[a]) for a in attrs})
    return {"task": cfg.data.task, "private": list(cfg.data.private), **out}


def quadratic(x: torch.Tensor) -> torch.Tensor:
    i, j = torch.triu_indices(x.shape[1], x.shape[1])
    return torch.cat([x, x[:, i] * x[:, j]], 1)


def fit_score(x: torch.Tensor, y: np.ndarray, xt: torch.Tensor, hidden: int, seed: int,
              epochs: int = 60) -> np.ndarray:
    """Train a read-out (linear when hidden = 0, else a 2-layer MLP) and return its logits
    on xt; the weights of the epoch with the lowest held-out loss."""
    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0) + 1e-6
    x, xt = ((x - mean) / std).float(), ((xt - mean) / std).float()
    target = torch.tensor(y, dtype=torch.float32)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    val, tr = order[: len(x) // 5], order[len(x) // 5:]
    net: nn.Module = (nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Dropout(0.2),
                                    nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
                      if hidden else nn.Linear(x.shape[1], 1))
    opt = torch.optim.Adam(net.parameters(), 1e-3, weight_decay=1e-3)
    pos_weight = (1 - target[tr]).sum() / target[tr].sum().clamp(min=1)
    best, state = float("inf"), None
    for _ in range(epochs):
        net.train()
        for b in torch.randperm(len(tr)).split(128):
            i = tr[b]
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(net(x[i]).squeeze(1), target[i],
                                               pos_weight=pos_weight).backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            loss = F.binary_cross_entropy_with_logits(net(x[val]).squeeze(1), target[val],
                                                      pos_weight=pos_weight).item()
        if loss < best:
            best, state = loss, {k: v.clone() for k, v in net.state_dict().items()}
    assert state is not None
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        return net(xt).squeeze(1).numpy()


def main() -> None:
    from deepobfuscator.metrics import balanced_accuracy

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--seed", type=int, default=0, help="noise draws and attacker init")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for run in args.runs:
        d = sent_numbers(run, args.seed)
        (xa, la), (xt, lt) = d["attacker"], d["test"]
        row = {}
        for a in d["private"]:
            row[f"{a} linear"] = balanced_accuracy(lt[a], fit_score(xa, la[a], xt, 0, args.seed))
            row[f"{a} quadratic"] = balanced_accuracy(
                lt[a], fit_score(quadratic(xa), la[a], quadratic(xt), 0, args.seed))
            row[f"{a} MLP"] = balanced_accuracy(lt[a], fit_score(xa, la[a], xt, 256, args.seed))
        row[f"{d['task']} MLP"] = balanced_accuracy(
            lt[d["task"]], fit_score(xa, la[d["task"]], xt, 256, args.seed))
        print(f"{run} (seed {args.seed}, {xa.shape[1]} numbers): " +
              ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
