"""The strongest-attacker table (issue 33) from audit.json files: per audited run, each
private attribute by probe family and its maximum, identity by every identity attack and
its maximum, the same attackers on 16 uploads of each photo and on 4 photos of a person,
the cap's bounds, beside chance and the floors. Every figure is read from the files.
The prior-guided inversion's re-identification (on its first 32 test photos only) stands
beside the identity maximum, not in it (as in the audit's own summary).

    python benchmarks/strongest_attacker.py NAME=AUDIT_DIR[:RUN] ... [--out table.md]

RUN is "obfuscated" (default) or "baseline" (the no-privacy run of an audit with
--baseline). The identity maximum is recomputed from the per-attack figures, so audits
whose summary missed an attack (before the registry ran attacks in their listed order,
re-identification from reconstructions came after the summary) read the same way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def identity_reads(r: dict) -> dict[str, float]:
    reads = dict(r.get("identity", {}).get("reads", {}))
    if "feature_reid" in r:
        reads["features"] = r["feature_reid"]["top1"]
    if "reid" in r:
        reads["reconstructions"] = r["reid"]["reconstruction_probes"]["top1"]
    return reads


def row(name: str, doc: dict, run: str) -> dict:
    r = doc["runs"][run]
    private = doc["attributes"]["private"]
    reads = identity_reads(r)
    reads.pop("prior-guided reconstructions", None)  # a subset of the probes: beside, not in
    best = max(reads, key=lambda k: reads[k]) if reads else None
    prior = r.get("prior_inversion", {}).get("reid", {})
    out = {"arm": name, "seconds": doc.get("seconds"),
           "task": r.get("utility", {}).get("balanced_accuracy"),
           "msssim": r["inversion"]["msssim"]["mean"],
           "prior_msssim": r.get("prior_inversion", {}).get("msssim", {}).get("mean"),
           "identity": reads.get(best) if best else None, "identity_by": best,
           "prior_reid": prior.get("top1"), "prior_probes": prior.get("n_probes"),
           "reads": reads, "attributes": {}, "repeats": {}, "pooled": {}}
    for a in private:
        sc = r["attributes"][a]
        out["attributes"][a] = {"max": sc["balanced_accuracy"], "by": sc.get("family", "cnn"),
                                **{f: v["balanced_accuracy"]
                                   for f, v in sc.get("families", {}).items()}}
    for n, e in r.get("repeats", {}).items():
        if n != "largest":
            out["repeats"][n] = {**{a: e["attributes"][a]["balanced_accuracy"]
                                    for a in private},
                                 "identity": e.get("identity", {}).get("top1")}
    for m, e in r.get("pooled", {}).items():
        if m != "largest":
            out["pooled"][m] = {**{a: e["attributes"][a]["balanced_accuracy"]
                                   for a in e["attributes"]},
                                "identity": e.get("reid", {}).get("top1"),
                                "identity_gallery": e.get("reid_gallery", {}).get("top1")}
    out["bounds"] = r.get("bounds")
    return out


def _bound(x: dict | None) -> str:
    if not x:
        return "none"
    return (f"{x['bits']:.1f} / {_f(x['attribute_balanced_accuracy'])} / "
            f"{_f(x.get('reid_top1'))}")


def table(rows: list[dict], doc: dict) -> str:
    private = doc["attributes"]["private"]
    ch = doc["chance"]
    fam = ("linear", "mlp", "cnn")
    head = ["run", "task bal. acc.", "MS-SSIM inverse / prior",
            *[f"{a}: {' / '.join(fam)} -> max" for a in private],
            "identity top-1: features / reconstructions -> max", "identity top-1, prior "
            "(probes)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        rd = r["reads"]
        cells = [r["arm"], _f(r["task"]), f"{_f(r['msssim'])} / {_f(r['prior_msssim'])}",
                 *[" / ".join(_f(r["attributes"][a].get(f)) for f in fam)
                   + f" -> **{_f(r['attributes'][a]['max'])}**" for a in private],
                 " / ".join(_f(rd.get(k)) for k in ("features", "reconstructions"))
                 + f" -> **{_f(r['identity'])}**",
                 f"{_f(r['prior_reid'])} ({r['prior_probes']})"]
        lines.append("| " + " | ".join(cells) + " |")
    floors = [_f(ch["attributes"][a].get("task_answer_floor")) for a in private]
    lines.append("| chance / floor | " + _f(ch.get("tasks", {}).get(
        doc["attributes"]["tasks"][0], {}).get("chance")) + " | "
        + _f(ch["reconstruction_mean_image"]["msssim"]["mean"]) + " (mean face) | "
        + " | ".join(f"0.5 / {f}" for f in floors) + " | "
        + f"{_f(ch.get('reid', {}).get('top1'))} / "
        + f"{_f(ch.get('reid', {}).get('task_answer_floor', {}).get('top1'))} | |")
    lines += ["", "| run | uploads or photos | " + " | ".join(private)
              + " | identity top-1 | M photos known: identity top-1 | bound: bits / "
              "attribute / identity |", "|---|---|" + "---|" * (len(private) + 3)]
    for r in rows:
        one = {**{a: r["attributes"][a]["max"] for a in private}, "identity": r["reads"].get(
            "features")}
        b = r["bounds"] or {}
        bound = lambda n, b=b: _bound(b.get(n))  # noqa: E731
        lines.append(f"| {r['arm']} | 1 upload | " + " | ".join(_f(one[a]) for a in private)
                     + f" | {_f(one['identity'])} | {_f(one['identity'])} | {bound('1')} |")
        for n, e in r["repeats"].items():
            lines.append(f"| {r['arm']} | mean of {n} uploads | "
                         + " | ".join(_f(e[a]) for a in private)
                         + f" | {_f(e['identity'])} | | {bound(n)} |")
        for m, e in r["pooled"].items():
            lines.append(f"| {r['arm']} | {m} photos of a person | "
                         + " | ".join(_f(e.get(a)) for a in private)
                         + f" | {_f(e['identity'])} | {_f(e['identity_gallery'])} | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("audits", nargs="+", help="NAME=AUDIT_DIR[:RUN]")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    rows, doc = [], None
    for spec in args.audits:
        name, _, where = spec.partition("=")
        path, _, run = where.partition(":")
        doc = json.loads((Path(path) / "audit.json").read_text())
        rows.append(row(name, doc, run or "obfuscated"))
    assert doc is not None
    text = table(rows, doc)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
