"""The report's section on the strongest attacker: identity over every attack, each
attribute per probe family, repeated uploads beside the cap's bound, and photos of one
person pooled (audit/attacks/: identity, attributes, repeats, pooled; audit/bounds.py)."""

from __future__ import annotations

from pathlib import Path

from ..models.attack_nets import FAMILIES


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def identity_lines(results: dict) -> list[str]:
    chance = results["chance"].get("reid", {}).get("top1")
    out = []
    for run, r in results["runs"].items():
        ident = r.get("identity")
        if not ident:
            continue
        reads = ", ".join(f"{k} {v:.3f}" for k, v in sorted(ident["reads"].items(),
                                                            key=lambda kv: -kv[1]))
        ceiling = ident.get("raw_photo_ceiling")
        subset = "".join(f"; {k} {v['top1']:.3f} on {v['probes']} probes only, not in the "
                         "maximum" for k, v in ident.get("subset_reads", {}).items())
        out.append(f"- {run}: **top-1 {ident['top1']:.3f}** by {ident['attack']} (every "
                   f"identity attack: {reads}; chance {_f(chance)}"
                   + (f"; the recogniser on raw photos {ceiling:.3f}" if ceiling is not None
                      else "") + subset + ")")
    return ["Identity, the strongest of every identity attack (re-identification top-1):",
            "", *out, ""] if out else []


def family_lines(results: dict) -> list[str]:
    private = results.get("attributes", {}).get("private", [])
    rows = []
    for run, r in results["runs"].items():
        for a in private:
            sc = r.get("attributes", {}).get(a, {})
            fams = sc.get("families")
            if not fams:
                continue
            rows.append(f"| {a} | {run} | " + " | ".join(
                _f(fams.get(f, {}).get("balanced_accuracy")) for f in FAMILIES)
                + f" | {sc['family']} |")
    if not rows:
        return []
    return ["Each private attribute by each probe family (balanced accuracy on the test "
            "split; the strongest is the verdict's figure):", "",
            "| attribute | run | " + " | ".join(FAMILIES) + " | strongest |",
            "|---|---|" + "---|" * (len(FAMILIES) + 1), *rows, ""]


def repeat_rows(results: dict, run: str = "obfuscated") -> list[dict]:
    """One row per number of uploads of each photo: the attackers' figures and the bounds."""
    r = results["runs"].get(run, {})
    if "repeats" not in r:
        return []
    private = results.get("attributes", {}).get("private", [])
    bounds = r.get("bounds", {})
    entries = {"1": r, **{k: v for k, v in r["repeats"].items() if k != "largest"}}
    rows = []
    for n in sorted(entries, key=int):
        e, b = entries[n], bounds.get(n, {})
        rows.append({"uploads": int(n), "bits": b.get("bits"),
                     "attribute_bound": b.get("attribute_balanced_accuracy"),
                     "identity_bound": b.get("reid_top1"),
                     "identity": e.get("identity", {}).get("top1"),
                     **{a: e.get("attributes", {}).get(a, {}).get("balanced_accuracy")
                        for a in private}})
    return rows


def repeat_lines(results: dict) -> list[str]:
    rows = repeat_rows(results)
    if not rows:
        return []
    private = results.get("attributes", {}).get("private", [])
    head = ["uploads of each photo", "cap bound (bits)", *private,
            "attribute bound", "identity top-1", "identity bound"]
    lines = ["Repeated uploads: the attacker averages N uploads of each photo, each with "
             "fresh device noise (balanced accuracy; identity top-1, strongest attack on the "
             "features). Bounds: Fano's inequality on the cap's bits (audit/bounds.py; 1.000 "
             "= vacuous).", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        bits = "none" if row["bits"] is None else f"{row['bits']:.1f}"
        lines.append(f"| {row['uploads']} | {bits} | "
                     + " | ".join(_f(row[a]) for a in private)
                     + f" | {_f(row['attribute_bound'])} | {_f(row['identity'])} | "
                     f"{_f(row['identity_bound'])} |")
    return [*lines, ""]


def pooled_lines(results: dict) -> list[str]:
    r = results["runs"].get("obfuscated", {})
    pooled = {k: v for k, v in r.get("pooled", {}).items() if k != "largest"}
    if not pooled:
        return []
    private = results.get("attributes", {}).get("private", [])
    single = {"photos": 1, "attributes": r.get("attributes", {}),
              "reid": {"top1": r.get("feature_reid", {}).get("top1")}}
    lines = ["Photos of one person pooled: the attacker averages its readings over M photos "
             "of the same person, or knows M photos of each person and names a new one "
             "(obfuscated run; balanced accuracy; identity top-1 from the features).", "",
             "| photos per person | " + " | ".join(private)
             + " | identity top-1, M photos pooled | identity top-1, M photos known |",
             "|---|" + "---|" * (len(private) + 2)]
    single["reid_gallery"] = single["reid"]
    for m, e in sorted({"1": single, **pooled}.items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {m} | " + " | ".join(
            _f(e["attributes"].get(a, {}).get("balanced_accuracy")) for a in private)
            + f" | {_f(e.get('reid', {}).get('top1'))} | "
            f"{_f(e.get('reid_gallery', {}).get('top1'))} |")
    return [*lines, ""]


def strongest_lines(results: dict) -> list[str]:
    body = [*identity_lines(results), *family_lines(results), *repeat_lines(results),
            *pooled_lines(results)]
    return ["## The strongest attacker", "", *body] if body else []


def repeats_figure(results: dict, path: Path) -> Path | None:
    """Privacy against the number of uploads of each photo, with the bounds beside."""
    rows = repeat_rows(results)
    if len(rows) < 2:
        return None
    import matplotlib.pyplot as plt

    private = results.get("attributes", {}).get("private", [])
    n = [row["uploads"] for row in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for a in private:
        ax.plot(n, [row[a] for row in rows], "o-", label=f"{a} (balanced acc.)")
    ax.plot(n, [row["identity"] for row in rows], "s-", label="identity top-1")
    if rows[0]["attribute_bound"] is not None:
        ax.plot(n, [row["attribute_bound"] for row in rows], "k--",
                label="attribute bound (cap, Fano)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("uploads of each photo (fresh noise each)")
    ax.set_ylabel("attacker success")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
