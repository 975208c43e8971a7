"""docs/configuration.md's tables, written from the config's dataclasses (config_schema.py):
every key, its default (the `cpu` preset, the dataclass default), the presets that set
it otherwise, and its help text (the field's metadata). A page holds a table between
`<!-- config:SECTION -->` and `<!-- /config:SECTION -->`.

    python -m deepobfuscator.config_docs            # print the tables
    python -m deepobfuscator.config_docs --write    # write them into docs/configuration.md
    python -m deepobfuscator.config_docs --check    # exit 1 where the page differs
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

from .config import load_config, preset_names
from .config_schema import (
    Config,
    DataConfig,
    ModelConfig,
    PaperConfig,
    PrivacyConfig,
    RobustConfig,
    StageConfig,
    TrainConfig,
)

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
MARKER = re.compile(r"<!-- config:([\w.-]+) -->\n(.*?)<!-- /config:\1 -->", re.S)
# section -> (dotted prefix, dataclass)
SECTIONS: dict[str, tuple[str, type]] = {
    "top": ("", Config), "data": ("data.", DataConfig), "model": ("model.", ModelConfig),
    "privacy": ("privacy.", PrivacyConfig), "privacy.robust": ("privacy.robust.", RobustConfig),
    "privacy.paper": ("privacy.paper.", PaperConfig),
    "train": ("train.", TrainConfig),
}
# presets beside the default: `private` is an alias of `cpu`; `quick` and `tiny` only
# shrink sizes (the quick demo, the tests)
SKIP_PRESETS = ("cpu", "private", "quick", "tiny")
STAGE_FIELDS = [f.name for f in dataclasses.fields(StageConfig)]


def fmt(value: Any) -> str:
    """A value as the YAML a user writes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v).strip("`") for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    if isinstance(value, str):
        return f"`{value}`" if value else "(empty)"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _lookup(d: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d[part]
    return d


def _yaml_name(name: str) -> str:
    return "lambda" if name == "lambda_" else name


def _presets() -> dict[str, dict]:
    return {p: load_config(p).to_dict() for p in preset_names()}


def table(section: str, presets: dict[str, dict] | None = None) -> str:
    """The markdown table of one section's keys (nested sections have their own)."""
    presets = presets or _presets()
    prefix, cls = SECTIONS[section]
    lines = ["| key | default (other presets) | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type) or f.name in ("data", "model", "privacy", "train",
                                                         "robust", "paper"):
            continue
        if cls is TrainConfig and f.name in ("task", "reconstructor", "adversaries",
                                             "adversarial"):
            continue  # the stages: stage_table
        key = prefix + _yaml_name(f.name)
        default = _lookup(presets["cpu"], key)
        others = [] if key == "preset" else [
            f"{p}: {fmt(v)}" for p, d in presets.items()
            if p not in SKIP_PRESETS and (v := _lookup(d, key)) != default]
        cell = fmt(default) + (f" ({'; '.join(others)})" if others else "")
        text = f.metadata.get("help")
        if not text:
            raise ValueError(f"config key {key} has no help text: give it one with _h()")
        lines.append(f"| `{_yaml_name(f.name)}` | {cell} | {text} |")
    return "\n".join(lines) + "\n"


def stage_table(presets: dict[str, dict] | None = None) -> str:
    """The training stages: each preset's epochs, lr, batch size and schedule."""
    presets = presets or _presets()
    shown = ["cpu", *(p for p in presets if p not in SKIP_PRESETS)]
    lines = ["| stage | " + " | ".join(f"{p}: epochs, lr, batch, schedule" for p in shown)
             + " | what it does |", "|---|" + "---|" * (len(shown) + 1)]
    helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(TrainConfig)}
    for stage in ("task", "reconstructor", "adversaries", "adversarial"):
        cells = []
        for p in shown:
            s = presets[p]["train"][stage]
            cells.append(", ".join(fmt(s[k]).strip("`") for k in STAGE_FIELDS))
        lines.append(f"| `{stage}` | " + " | ".join(cells) + f" | {helps[stage]} |")
    return "\n".join(lines) + "\n"


def render(text: str) -> str:
    presets = _presets()

    def fill(m: re.Match) -> str:
        name = m.group(1)
        if name == "stages":
            body = stage_table(presets)
        elif name in SECTIONS:
            body = table(name, presets)
        else:
            raise SystemExit(f"unknown config table {name!r}: choose from "
                             f"{[*SECTIONS, 'stages']}")
        return f"<!-- config:{name} -->\n{body}<!-- /config:{name} -->"

    return MARKER.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    text = PAGE.read_text()
    want = render(text)
    if args.check:
        if want != text:
            print(f"{PAGE}: a table differs from config_schema.py: run "
                  "`python -m deepobfuscator.config_docs --write`", file=sys.stderr)
            return 1
        return 0
    if args.write:
        from .io import atomic_write_text

        atomic_write_text(PAGE, want)
        return 0
    presets = _presets()
    for name in SECTIONS:
        print(f"## {name}\n\n{table(name, presets)}")
    print(f"## stages\n\n{stage_table(presets)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
