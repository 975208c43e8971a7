"""Identity from the features with every other test photo known (leave-one-out nearest
neighbour), beside the audit's one-photo gallery, for finished runs, without a full audit.

    python benchmarks/leave_one_out.py RUN [RUN ...] [--seed 0]

Each run's test split goes through its obfuscator (seeded device noise) and the int8 wire,
is standardised with the attacker split's statistics (as the audit's feature_reid), and
each photo is named by its nearest other photo (attackers/reid.leave_one_out_top1); chance
is a random other photo's (leave_one_out_chance). The audit reports the same figure as
`feature_reid.leave_one_out` (with the metric embedder as a third reader).
"""

from __future__ import annotations

import argparse

import torch

from deepobfuscator.attackers.reid import (
    gallery_probe_split,
    leave_one_out_chance,
    leave_one_out_top1,
    reid_scores,
)
from deepobfuscator.audit.attacks.feature_reid import standardise
from deepobfuscator.audit.features import extract, through_wire
from deepobfuscator.data.splits import make_splits
from deepobfuscator.runs import load_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cpu = torch.device("cpu")
    print("| run | metric | leave-one-out top-1 | one-photo gallery top-1 | chance (each) |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        cfg, models = load_run(run, cpu)
        roles = make_splits(cfg)
        torch.manual_seed(args.seed)  # the device noise of these uploads
        atk = through_wire(extract(models, roles["attacker"], [], cpu), "int8")
        test = through_wire(extract(models, roles["test"], [], cpu), "int8")
        ids = test.identities
        assert ids is not None, f"{run}: the test split has no identities"
        x = standardise(atk.features, test.features)
        g, p = gallery_probe_split(ids, args.seed)
        for metric in ("cosine", "euclidean"):
            one = reid_scores(x[g], ids[g], x[p], ids[p], metric=metric)[0]
            print(f"| {run} | {metric} | {leave_one_out_top1(x, ids, metric):.3f} | "
                  f"{one['top1']:.3f} | {leave_one_out_chance(ids):.3f} / "
                  f"{one['chance_top1']:.3f} |")


if __name__ == "__main__":
    main()
