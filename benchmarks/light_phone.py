"""The light-phone experiment: learned obfuscation at the paper's split, fresh attackers.

    python benchmarks/light_phone.py --out runs/light-phone [--split 2] [--pool 1] [--seeds 0 1 2]
        [--arms none control paper robust cap cap-control robust-cap default] [--noise 2.0]
        [--arch model.bottleneck_context=true --tag -ctx]
        [--max-epochs 30] [--whitebox-images 8 --whitebox-steps 100] [--threads 1]
        [--device auto] [--precision auto]
        [--data-config configs/celeba-shared.yaml] [--summary-only]

Every arm is the same architecture (VGG16-BN blocks 1..split on the phone, a 1-channel
1x1 bottleneck) on the same data; each is trained with training seed s and audited by
fresh attackers with attacker seed s (and s+1000, s+2000, ... with --attack-seeds),
through the int8 upload, beside the no-privacy
baseline (`train --baseline`, trained once). Arms:

  none         task stage only (4 epochs)
  control      + a task-only continuation with as many encoder steps as the adversarial
               arms (privacy.method=robust with no attackers: the step-matched control)
  paper        + the paper's rotation (privacy.method=deepobfuscator)
  robust       + privacy.method=robust
  cap          the information cap (unit-RMS features + noise), task stage only
  cap-control  cap + the step-matched task-only continuation
  robust-cap   cap + privacy.method=robust
  on-device    every conv block on the phone, 4-number upload (the on-device reference)
  default      the product as shipped: the --data-config file as it is (with what it
               erases), only --split, the seed and the machine keys set; its own task
               stage, so it shares nothing with the other arms

Arms that share the task stage start from the same stage-1 checkpoint (training/reuse.py),
so they differ only in what follows it. Runs and audits resume: finished ones are
skipped. `summary.json` and `summary.md` collect every audit's figures.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

ARMS = ("none", "control", "paper", "robust", "cap", "cap-control", "robust-cap", "on-device",
        "default")
NO_ATTACKERS = ["privacy.method=robust", "privacy.robust.adversary_steps=0",
                "privacy.robust.attribute_weight=0", "privacy.robust.reconstruction_weight=0"]


def arm_overrides(arm: str, noise: float) -> list[str]:
    # the arms but `default` erase nothing (the protocol configs name what their default erases;
    # `deepobfuscator choose-upload RUN --erase` adds it to a finished arm)
    return [*_arm_keys(noise)[arm], "privacy.erase=[]"]


def _arm_keys(noise: float) -> dict[str, list[str]]:
    cap = ["privacy.normalize_features=true", f"privacy.feature_noise={noise}"]
    return {"none": ["privacy.method=none"],
            "control": NO_ATTACKERS,
            "paper": ["privacy.method=deepobfuscator"],
            # the robust game's cloud re-fits to the finished phone: its BatchNorm
            # statistics can trail E (split 3, seed 0: 0.66 task accuracy as trained)
            "robust": ["privacy.method=robust", "train.refit_cloud=true"],
            "cap": [*cap, "privacy.method=none"],
            "cap-control": [*cap, *NO_ATTACKERS],
            "robust-cap": [*cap, "privacy.method=robust", "train.refit_cloud=true"],
            # the far end of the frontier: every conv block on the phone (--config on-device)
            "on-device": ["model.split_block=5", "privacy.method=none"]}


def default_overrides(args: argparse.Namespace, seed: int) -> list[str]:
    """The `default` arm: what a user's `deepobfuscator train --config DATA_CONFIG seed=S`
    trains, none of the grid's pins (they hold the other arms still when the preset moves)."""
    return [f"model.split_block={args.split}", f"seed={seed}", f"threads={args.threads}",
            f"device={args.device}", f"precision={args.precision}"]


