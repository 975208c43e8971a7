import json

import numpy as np
import pytest

from deepobfuscator.audit import AuditSettings, audit, summary_table
from deepobfuscator.cli import main
from deepobfuscator.demo import run_demo
from deepobfuscator.runs import RunError
from deepobfuscator.training import train

FAST = AuditSettings(max_epochs=2, whitebox_images=4, whitebox_steps=5, grid_images=3,
                     progress=False)


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    """The quick demo: baseline + DeepObfuscator trained and audited end to end."""
    return run_demo(tmp_path_factory.mktemp("demo"), quick=True, progress=False)


def test_demo_writes_every_audit_artifact(demo_out):
    for name in ("audit.json", "scores.npz", "report.md", "report.html",
                 "figures/reconstructions.png", "figures/roc.png",
                 "attackers/reid_embedder.safetensors",
                 "attackers/baseline/inversion.safetensors",
                 "attackers/obfuscated/probe_Male.safetensors"):
        assert (demo_out / name).is_file(), name
    res = json.loads((demo_out / "audit.json").read_text())
    for run in ("baseline", "obfuscated"):
        r = res["runs"][run]
        assert 0 <= r["inversion"]["msssim"]["mean"] <= 1
        assert set(r["attributes"]) == {"Smiling", "Male"}
        assert {"accuracy", "balanced_accuracy", "roc_auc", "majority_rate"} <= set(
            r["attributes"]["Male"])
        assert "top1" in r["reid"]["reconstruction_probes"]
        assert r["curves"]["inversion"]["val_loss"]
    assert "training_adversaries" in res["runs"]["obfuscated"]
    assert res["chance"]["reid"]["top1"] == pytest.approx(1 / res["chance"]["reid"]["identities"])
    assert res["settings"]["msssim"]
    scores = np.load(demo_out / "scores.npz")
    assert "obfuscated/inversion_msssim" in scores and "baseline/probe_Male" in scores


def test_report_embeds_its_figures_and_states_chance(demo_out):
    html = (demo_out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2
    md = (demo_out / "report.md").read_text()
    assert "| figure | baseline (no privacy) | obfuscated | chance | change |" in md
    assert "Re-identification top-1" in md and "Male: attacker balanced accuracy" in md
    table = summary_table(demo_out)
    assert "Utility" in table and "obfuscated" in table


def test_audit_of_a_folder_without_a_run_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="not a run folder"):
        audit(tmp_path / "empty", settings=FAST)
    assert main(["audit", str(tmp_path / "missing")]) == 2
    assert "run folder not found" in capsys.readouterr().err


def test_unfinished_run_says_how_to_resume(tmp_path, tiny_config, monkeypatch):
    from deepobfuscator.training import steps

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("deepobfuscator.training.trainer.rotation_step", boom)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(), tmp_path / "run", progress=False)
    monkeypatch.setattr("deepobfuscator.training.trainer.rotation_step", steps.rotation_step)
    with pytest.raises(RunError, match="training has not finished.*resume"):
        audit(tmp_path / "run", settings=FAST)


def test_baseline_with_another_resolution_is_refused(tmp_path, tiny_config):
    run = train(tiny_config(), tmp_path / "run", progress=False)
    base = train(tiny_config("privacy.method=none", "data.image_size=[48,48]"),
                 tmp_path / "base", progress=False)
    with pytest.raises(RunError, match="differs .* in image size"):
        audit(run, base, settings=FAST)


def test_a_second_audit_of_the_same_baseline_reuses_its_figures(demo_out, tmp_path, capsys,
                                                               monkeypatch):
    first = json.loads((demo_out / "audit.json").read_text())
    settings = AuditSettings(**{k: first["settings"][k] for k in (
        "seed", "max_epochs", "patience", "whitebox_images", "whitebox_steps", "grid_images")},
        progress=False)
    runs = first["runs_dirs"]
    import deepobfuscator.audit.runner as runner

    calls = []
    real = runner._audit_one
    monkeypatch.setattr(runner, "_audit_one", lambda *a: calls.append(a[0]) or real(*a))
    again = audit(runs["obfuscated"], runs["baseline"], tmp_path / "again", settings)
    assert calls == ["obfuscated"]  # the baseline's attackers were not trained again
    assert "reusing this baseline's audit" in capsys.readouterr().out
    second = json.loads((again / "audit.json").read_text())
    assert second["runs"]["baseline"] == first["runs"]["baseline"]
    assert (again / "attackers/baseline/inversion.safetensors").is_file()
    assert (again / "report.html").is_file()
