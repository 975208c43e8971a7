"""The README's headline table is the records' (results/records.jsonl), not typed: it
fails when someone edits one without the other (benchmarks/readme_table.py --write)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import readme_table  # noqa: E402

from deepobfuscator.audit import records  # noqa: E402


def test_the_readme_table_is_generated_from_the_records() -> None:
    want = readme_table.table(records.load(ROOT / "results" / "records.jsonl"))
    assert readme_table.readme_block((ROOT / "README.md").read_text()) == want


def test_the_table_takes_the_strongest_family_and_names_a_missing_record(tmp_path) -> None:
    base = {"arm": "baseline", "training_seed": 0, "attacker_seed": 0, "task": "Smiling",
            "budget": {"phone_share": 0.32, "upload_bytes": 8472},
            "figures": {"inversion_msssim": 0.9, "prior_msssim": 0.95, "attribute:Male": 0.9,
                        "attribute:Young": 0.7, "identity_top1": 0.2, "utility_bal_acc": 0.93},
            "floors": {"inversion_msssim": 0.45, "attribute:Male": 0.57,
                       "attribute:Young": 0.6}, "chance": {"identity_top1": 0.021}}
    default = {**base, "arm": "default", "budget": {"phone_share": 0.34, "upload_bytes": 48},
               "figures": {**base["figures"], "inversion_msssim": 0.5, "prior_msssim": 0.48}}
    text = readme_table.table([base, default])
    assert "| 0.950 | **0.500** | 0.450 (the mean face) |" in text  # max of the two inversions
    assert "| 32% / 8,472 B | **34% / 48 B** |" in text
    with pytest.raises(SystemExit, match="no record of arm 'default'"):
        readme_table.table([base])
