"""The `deepobfuscator` command: a thin layer over the Python API.

Errors a user can fix (bad config, missing data, unfinished runs) print one line
that says what to do, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .config import ConfigError, load_config, no_privacy_overrides, preset_names
from .deploy.cli_commands import register
from .errors import run_command


def default_run_dir(cfg) -> Path:
    """Same config -> same folder, so re-running a command resumes it."""
    return Path("runs") / f"{cfg.data.source}-{cfg.privacy.method}-{cfg.fingerprint()[:8]}"


def resolve_config(args: argparse.Namespace):
    """--config <- overrides, then (with --baseline) the no-privacy reference's settings."""
    extra = no_privacy_overrides() if args.baseline else []
    return load_config(args.config, [*args.overrides, *extra])


def cmd_train(args: argparse.Namespace) -> int:
    from .methods import inert_keys
    from .training import train

    cfg = resolve_config(args)
    for key in inert_keys(cfg, args.overrides):
        print(f"warning: {key} has no effect with privacy.method={cfg.privacy.method} "
              "(docs/configuration.md says which keys each method reads)", file=sys.stderr)
    out = Path(args.out) if args.out else default_run_dir(cfg)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 talks
    if main_rank:
        from .models.budget import phone_budget

        print(f"run folder: {out}")
        print(f"split: {phone_budget(cfg).line()}")
    train(cfg, out, progress=not args.quiet, restart=args.restart)
    if main_rank:
        print(f"done: {out}")
    return 0


def cmd_choose_upload(args: argparse.Namespace) -> int:
    from .models.budget import phone_budget
    from .runs import read_run_config
    from .training.reuse import with_upload

    why, k = None, None
    if args.positions is None and args.noise is None and not args.refit_epochs \
            and args.erase is None:
        raise ConfigError("choose-upload changes nothing without --positions, --noise, "
                          "--erase or --refit-epochs: give the count to send, the noise std, "
                          "the attributes to erase, or the cloud's re-fit")
    if args.positions == "auto" and args.noise is not None:
        # auto compares counts under the noise the cloud was trained with
        raise ConfigError("--positions auto and --noise in one command: choose the count "
                          "first, then run choose-upload on that folder with --noise")
    if args.positions == "auto":
        from .training.reuse import fewest_upload_positions

        k, tried = fewest_upload_positions(Path(args.run), args.most, args.tolerance)
        print("task AUC on the defender's validation split: " +
              ", ".join(f"{n} numbers {auc:.4f}" for n, auc in tried.items()))
        print(f"the fewest within {args.tolerance} of every number: {k}")
        why = {"rule": "fewest positions, halving from most, whose validation task AUC "
                       "is within tolerance of the full upload's",
               "most": args.most, "tolerance": args.tolerance, "val_task_auc": tried}
    elif args.positions is not None:
        try:
            k = int(args.positions)
        except ValueError:
            raise ConfigError(f"--positions {args.positions!r}: give a count or 'auto'") \
                from None
    out = with_upload(Path(args.run), Path(args.out), positions=k, noise=args.noise,
                      progress=not args.quiet, why=why, refit_epochs=args.refit_epochs,
                      erase=_erase_list(args.erase))
    print(f"done: {out}")
    print(f"split: {phone_budget(read_run_config(out)).line()}")
    return 0


def _erase_list(value: str | None) -> list[str] | None:
    """--erase Male,Young -> ["Male", "Young"]; "none" -> [] (no erasure); None: unset."""
    if value is None:
        return None
    if value.strip().lower() == "none":
        return []
    names = [a.strip() for a in value.split(",") if a.strip()]
    if not names:
        raise ConfigError(f"--erase {value!r}: give attribute names separated by commas "
                          "(from the run's data.private), or none")
    return names


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    cfg = resolve_config(args)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    return 0


