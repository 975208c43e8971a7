"""A frontier figure drawn from the records (results/records.jsonl), never from a typed
table: each private figure against the answers' mean balanced accuracy, one marker per arm
at its mean with bars over its range (every record of the arm: training and attacker
seeds), each figure's floor dashed.

    python benchmarks/results_plot.py [--arms mt-baseline mt-control mt-cap mt-cap-erase]
        [--figures attribute:Male attribute:Young identity_top1 inversion_msssim]
        [--out docs/img/frontier-multitask.png] [--records results/records.jsonl]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
X = "utility_bal_acc"


def spread(vals: list[float]) -> tuple[float, float, float]:
    """(mean, mean - min, max - mean): a marker and its asymmetric bar."""
    m = statistics.fmean(vals)
    return m, m - min(vals), max(vals) - m


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepobfuscator.audit import records
    from deepobfuscator.io import atomic_write

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", default=str(ROOT / "results" / "records.jsonl"))
    ap.add_argument("--arms", nargs="+",
                    default=["mt-baseline", "mt-control", "mt-cap", "mt-cap-erase"])
    ap.add_argument("--figures", nargs="+", default=["attribute:Male", "attribute:Young",
                                                     "identity_top1", "inversion_msssim"])
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "frontier-multitask.png"))
    args = ap.parse_args(argv)
    recs = records.load(args.records)
    missing = [a for a in args.arms if not records.values(recs, a, X)]
    if missing:
        raise SystemExit(f"no records with {X} for arm(s) {missing}: add them with "
                         "`deepobfuscator results add`")
    fig, axes = plt.subplots(1, len(args.figures), figsize=(4 * len(args.figures), 3.6),
                             squeeze=False)
    for ax, key in zip(axes[0], args.figures, strict=True):
        for arm in args.arms:
            mine = [r for r in recs if r["arm"] == arm
                    and r["figures"].get(key) is not None and r["figures"].get(X) is not None]
            if not mine:
                continue
            x = spread([r["figures"][X] for r in mine])
            y = spread([r["figures"][key] for r in mine])
            ax.errorbar(x[0], y[0], xerr=[[x[1]], [x[2]]], yerr=[[y[1]], [y[2]]], fmt="o",
                        capsize=3, label=f"{arm} ({len(mine)})")
        floor = records.reference([r for r in recs if r["arm"] in args.arms], key, "floors")
        if floor and " / " not in floor:
            ax.axhline(float(floor), ls="--", c="grey", lw=1, label="floor")
        ax.set_xlabel("answers: mean balanced accuracy")
        ax.set_title(key)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    out = Path(args.out)
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
