"""Studies: arms x training seeds x attacker seeds, each trained and audited against one
no-privacy baseline, on this machine or spread over a Ray cluster (docs/distributed.md).

    OUT/baseline-s<seed>/        the no-privacy baseline of each training seed (its splits
                                 are the seed's; unless the study names one baseline)
    OUT/points/<arm>-s<seed>/run/            one training per arm and training seed
    OUT/points/<arm>-s<seed>/audit[-aK]/     its audits, attacker seed = seed + offset K
    OUT/records.jsonl            one record per audit (audit/records.py)
    OUT/summary.md               every point (done / failed / skipped, wall time) and the
                                 arms' headline figures, mean [min-max]

A study file (YAML):

    config: configs/celeba-multitask.yaml     # a preset or config file, as for `train`
    overrides: [threads=1]                    # for every arm and the baseline (optional)
    arms:                                     # name -> its config overrides
      control: [privacy.feature_noise=0, privacy.normalize_features=false]
      cap: []
    seeds: [0, 1, 2]                          # training seeds
    attacker_offsets: [0, 1000]               # audit seed = training seed + offset
    audit: {max_epochs: 10, repeats: "1"}     # AuditSettings fields (optional)

Every point resumes: a finished audit is skipped and an unfinished training resumes from
its checkpoint, so a killed study, run again, does only what is missing. A point that
fails is reported with its error and tried once more. `sweep` runs its grid points through
the same `run_point`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError
from .log import log
from .registry import Registry


class StudyError(UserError):
    """A study file or setting that cannot run; the message says what to change."""


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")


@dataclass(frozen=True)
class Point:
    """One training (arm, seed) and its audits, in OUT/points/<name>/."""

    name: str
    arm: str
    seed: int
    overrides: tuple[str, ...]
    attacker_seeds: tuple[int, ...] = (0,)  # one audit each: audit, audit-a1, ...


@dataclass
class StudySpec:
    config: str
    arms: dict[str, list[str]]
    seeds: list[int] = field(default_factory=lambda: [0])
    attacker_offsets: list[int] = field(default_factory=lambda: [0])
    overrides: list[str] = field(default_factory=list)
    baseline_run: str | None = None
    audit: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> StudySpec:
        path = Path(path)
        if not path.is_file():
            raise StudyError(f"study file not found: {path}")
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise StudyError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(doc, dict):
            raise StudyError(f"{path}: a study is a mapping with config, arms and seeds")
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(doc) - known):
            raise StudyError(f"{path}: unknown key(s) {unknown}; a study has {sorted(known)}")
        if "config" not in doc or "arms" not in doc:
            raise StudyError(f"{path}: a study needs `config` and `arms`")
        spec = cls(**doc)
        spec.check(str(path))
        return spec

    def check(self, where: str = "study") -> None:
        if not isinstance(self.arms, dict) or not self.arms:
            raise StudyError(f"{where}: arms must map at least one name to its overrides")
        for name, ov in self.arms.items():
            if not isinstance(name, str) or not _NAME.match(name):
                raise StudyError(f"{where}: arm name {name!r} must be letters, digits and "
                                 "_.+=- (it names a folder)")
            if not isinstance(ov, list) or not all(isinstance(o, str) and "=" in o
                                                   for o in ov):
                raise StudyError(f"{where}: arm {name!r}: give a list of key=value overrides")
        for key in ("seeds", "attacker_offsets"):
            v = getattr(self, key)
            if not (isinstance(v, list) and v and all(isinstance(s, int) and
                                                      not isinstance(s, bool) and s >= 0
                                                      for s in v)
                    and len(set(v)) == len(v)):
                raise StudyError(f"{where}: {key} must be a list of distinct integers >= 0")
        from .audit import AuditSettings

        allowed = {f.name for f in fields(AuditSettings)} - {"seed", "threads", "progress"}
        if bad := sorted(set(self.audit) - allowed):
            raise StudyError(f"{where}: audit setting(s) {bad} unknown or set per point; "
                             f"choose from {sorted(allowed)}")

    def points(self) -> list[Point]:
        return [Point(f"{arm}-s{seed}", arm, seed, tuple(ov),
                      tuple(seed + k for k in self.attacker_offsets))
                for arm, ov in self.arms.items() for seed in self.seeds]


def audit_dir(folder: Path, k: int) -> Path:
    return folder / ("audit" if k == 0 else f"audit-a{k}")


def run_baseline(config: str, overrides: Sequence[str], seed: int, folder: str,
                 threads: int) -> dict[str, Any]:
    """Train (or resume) the no-privacy baseline of one training seed."""
    from .config import load_config, no_privacy_overrides
    from .threads import use_threads
    from .training import train

    t0 = time.time()
    use_threads(threads)
    train(load_config(config, [*overrides, *no_privacy_overrides(), f"seed={seed}",
                               f"threads={threads}"]), Path(folder), progress=False)
    return {"status": "done", "seconds": round(time.time() - t0, 1)}


def run_point(config: str, overrides: Sequence[str], point: Point, folder: str,
              baseline: str, audit_settings: dict[str, Any], threads: int | None,
              progress: bool = False) -> dict[str, Any]:
    """Train (or resume) one point and audit it once per attacker seed, skipping finished
    audits; returns its audit folders and what it did. Runs in this process or a Ray
    worker: everything it needs travels in its arguments. threads: the point's CPU threads
    (part of its config, so a study runs again with the same); None: the config's, and
    the audit's own setting."""
    from .audit import AuditSettings, audit
    from .config import load_config
    from .threads import use_threads
    from .training import train
    from .training.reuse import start_from_baseline

    t0 = time.time()
    cfg = load_config(config, [*overrides, *point.overrides, f"seed={point.seed}",
                               *([] if threads is None else [f"threads={threads}"])])
    audit_threads = audit_settings.get("threads", 0) if threads is None else threads
    use_threads(cfg.threads)
    where = Path(folder)
    audits = [audit_dir(where, k) for k in range(len(point.attacker_seeds))]
    todo = [k for k, a in enumerate(audits) if not (a / "audit.json").is_file()]
    if not todo:
        return {"status": "skipped", "seconds": 0.0, "audits": list(map(str, audits))}
    if start_from_baseline(cfg, where / "run", Path(baseline)):
        log.info(f"   {point.name}: stage 1 (task) is the baseline's, bit for bit: "
                 "starting from it")
    run = train(cfg, where / "run", progress=progress)
    for k in todo:
        s = AuditSettings(**{**audit_settings, "seed": point.attacker_seeds[k],
                             "threads": audit_threads, "progress": progress})
        audit(run, Path(baseline), audits[k], s)
    return {"status": "done", "seconds": round(time.time() - t0, 1),
            "audits": list(map(str, audits))}