def audit_settings(args: argparse.Namespace):
    from .audit.settings import from_flags

    return from_flags(args)


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit import audit, summary_table

    settings = audit_settings(args)
    out = audit(Path(args.run), Path(args.baseline) if args.baseline else None,
                Path(args.out) if args.out else None, settings)
    print(summary_table(out))
    print(f"report: {out / 'report.html'}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import sweep

    out = sweep(args.config, args.grid, Path(args.out) if args.out else None,
                Path(args.baseline_run) if args.baseline_run else None, audit_settings(args),
                args.overrides, progress=not args.quiet)
    print((out / "frontier.md").read_text())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), quick=args.quick, progress=not args.quiet, threads=args.threads,
             tasks=args.tasks)
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from .study import StudySpec, run_study

    out = run_study(StudySpec.load(args.study), args.out, executor=args.executor,
                    address=args.address, threads=args.threads)
    print(f"study: {out / 'summary.md'} and {out / 'records.jsonl'}")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from .audit import records

    path = Path(args.records)
    if args.action == "add":
        recs = [records.record(a, args.arm, args.run) for a in args.audits]
        records.add(recs, path)
        print(f"{len(recs)} record(s) of arm {args.arm!r} in {path}")
        return 0
    print(records.table(records.load(path), args.arms, args.figures), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deepobfuscator",
        description="Privacy-preserving split inference: train obfuscators, audit them.")
    sub = p.add_subparsers(dest="command", required=True)

    def config_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", default="cpu",
                        help=f"YAML file or preset name ({', '.join(preset_names())}); "
                             "default: cpu")
        sp.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. data.source=celeba data.root=PATH seed=1")

    def baseline_flag(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--baseline", action="store_true",
                        help="the config's no-privacy reference (for `audit --baseline`): "
                             "privacy off, the paper's split (after block 2), no bottleneck")

    t = sub.add_parser("train", help="train (or resume) a run")
    config_args(t)
    baseline_flag(t)
    t.add_argument("--out", help="run folder (default: runs/<source>-<method>-<config hash>)")
    t.add_argument("--restart", action="store_true",
                   help="delete the files an earlier training wrote in --out and start over "
                   "(refused for a folder that is not a run)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)

    u = sub.add_parser("choose-upload",
                       help="a finished run with another upload, as a new run folder: its K "
                       "strongest numbers, a tighter cap (more noise), or both (the same "
                       "phone weights; only the cloud re-fits)")
    u.add_argument("run", help="a finished run folder from `deepobfuscator train`")
    u.add_argument("--positions", metavar="K",
                   help="numbers to send (model.upload_positions; 0 = every number; "
                   "default: the run's own), or "
                   "auto: the fewest, halving from --most, whose task AUC on the "
                   "defender's validation split is within --tolerance of every number's")
    u.add_argument("--most", type=int, default=16, help="auto: the count to start from")
    u.add_argument("--tolerance", type=float, default=0.005,
                   help="auto: task AUC it may lose (default 0.005)")
    u.add_argument("--noise", type=float, default=None, metavar="STD",
                   help="feature noise std (privacy.feature_noise), at least the run's own: "
                   "a tighter information cap without retraining the phone (the upload is "
                   "the old one plus independent noise, so no attacker learns more)")
    u.add_argument("--refit-epochs", type=int, default=None, metavar="N",
                   help="epochs of the cloud's re-fit to the new upload "
                   "(train.upload_tune_epochs; default: the run's own, 0 for runs trained "
                   "before the re-fit existed); alone, a re-fit of the cloud to the run's "
                   "own upload")
    u.add_argument("--erase", metavar="ATTRS",
                   help="private attributes to project out of the upload, comma-separated "
                   "(privacy.erase; from the run's data.private; none: no erasure): fitted "
                   "on the defender's data inside each task class, then the cloud re-fits")
    u.add_argument("--out", required=True, help="the new run folder (must not exist)")
    u.add_argument("--quiet", action="store_true", help="no progress bars")
    u.set_defaults(func=cmd_choose_upload)

    c = sub.add_parser("config", help="print the resolved config (preset + file + overrides)")
    config_args(c)
    baseline_flag(c)
    c.set_defaults(func=cmd_config)

    def audit_args(sp: argparse.ArgumentParser) -> None:
        from .audit.settings import add_audit_flags

        add_audit_flags(sp)  # every AuditSettings field, its default and help

    a = sub.add_parser("audit", help="fresh attackers against a trained run (and a baseline)")
    a.add_argument("run", help="run folder from `deepobfuscator train`")
    a.add_argument("--baseline", help="a no-privacy run (privacy.method=none) on the same data")
    a.add_argument("--out", help="output folder (default: RUN/audit)")
    a.add_argument("--data", metavar="CONFIG",
                   help="attack and score on the data of this config file (its attacker and "
                   "test splits, task and private attributes) instead of the run's: e.g. a "
                   "CelebA-trained run on configs/lfw-shared.yaml; the run's preprocessing "
                   "is applied")
    audit_args(a)
    a.set_defaults(func=cmd_audit)

    s = sub.add_parser("sweep", help="train + audit a grid of configs; draw the "
                                     "privacy-utility frontier")
    config_args(s)
    s.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2,...",
                   help="config key and the values to try, e.g. privacy.paper.lambda=0,1,3,10,30; "
                        "repeat for a cartesian product")
    s.add_argument("--out", help="sweep folder (default: runs/sweep-<source>-<hash>)")
    s.add_argument("--baseline-run", help="a finished no-privacy run to audit against "
                                          "(default: train one into OUT/baseline)")
    audit_args(s)
    s.set_defaults(func=cmd_sweep)

    d = sub.add_parser("demo", help="the main job: baseline vs DeepObfuscator on synthfaces")
    d.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    d.add_argument("--quick", action="store_true", help="a much shorter run, for smoke tests")
    d.add_argument("--tasks", choices=["one", "multi"], default="one",
                   help="one: the default answering Smiling; multi: one upload answering "
                   "Smiling and Mouth_Slightly_Open (the multitask preset)")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.add_argument("--threads", type=int, default=0,
                   help="CPU threads (default 0: the cores other processes leave free; "
                   "docs/configuration.md)")
    d.set_defaults(func=cmd_demo)
    st = sub.add_parser("study", help="arms x training seeds x attacker seeds, trained and "
                        "audited, here or on Ray (docs/distributed.md)")
    st.add_argument("study", help="the study file (YAML: config, arms, seeds, ...)")
    st.add_argument("--out", required=True, help="the study folder (resumable)")
    st.add_argument("--executor", default="local", choices=["local", "ray"],
                    help="local: one point after another; ray: points in parallel on a "
                    "local Ray or the cluster at --address (pip install "
                    "'deepobfuscator[cluster]')")
    st.add_argument("--address", default=None, help="an existing Ray cluster (ray start)")
    st.add_argument("--threads", type=int, default=1,
                    help="CPU threads per point (with Ray: the cores each point holds)")
    st.set_defaults(func=cmd_study)
    r = sub.add_parser("results", help="results as data: record audits, tables from records")
    rsub = r.add_subparsers(dest="action", required=True)
    ra = rsub.add_parser("add", help="record audited runs (one JSON line each) under an arm")
    ra.add_argument("audits", nargs="+", metavar="AUDIT_DIR", help="audit folders")
    ra.add_argument("--arm", required=True, help="the arm's name, e.g. default, baseline")
    ra.add_argument("--run", default="obfuscated", choices=["obfuscated", "baseline"],
                    help="which of the audit's runs (default: obfuscated)")
    rt = rsub.add_parser("table", help="a markdown table: mean [min-max] per arm")
    rt.add_argument("--arms", nargs="+", required=True)
    rt.add_argument("--figures", nargs="+", default=None,
                    help="figure keys (audit.json terms; default: MS-SSIM, every private "
                         "attribute, identity, the task)")
    for sp in (ra, rt):
        sp.add_argument("--records", default="results/records.jsonl",
                        help="the records file (default: results/records.jsonl)")
    r.set_defaults(func=cmd_results)
    register(sub)  # export, serve, classify, bench
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """argparse reads positionals in one run, so `train --config F seed=1 --quiet x=2` would
    refuse x=2; key=value words after a flag are overrides too, in the order given."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    stray = [w for w in rest if w.startswith("-") or "=" not in w]
    if stray or (rest and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or rest)}")
    if rest:
        args.overrides = [*args.overrides, *rest]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    return run_command(args, "\ninterrupted: run the same command again to resume from the "
                       "last checkpoint")

if __name__ == "__main__":
    sys.exit(main())
