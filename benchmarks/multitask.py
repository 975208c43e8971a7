"""The multi-task experiment (issue 32): one upload answers the CelebA multi-task protocol's
tasks while Male, Young and identity stay hidden; arms x training seeds x attacker seeds.

    python benchmarks/multitask.py --out runs/multitask [--arms control cap:1 cap-erase:1]
        [--seeds 0 1 2] [--attack-seeds 1] [--threads 1] [--executor local|ray]
        [--audit repeats=1 prior_images=0] [--summary-only]

A study (deepobfuscator/study.py: `deepobfuscator study` runs the same from a file). Every
arm is configs/celeba-multitask.yaml without its erasure (split 2, the 1 x 16 x 16
bottleneck: 34% of the compute on the phone, 288 bytes in the int8 wire) with the arm's
overrides; each training seed's no-privacy baseline (OUT/baseline-sSEED) is its audits'
reference. Arms (ARM:S sets the cap's noise std S, default --noise; its points are
OUT/points/ARM-nS-sSEED):

  control    no defence, step-matched: the same network and steps, no cap, no gain
  cap        the information cap over all 256 numbers (the config as it is), noise --noise
  cap-erase  cap + the generalised erasure of Male and Young (fitted inside every
             combination of the tasks' answers, every task's directions kept): the config
             as it is (`train --config configs/celeba-multitask.yaml`) at noise 2
  robust     the robust adversarial game (privacy.method=robust) with the cap
  robust-info  robust + the information-preserving contrastive term (after TIPRDC / MaSS)

Points resume: finished audits are skipped, unfinished trainings resume. Each point is
audited through the int8 wire by fresh attackers with attacker seed s + 1000 k for
training seed s (POINT/audit, POINT/audit-a1, ...); the summary reads every
POINT/audit*/audit.json, so audits run by hand with other attacker seeds join their arm's
mean [min-max]. `summary.md` holds the table (mean [min-max] over every audit of an arm,
the floors beside), written from the audit.json files; --summary-only redraws it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from deepobfuscator.audit.records import cell
from deepobfuscator.study import StudySpec, run_study

CONFIG = "configs/celeba-multitask.yaml"
CAP_OFF = ["privacy.normalize_features=false", "privacy.feature_noise=0",
           "model.position_gain=0", "privacy.noise_warmup=0"]


def arm_overrides(arm: str, noise: float) -> list[str]:
    cap = [f"privacy.feature_noise={noise}"]
    robust = ["privacy.method=robust", "train.refit_cloud=true", "model.position_gain=0"]
    # the config erases Male and Young (its default): every arm but cap-erase erases nothing
    none = ["privacy.erase=[]"]
    return {"control": [*CAP_OFF, *none],
            "cap": [*cap, *none],
            "cap-erase": [*cap, "privacy.erase=[Male,Young]"],
            "robust": [*cap, *robust, *none],
            "robust-info": [*cap, *robust, "privacy.robust.info_weight=0.1", *none]}[arm]


ARMS = ("control", "cap", "cap-erase", "robust", "robust-info")
# (figure key in audit.json terms, label, where its chance/floor is)
ROWS = (
    ("utility_bal_acc", "tasks: mean balanced accuracy (cloud)"),
    ("utility_auc", "tasks: mean AUC (cloud)"),
    ("held_out_mean_auc", "held-out H: mean AUC (fresh probes)"),
    ("attribute:Male", "Male: attacker balanced accuracy"),
    ("attribute:Young", "Young: attacker balanced accuracy"),
    ("feature_reid_top1", "re-identification top-1 (features)"),
    ("reid_top1", "re-identification top-1 (reconstructions)"),
    ("msssim", "reconstruction MS-SSIM"),
)


def study_spec(arms: list[str], seeds: list[int], attack_seeds: int, noise: float,
               threads: int, audit: dict) -> StudySpec:
    """The experiment as a study (deepobfuscator/study.py): one point per arm and seed,
    attacker seeds seed + 1000 k, each seed's own baseline."""
    specs = {}
    for spec in arms:
        arm, _, n = spec.partition(":")
        if arm not in ARMS:
            raise SystemExit(f"unknown arm {arm!r}: choose from {ARMS}")
        specs[f"{arm}-n{n}" if n else arm] = arm_overrides(arm, float(n) if n else noise)
    return StudySpec(config=CONFIG, arms=specs, seeds=seeds,
                     attacker_offsets=[1000 * k for k in range(attack_seeds)],
                     overrides=[f"threads={threads}"],
                     audit={"recogniser": "off", **audit})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/multitask")
    ap.add_argument("--arms", nargs="+", default=["control", "cap", "cap-erase"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--attack-seeds", type=int, default=1)
    ap.add_argument("--noise", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--executor", default="local", choices=["local", "ray"])
    ap.add_argument("--audit", nargs="*", default=[], metavar="KEY=VALUE",
                    help="audit settings for every audit, e.g. repeats=1 prior_images=0 for a "
                         "seed grid")
    ap.add_argument("--summary-only", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        audit = {k: yaml.safe_load(v) for k, _, v in (a.partition("=") for a in args.audit)}
        audit = {k: str(v) if k in ("repeats", "pooled", "probe_families") else v
                 for k, v in audit.items()}
        run_study(study_spec(args.arms, args.seeds, args.attack_seeds, args.noise,
                             args.threads, audit), out, executor=args.executor,
                  threads=args.threads)
    summary(out)


def _value(result, key: str, run: str = "obfuscated") -> float | None:
    if key == "msssim":
        v = result.runs.get(run, {}).get("inversion", {}).get("msssim", {}).get("mean")
        return None if v is None else float(v)
    from deepobfuscator.audit.attacks import figure_by_key

    return result.value(figure_by_key(key, result.task), run)


def summary(out: Path) -> None:
    """summary.md and summary.json from every audit.json under OUT."""
    from deepobfuscator.audit.result import AuditResult

    audits: dict[str, list] = {}
    for path in sorted(out.glob("points/*-s*/audit*/audit.json")):
        arm = path.parent.parent.name.rsplit("-s", 1)[0]
        audits.setdefault(arm, []).append(AuditResult.load(path.parent))
    if not audits:
        print(f"no audits under {out} yet")
        return
    # the reference audit: one with the baseline beside it (audits of extra attacker seeds
    # may leave it out: its figures do not depend on the obfuscated run)
    first = next(r for rs in audits.values() for r in rs if "baseline" in r.runs)
    ch = first.data["chance"]
    floors = {"attribute:Male": ch["attributes"].get("Male", {}).get("task_answer_floor"),
              "attribute:Young": ch["attributes"].get("Young", {}).get("task_answer_floor"),
              "feature_reid_top1": ch.get("reid", {}).get("task_answer_floor", {}).get("top1"),
              "reid_top1": ch.get("reid", {}).get("task_answer_floor", {}).get("top1"),
              "msssim": ch["reconstruction_mean_image"]["msssim"]["mean"]}
    chance = {"attribute:Male": 0.5, "attribute:Young": 0.5, "utility_auc": 0.5,
              "held_out_mean_auc": 0.5, "feature_reid_top1": ch.get("reid", {}).get("top1"),
              "reid_top1": ch.get("reid", {}).get("top1"),
              "utility_bal_acc": ch.get("tasks", {}).get(first.task, {}).get("chance")}
    cols = ["baseline", *audits]
    table: dict[str, dict[str, list[float]]] = {}
    for arm, results in audits.items():
        for key, _ in ROWS:
            vals = [v for r in results if (v := _value(r, key)) is not None]
            table.setdefault(key, {})[arm] = vals
    # the baseline column: each training seed's own baseline once (the first audit beside
    # it), so several seeds give mean [min-max] like the arms
    bases: dict[str, AuditResult] = {}
    for rs in audits.values():
        for r in rs:
            if "baseline" in r.runs:
                where = r.data.get("runs_dirs", {}).get("baseline")
                bases.setdefault(str(Path(where).resolve()) if where else "", r)
    base_audits = list(bases.values())
    for key, _ in ROWS:
        table[key]["baseline"] = [v for r in base_audits
                                  if (v := _value(r, key, "baseline")) is not None]
    per_task = {t: {arm: [r.runs["obfuscated"]["utility"]["tasks"][t]["balanced_accuracy"]
                          for r in results] for arm, results in audits.items()}
                for t in first.names.tasks}
    for t in per_task:
        per_task[t]["baseline"] = [r.runs["baseline"]["utility"]["tasks"][t]
                                   ["balanced_accuracy"] for r in base_audits]

    b = first.budget("obfuscated") or {}
    lines = [f"Multi-task CelebA protocol ({CONFIG}); phone share {b.get('phone_share')}, "
             f"upload {b.get('upload_bytes')} B int8 (every arm but the baseline); audits "
             "per arm: " + ", ".join(f"{a} {len(r)}" for a, r in audits.items())
             + f"; baselines: {len(base_audits)}", "",
             "| figure | " + " | ".join(cols)
             + " | chance | floor (true answers; MS-SSIM: mean face) |",
             "|---|" + "---|" * (len(cols) + 2)]
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    for key, label in ROWS:
        lines.append(f"| {label} | " + " | ".join(cell(table[key].get(c, [])) for c in cols)
                     + f" | {fmt(chance.get(key))} | {fmt(floors.get(key))} |")
    for t, row in per_task.items():
        lines.append(f"| {t}: balanced accuracy (cloud) | "
                     + " | ".join(cell(row.get(c, [])) for c in cols)
                     + f" | {fmt(ch.get('tasks', {}).get(t, {}).get('chance'))} | |")
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(
        {"table": table, "per_task": per_task, "chance": chance, "floors": floors}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
