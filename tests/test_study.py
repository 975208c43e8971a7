"""Studies (issue 35): arms x seeds trained and audited through one runner, on this machine
or on Ray, with the same figures either way (every point is seeded)."""

import importlib.util
import json

import pytest

from deepobfuscator.audit import records
from deepobfuscator.study import StudyError, StudySpec, run_study

TINY_AUDIT = {"max_epochs": 1, "whitebox_images": 2, "whitebox_steps": 2, "grid_images": 2,
              "recogniser": "off", "wire": "int8", "prior_images": 0, "repeats": "1",
              "pooled": "1", "probe_families": "linear"}


def _spec(tmp_path, **extra) -> StudySpec:
    from conftest import TINY

    return StudySpec(config="cpu", overrides=[*TINY, "privacy.method=none",
                                              "train.adversarial.epochs=0"],
                     arms={"plain": [], "noisy": ["privacy.feature_noise=0.5"]},
                     seeds=[0, 1], attacker_offsets=[0], audit=dict(TINY_AUDIT), **extra)


def _figures(out) -> dict:
    return {(r["arm"], r["training_seed"]): r["figures"]
            for r in records.load(out / "records.jsonl")}


@pytest.fixture(scope="module")
def local_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    return run_study(_spec(tmp), tmp / "local", executor="local", threads=1)


def test_a_local_study_trains_and_audits_every_point_and_records_each(local_study):
    figs = _figures(local_study)
    assert sorted(figs) == [("noisy", 0), ("noisy", 1), ("plain", 0), ("plain", 1)]
    assert all("attribute:Male" in f and "utility_accuracy" in f for f in figs.values())
    assert figs[("plain", 0)] != figs[("plain", 1)]  # the seeds differ
    text = (local_study / "summary.md").read_text()
    assert "4 points" in text and "4 done" in text and "| plain-s1 | done |" in text


def test_a_study_run_again_skips_what_is_done(local_study, tmp_path):
    before = (local_study / "records.jsonl").read_text()
    out = run_study(_spec(tmp_path), local_study, executor="local", threads=1)
    assert "4 skipped" in (out / "summary.md").read_text()
    assert (out / "records.jsonl").read_text() == before


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="Ray is not installed: pip install 'deepobfuscator[cluster]'")
def test_the_same_study_on_a_local_ray_gives_the_same_figures(local_study, tmp_path,
                                                             monkeypatch):
    import ray

    # as the executor starts it (workers at normal priority), but a machine where Ray
    # itself cannot start skips, saying why, instead of failing the suite
    monkeypatch.setenv("RAY_worker_niceness", "0")
    try:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - Ray's own start-up errors
        pytest.skip(f"Ray does not start on this machine: {exc}")
    try:
        out = run_study(_spec(tmp_path), tmp_path / "ray", executor="ray", threads=1)
    finally:
        ray.shutdown()
    assert _figures(out) == _figures(local_study)
    assert (out / "records.jsonl").read_text().count("\n") == 4


def test_a_failing_point_is_reported_tried_again_and_the_others_finish(tmp_path, caplog):
    spec = _spec(tmp_path)
    spec.arms = {"plain": [], "broken": ["model.width=-1"]}
    spec.seeds = [0]
    with pytest.raises(StudyError, match=r"1 point\(s\) failed \(broken-s0\)"):
        run_study(spec, tmp_path / "s", executor="local", threads=1)
    text = (tmp_path / "s" / "summary.md").read_text()
    assert "| broken-s0 | failed |" in text and "model.width" in text
    assert "| plain-s0 | done |" in text
    assert "trying once more" in caplog.text


@pytest.mark.parametrize("doc,message", [
    ({"config": "cpu"}, "needs `config` and `arms`"),
    ({"config": "cpu", "arms": {"a b": []}}, "arm name 'a b'"),
    ({"config": "cpu", "arms": {"a": ["nokey"]}}, "key=value overrides"),
    ({"config": "cpu", "arms": {"a": []}, "seeds": [0, 0]}, "distinct integers"),
    ({"config": "cpu", "arms": {"a": []}, "audit": {"seed": 3}}, r"audit setting\(s\) \['seed'\]"),
    ({"config": "cpu", "arms": {"a": []}, "colour": 1}, r"unknown key\(s\) \['colour'\]"),
])
def test_bad_study_files_are_one_line_errors(tmp_path, doc, message):
    path = tmp_path / "study.yaml"
    path.write_text(json.dumps(doc))
    with pytest.raises(StudyError, match=message) as err:
        StudySpec.load(path)
    assert "\n" not in str(err.value)
