"""The light-phone experiment: learned obfuscation at the paper's split, fresh attackers.

    python benchmarks/light_phone.py --out runs/light-phone [--split 2] [--seeds 0 1 2]
        [--arms none control paper robust cap cap-control robust-cap] [--noise 2.0]
        [--max-epochs 30] [--whitebox-images 8 --whitebox-steps 100] [--threads 1]
        [--data-config configs/celeba-shared.yaml] [--summary-only]

Every arm is the same architecture (VGG16-BN blocks 1..split on the phone, a 1-channel
1x1 bottleneck) on the same data; each is trained with training seed s and audited by
fresh attackers with attacker seed s, through the int8 upload, beside the no-privacy
baseline (`train --baseline`, trained once). Arms:

  none         task stage only (4 epochs)
  control      + a task-only continuation with as many encoder steps as the adversarial
               arms (privacy.method=robust with no attackers: the step-matched control)
  paper        + the paper's rotation (privacy.method=deepobfuscator)
  robust       + privacy.method=robust
  cap          the information cap (unit-RMS features + noise), task stage only
  cap-control  cap + the step-matched task-only continuation
  robust-cap   cap + privacy.method=robust

Arms that share the task stage start from the same stage-1 checkpoint (training/reuse.py),
so they differ only in what follows it. Runs and audits resume: finished ones are
skipped. `summary.json` and `summary.md` collect every audit's figures.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

ARMS = ("none", "control", "paper", "robust", "cap", "cap-control", "robust-cap")
NO_ATTACKERS = ["privacy.method=robust", "privacy.robust.adversary_steps=0",
                "privacy.robust.attribute_weight=0", "privacy.robust.reconstruction_weight=0"]


def arm_overrides(arm: str, noise: float) -> list[str]:
    cap = ["privacy.normalize_features=true", f"privacy.feature_noise={noise}"]
    return {"none": ["privacy.method=none"],
            "control": NO_ATTACKERS,
            "paper": ["privacy.method=deepobfuscator"],
            "robust": ["privacy.method=robust"],
            "cap": [*cap, "privacy.method=none"],
            "cap-control": [*cap, *NO_ATTACKERS],
            "robust-cap": [*cap, "privacy.method=robust"]}[arm]


def stage1_source(arm: str) -> str | None:
    return {"control": "none", "paper": "none", "robust": "none",
            "cap-control": "cap", "robust-cap": "cap"}.get(arm)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/light-phone")
    ap.add_argument("--data-config", default="configs/celeba-shared.yaml")
    ap.add_argument("--split", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--noise", type=float, default=2.0, help="feature noise of the cap arms")
    ap.add_argument("--extra", nargs="*", default=[], help="more key=value overrides, all arms")
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--whitebox-images", type=int, default=8)
    ap.add_argument("--whitebox-steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-audit", action="store_true")
    ap.add_argument("--summary-only", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if not args.summary_only:
        run_all(args, out)
    write_summary(out)


def run_all(args: argparse.Namespace, out: Path) -> None:
    from deepobfuscator.audit.runner import AuditSettings, audit
    from deepobfuscator.config import NO_PRIVACY_OVERRIDES, load_config
    from deepobfuscator.training import train
    from deepobfuscator.training.reuse import start_from_baseline

    common = [f"model.split_block={args.split}", "model.bottleneck=1",
              f"threads={args.threads}", *args.extra]
    base_dir = out / "baseline"
    train(load_config(args.data_config, [*common, *NO_PRIVACY_OVERRIDES]), base_dir,
          progress=False)
    for seed in args.seeds:
        for arm in args.arms:
            run = out / f"{arm}-s{seed}"
            cfg = load_config(args.data_config,
                              [*common, f"seed={seed}", *arm_overrides(arm, args.noise)])
            src = stage1_source(arm)
            if src is not None:
                src_dir = out / f"{src}-s{seed}"
                train(load_config(args.data_config, [*common, f"seed={seed}",
                                                     *arm_overrides(src, args.noise)]),
                      src_dir, progress=False)
                start_from_baseline(cfg, run, src_dir)
            print(f"== train {run}", flush=True)
            train(cfg, run, progress=False)
            if args.no_audit or (out / f"audit-{arm}-s{seed}" / "audit.json").is_file():
                continue
            print(f"== audit {run}", flush=True)
            audit(run, base_dir, out / f"audit-{arm}-s{seed}",
                  AuditSettings(seed=seed, max_epochs=args.max_epochs,
                                whitebox_images=args.whitebox_images,
                                whitebox_steps=args.whitebox_steps, wire="int8",
                                progress=False))


def figures(a: dict) -> dict:
    """The figures of one audit.json, for the obfuscated run and the baseline."""
    out = {}
    for name, r in a["runs"].items():
        f = {"task_acc": r["utility"]["accuracy"],
             "msssim": r["inversion"]["msssim"]["mean"]}
        for attr, sc in r["attributes"].items():
            f[attr] = sc["balanced_accuracy"]
        if "reid" in r:
            f["reid_top1"] = r["reid"]["reconstruction_probes"]["top1"]
        for attr, sc in r.get("training_adversaries", {}).items():
            f[f"own_{attr}"] = sc["balanced_accuracy"]
        if "training_reconstructor" in r:
            f["own_msssim"] = r["training_reconstructor"]["msssim"]["mean"]
        out[name] = f
    out["chance"] = {"msssim": a["chance"]["reconstruction_mean_image"]["msssim"]["mean"],
                     "reid_top1": a["chance"].get("reid", {}).get("top1")}
    return out


def write_summary(out: Path) -> None:
    rows = {}
    for p in sorted(out.glob("audit-*/audit.json")):
        name = p.parent.name[len("audit-"):]
        arm, _, seed = name.rpartition("-s")
        rows.setdefault(arm, {})[seed] = figures(json.loads(p.read_text()))
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    keys = ["task_acc", "msssim", "Male", "Young", "reid_top1", "own_Male", "own_Young",
            "own_msssim"]
    lines = ["| arm | seeds | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
    for arm in [*ARMS, "baseline"]:
        per = rows.get(arm) if arm != "baseline" else {
            s: {"obfuscated": f["baseline"]} for r in rows.values() for s, f in r.items()
            if "baseline" in f}
        if not per:
            continue
        cells = []
        for k in keys:
            vals = [f["obfuscated"][k] for f in per.values() if k in f["obfuscated"]]
            if not vals:
                cells.append("")
                continue
            m = sum(vals) / len(vals)
            cells.append(f"{m:.3f} [{min(vals):.3f}-{max(vals):.3f}]" if len(vals) > 1
                         else f"{m:.3f}")
        lines.append(f"| {arm} | {','.join(sorted(per))} | " + " | ".join(cells) + " |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
