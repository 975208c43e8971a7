"""Sweeps: a tiny two-point grid trained, audited against one baseline, drawn; a rerun
skips what is done."""

import json

import pytest

from deepobfuscator import sweep as sweep_mod
from deepobfuscator.audit import AuditSettings
from deepobfuscator.cli import main
from deepobfuscator.config import ConfigError

BASE = ["threads=1", "privacy.method=deepobfuscator"]  # lambda acts
TINY_AUDIT = AuditSettings(max_epochs=2, whitebox_images=4, whitebox_steps=10, grid_images=4,
                           progress=False, prior_images=0, repeats="1")


def test_grid_parsing_and_points():
    grid = sweep_mod.parse_grid(["privacy.paper.lambda=0,1,3", "data.image_size=[32,32],[48,48]"])
    assert grid == {"privacy.paper.lambda": ["0", "1", "3"],
                    "data.image_size": ["[32,32]", "[48,48]"]}
    points = sweep_mod.grid_points(grid)
    assert len(points) == 6
    assert points[0].name == "lambda=0_image_size=32-32"
    assert points[0].params == {"privacy.paper.lambda": 0, "data.image_size": [32, 32]}
    assert points[0].overrides == ["privacy.paper.lambda=0", "data.image_size=[32,32]"]
    for bad in (["privacy.paper.lambda"], ["privacy.paper.lambda=1,"], ["a=1", "a=2"], []):
        with pytest.raises(ConfigError):
            sweep_mod.parse_grid(bad)


def test_pareto_keeps_points_nobody_beats():
    xy = {"a": (0.9, 0.8), "b": (0.8, 0.5), "c": (0.7, 0.6), "d": (0.6, 0.4)}
    assert sweep_mod.pareto(xy) == ["d", "b", "a"]  # c: b is more accurate and more private


def test_two_point_sweep_writes_the_frontier_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep"
    sweep_mod.sweep("quick", ["privacy.paper.lambda=1,10"], out, settings=TINY_AUDIT,
                    overrides=BASE,
                    progress=False)
    for name in ("frontier.png", "frontier.md", "frontier.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    doc = json.loads((out / "frontier.json").read_text())
    assert [p["name"] for p in doc["points"]] == ["lambda=1", "lambda=10"]
    assert [p["params"] for p in doc["points"]] == [{"privacy.paper.lambda": 1},
                                                    {"privacy.paper.lambda": 10}]
    assert doc["baseline"]["run"] == str(out / "baseline") and doc["baseline"]["figures"]
    assert set(doc["figures"]) >= {"inversion_msssim", "attribute:Male", "reid_top1"}
    audit = json.loads((out / "points" / "lambda=10" / "audit" / "audit.json").read_text())
    fig = doc["points"][1]["figures"]
    assert fig["utility_accuracy"] == audit["runs"]["obfuscated"]["utility"]["accuracy"]
    assert fig["attribute:Male"] == (
        audit["runs"]["obfuscated"]["attributes"]["Male"]["balanced_accuracy"])
    assert doc["figures"]["inversion_msssim"]["chance"] == (
        audit["chance"]["reconstruction_mean_image"]["msssim"]["mean"])
    assert all(f["frontier"] for f in doc["figures"].values())
    md = (out / "frontier.md").read_text()
    assert "baseline (no privacy)" in md and "lambda=1 " in md and "| chance |" in md
    _check_budget_columns(out, doc, md)

    def no_more_work(*args, **kwargs):
        raise AssertionError("a finished point was trained or audited again")

    monkeypatch.setattr(sweep_mod, "run_point", no_more_work)  # the study runner's point
    monkeypatch.setattr(sweep_mod, "train", no_more_work)
    (out / "frontier.png").unlink()
    capsys.readouterr()
    assert main(["sweep", "--config", "quick", "--grid", "privacy.paper.lambda=1,10",
                 "--out", str(out),
                 "--baseline-run", str(out / "baseline"), "--quiet", *BASE]) == 0
    assert "done, skipped" in capsys.readouterr().out
    assert (out / "frontier.png").is_file()


def _check_budget_columns(out, doc, md):
    """Every point and the baseline carry the phone budget of their config, in frontier.json
    and as columns of frontier.md; an audit.json from before budgets gets it from the config."""
    from deepobfuscator.config import load_config, no_privacy_overrides
    from deepobfuscator.models.budget import phone_budget

    header = next(line for line in md.splitlines() if line.startswith("| point |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[-5:] == ["phone MACs (M)", "cloud MACs (M)", "phone share",
                         "upload bytes (int8)", "on frontier of"]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in md.splitlines() if line.startswith("| ") and line != header}
    expected = {p["name"]: phone_budget(load_config("quick", [*BASE, *o]))
                for p, o in zip(doc["points"],
                                (["privacy.paper.lambda=1"], ["privacy.paper.lambda=10"]),
                                strict=True)}
    expected["baseline"] = phone_budget(load_config("quick", [*BASE, *no_privacy_overrides()]))
    entries = {p["name"]: p for p in doc["points"]}
    entries["baseline"] = doc["baseline"]
    for name, b in expected.items():
        got = entries[name]["budget"]
        assert got["phone_macs"] == b.phone_macs and got["upload_bytes"] == b.upload_bytes
        assert got["phone_share"] == round(b.phone_share, 4) and got["cloud_macs"] > 0
        assert got["phone_macs_m"] == round(b.phone_macs / 1e6, 2)
        assert got["cloud_macs_m"] == round(b.cloud_macs / 1e6, 2)
        row = rows["baseline (no privacy)" if name == "baseline" else name]
        assert row[-5:-1] == [f"{b.phone_macs / 1e6:.1f}", f"{b.cloud_macs / 1e6:.1f}",
                              f"{round(b.phone_share, 4):.1%}", str(b.upload_bytes)]
    assert rows["chance"][-4:] == ["", "", "", ""]

    for audit_json in (out / "points").glob("*/audit/audit.json"):  # written before budgets
        res = json.loads(audit_json.read_text())
        for r in res["runs"].values():
            del r["budget"]
        audit_json.write_text(json.dumps(res))
    points = sweep_mod.grid_points({"privacy.paper.lambda": ["1", "10"]})
    again = sweep_mod.write_frontier(out, points, out / "baseline",
                                     {"privacy.paper.lambda": ["1", "10"]})
    assert [p["budget"] for p in again["points"]] == [p["budget"] for p in doc["points"]]
    assert again["baseline"]["budget"] == doc["baseline"]["budget"]


def test_a_grid_the_default_never_reads_is_refused_before_any_training(tmp_path, capsys):
    with pytest.raises(ConfigError, match="privacy.paper.lambda has no effect with privacy.method="
                                          "task-continuation.*set privacy.method"):
        sweep_mod.sweep("cpu", ["privacy.paper.lambda=1,10"], tmp_path / "s")
    assert not (tmp_path / "s").exists()
    assert main(["sweep", "--grid", "privacy.paper.adversary_refresh=0,1", "--out",
                 str(tmp_path / "s")]) == 2
    assert "no effect" in capsys.readouterr().err
