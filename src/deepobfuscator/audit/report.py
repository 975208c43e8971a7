"""audit.json -> report.md and a self-contained report.html (figures embedded).

The verdict table puts every figure beside its reference: the no-privacy
baseline and chance. Arrows say whether the obfuscated run is better for
privacy (lower attacker success) or worse for utility (lower task accuracy).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_write_text
from .report_strongest import repeats_figure, strongest_lines
from .result import RUNS, AuditResult


def floor_lines(results: dict) -> list[str]:
    """The floors of the private attributes: what the service's true answers alone tell
    an attacker (audit.json chance.attributes.<a>.task_answer_floor)."""
    floors = {a: c["task_answer_floor"] for a, c in results["chance"]["attributes"].items()
              if "task_answer_floor" in c}
    if not floors:
        return []
    tasks = results.get("attributes", {}).get("tasks") or \
        [results.get("config", {}).get("data", {}).get("task", "the task")]
    what = (f"answer of {tasks[0]}" if len(tasks) == 1
            else f"answers of all {len(tasks)} tasks ({', '.join(tasks)})")
    reid = results["chance"].get("reid", {}).get("task_answer_floor")
    ident = (f"; nearest neighbour on the answer vectors re-identifies at top-1 "
             f"{reid['top1']:.3f} (chance {results['chance']['reid']['top1']:.3f})"
             if reid else "")
    return [f"Floor: an attacker who sees only the true {what} (a table of "
            "answers to attribute, trained on the attacker split, scored on test) reads "
            + ", ".join(f"{a} at {v:.3f}" for a, v in floors.items())
            + f" balanced accuracy{ident}; no upload that answers "
            + ("the task" if len(tasks) == 1 else "them") + " can leak less.", ""]


def verdict_rows(results: dict) -> list[dict]:
    """One row per privacy and utility figure (figures.py) that a run has: name, baseline,
    obfuscated, chance, and which way is better."""
    res = AuditResult(results)
    figs = res.present(res.figures("privacy") + res.figures("utility"))
    return [{"figure": f.label, **{run: res.value(f, run) for run in RUNS},
             "chance": res.chance(f), "better": f.better, "fmt": f.fmt} for f in figs]


def budget_rows(results: dict) -> list[dict]:
    """The phone budget of each run (audit.json runs.<run>.budget): compute on each side and
    the upload per image, as rows of formatted strings ("n/a" where a run has none)."""
    runs = results["runs"]
    budgets = {run: runs[run].get("budget") if run in runs else None
               for run in ("baseline", "obfuscated")}
    if not any(budgets.values()):
        return []
    specs = [("Phone (obfuscator) MACs", lambda b: f"{b['phone_macs'] / 1e6:.1f} M"),
             ("Cloud (classifier) MACs", lambda b: f"{b['cloud_macs'] / 1e6:.1f} M"),
             ("Phone share of the compute", lambda b: f"{b['phone_share']:.1%}"),
             ("Upload, int8 wire", lambda b: f"{b['upload_bytes']} B"),
             ("Upload, numbers", lambda b: str(b["upload_numbers"])),
             ("Split after VGG block", lambda b: str(b["split_block"]))]
    if any(b and b.get("upload_pool", 1) > 1 for b in budgets.values()):
        specs.append(("Upload average-pooled by", lambda b: str(b.get("upload_pool", 1))))
    if any(b and b.get("info_cap_bits") is not None for b in budgets.values()):
        specs.append(("Information cap bound (bits)",
                      lambda b: "none" if b["info_cap_bits"] is None
                      else f"{b['info_cap_bits']:.0f}"))
    return [{"figure": name, **{run: fmt(b) if b else "n/a" for run, b in budgets.items()}}
            for name, fmt in specs]


def change_arrow(row: dict) -> str:
    b, o = row.get("baseline"), row.get("obfuscated")
    if b is None or o is None:
        return ""
    if abs(o - b) < 1e-3 * max(1.0, abs(b)):
        return "= same"
    down = o < b
    good = down == (row["better"] == "lower")
    return ("↓" if down else "↑") + (" better" if good else " worse")


def format_value(row: dict, key: str) -> str:
    v = row.get(key)
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else \
        row["fmt"].format(v)


def _figures(out: Path, results: dict, grid: dict[str, torch.Tensor]) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = {}
    cols = [c for c in ("original", "baseline", "obfuscated") if c in grid]
    n = len(grid["original"])
    fig, axes = plt.subplots(len(cols), n, figsize=(1.3 * n, 1.45 * len(cols)), squeeze=False)
    titles = {"original": "original", "baseline": "from baseline features",
              "obfuscated": "from obfuscated features"}
    for i, c in enumerate(cols):
        for j in range(n):
            ax = axes[i][j]
            ax.imshow(grid[c][j].permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(titles[c], fontsize=7)
    fig.suptitle("Test faces and the inverse-network attacker's reconstructions", fontsize=9)
    fig.tight_layout()
    figs["reconstructions"] = out / "figures" / "reconstructions.png"
    _save(fig, figs["reconstructions"])

    attrs = list(results["runs"]["obfuscated"]["attributes"])
    fig, axes = plt.subplots(1, len(attrs), figsize=(3.2 * len(attrs), 3.2), squeeze=False)
    for ax, a in zip(axes[0], attrs, strict=True):
        for run, style in (("baseline", "--"), ("obfuscated", "-")):
            if run not in results["runs"]:
                continue
            sc = results["runs"][run]["attributes"][a]
            ax.plot(sc["roc"]["fpr"], sc["roc"]["tpr"], style,
                    label=f"{run} (AUC {sc['roc_auc']:.2f})")
        ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
        ax.set_title(f"{a}" + (" (task)" if a == results["config"]["data"]["task"] else ""),
                     fontsize=9)
        ax.set_xlabel("false positive rate", fontsize=8)
        ax.set_ylabel("true positive rate", fontsize=8)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Fresh attribute attackers on the test split", fontsize=9)
    fig.tight_layout()
    figs["roc"] = out / "figures" / "roc.png"
    _save(fig, figs["roc"])
    if (rep := repeats_figure(results, out / "figures" / "repeats.png")) is not None:
        figs["repeats"] = rep
    return figs


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _data_lines(data: dict) -> list[str]:
    """Which data trained the obfuscator and which data the attackers and scores used."""
    def where(d: dict) -> str:
        return (f"{d['source']} (`{d['root'] or 'generated'}`), task {d['task']}, private "
                f"{', '.join(d['private'])}")

    if "trained_on" not in data:
        return []
    lines = [f"Data: the obfuscator was trained on {where(data['trained_on'])}. "]
    audited = data.get("audited_on")
    if isinstance(audited, dict):
        lines[0] += (f"**Cross-dataset audit:** attackers trained and scored on "
                     f"{where(audited)} from `{audited['config']}` ({data['attacker']['source']} "
                     f"attacker split, {data['test']['source']} test split), every photo "
                     f"prepared with the run's preprocessing ({audited['crop']} crop, "
                     f"{audited['image_size'][0]} x {audited['image_size'][1]} px): faces the "
                     "obfuscator never saw.")
    else:
        lines[0] += "Attackers and scores used the run's own attacker and test splits."
    return [*lines, ""]


def ceiling_line(results: dict) -> list[str]:
    """What each identity attacker achieves on raw test photos: the bound on its figures."""
    reid = next((r["reid"] for r in results["runs"].values() if "reid" in r), None)
    if reid is None:
        return []
    parts = [f"the trained embedder: top-1 {reid['raw_probes']['top1']:.3f}"]
    if "verification" in reid:
        parts[0] += f", verification AUC {reid['verification']['raw']['auc']:.3f}"
    if "dlib_raw_probes" in reid:
        p = f"dlib's face recogniser: top-1 {reid['dlib_raw_probes']['top1']:.3f}"
        if "dlib_verification" in reid:
            p += f", verification AUC {reid['dlib_verification']['raw']['auc']:.3f}"
        parts.append(p)
    else:
        parts.append("dlib's face recogniser: not installed (pip install "
                     "'deepobfuscator[recognition]') or turned off")
    return [f"Identity attackers on the raw test photos (their ceiling): {'; '.join(parts)}.",
            ""]


def view_lines(results: dict) -> list[str]:
    """Which learned attackers kept the top-K view (audit/attacks `pick_view`), per run."""
    k = results["settings"].get("select_positions", 0)
    out = []
    for run, r in results["runs"].items():
        views = r.get("views")
        if views:
            kept = [key for key, v in views.items() if key != "positions" and v != "all"]
            out.append(f"- {run}: each learned attacker was also trained on the {k} numbers "
                       f"of highest variance and the one that leaked more is reported; the "
                       f"top-{k} view won for {', '.join(kept) or 'none'}")
    return out


def render_markdown(results: dict, figs: dict[str, Path], out: Path) -> str:
    rows = verdict_rows(results)
    lines = ["# Privacy audit", ""]
    lines += [f"Runs: {', '.join(f'{k}: `{v}`' for k, v in results['runs_dirs'].items())}. "
              f"Every attacker was trained from scratch on the attacker split "
              f"({results['data']['attacker']['images']} images) after the obfuscator was "
              f"frozen, and scored on the test split ({results['data']['test']['images']} "
              "images), which nobody trained on.", ""]
    lines += _data_lines(results.get("data", {}))
    lines += ceiling_line(results)
    lines += ["## Verdict", "", "| figure | baseline (no privacy) | obfuscated | chance | change |",
              "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['figure']} | {format_value(r, 'baseline')} | "
                     f"{format_value(r, 'obfuscated')} | {format_value(r, 'chance')} | "
                     f"{change_arrow(r)} |")
    lines += ["", "Chance: balanced accuracy and AUC 0.5; the majority-class rate for plain "
              "accuracy; for reconstruction, the attacker split's mean face used as every "
              "reconstruction; for re-identification, 1 / number of test identities.", ""]
    lines += floor_lines(results)
    lines += strongest_lines(results)
    if "repeats" in figs:
        lines += [f"![repeats]({figs['repeats'].relative_to(out)})", ""]
    budget = budget_rows(results)
    if budget:
        lines += ["## Phone budget", "",
                  "| budget, per image | baseline (no privacy) | obfuscated |", "|---|---|---|"]
        lines += [f"| {r['figure']} | {r['baseline']} | {r['obfuscated']} |" for r in budget]
        lines += ["", "MACs: multiply-accumulates of the convolutions and linear layers at batch "
                  "1; the phone runs the obfuscator, the cloud the classifier. Upload: one "
                  "image's features in the int8 wire format, header included.", ""]
    if results["warnings"]:
        lines += ["## Warnings", ""] + [f"- {w}" for w in results["warnings"]] + [""]
    recon_png = figs["reconstructions"].relative_to(out)
    lines += ["## Reconstructions", "", f"![reconstructions]({recon_png})",
              "", "## Attribute attackers", "", f"![roc]({figs['roc'].relative_to(out)})", ""]
    obf = results["runs"]["obfuscated"]
    if "training_adversaries" in obf:
        lines += ["## Fresh attackers vs the training-time adversaries", "",
                  "| attribute | training-time adversary bal. acc. | fresh attacker bal. acc. |",
                  "|---|---|---|"]
        for a, own in obf["training_adversaries"].items():
            lines.append(f"| {a} | {own['balanced_accuracy']:.3f} | "
                         f"{obf['attributes'][a]['balanced_accuracy']:.3f} |")
        own_r = obf["training_reconstructor"]["msssim"]["mean"]
        lines += ["", f"Training-time reconstructor MS-SSIM {own_r:.3f} vs fresh inverse "
                  f"network {obf['inversion']['msssim']['mean']:.3f}.", ""]
    st = results["settings"]
    lines += ["## Settings", "", f"- MS-SSIM: {json.dumps(st['msssim'])}",
              f"- attackers: Adam, early stopping (patience {st['patience']}, at most "
              f"{st['max_epochs']} epochs) on a held-out part of the attacker split; "
              f"white-box: {st['whitebox_steps']} steps on {st['whitebox_images']} test images",
              *view_lines(results),
              f"- device {st['device']}, precision {st['precision']}, seed {st['seed']}; "
              f"audit took {results['seconds']} s", "",
              "## Configuration of the audited run", "", "```json",
              json.dumps(results["config"], indent=1), "```", ""]
    return "\n".join(lines)


def write_report(out: Path, results: dict, grid: dict[str, torch.Tensor]) -> None:
    figs = _figures(out, results, grid)
    md = render_markdown(results, figs, out)
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.html", _html(md, out))


def _html(md: str, out: Path) -> str:
    """A small markdown subset (headings, tables, lists, images, code) to HTML, with
    images inlined as base64 so the file stands alone."""
    body, in_table, in_code = [], False, False
    for line in md.splitlines():
        if line.startswith("```"):
            body.append("</pre>" if in_code else "<pre>")
            in_code = not in_code
            continue
        if in_code:
            body.append(html.escape(line))
            continue
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            if not in_table:
                body.append("<div class='scroll'><table>")
                in_table = True
                body.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells) + "</tr>")
            else:
                body.append("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table></div>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("!["):
            src = line[line.index("(") + 1: line.rindex(")")]
            data = base64.b64encode((out / src).read_bytes()).decode()
            body.append(f'<p><img src="data:image/png;base64,{data}" alt="{html.escape(src)}"></p>')
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table></div>")
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;"
             "color:#222}.scroll{overflow-x:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px}"
             "@media(max-width:600px){body{margin:1em auto;font-size:14px}td,th{padding:3px 5px}}"
             ".good{color:#060}.bad{color:#a00}img{max-width:100%}pre{background:#f6f6f6;"
             "padding:8px;font-size:11px;overflow:auto}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width, initial-scale=1'><title>Privacy audit</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")


def _cell(c: str) -> str:
    cls = " class='good'" if c.endswith("better") else " class='bad'" if c.endswith("worse") \
        else ""
    return f"<span{cls}>{html.escape(c)}</span>"
