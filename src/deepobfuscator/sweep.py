"""Sweeps: train a grid of configs, audit each against one no-privacy baseline, and
draw the privacy-utility frontier.

    OUT/baseline/                 the no-privacy baseline (unless --baseline-run is given)
    OUT/points/<name>/run/        one training run per grid point
    OUT/points/<name>/audit/      its audit (audit.json, report) against the baseline
    OUT/frontier.png|md|json      task accuracy against each privacy figure, with each
                              point's phone budget (compute share, upload bytes)

Each point whose stage 1 would equal the baseline's (same data, model, seed and task
settings; see training/reuse.py) starts from the baseline's stage-1 checkpoint.
Resumable: a point whose audit.json exists (for the same config) is skipped, and an
unfinished training resumes from its checkpoint; run the same command again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .audit import AuditSettings
from .audit.attacks import figure_by_key
from .audit.result import AuditResult
from .config import (
    Config,
    ConfigError,
    config_from_dict,
    load_config,
    no_privacy_overrides,
)
from .io import atomic_write, atomic_write_json, atomic_write_text
from .log import log
from .methods import inert_keys
from .models.budget import phone_budget
from .runs import RunError, read_info, read_run_config
from .study import Point, run_point
from .training import train
from .training.distributed import env_world_size


@dataclass
class GridPoint:
    name: str  # folder name, e.g. "lambda=10"
    params: dict[str, Any]  # key -> value (parsed as YAML, as overrides are)
    overrides: list[str] = field(default_factory=list)  # the "key=value" strings


def split_values(text: str) -> list[str]:
    """'0,1,[32,32]' -> ['0', '1', '[32,32]']: commas inside brackets or quotes stay."""
    out, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    out.append(cur.strip())
    return out


def parse_grid(specs: list[str]) -> dict[str, list[str]]:
    """['privacy.paper.lambda=0,1,3', ...] -> {'privacy.paper.lambda': ['0', '1', '3'], ...}."""
    grid: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--grid {spec!r} is not of the form key=v1,v2,... "
                              "(e.g. privacy.paper.lambda=0,1,3,10)")
        if key in grid:
            raise ConfigError(f"--grid names {key!r} twice; list all its values in one flag")
        vals = split_values(values)
        if any(v == "" for v in vals):
            raise ConfigError(f"--grid {spec!r} has an empty value")
        grid[key] = vals
    if not grid:
        raise ConfigError("a sweep needs at least one --grid key=v1,v2,...")
    return grid


def grid_points(grid: dict[str, list[str]]) -> list[GridPoint]:
    """The cartesian product of the grid, in the order given."""
    keys = list(grid)
    short = {k: k.rsplit(".", 1)[-1] for k in keys}
    if len(set(short.values())) < len(keys):  # two keys end alike: use full keys
        short = {k: k for k in keys}
    points = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        name = "_".join(f"{short[k]}={_safe(v)}" for k, v in zip(keys, combo, strict=True))
        points.append(GridPoint(name, {k: yaml.safe_load(v) for k, v in zip(keys, combo,
                                                                            strict=True)},
                                [f"{k}={v}" for k, v in zip(keys, combo, strict=True)]))
    names = [p.name for p in points]
    if len(set(names)) < len(names):
        raise ConfigError(f"grid values give clashing folder names: {names}")
    return points


def _safe(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", value).strip("-") or "x"


def default_sweep_dir(base: Config, grid: dict[str, list[str]]) -> Path:
    """Same base config and grid keys -> same folder (adding values reuses it)."""
    h = hashlib.sha256(json.dumps([base.fingerprint(), list(grid)]).encode()).hexdigest()[:8]
    return Path("runs") / f"sweep-{base.data.source}-{h}"


def sweep(config: str | Path = "cpu", grid: dict[str, list[str]] | Sequence[str] = (),
          out: Path | None = None, baseline_run: Path | None = None,
          settings: AuditSettings | None = None, overrides: list[str] | None = None,
          progress: bool = True) -> Path:
    """Train and audit every grid point; write the frontier; returns the sweep folder.

    `config` and `overrides` give the base config (as for `train`); `grid` maps
    config keys to the values to try (or is a list of 'key=v1,v2' strings).
    The baseline is `baseline_run` or, if None, the base config's no-privacy reference
    (config.no_privacy_overrides) trained into OUT/baseline.
    """
    if env_world_size() > 1:
        raise RunError("a sweep runs in one process; use torchrun for single `train` runs")
    grid = parse_grid(list(grid)) if not isinstance(grid, dict) else grid
    overrides = list(overrides or [])
    settings = settings or AuditSettings(progress=progress)
    base = load_config(config, overrides)
    inert = inert_keys(base, list(grid))
    if inert and "privacy.method" not in grid:
        raise ConfigError(f"grid key {inert[0]} has no effect with privacy.method="
                          f"{base.privacy.method}: every point would train the same model; "
                          "set privacy.method to the method that reads it in the overrides "
                          "(docs/configuration.md)")
    points = grid_points(grid)
    configs = {p.name: load_config(config, [*overrides, *p.overrides]) for p in points}
    out = Path(out) if out else default_sweep_dir(base, grid)
    out.mkdir(parents=True, exist_ok=True)
    log.info(f"sweep folder: {out} ({len(points)} points)")

    if baseline_run is None:
        log.info(f"== no-privacy baseline: {out / 'baseline'}")
        baseline_run = train(load_config(config, [*overrides, *no_privacy_overrides()]),
                             out / "baseline", progress=progress)
    elif read_info(baseline_run).get("status") != "complete":
        raise RunError(f"baseline {baseline_run} is not a finished training run; "
                       "train it first (or leave out --baseline-run)")
    baseline_run = Path(baseline_run)

    done = []
    for i, p in enumerate(points, 1):
        folder = out / "points" / p.name
        if _audited(folder / "audit", configs[p.name]):
            log.info(f"== [{i}/{len(points)}] {p.name}: done, skipped")
        else:  # the study runner's point: train (or resume), then audit
            log.info(f"== [{i}/{len(points)}] {p.name}: training and auditing")
            point = Point(p.name, p.name, configs[p.name].seed, tuple(p.overrides),
                          (settings.seed,))
            per_audit = {k: v for k, v in asdict(settings).items()
                         if k not in ("seed", "progress")}
            run_point(str(config), overrides, point, str(folder), str(baseline_run),
                      per_audit, None, progress)
        done.append(p)
    write_frontier(out, done, baseline_run, grid)
    log.info(f"frontier: {out / 'frontier.png'} (and frontier.md, frontier.json)")
    return out


def _audited(audit_dir: Path, cfg: Config) -> bool:
    path = audit_dir / "audit.json"
    if not path.is_file():
        return False
    saved = json.loads(path.read_text()).get("config", {})
    if config_from_dict(saved).fingerprint() != cfg.fingerprint():
        raise RunError(f"{audit_dir} audits a run with a different config; "
                       "sweep into a new --out folder")
    return True


# -- the frontier ---------------------------------------------------------------------------


def figures_of(result: dict, which: str = "obfuscated") -> dict[str, float]:
    """The headline figures (audit/figures.py) of one audited run of an audit.json dict."""
    return AuditResult(result).values(which, headline=True)


def chance_of(result: dict) -> dict[str, float]:
    return AuditResult(result).chances(headline=True)


def budget_of(result: dict, which: str = "obfuscated", run_dir: Path | None = None) -> dict:
    """The phone budget of one audited run (runs.<which>.budget in audit.json), plus its
    phone MACs in millions. An audit.json written before audits carried the budget gets it
    from the run's config: the audited one for the obfuscated run, `run_dir`'s otherwise."""
    b = result["runs"][which].get("budget")
    if b is None:
        cfg = (config_from_dict(result["config"]) if which == "obfuscated"
               else read_run_config(run_dir or Path(result["runs_dirs"][which])))
        b = phone_budget(cfg).to_dict()
    return {**b, "phone_macs_m": round(b["phone_macs"] / 1e6, 2),
            "cloud_macs_m": round(b["cloud_macs"] / 1e6, 2)}


def budget_label(b: dict) -> str:
    """'34% | 288 B': the phone's share of the compute and the int8 upload per image."""
    return f"{b['phone_share']:.0%} | {b['upload_bytes']} B"


