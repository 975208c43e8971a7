"""Results as data: one JSON line per audited run, read from its audit.json, in a records
file (`results/records.jsonl` by default). Tables and summaries are computed from these
records, never typed.

    deepobfuscator results add AUDIT_DIR --arm default [--run obfuscated] [--records FILE]
    deepobfuscator results table --arms baseline default [--figures KEY ...] [--records FILE]

A record names its arm, the audit it came from, the training and attacker seeds, the
phone budget, every figure the audit has for that run (`AuditResult.values`), their chance
levels and floors, and when and with what version it was made. Adding the same audit's run
under the same arm again replaces its record.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from ..errors import UserError
from ..io import atomic_write
from .result import RUNS, AuditResult

RECORDS = Path("results/records.jsonl")
FORMAT = 1


def record(audit_dir: str | Path, arm: str, run: str = "obfuscated") -> dict:
    """The record of one run of one audit folder."""
    if not arm.strip():
        raise UserError("an arm needs a name (--arm default, say)")
    if run not in RUNS:
        raise UserError(f"run {run!r}: choose from {list(RUNS)}")
    audit_dir = Path(audit_dir)
    result = AuditResult.load(audit_dir)
    if run not in result.runs:
        raise UserError(f"{audit_dir}/audit.json has no {run!r} run (it has "
                        f"{sorted(result.runs)}); audit with --baseline to record one")
    data = result.data
    chance = data.get("chance", {})
    floors = {f"attribute:{a}": v["task_answer_floor"]
              for a, v in chance.get("attributes", {}).items()
              if isinstance(v, dict) and v.get("task_answer_floor") is not None}
    reid_floor = chance.get("reid", {}).get("task_answer_floor", {}).get("top1")
    if reid_floor is not None:  # one known photo per person; identity_top1 may be read
        floors["feature_reid_top1"] = floors["reid_top1"] = reid_floor  # with every other
    mean_face = chance.get("reconstruction_mean_image", {}).get("msssim", {}).get("mean")
    if mean_face is not None:
        floors["inversion_msssim"] = mean_face
    created = data.get("created") or time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime((audit_dir / "audit.json").stat().st_mtime))
    return {"format": FORMAT, "arm": arm, "run": run, "audit": str(audit_dir.resolve()),
            "run_dir": data.get("runs_dirs", {}).get(run), "task": result.task,
            # the audit refuses a baseline trained at another seed (its splits would
            # differ), so both runs' training seed is the config's
            "training_seed": data.get("config", {}).get("seed"),
            "attacker_seed": data.get("settings", {}).get("seed"),
            "wire": data.get("settings", {}).get("wire"), "created": created,
            "package_version": data.get("package_version"),
            "device": data.get("settings", {}).get("device"),
            "budget": result.budget(run), "figures": result.values(run),
            "chance": result.chances(), "floors": floors}


def load(path: str | Path = RECORDS) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no records file {path}; make one with `deepobfuscator results add "
                        "AUDIT_DIR --arm NAME`")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{n}: not a JSON record ({exc.msg}); fix or remove that "
                            "line") from None
    return out


def add(records: list[dict], path: str | Path = RECORDS) -> Path:
    """Append (or replace: same arm, audit and run) records, written atomically."""
    path = Path(path)
    old = load(path) if path.is_file() else []
    key = lambda r: (r["arm"], r["audit"], r["run"])  # noqa: E731
    new_keys = {key(r) for r in records}
    kept = [r for r in old if key(r) not in new_keys]
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in [*kept, *records])
    atomic_write(path, lambda p: Path(p).write_text(text))
    return path


def values(records: list[dict], arm: str, key: str) -> list[float]:
    """Every record of an arm's value of one figure (records without it are skipped)."""
    return [float(r["figures"][key]) for r in records
            if r["arm"] == arm and r.get("figures", {}).get(key) is not None]


def cell(vals: list[float], digits: int = 3) -> str:
    """mean, and [min-max] when there are several."""
    if not vals:
        return "n/a"
    m = statistics.fmean(vals)
    if len(vals) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} [{min(vals):.{digits}f}-{max(vals):.{digits}f}]"


def reference(records: list[dict], key: str, field: str) -> str:
    """The chance level or floor of a figure (field "chance" or "floors") in the given
    records; where they differ, both values (" / ": arms audited on different data), or
    from three on their mean [min-max] (a floor that moves with the attacker's seed, as
    re-identification's does with the photos it knows)."""
    found: list[float] = []
    for r in records:
        v = r.get(field, {}).get(key)
        if v is not None and not any(abs(v - f) < 5e-4 for f in found):
            found.append(float(v))
    if len(found) > 2:
        return cell(found)
    return " / ".join(f"{v:.3f}" for v in found)


def headline_keys(records: list[dict]) -> list[str]:
    """The headline figures of these records: MS-SSIM, every private attribute they hold
    (in the order first met), identity, the task's balanced accuracy."""
    attrs = list(dict.fromkeys(k for r in records for k in r.get("figures", {})
                               if k.startswith("attribute:") and k.count(":") == 1))
    return ["inversion_msssim", *attrs, "identity_top1", "utility_bal_acc"]


def table(records: list[dict], arms: list[str], keys: list[str] | None = None,
          labels: dict[str, str] | None = None, names: dict[str, str] | None = None) -> str:
    """Markdown: a row per figure (keys; default: headline_keys of the arms' records), a
    column per arm (mean [min-max] over its records), the arms' chance and floor beside.
    labels: a figure's row label (default: its key); names: an arm's column name."""
    labels, names = labels or {}, names or {}
    missing = [a for a in arms if not any(r["arm"] == a for r in records)]
    if missing:
        have = sorted({r["arm"] for r in records})
        raise UserError(f"no records of arm(s) {missing}; the records hold {have}")
    mine = [r for r in records if r["arm"] in arms]
    keys = keys or headline_keys(mine)
    counts = {a: sum(r["arm"] == a for r in records) for a in arms}
    lines = ["| figure | " + " | ".join(f"{names.get(a, a)} ({counts[a]})" for a in arms)
             + " | chance | floor |", "|---|" + "---|" * (len(arms) + 2)]
    for k in keys:
        lines.append(f"| {labels.get(k, k)} | "
                     + " | ".join(cell(values(records, a, k)) for a in arms)
                     + f" | {reference(mine, k, 'chance')} | {reference(mine, k, 'floors')} |")
    return "\n".join(lines) + "\n"

