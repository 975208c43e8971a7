"""Every preset's resolved config is pinned: changing what a preset resolves to (a new
default, a renamed key) fails here until tests/preset_fingerprints.json is updated, and
the CHANGELOG must then say why (issue 34). Regenerate the file with

    python -c "import json; from deepobfuscator.config import load_config, preset_names; \\
print(json.dumps({p: load_config(p).fingerprint() for p in preset_names()}, indent=1, \\
sort_keys=True))" > tests/preset_fingerprints.json
"""

from __future__ import annotations

import json
from pathlib import Path

from deepobfuscator.config import load_config, preset_names

PINNED = Path(__file__).with_name("preset_fingerprints.json")


def test_every_preset_resolves_as_pinned() -> None:
    pinned = json.loads(PINNED.read_text())
    now = {p: load_config(p).fingerprint() for p in preset_names()}
    assert set(now) == set(pinned), "a preset was added or removed: update the pinned file"
    changed = sorted(p for p in now if now[p] != pinned[p])
    assert not changed, (f"presets {changed} now resolve differently: if intended, update "
                         f"{PINNED.name} and say why in CHANGELOG.md")
