"""Every results table of the README and the results page, written from the records
(results/records.jsonl), never typed. A page holds a table between its markers
`<!-- table:NAME -->` and `<!-- /table:NAME -->`; NAME is one of TABLES.

    python benchmarks/results_tables.py            # print every table
    python benchmarks/results_tables.py --write    # write them into the pages' markers
    python benchmarks/results_tables.py --check    # exit 1 where a page's table differs

Records come from `deepobfuscator results add AUDIT_DIR --arm NAME` (docs/audit.md,
"Results as data"); tests/test_results_tables.py fails when a page and the records
disagree.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("README.md", "docs/results.md")
MARKER = re.compile(r"<!-- table:([\w-]+) -->\n(.*?)<!-- /table:\1 -->", re.S)

# row labels of the figures (audit.json's keys: docs/audit.md)
LABELS = {
    "utility_bal_acc": "answers: cloud balanced accuracy (mean over the tasks)",
    "held_out_mean_auc": "held-out attributes H: fresh probes' mean AUC",
    "identity_top1": "identity: strongest attack, top-1",
    "feature_reid_top1": "identity from the upload, one photo of each person known: top-1",
    "inversion_msssim": "face rebuilt by the inverse network: MS-SSIM",
    "prior_msssim": "face rebuilt with a face prior: MS-SSIM",
}


def label(key: str) -> str:
    if key in LABELS:
        return LABELS[key]
    kind, _, name = key.partition(":")
    return {"attribute": f"{name}: strongest probe, balanced accuracy",
            "utility": f"{name}: cloud balanced accuracy"}.get(kind, key)


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


def headline(records: list[dict], default: str = "default", baseline: str = "baseline",
             seed: int = 0, private: tuple[str, str] = ("Male", "Young")) -> str:
    """The README's table: the default against its no-privacy baseline, one audit each
    (training and attacker seed 0), the strongest attacker per figure, floors beside."""
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


def _arms_table(arms: dict[str, str], keys: list[str]) -> Callable[[list[dict]], str]:
    """A table of these arms (record arm -> column name): mean [min-max] over every record
    of an arm, chance and floor beside."""
    def make(records: list[dict]) -> str:
        from deepobfuscator.audit.records import table

        return table(records, list(arms), keys, labels={k: label(k) for k in keys},
                     names=arms)
    return make


_PRIVATE = ["attribute:Male", "attribute:Young", "identity_top1", "feature_reid_top1",
            "inversion_msssim"]
MT_TASKS = ["Smiling", "Mouth_Slightly_Open", "Eyeglasses", "Wearing_Hat", "Bangs", "hair"]

# name -> how it is made from the records
TABLES: dict[str, Callable[[list[dict]], str]] = {
    "headline": headline,
    "single-task": _arms_table(
        {"baseline": "no-privacy baseline", "default": "default"},
        ["utility_bal_acc", *_PRIVATE, "prior_msssim"]),
    "multi-task": _arms_table(
        {"mt-baseline": "no-privacy baseline", "mt-control": "control: no defence",
         "mt-cap": "cap", "mt-cap-erase": "cap + erasure (the config)"},
        ["utility_bal_acc", *(f"utility:{t}" for t in MT_TASKS), "held_out_mean_auc",
         *_PRIVATE]),
    "real-photos": _arms_table(
        {"celeba-baseline-on-lfw-aligned": "CelebA baseline",
         "celeba-default-on-lfw-aligned": "CelebA default"},
        ["utility_bal_acc", "attribute:Male", "attribute:Youth", "identity_top1",
         "inversion_msssim"]),
    "lfw-multi-task": _arms_table(
        {"lfw-multitask-baseline": "no-privacy baseline",
         "lfw-multitask-default": "cap + erasure (the config)"},
        ["utility_bal_acc", "held_out_mean_auc", "attribute:Male", "attribute:Youth",
         "identity_top1", "feature_reid_top1", "inversion_msssim"]),
}


def render(text: str, records: list[dict]) -> str:
    """The page with every marked table written from the records."""
    def fill(m: re.Match) -> str:
        name = m.group(1)
        if name not in TABLES:
            raise SystemExit(f"unknown table {name!r} in a marker: choose from {list(TABLES)}")
        return f"<!-- table:{name} -->\n{TABLES[name](records)}<!-- /table:{name} -->"
    return MARKER.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from deepobfuscator.audit import records

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", default=str(ROOT / "results" / "records.jsonl"))
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    recs = records.load(Path(args.records))
    stale = []
    for page in PAGES:
        path = ROOT / page
        text = path.read_text()
        want = render(text, recs)
        if args.write and want != text:
            from deepobfuscator.io import atomic_write_text

            atomic_write_text(path, want)
        elif args.check and want != text:
            stale.append(page)
    if stale:
        print(f"{', '.join(stale)}: a table differs from the records: run "
              "`python benchmarks/results_tables.py --write`", file=sys.stderr)
        return 1
    if not (args.write or args.check):
        for name, make in TABLES.items():
            print(f"## {name}\n\n{make(recs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
