"""docs/configuration.md's tables are written from the config's dataclasses: every key with
its help text and default, and the presets that differ; a test fails when the page and
the code disagree (`python -m deepobfuscator.config_docs --write`)."""

from __future__ import annotations

import dataclasses

import pytest

from deepobfuscator import config_docs
from deepobfuscator.config_schema import Config


def test_the_page_is_written_from_the_dataclasses() -> None:
    text = config_docs.PAGE.read_text()
    assert {m.group(1) for m in config_docs.MARKER.finditer(text)} == \
        {*config_docs.SECTIONS, "stages"}
    assert config_docs.render(text) == text


def test_every_key_has_help_and_its_row_names_the_presets_that_differ() -> None:
    def keys(cls: type, prefix: str = "") -> list[str]:
        out = []
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.type) or f.name in ("data", "model", "privacy",
                                                             "train", "robust", "paper"):
                continue
            assert f.metadata.get("help"), f"{prefix}{f.name} has no help text"
            out.append(f.name)
        return out

    assert keys(Config)
    model = config_docs.table("model")
    # the paper preset sets width 1.0 where the default is 0.25
    assert "| `width` | 0.25 (" in model and "paper: 1" in model
    paper = config_docs.table("privacy.paper")
    assert "| `lambda` | 10 |" in paper  # written as YAML spells it
    assert "`lambda`" not in config_docs.table("privacy")  # the paper's method owns it


def test_a_stale_table_is_rewritten_and_an_unknown_one_refused() -> None:
    stale = "x\n<!-- config:data -->\n| typed |\n<!-- /config:data -->\ny\n"
    out = config_docs.render(stale)
    assert "| typed |" not in out and "| `source` |" in out
    with pytest.raises(SystemExit, match="unknown config table 'nope'"):
        config_docs.render("<!-- config:nope -->\nz\n<!-- /config:nope -->")
