"""Sweeps: a tiny two-point grid trained, audited against one baseline, drawn; a rerun
skips what is done."""

import json

import pytest

from deepobfuscator import sweep as sweep_mod
from deepobfuscator.audit import AuditSettings
from deepobfuscator.cli import main
from deepobfuscator.config import ConfigError
from deepobfuscator.demo import QUICK_OVERRIDES

BASE = [*QUICK_OVERRIDES, "threads=1", "privacy.method=deepobfuscator"]  # lambda acts
TINY_AUDIT = AuditSettings(max_epochs=2, whitebox_images=4, whitebox_steps=10, grid_images=4,
                           progress=False)


def test_grid_parsing_and_points():
    grid = sweep_mod.parse_grid(["privacy.lambda=0,1,3", "data.image_size=[32,32],[48,48]"])
    assert grid == {"privacy.lambda": ["0", "1", "3"], "data.image_size": ["[32,32]", "[48,48]"]}
    points = sweep_mod.grid_points(grid)
    assert len(points) == 6
    assert points[0].name == "lambda=0_image_size=32-32"
    assert points[0].params == {"privacy.lambda": 0, "data.image_size": [32, 32]}
    assert points[0].overrides == ["privacy.lambda=0", "data.image_size=[32,32]"]
    for bad in (["privacy.lambda"], ["privacy.lambda=1,"], ["a=1", "a=2"], []):
        with pytest.raises(ConfigError):
            sweep_mod.parse_grid(bad)


def test_pareto_keeps_points_nobody_beats():
    xy = {"a": (0.9, 0.8), "b": (0.8, 0.5), "c": (0.7, 0.6), "d": (0.6, 0.4)}
    assert sweep_mod.pareto(xy) == ["d", "b", "a"]  # c: b is more accurate and more private


def test_two_point_sweep_writes_the_frontier_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep"
    sweep_mod.sweep("cpu", ["privacy.lambda=1,10"], out, settings=TINY_AUDIT, overrides=BASE,
                    progress=False)
    for name in ("frontier.png", "frontier.md", "frontier.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    doc = json.loads((out / "frontier.json").read_text())
    assert [p["name"] for p in doc["points"]] == ["lambda=1", "lambda=10"]
    assert [p["params"] for p in doc["points"]] == [{"privacy.lambda": 1},
                                                    {"privacy.lambda": 10}]
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

    def no_more_work(*args, **kwargs):
        raise AssertionError("a finished point was trained or audited again")

    monkeypatch.setattr(sweep_mod, "audit", no_more_work)
    monkeypatch.setattr(sweep_mod, "train", no_more_work)
    (out / "frontier.png").unlink()
    capsys.readouterr()
    assert main(["sweep", "--grid", "privacy.lambda=1,10", "--out", str(out),
                 "--baseline-run", str(out / "baseline"), "--quiet", *BASE]) == 0
    assert "done, skipped" in capsys.readouterr().out
    assert (out / "frontier.png").is_file()


def test_a_grid_the_default_never_reads_is_refused_before_any_training(tmp_path, capsys):
    with pytest.raises(ConfigError, match="privacy.lambda has no effect with privacy.method="
                                          "none.*privacy.method=deepobfuscator"):
        sweep_mod.sweep("cpu", ["privacy.lambda=1,10"], tmp_path / "s")
    assert not (tmp_path / "s").exists()
    assert main(["sweep", "--grid", "privacy.adversary_refresh=0,1", "--out",
                 str(tmp_path / "s")]) == 2
    assert "no effect" in capsys.readouterr().err
