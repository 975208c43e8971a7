"""The floors of the private attributes: what the true answers of a service's tasks tell an
attacker, with no upload at all (metrics.answer_floor, as `audit` computes it for one task).

    python benchmarks/task_floor.py [--config configs/celeba-multitask.yaml]
        [--tasks Smiling,Mouth_Slightly_Open,...] [--private Male,Young]

Cuts the config's splits, fits the best table from the answer vectors to each private
attribute on the attacker split, and prints its balanced accuracy on the test split, and
the identity floor (nearest neighbour on the answer vectors, the audit's gallery and
probes, attacker seed 0): for the config's own tasks (tasks.py: hair colour as one 4-class
task in configs/celeba-multitask.yaml), then for the binary task set --tasks if given.
"""

from __future__ import annotations

import argparse

MULTI = ("Smiling,Mouth_Slightly_Open,Eyeglasses,Wearing_Hat,Bangs,Black_Hair,Blond_Hair,"
         "Brown_Hair")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/celeba-multitask.yaml")
    ap.add_argument("--tasks", default="", help=f"binary attributes, e.g. {MULTI}")
    ap.add_argument("--private", default="Male,Young")
    args = ap.parse_args()


    from deepobfuscator.attackers.reid import gallery_probe_split, reid_scores
    from deepobfuscator.config import load_config
    from deepobfuscator.data.splits import make_splits
    from deepobfuscator.metrics import answer_floor
    from deepobfuscator.tasks import parse_tasks, task_set

    private = args.private.split(",")
    cfg = load_config(args.config, [f"data.private=[{','.join(private)}]"])
    roles = make_splits(cfg)
    att, test = roles["attacker"], roles["test"]
    print(f"{args.config}: attacker {len(att)} photos, test {len(test)}")
    for tasks in (task_set(cfg), *([parse_tasks(args.tasks.split(","))] if args.tasks else [])):
        a, b = tasks.labels(att), tasks.labels(test)
        floors = {p: answer_floor(a, att.attribute(p), b, test.attribute(p)) for p in private}
        ids = test.identities
        g, pr = gallery_probe_split(ids, 0)
        vec = tasks.answer_vectors(b)
        reid = reid_scores(vec[g], ids[g], vec[pr], ids[pr])[0]
        print(f"answers of {', '.join(tasks.names)}: "
              + ", ".join(f"{p} {v:.3f}" for p, v in floors.items())
              + f"; re-identification top-1 {reid['top1']:.3f} (chance {reid['chance_top1']:.3f})")


if __name__ == "__main__":
    main()