# -- executors: how the points run ----------------------------------------------------------

class LocalExecutor:
    """One point after another in this process (no Ray needed)."""

    name = "local"

    def __init__(self, address: str | None = None, cpus_per_point: int = 1) -> None:
        if address:
            raise StudyError("--address is for --executor ray")

    def run(self, fn: Callable[..., dict], calls: dict[str, tuple],
            done: Callable[[str, dict], None]) -> dict[str, dict]:
        out = {}
        for name, args in calls.items():
            out[name] = _with_retry(fn, args, name)
            done(name, out[name])
        return out


class RayExecutor:
    """Points in parallel on Ray: a local Ray started on demand (each point pinned to its
    share of the cores), or an existing cluster (`ray start` on each node; the data and
    OUT on a folder every node reaches)."""

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_point: int = 1) -> None:
        try:
            import ray
        except ImportError:
            raise StudyError("--executor ray needs Ray: pip install 'deepobfuscator[cluster]'"
                             ) from None
        self.ray, self.cpus = ray, cpus_per_point
        if not ray.is_initialized():
            if address is None:
                # Ray runs its workers at nice 15 by default: the points are the work here,
                # and beside any other job they ran 20x slower (BENCHMARKS.md)
                os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)

    def run(self, fn: Callable[..., dict], calls: dict[str, tuple],
            done: Callable[[str, dict], None]) -> dict[str, dict]:
        ray = self.ray
        remote = ray.remote(num_cpus=self.cpus, max_retries=0)(fn)
        attempts = dict.fromkeys(calls, 1)
        pending = {remote.remote(*args): name for name, args in calls.items()}
        out: dict[str, dict] = {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            name = pending.pop(ready[0])
            try:
                out[name] = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - a point's failure, reported
                if attempts[name] < 2:  # tried once more
                    attempts[name] += 1
                    log.warning(f"{name}: failed ({_why(exc)}); trying once more")
                    pending[remote.remote(*calls[name])] = name
                    continue
                out[name] = {"status": "failed", "error": _why(exc), "seconds": 0.0}
            done(name, out[name])
        return out


EXECUTORS: Registry[type] = Registry("executor", error=StudyError)
EXECUTORS.register("local", LocalExecutor)
EXECUTORS.register("ray", RayExecutor)


def _why(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc  # Ray wraps the worker's exception
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"[:300]


def _with_retry(fn: Callable[..., dict], args: tuple, name: str) -> dict:
    for attempt in (1, 2):
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - a point's failure, reported
            if attempt == 1:
                log.warning(f"{name}: failed ({_why(exc)}); trying once more")
            else:
                return {"status": "failed", "error": _why(exc), "seconds": 0.0}
    raise AssertionError("unreachable")


# -- the study ------------------------------------------------------------------------------


def run_study(spec: StudySpec, out: str | Path, executor: str = "local",
              address: str | None = None, threads: int = 1) -> Path:
    """Run every point of `spec` into `out` (the baselines first, then the points, both
    through the executor); write records.jsonl
    and summary.md; returns `out`. threads: each point's CPU threads (with Ray, the cores
    each point holds)."""
    from .audit import records
    from .runs import RunError, read_info

    spec.check()
    if threads < 1:
        raise StudyError(f"threads={threads}: give each point at least 1 thread")
    ex = EXECUTORS.lookup(executor)(address, threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    points = spec.points()

    def done(name: str, res: dict) -> None:
        extra = f": {res['error']}" if res.get("error") else ""
        log.info(f"   {name}: {res['status']} in {res.get('seconds', 0):.0f} s{extra}")

    if spec.baseline_run is None:  # one per training seed: the audit compares like splits
        baselines = {seed: out / f"baseline-s{seed}" for seed in spec.seeds}
        log.info(f"== no-privacy baselines: {', '.join(str(b) for b in baselines.values())}")
        waves = ex.run(run_baseline, {f"baseline-s{seed}": (
            spec.config, list(spec.overrides), seed, str(b), threads)
            for seed, b in baselines.items()}, done)
        if failed := [n for n, r in waves.items() if r["status"] == "failed"]:
            raise StudyError(f"baseline(s) {', '.join(failed)} failed: see above")
    else:
        one = Path(spec.baseline_run)
        if read_info(one).get("status") != "complete":
            raise RunError(f"baseline {one} is not a finished training run")
        baselines = dict.fromkeys(spec.seeds, one)
    calls = {p.name: (spec.config, list(spec.overrides), p, str(out / "points" / p.name),
                      str(baselines[p.seed]), dict(spec.audit), threads) for p in points}
    log.info(f"study: {len(points)} points ({len(spec.arms)} arms x {len(spec.seeds)} seeds, "
             f"{len(spec.attacker_offsets)} audits each) on {executor}")
    t0 = time.time()
    results = ex.run(run_point, calls, done)
    recs = [records.record(a, p.arm) for p in points  # in the study's order, whatever
            for a in results[p.name].get("audits", [])  # order the points finished in
            if (Path(a) / "audit.json").is_file()]
    if recs:
        records.add(recs, out / "records.jsonl")
    text = summary(points, results, recs, time.time() - t0)
    (out / "summary.md").write_text(text)
    log.info("\n" + text)
    failed = [n for n, r in results.items() if r["status"] == "failed"]
    if failed:
        raise StudyError(f"{len(failed)} point(s) failed ({', '.join(failed)}): see above; "
                         "run the same command again to retry only those")
    return out


def summary(points: list[Point], results: dict[str, dict], recs: list[dict],
            seconds: float) -> str:
    from .audit import records

    counts = {s: sum(r["status"] == s for r in results.values())
              for s in ("done", "skipped", "failed")}
    lines = [f"Study: {len(points)} points in {seconds:.0f} s: " + ", ".join(
        f"{n} {s}" for s, n in counts.items()), "", "| point | status | wall s | error |",
        "|---|---|---|---|"]
    for p in points:
        r = results.get(p.name, {"status": "not run"})
        lines.append(f"| {p.name} | {r['status']} | {r.get('seconds', 0):.0f} | "
                     f"{r.get('error', '')} |")
    if recs:
        arms = list(dict.fromkeys(r["arm"] for r in recs))
        keys = [k for k in ("utility_bal_acc", "inversion_msssim", "attribute:Male",
                            "attribute:Young", "identity_top1")
                if any(k in r["figures"] for r in recs)]
        lines += ["", records.table(recs, arms, keys).rstrip()]
    return "\n".join(lines) + "\n"