# the budget columns of frontier.md: header, frontier.json key, format
BUDGET_COLUMNS = [("phone MACs (M)", "phone_macs_m", "{:.1f}"),
                  ("cloud MACs (M)", "cloud_macs_m", "{:.1f}"),
                  ("phone share", "phone_share", "{:.1%}"),
                  ("upload bytes (int8)", "upload_bytes", "{}")]


def label_of(key: str) -> str:
    return figure_by_key(key).short


def pareto(xy: dict[str, tuple[float, float]]) -> list[str]:
    """Names on the frontier (higher x and lower y are better), in order of x."""
    keep = [n for n, (x, y) in xy.items()
            if not any(x2 >= x and y2 <= y and (x2, y2) != (x, y) for x2, y2 in xy.values())]
    return sorted(keep, key=lambda n: xy[n][0])


def write_frontier(out: Path, points: list[GridPoint], baseline_run: Path,
                   grid: dict[str, list[str]]) -> dict:
    """frontier.json, frontier.md and frontier.png from the points' audit.json files."""
    out = Path(out)
    results = {p.name: json.loads((out / "points" / p.name / "audit" / "audit.json").read_text())
               for p in points}
    first = results[points[0].name]
    chance = chance_of(first)
    base = figures_of(first, "baseline") if "baseline" in first["runs"] else {}
    base_budget = budget_of(first, "baseline", baseline_run) if base else None
    rows = {p.name: figures_of(results[p.name]) for p in points}
    budgets = {p.name: budget_of(results[p.name]) for p in points}
    keys = list(dict.fromkeys(k for f in rows.values() for k in f if k != "utility_accuracy"))
    every = {**rows, **({"baseline": base} if base else {})}
    figures = {}
    for k in keys:
        xy = {n: (f["utility_accuracy"], f[k]) for n, f in every.items() if k in f}
        figures[k] = {"label": label_of(k), "chance": chance.get(k), "frontier": pareto(xy)}
    doc = {
        "grid": grid,
        "x": {"key": "utility_accuracy", "label": label_of("utility_accuracy"),
              "source": "runs.obfuscated.utility.accuracy",
              "chance": chance["utility_accuracy"]},
        "figures": figures,
        "baseline": {"run": str(baseline_run), "figures": base, "budget": base_budget,
                     "note": "as measured in the first point's audit"},
        "points": [{"name": p.name, "params": p.params,
                    "run": str(out / "points" / p.name / "run"),
                    "audit": str(out / "points" / p.name / "audit"),
                    "figures": rows[p.name], "budget": budgets[p.name]} for p in points],
    }
    atomic_write_json(out / "frontier.json", doc)
    atomic_write_text(out / "frontier.md", _markdown(doc, list(grid)))
    atomic_write(out / "frontier.png", lambda tmp: _plot(doc, tmp))
    return doc


