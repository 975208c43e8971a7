"""A short plain-text verdict table for the terminal."""

from __future__ import annotations

from pathlib import Path

from .report import change_arrow, format_value, verdict_rows
from .result import AuditResult


def summary_table(out_dir: Path) -> str:
    rows = verdict_rows(AuditResult.load(out_dir).data)
    w = max(len(r["figure"]) for r in rows) + 2
    lines = [f"{'figure':<{w}}{'baseline':>10}{'obfuscated':>12}{'chance':>9}  change",
             "-" * (w + 45)]
    for r in rows:
        lines.append(f"{r['figure']:<{w}}{format_value(r, 'baseline'):>10}"
                     f"{format_value(r, 'obfuscated'):>12}"
                     f"{format_value(r, 'chance'):>9}  {change_arrow(r)}")
    return "\n".join(lines)
