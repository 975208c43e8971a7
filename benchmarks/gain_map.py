"""Where a run's phone spends the information cap's power: its learned gain per uploaded
number (`model.position_gain`) beside the mean face of its test split.

    python benchmarks/gain_map.py RUN [RUN ...] --out docs/img/position-gain.png

For each run: the share of the upload's signal power at each position (gain squared,
summed over channels, normalised to 1), drawn over the mean test face, and the number
of positions that hold 50% and 90% of it. Runs without a gain are refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def power_share(run: Path) -> np.ndarray:
    """(H, W) share of the gain's power at each uploaded position (sums to 1)."""
    from deepobfuscator.runs import load_run

    _, models = load_run(run)
    gain = models.encoder.gain
    if gain is None:
        raise SystemExit(f"{run}: this run has no position gain (model.position_gain=0)")
    p = gain[0].pow(2).sum(0).numpy()
    return p / p.sum()


def positions_holding(p: np.ndarray, share: float) -> int:
    c = np.cumsum(np.sort(p.ravel())[::-1])
    return int(np.searchsorted(c, share) + 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("position-gain.png"))
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepobfuscator.data.splits import make_splits
    from deepobfuscator.runs import read_run_config

    test = make_splits(read_run_config(args.runs[0]))["test"]
    face = test.images.astype(np.float32).mean(0) / 255
    fig, axes = plt.subplots(1, len(args.runs), figsize=(3 * len(args.runs), 3.3),
                             squeeze=False)
    for ax, run in zip(axes[0], args.runs, strict=True):
        p = power_share(run)
        half, most = positions_holding(p, 0.5), positions_holding(p, 0.9)
        print(f"{run}: {p.size} positions; 50% of the power in {half}, 90% in {most}")
        ax.imshow(face)
        h, w = face.shape[:2]
        # positions under 2% of the strongest one left clear, so the face shows through
        ax.imshow(np.ma.masked_less(p, 0.02 * p.max()), cmap="magma", alpha=0.65,
                  extent=(0, w, h, 0), interpolation="nearest")
        ax.set_title(f"{run.name}\n90% of the power in {most}/{p.size}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(args.out)  # atomic: a half-written figure never replaces a good one
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
