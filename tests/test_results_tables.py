"""The README's and the results page's tables are the records' (results/records.jsonl),
never typed: a test fails when someone edits a page or the records without the other
(benchmarks/results_tables.py --write)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import results_tables  # noqa: E402

from deepobfuscator.audit import records  # noqa: E402

RECORDS = records.load(ROOT / "results" / "records.jsonl")


@pytest.mark.parametrize("page", results_tables.PAGES)
def test_every_table_on_the_page_is_generated_from_the_records(page: str) -> None:
    text = (ROOT / page).read_text()
    assert results_tables.MARKER.search(text), f"{page} has no generated table"
    assert results_tables.render(text, RECORDS) == text


def test_every_table_is_on_a_page() -> None:
    shown = {m.group(1) for page in results_tables.PAGES
             for m in results_tables.MARKER.finditer((ROOT / page).read_text())}
    assert shown == set(results_tables.TABLES)


def test_a_stale_table_is_rewritten_and_an_unknown_one_refused() -> None:
    stale = "intro\n<!-- table:headline -->\n| typed by hand |\n<!-- /table:headline -->\nend\n"
    out = results_tables.render(stale, RECORDS)
    assert "typed by hand" not in out and out.startswith("intro\n") and out.endswith("end\n")
    assert out == results_tables.render(out, RECORDS)  # writing twice changes nothing
    with pytest.raises(SystemExit, match="unknown table 'nope'"):
        results_tables.render("<!-- table:nope -->\nx\n<!-- /table:nope -->", RECORDS)


def test_the_headline_takes_the_strongest_family_and_names_a_missing_record() -> None:
    base = {"arm": "baseline", "training_seed": 0, "attacker_seed": 0, "task": "Smiling",
            "budget": {"phone_share": 0.32, "upload_bytes": 8472},
            "figures": {"inversion_msssim": 0.9, "prior_msssim": 0.95, "attribute:Male": 0.9,
                        "attribute:Young": 0.7, "identity_top1": 0.2, "utility_bal_acc": 0.93},
            "floors": {"inversion_msssim": 0.45, "attribute:Male": 0.57,
                       "attribute:Young": 0.6}, "chance": {"identity_top1": 0.021}}
    default = {**base, "arm": "default", "budget": {"phone_share": 0.34, "upload_bytes": 48},
               "figures": {**base["figures"], "inversion_msssim": 0.5, "prior_msssim": 0.48}}
    text = results_tables.headline([base, default])
    assert "| 0.950 | **0.500** | 0.450 (the mean face) |" in text  # max of the two inversions
    assert "| 32% / 8,472 B | **34% / 48 B** |" in text
    with pytest.raises(SystemExit, match="no record of arm 'default'"):
        results_tables.headline([base])


def test_an_arms_table_is_the_mean_and_range_of_every_record_of_an_arm() -> None:
    rec = lambda arm, v: {"arm": arm, "figures": {"attribute:Male": v},  # noqa: E731
                          "chance": {"attribute:Male": 0.5}, "floors": {"attribute:Male": 0.66}}
    make = results_tables._arms_table({"a": "arm A"}, ["attribute:Male"])
    text = make([rec("a", 0.6), rec("a", 0.7), rec("b", 0.9)])
    assert "| Male: strongest probe, balanced accuracy | 0.650 [0.600-0.700] | 0.500 | 0.660 |" \
        in text and "arm A (2)" in text
