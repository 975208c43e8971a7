"""The floors of the private attributes: what the true answers of a service's tasks tell an
attacker, with no upload at all (metrics.answer_floor, as `audit` computes it for one task).

    python benchmarks/task_floor.py [--config configs/celeba-shared.yaml]
        [--tasks Smiling,Mouth_Slightly_Open,...] [--private Male,Young]

Cuts the config's splits, fits the best table from the answer vectors to each private
attribute on the attacker split, and prints its balanced accuracy on the test split: for
the config's own task alone, then for the task set --tasks (default: the multi-task
CelebA set of issue 32, hair colour as its three binary attributes).
"""

from __future__ import annotations

import argparse

MULTI = ("Smiling,Mouth_Slightly_Open,Eyeglasses,Wearing_Hat,Bangs,Black_Hair,Blond_Hair,"
         "Brown_Hair")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/celeba-shared.yaml")
    ap.add_argument("--tasks", default=MULTI)
    ap.add_argument("--private", default="Male,Young")
    args = ap.parse_args()

    import numpy as np

    from deepobfuscator.config import load_config
    from deepobfuscator.data.splits import make_splits
    from deepobfuscator.metrics import answer_floor

    private = args.private.split(",")
    cfg = load_config(args.config, [f"data.private=[{','.join(private)}]"])
    roles = make_splits(cfg)
    att, test = roles["attacker"], roles["test"]
    print(f"{args.config}: attacker {len(att)} photos, test {len(test)}")
    for tasks in ([cfg.data.task], args.tasks.split(",")):
        a = np.stack([att.attribute(t) for t in tasks], 1)
        b = np.stack([test.attribute(t) for t in tasks], 1)
        floors = {p: answer_floor(a, att.attribute(p), b, test.attribute(p)) for p in private}
        print(f"answers of {', '.join(tasks)}: "
              + ", ".join(f"{p} {v:.3f}" for p, v in floors.items()))


if __name__ == "__main__":
    main()