def stage1_source(arm: str) -> str | None:
    return {"control": "none", "paper": "none", "robust": "none",
            "cap-control": "cap", "robust-cap": "cap"}.get(arm)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/light-phone")
    ap.add_argument("--data-config", default="configs/celeba-shared.yaml")
    ap.add_argument("--split", type=int, default=2)
    ap.add_argument("--pool", type=int, default=1,
                    help="model.upload_pool of every arm but the baseline (use its own --out)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--noise", type=float, default=2.0, help="feature noise of the cap arms")
    ap.add_argument("--tag", default="", help="suffix of the cap arms' folders (e.g. -n1 for "
                    "another --noise)")
    ap.add_argument("--extra", nargs="*", default=[],
                    help="more key=value overrides for the arms that continue a stage 1")
    ap.add_argument("--arch", nargs="*", default=[],
                    help="model.* (and privacy.noise_warmup) overrides of every arm and its "
                    "stage 1, never the baseline (e.g. model.bottleneck_context=true; give "
                    "the arms a --tag)")
    ap.add_argument("--adversarial-epochs", type=int, default=4,
                    help="epochs of every arm's second stage (the step-matched budget); a "
                    "smaller dataset needs more for the same number of encoder steps")
    ap.add_argument("--attack-seeds", type=int, default=1,
                    help="fresh attackers per trained run: attacker seeds s, s+1000, ... for "
                    "training seed s (audit-RUN, audit-RUN-a1, ...)")
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--whitebox-images", type=int, default=8)
    ap.add_argument("--whitebox-steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="auto", help="training and attackers: auto, cpu, cuda")
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                    help="training and attackers (fp32 matches a CPU without bf16)")
    ap.add_argument("--recogniser", choices=["auto", "off"], default="off",
                    help="dlib's recogniser in the audits (slow; benchmarks/"
                    "recogniser_ceiling.py measures its ceiling once per protocol)")
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
    from deepobfuscator.config import load_config, no_privacy_overrides
    from deepobfuscator.training import train
    from deepobfuscator.training.reuse import start_from_baseline

    # everything an arm does not set is pinned here, so the arms do not move when the cpu
    # preset's defaults do (the preset now caps the upload, learns a gain per position and
    # continues the task stage instead of playing a game)
    common = [f"model.split_block={args.split}", "model.bottleneck=1",
              f"model.upload_pool={args.pool}", "model.position_gain=0",
              "model.upload_positions=0",
              f"threads={args.threads}", f"device={args.device}",
              f"precision={args.precision}", "privacy.normalize_features=false",
              "privacy.feature_noise=0", "privacy.noise_warmup=0",
              f"train.adversarial.epochs={args.adversarial_epochs}",
              "train.adversarial.lr_schedule=constant"]
    if any(not o.startswith(("model.", "privacy.noise_warmup=")) for o in args.arch):
        raise SystemExit(f"--arch takes model.* and privacy.noise_warmup overrides only, "
                         f"got {args.arch}")
    arch = list(args.arch)
    for seed in args.seeds:
        # the seed draws the defender's splits, so each seed has its own no-privacy baseline
        base_dir = baseline_folder(out, seed)
        train(load_config(args.data_config, [*common, f"seed={seed}", *no_privacy_overrides()]),
              base_dir, progress=False)
        def folder(arm: str, seed: int = seed) -> Path:
            return out / f"{arm}{args.tag if 'cap' in arm else ''}-s{seed}"

        for arm in args.arms:
            run = folder(arm)
            # --extra acts on the arms' own stages only: the baseline and the stage-1 runs
            # they share stay what they are
            own = args.extra if stage1_source(arm) else []
            cfg = (load_config(args.data_config, default_overrides(args, seed))
                   if arm == "default" else
                   load_config(args.data_config, [*common, *arch, f"seed={seed}",
                                                  *arm_overrides(arm, args.noise), *own]))
            src = stage1_source(arm)
            if src is not None:
                src_dir = folder(src)
                train(load_config(args.data_config, [*common, *arch, f"seed={seed}",
                                                     *arm_overrides(src, args.noise)]),
                      src_dir, progress=False)
                start_from_baseline(cfg, run, src_dir)
            print(f"== train {run}", flush=True)
            train(cfg, run, progress=False)
            for k in range(args.attack_seeds):
                audit_dir = out / audit_name(run.name, k)
                if args.no_audit or (audit_dir / "audit.json").is_file():
                    continue
                print(f"== audit {run} (attacker seed {attack_seed(seed, k)})", flush=True)
                audit(run, base_dir, audit_dir,
                      AuditSettings(seed=attack_seed(seed, k), max_epochs=args.max_epochs,
                                    whitebox_images=args.whitebox_images,
                                    whitebox_steps=args.whitebox_steps, wire="int8",
                                    threads=args.threads, recogniser=args.recogniser,
                                    device=args.device, precision=args.precision,
                                    progress=False))