def _markdown(doc: dict, grid_keys: list[str]) -> str:
    keys = ["utility_accuracy", *doc["figures"]]
    head = ["point", *grid_keys, *(label_of(k) for k in keys),
            *(h for h, _, _ in BUDGET_COLUMNS), "on frontier of"]
    lines = ["# Privacy-utility frontier", "",
             "Task accuracy: higher is better. Privacy figures (attacker success on the "
             "obfuscated features): lower is better. Chance: what one gets without "
             "the features (majority class, the mean image, a random guess). A point "
             "is on a figure's frontier when no other point (the baseline included) is "
             "at least as accurate with a lower figure, or more accurate with the same. "
             "Phone budget, per image: the multiply-accumulates (M) on the phone and in the "
             "cloud, the phone's share "
             "of the whole model's, and the upload in the int8 wire format.",
             "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))

    def budget(b: dict | None) -> list[str]:
        return [f.format(b[k]) if b else "" for _, k, f in BUDGET_COLUMNS]

    def on(name: str) -> str:
        return ", ".join(label_of(k).split(":")[0] for k, f in doc["figures"].items()
                         if name in f["frontier"])

    if doc["baseline"]["figures"]:
        f = doc["baseline"]["figures"]
        lines.append("| " + " | ".join(["baseline (no privacy)", *("" for _ in grid_keys),
                                        *(fmt(f.get(k)) for k in keys),
                                        *budget(doc["baseline"].get("budget")),
                                        on("baseline")]) + " |")
    for p in doc["points"]:
        lines.append("| " + " | ".join([p["name"], *(fmt(p["params"][k]) for k in grid_keys),
                                        *(fmt(p["figures"].get(k)) for k in keys),
                                        *budget(p.get("budget")), on(p["name"])]) + " |")
    chance = [doc["x"]["chance"], *(f["chance"] for f in doc["figures"].values())]
    lines.append("| " + " | ".join(["chance", *("" for _ in grid_keys),
                                    *(fmt(v) for v in chance),
                                    *("" for _ in BUDGET_COLUMNS), ""]) + " |")
    return "\n".join(lines) + "\n"


# label sizes in points: the name line (fontsize 7) over the budget line (fontsize 5.5)
_NAME_PT, _BUDGET_PT = 7, 5.5


def _place_labels(ax, spots: list[tuple[float, float, str, str, str, float]]) -> None:
    """Beside each spot (x, y, name, budget, budget colour, marker radius in points), its
    name over its budget label, both small: right of the point, the name above its level.
    Crowded spots would print their labels over each other or over the markers: a label
    whose place is taken (by a marker, a label, or another point's own place) moves up or
    down in steps of its own height, or to the left of its point, inside the axes, with a
    thin line back to its point; where nothing nearby is free, it takes the least crowded
    place. Call once the axes' limits and the figure's layout are final."""
    to_pt = 72 / ax.figure.dpi
    ax.get_xlim(), ax.get_ylim()  # settle the autoscaled limits before reading positions
    (x0, y0), (x1, y1) = (v * to_pt for v in ax.bbox.get_points())

    def box_at(i: int, step: int, side: int,
               far: float = 0) -> tuple[float, float, float, float]:
        (px, py), (w, h), r = where[i], size[i], spots[i][5]
        left = px + r + 1 + far if side > 0 else px - r - 1 - far - w
        return left, left + w, py + h / 2 + step * h - h, py + h / 2 + step * h

    def clashes(box: tuple[float, float, float, float], i: int) -> float:
        if not (x0 <= box[0] and box[1] <= x1 and y0 - 6 <= box[2] and box[3] <= y1 + 6):
            return float("inf")
        def hits(boxes) -> int:
            return sum(box[0] < b[1] and b[0] < box[1] and box[2] < b[3] and b[2] < box[3]
                       for b in boxes)

        # covering a drawn label or a marker is far worse than taking another's first choice
        return 10 * hits(taken) + hits(b for j, b in homes.items() if j != i)

    where = [tuple(v * to_pt for v in ax.transData.transform(s[:2])) for s in spots]
    renderer = ax.figure.canvas.get_renderer()

    def width(text: str, fontsize: float) -> float:  # as drawn, in points
        t = ax.text(0, 0, text, fontsize=fontsize)
        w = t.get_window_extent(renderer).width * to_pt
        t.remove()
        return w

    size = [(max(width(s[2], _NAME_PT), width(s[3], _BUDGET_PT)) + 2,
             (_NAME_PT + 2 if s[2] else 0) + (_BUDGET_PT + 2 if s[3] else 0)) for s in spots]
    taken = [(px - s[5], px + s[5], py - s[5], py + s[5])  # the markers
             for s, (px, py) in zip(spots, where, strict=True)]
    homes = {i: box_at(i, 0, 1) for i in range(len(spots))}  # each one's first choice
    moves = list(itertools.product(range(-8, 9), (1, -1), (0, 30, 60)))  # step, side, far
    for i in sorted(range(len(spots)), key=lambda i: -spots[i][1]):  # top first
        del homes[i]
        h = size[i][1]
        # no clash and nearest the first choice; where every place clashes, the least crowded
        _, _, step, side, far = min((clashes(box_at(i, *m), i), abs(m[0]) * h + m[2]
                                     + (m[1] < 0), *m) for m in moves)
        taken.append(box_at(i, step, side, far))
        x, y, name, budget, colour, r = spots[i]
        dx, top = side * (r + 1 + far), h / 2 + step * h
        lead = ({"arrowstyle": "-", "lw": 0.4, "color": "0.6", "shrinkA": 0, "shrinkB": r}
                if step or far else None)
        ha = "left" if side > 0 else "right"
        if name:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(dx, top),
                        va="top", ha=ha, fontsize=_NAME_PT, arrowprops=lead)
            lead, top = None, top - _NAME_PT - 2
        if budget:
            ax.annotate(budget, (x, y), textcoords="offset points", xytext=(dx, top),
                        va="top", ha=ha, fontsize=_BUDGET_PT, color=colour, arrowprops=lead)


