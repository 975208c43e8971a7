"""An audit's results, read through the figure table (figures.py).

`audit.json` stays the stored form (plain JSON, stable keys); `AuditResult` is how code
reads it: the report, the terminal summary, the sweep's frontier and the experiment
tables ask it for figures by `Figure`, never by string paths of their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..runs import RunError
from .attacks import figures_for
from .figures import Figure, Names, Section

RUNS = ("baseline", "obfuscated")


@dataclass
class AuditResult:
    data: dict  # the audit.json document

    @classmethod
    def load(cls, out_dir: Path) -> AuditResult:
        p = Path(out_dir) / "audit.json"
        if not p.is_file():
            raise RunError(f"no audit.json in {out_dir}; run `deepobfuscator audit RUN` first")
        return cls(json.loads(p.read_text()))

    @property
    def runs(self) -> dict[str, dict]:
        return self.data["runs"]

    @property
    def names(self) -> Names:
        """Its tasks, private and held-out attributes (audit.json `attributes`; audits
        from before several tasks existed: the config's one task)."""
        if "attributes" in self.data:
            a = self.data["attributes"]
            return Names(list(a["tasks"]), list(a["private"]), list(a.get("held_out", [])))
        task = self.data["config"]["data"]["task"]
        attrs = self.data.get("chance", {}).get("attributes")
        private = [a for a in attrs if a != task] if attrs else \
            list(self.data["config"]["data"]["private"])
        return Names([task], private, [])

    @property
    def task(self) -> str:
        """The task's name, or "N tasks (mean)"."""
        return self.names.task

    @property
    def private(self) -> list[str]:
        """The private attributes the attackers were scored on."""
        return self.names.private

    def figures(self, section: Section | None = None,
                headline: bool | None = None) -> list[Figure]:
        """The figures this audit can report, in the table's order, whether or not a run
        has a value for each (`present` filters)."""
        return figures_for(self.names, section, headline)

    def present(self, figures: list[Figure]) -> list[Figure]:
        """Those figures that at least one run has a value for."""
        return [f for f in figures if any(self.value(f, r) is not None for r in self.runs)]

    def value(self, figure: Figure, run: str = "obfuscated") -> float | None:
        return figure.value(self.runs[run]) if run in self.runs else None

    def chance(self, figure: Figure) -> float | None:
        return figure.chance_in(self.data["chance"])

    def values(self, run: str = "obfuscated", section: Section | None = None,
               headline: bool | None = None) -> dict[str, float]:
        """key -> value of the run's figures that have one (frontier.json, summaries)."""
        out = {}
        for f in self.figures(section, headline):
            v = self.value(f, run)
            if v is not None:
                out[f.key] = v
        return out

    def chances(self, section: Section | None = None,
                headline: bool | None = None) -> dict[str, float]:
        out = {}
        for f in self.figures(section, headline):
            c = self.chance(f)
            if c is not None:
                out[f.key] = c
        return out

    def budget(self, run: str = "obfuscated") -> dict | None:
        return self.runs.get(run, {}).get("budget")
