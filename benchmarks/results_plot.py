"""The frontier figure of docs/results.md, drawn from the table it stands beside.

    python benchmarks/results_plot.py [--doc docs/results.md] [--table summary-rows]
        [--out docs/img/frontier-light-phone-summary.png]

Reads the markdown table between `<!-- TABLE -->` and `<!-- /TABLE -->` (cells "mean" or
"mean [min-max]"; a "floor" row) and plots each privacy column against task accuracy:
one marker per arm at its mean, bars over its range, colour by the phone's share of the
compute, each column's floor dashed. The figure can never disagree with the table: it
is the table. Every number in the table comes from audits listed in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

CELL = re.compile(r"^\**(?P<m>[0-9.]+)\**(?:\s*\[(?P<lo>[0-9.]+)-(?P<hi>[0-9.]+)\])?")
PANELS = ("inverse MS-SSIM", "Male", "Young", "re-id top-1")


def parse_cell(text: str) -> tuple[float, float, float] | None:
    """'0.585 [0.548-0.610]' -> (0.585, 0.548, 0.610); '0.493' -> (0.493, 0.493, 0.493);
    '0.915 / 0.916' -> their mean and range; anything else (empty, words) -> None."""
    if " / " in text:  # per-seed values "a / b / c": their mean and range
        parts = [parse_cell(t) for t in text.split(" / ")]
        vals = [p[0] for p in parts if p is not None]
        return (sum(vals) / len(vals), min(vals), max(vals)) if vals else None
    m = CELL.match(text.strip())
    if not m:
        return None
    mean = float(m["m"])
    return mean, float(m["lo"] or mean), float(m["hi"] or mean)


def read_table(doc: str, name: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the markdown table between <!-- name --> and <!-- /name -->."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    if start not in doc or end not in doc:
        raise SystemExit(f"no table marked {start} ... {end} in the document")
    body = doc[doc.index(start) + len(start):doc.index(end)].strip().splitlines()
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in body
             if line.startswith("|")]
    return cells[0], [r for r in cells[2:]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--doc", default="docs/results.md")
    ap.add_argument("--table", default="summary-rows")
    ap.add_argument("--out", default="docs/img/frontier-light-phone-summary.png")
    args = ap.parse_args()
    header, rows = read_table(Path(args.doc).read_text(), args.table)
    col = {h: i for i, h in enumerate(header)}
    missing = [c for c in ("arm", "phone share", "upload", "task acc.", *PANELS) if c not in col]
    if missing:
        raise SystemExit(f"the table lacks the columns {missing}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = next((r for r in rows if r[0].startswith("floor")), None)
    arms = [r for r in rows if not r[0].startswith("floor")]
    fig, grid = plt.subplots(2, 2, figsize=(12, 10))
    axes = grid.flatten()
    cmap = plt.get_cmap("viridis")
    for ax, panel in zip(axes, PANELS, strict=True):
        for n, r in enumerate(arms):
            x, y = parse_cell(r[col["task acc."]]), parse_cell(r[col[panel]])
            if x is None or y is None:
                continue
            share = float(r[col["phone share"]].strip("*%")) / 100
            ax.errorbar(x[0], y[0], xerr=[[x[0] - x[1]], [x[2] - x[0]]],
                        yerr=[[y[0] - y[1]], [y[2] - y[0]]], fmt="o", ms=6, capsize=2,
                        color=cmap(share), mec="black" if "default" in r[0] else "none")
            ax.annotate(str(n + 1), (x[0], y[0]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        f = parse_cell(floor[col[panel]]) if floor else None
        if f is not None:
            ax.axhline(f[0], ls="--", c="grey", lw=1)
        ax.set_title(f"{panel} (fresh attacker; lower is more private)", fontsize=9)
        ax.set_xlabel("task accuracy")
        ax.grid(alpha=0.3)
    legend = "\n".join(f"{n + 1:>2}: {re.sub(r'[`*]', '', r[0])[:95]} "
                       f"({r[col['phone share']].strip('*')}, {r[col['upload']].strip('*')})"
                       for n, r in enumerate(arms))
    fig.text(0.01, 0.0, legend, fontsize=7, va="bottom", family="monospace")
    fig.suptitle("CelebA, fresh attackers through int8: colour = the phone's share of the "
                 "compute (dark 32%, yellow 100%); dashed: floor", fontsize=10)
    fig.tight_layout(rect=(0, 0.02 + 0.0125 * len(arms), 1, 0.98))
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.partial.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