def _plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = doc["figures"]
    n = len(figs)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.9 * rows), squeeze=False)
    base = doc["baseline"]["figures"]
    budget = {p["name"]: budget_label(p["budget"]) for p in doc["points"] if p.get("budget")}
    base_budget = doc["baseline"].get("budget")
    labels = {}
    for ax, (k, f) in zip(axes.flat, figs.items(), strict=False):
        pts = {p["name"]: (p["figures"]["utility_accuracy"], p["figures"][k])
               for p in doc["points"] if k in p["figures"]}
        if base and k in base:
            pts_all = {**pts, "baseline": (base["utility_accuracy"], base[k])}
        else:
            pts_all = pts
        front = [pts_all[name] for name in f["frontier"] if name in pts_all]
        if len(front) > 1:
            ax.plot(*zip(*front, strict=True), color="tab:blue", alpha=0.5, lw=1.5,
                    label="frontier")
        ax.scatter([x for x, _ in pts.values()], [y for _, y in pts.values()],
                   color="tab:blue", zorder=3, label="sweep points")
        at: dict[tuple[float, float], list[str]] = {}
        for name, xy in pts.items():  # one label per spot: coincident points share it
            at.setdefault(xy, []).append(name)
        # under each name its phone budget: share of the compute | int8 upload per image
        spots = [(x, y, ", ".join(names),
                  "; ".join(dict.fromkeys(budget[n] for n in names if n in budget)),
                  "dimgray", 4.0) for (x, y), names in at.items()]
        if base and k in base:
            ax.scatter([base["utility_accuracy"]], [base[k]], marker="*", s=160,
                       color="tab:red", zorder=4, label="no-privacy baseline")
            if base_budget:
                spots.append((base["utility_accuracy"], base[k], "",
                              budget_label(base_budget), "tab:red", 7.0))
        labels[ax] = spots
        if f["chance"] is not None:
            ax.axhline(f["chance"], color="gray", ls="--", lw=1, label="chance")
        ax.axvline(doc["x"]["chance"], color="gray", ls=":", lw=1,
                   label="majority-class accuracy")
        ax.set_xlabel(doc["x"]["label"])
        ax.set_ylabel(f"{f['label']} (lower = more private)", fontsize=8)
        ax.set_title(f["label"], fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.suptitle("Privacy-utility frontier\n(small labels: phone share of compute | "
                 "int8 upload per image)", fontsize=10)
    fig.tight_layout()
    for ax, spots in labels.items():  # last: placing them needs the final layout
        _place_labels(ax, spots)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