def figures(a: dict) -> dict:
    """The headline figures and the own adversaries' figures (audit/figures.py keys) of one
    audit.json, for the obfuscated run and the baseline, and the chance levels."""
    from deepobfuscator.audit.result import AuditResult

    res = AuditResult(a)
    out = {name: {**res.values(name, headline=True), **res.values(name, section="training")}
           for name in res.runs}
    out["chance"] = res.chances(headline=True)
    return out


def task_oracle(run: Path) -> dict[str, float]:
    """Balanced accuracy of the best guess of each private attribute from the true task
    label alone, on the test split: what any upload good for the task gives away."""
    import numpy as np

    from deepobfuscator.data.splits import make_splits
    from deepobfuscator.metrics import balanced_accuracy
    from deepobfuscator.runs import read_run_config

    cfg = read_run_config(run)
    test = make_splits(cfg)["test"]
    t = test.attribute(cfg.data.task).astype(float)
    out = {}
    for a in cfg.data.private:
        y = test.attribute(a)
        out[a] = max(balanced_accuracy(y, t, 0.5), balanced_accuracy(y, 1 - t, 0.5))
    return {k: float(np.round(v, 4)) for k, v in out.items()}


def audit_name(run: str, attack_seed_index: int) -> str:
    """audit-RUN for the first attacker seed (the training seed), audit-RUN-aK after."""
    return f"audit-{run}" + (f"-a{attack_seed_index}" if attack_seed_index else "")


def attack_seed(train_seed: int, index: int) -> int:
    return train_seed + 1000 * index


def parse_audit_name(name: str) -> tuple[str, str, int]:
    """audit-ARM-sS[-aK] -> (arm, S, K)."""
    body = name[len("audit-"):]
    k = 0
    head, sep, tail = body.rpartition("-a")
    if sep and tail.isdigit() and "-s" in head:
        body, k = head, int(tail)
    arm, _, seed = body.rpartition("-s")
    return arm, seed, k


def baseline_folder(out: Path, seed: int) -> Path:
    return out / ("baseline" if seed == 0 else f"baseline-s{seed}")


def cell(vals: list[float]) -> str:
    if not vals:
        return ""
    m = sum(vals) / len(vals)
    return f"{m:.3f} [{min(vals):.3f}-{max(vals):.3f}]" if len(vals) > 1 else f"{m:.3f}"


