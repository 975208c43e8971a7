"""The README's headline table, written from the records (results/records.jsonl), never
typed: the default and its no-privacy baseline, one audit each (training and attacker
seed 0 unless told), the strongest attacker family per figure, floors beside.

    python benchmarks/readme_table.py            # print the table
    python benchmarks/readme_table.py --write    # put it into README.md between its markers
    python benchmarks/readme_table.py --check    # exit 1 if README.md's table differs

tests/test_readme_table.py runs --check's comparison.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- readme-table:start -->", "<!-- readme-table:end -->"


def _pick(records: list[dict], arm: str, seed: int) -> dict:
    mine = [r for r in records if r["arm"] == arm and r.get("training_seed") == seed
            and r.get("attacker_seed", 0) == 0]
    if not mine:
        raise SystemExit(f"no record of arm {arm!r} at training seed {seed}, attacker seed 0 "
                         "in the records: add one with `deepobfuscator results add`")
    return max(mine, key=lambda r: r.get("created", ""))


def _best(r: dict, *keys: str) -> float:
    """The strongest attacker's figure: the largest of those the record holds."""
    vals = [float(r["figures"][k]) for k in keys if r["figures"].get(k) is not None]
    if not vals:
        raise SystemExit(f"record of {r['arm']!r} has none of {keys}")
    return max(vals)


def table(records: list[dict], default: str = "default", baseline: str = "baseline",
          seed: int = 0, private: tuple[str, str] = ("Male", "Young")) -> str:
    b, d = _pick(records, baseline, seed), _pick(records, default, seed)
    g, a = private
    floor = d.get("floors", {})
    chance = d.get("chance", {})

    def budget(r: dict) -> str:
        return f"{100 * r['budget']['phone_share']:.0f}% / {r['budget']['upload_bytes']:,} B"

    def pair(r: dict) -> str:
        return f"{_best(r, f'attribute:{g}'):.3f} / {_best(r, f'attribute:{a}'):.3f}"

    def msssim(r: dict) -> float:
        return _best(r, "inversion_msssim", "prior_msssim")

    rows = [
        ("phone's share of the compute / bytes sent per photo", budget(b), budget(d),
         "the photo as JPEG q90: 1,960 B"),
        ("the face rebuilt from the upload (MS-SSIM)", f"{msssim(b):.3f}", f"{msssim(d):.3f}",
         f"{floor['inversion_msssim']:.3f} (the mean face)"),
        ("gender / age read from the upload (balanced accuracy)", pair(b), pair(d),
         f"{floor[f'attribute:{g}']:.3f} / {floor[f'attribute:{a}']:.3f}"),
        ("identity from the upload (re-identification top-1)",
         f"{_best(b, 'identity_top1'):.3f}", f"{_best(d, 'identity_top1'):.3f}",
         f"{chance['identity_top1']:.3f} (chance)"),
        (f"{d['task']}, answered by the cloud (balanced accuracy)",
         f"{_best(b, 'utility_bal_acc'):.3f}", f"{_best(d, 'utility_bal_acc'):.3f}", "0.5"),
    ]
    lines = ["| | no-privacy baseline | **default** | floor: the true answer alone, or chance |",
             "|---|---|---|---|"]
    lines += [f"| {what} | {x} | **{y}** | {f} |" for what, x, y, f in rows]
    return "\n".join(lines) + "\n"


def readme_block(text: str) -> str:
    try:
        start = text.index(START) + len(START) + 1
        return text[start:text.index(END)]
    except ValueError:
        raise SystemExit(f"README.md has no {START} ... {END} markers") from None


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from deepobfuscator.audit import records

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", default=str(ROOT / "results" / "records.jsonl"))
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    want = table(records.load(Path(args.records)))
    readme = Path(args.readme)
    text = readme.read_text()
    if args.check:
        if readme_block(text) != want:
            print("README.md's table differs from the records: run "
                  "`python benchmarks/readme_table.py --write`", file=sys.stderr)
            return 1
        return 0
    if args.write:
        old = readme_block(text)
        readme.write_text(text.replace(f"{START}\n{old}", f"{START}\n{want}", 1))
    print(want, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