def write_summary(out: Path) -> None:
    """summary.json (every audit's figures by arm, training seed and attacker seed),
    summary.md (mean [min-max] over every audit of an arm) and frontier.png."""
    from deepobfuscator.audit.result import AuditResult
    from deepobfuscator.sweep import BUDGET_COLUMNS, budget_of

    rows: dict[str, dict[str, dict]] = {}  # arm -> "S" or "S/aK" -> figures
    budgets: dict[str, dict] = {}  # arm -> its phone budget (the same on every seed)
    attrs: list[str] = []
    for p in sorted(out.glob("audit-*/audit.json")):
        arm, seed, k = parse_audit_name(p.parent.name)
        doc = json.loads(p.read_text())
        budgets.setdefault(arm, budget_of(doc))
        if "baseline" in doc["runs"]:
            budgets.setdefault("baseline", budget_of(doc, "baseline"))
        attrs = attrs or AuditResult(doc).private
        f = figures(doc)
        if "control" in arm:  # no attackers of its own (audits before that was known list them)
            f["obfuscated"] = {k_: v for k_, v in f["obfuscated"].items()
                               if not k_.startswith("own")}
        rows.setdefault(arm, {})[seed + (f"/a{k}" if k else "")] = f
    # the task oracle of each training seed's test split (LFW cuts the test split by seed)
    seeds = sorted({int(key.split("/")[0]) for r in rows.values() for key in r})
    per_seed = [task_oracle(baseline_folder(out, s)) for s in seeds
                if (baseline_folder(out, s) / "run.json").is_file()]
    floors = {a: round(sum(o[a] for o in per_seed) / len(per_seed), 4)
              for a in (per_seed[0] if per_seed else {})}
    (out / "summary.json").write_text(json.dumps({"arms": rows, "task_oracle": floors,
                                                  "budgets": budgets},
                                                 indent=1))
    attrs = attrs or list(floors)
    keys = ["utility_accuracy", "inversion_msssim", *[f"attribute:{a}" for a in attrs],
            "reid_top1", "verification_auc", *[f"own:{a}" for a in attrs], "own_msssim"]
    budget_heads = [h for h, _, _ in BUDGET_COLUMNS]
    lines = ["| arm | " + " | ".join(budget_heads) + " | seeds (training/attacker) | " +
             " | ".join(keys) + " |", "|" + "---|" * (len(keys) + len(budget_heads) + 2)]
    for arm in [*ARMS, *sorted(set(rows) - set(ARMS)), "baseline"]:
        if arm == "baseline":  # one baseline audit per training seed (they are cached)
            per = {key.split("/")[0]: {"obfuscated": f["baseline"]}
                   for r in rows.values() for key, f in r.items() if "baseline" in f}
        else:
            per = rows.get(arm, {})
        if not per:
            continue
        cells = [cell([f["obfuscated"][k] for f in per.values() if k in f["obfuscated"]])
                 for k in keys]
        b = budgets.get(arm)
        budget = [f.format(b[key]) if b else "" for _, key, f in BUDGET_COLUMNS]
        lines.append(f"| {arm} | " + " | ".join(budget) + f" | {', '.join(sorted(per))} | " +
                     " | ".join(cells) + " |")
    chance = next((f["chance"] for r in rows.values() for f in r.values()), {})

    def floor(v: float | None, what: str) -> str:
        return f"{v:.3f} ({what})" if v is not None else ""

    lines.append("| floor | " + "| " * len(budget_heads) + "| | " + " | ".join(
        [floor(chance.get("inversion_msssim"), "mean face"),
         *[floor(floors.get(a), "task oracle") for a in attrs],
         floor(chance.get("reid_top1"), "chance"), floor(chance.get("verification_auc"),
                                                         "chance"),
         *[""] * (len(attrs) + 1)]) + " |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    first = next((p for p in sorted(out.glob("*-s0/run.json"))), None)
    title, task = "", "task"
    if first is not None:
        from deepobfuscator.runs import read_run_config

        info = json.loads(first.read_text())
        b = info.get("budget", {})
        cfg = read_run_config(first.parent)
        task = cfg.data.task
        title = (f"{cfg.data.source}: split after VGG block "
                 f"{b.get('split_block')} ({' x '.join(map(str, info['feature_shape']))} "
                 f"upload, {b.get('upload_bytes')} B int8, phone {b.get('phone_share', 0):.0%} "
                 "of the MACs) unless the arm says otherwise; lower is more private; "
                 "dashed: floor")
    plot(rows, floors, chance, out / "frontier.png", attrs, title, task)


def plot(rows: dict, floors: dict, chance: dict, path: Path, attrs: list[str],
         title: str, task: str) -> None:
    """Each privacy figure against task accuracy: one marker per arm at its seed mean, bars
    over the seed range, the baseline, and each figure's floor as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("inversion_msssim", "inverse network MS-SSIM", chance.get("inversion_msssim")),
              *[(f"attribute:{a}", f"{a}: fresh probe bal. acc.", floors.get(a))
                for a in attrs],
              ("reid_top1", "re-identification top-1", chance.get("reid_top1"))]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.25 * len(panels), 4.2))
    marks = dict(zip([*ARMS, "baseline"], "osDv^<P*hX", strict=True))
    for ax, (key, label, floor) in zip(axes, panels, strict=True):
        series = {arm: [f["obfuscated"] for f in per.values()] for arm, per in rows.items()}
        # one baseline point per training and attacker seed (each arm's audits repeat it)
        series["baseline"] = list({key: f["baseline"] for per in rows.values()
                                   for key, f in per.items() if "baseline" in f}.values())
        for arm, fs in series.items():
            xs = [f["utility_accuracy"] for f in fs if key in f]
            ys = [f[key] for f in fs if key in f]
            if not ys:
                continue
            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            ax.errorbar(mx, my, xerr=[[mx - min(xs)], [max(xs) - mx]],
                        yerr=[[my - min(ys)], [max(ys) - my]], fmt=marks.get(arm, "o"),
                        label=arm, capsize=2, ms=7)
        if floor is not None:
            ax.axhline(floor, ls="--", c="grey", lw=1)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel(f"task accuracy ({task})")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
