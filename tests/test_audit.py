import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import PAPER

from deepobfuscator.audit import AuditSettings, audit, summary_table
from deepobfuscator.cli import main
from deepobfuscator.demo import run_demo
from deepobfuscator.errors import UserError
from deepobfuscator.runs import RunError
from deepobfuscator.training import train

FAST = AuditSettings(max_epochs=2, whitebox_images=4, whitebox_steps=5, grid_images=3,
                     progress=False, recogniser="off", prior_images=0)


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    """The quick demo: baseline + the default obfuscator trained and audited end to end."""
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
    obf = res["runs"]["obfuscated"]
    # what ships hides the face: the inverse network, trained the same way on each upload,
    # rebuilds the default's 16 noisy numbers worse than the baseline's full feature map
    # (on the quick demo's 600 faces it learns little even there: 0.19 against 0.23)
    assert obf["inversion"]["msssim"]["mean"] < \
        res["runs"]["baseline"]["inversion"]["msssim"]["mean"] - 0.02
    # the default trains no adversary, so there is none of its own to compare with (the
    # comparison: test_an_adversarially_trained_run_is_compared_with_its_own_adversaries)
    assert obf["run"] == "task-continuation"
    assert not obf.get("training_adversaries") and not obf.get("training_reconstructor")
    assert res["chance"]["reid"]["top1"] == pytest.approx(1 / res["chance"]["reid"]["identities"])
    assert res["settings"]["msssim"]
    scores = np.load(demo_out / "scores.npz")
    assert "obfuscated/inversion_msssim" in scores and "baseline/probe_Male" in scores


def test_report_embeds_its_figures_and_states_chance(demo_out):
    html = (demo_out / "report.html").read_text()
    # reconstructions, ROC curves, and privacy against repeated uploads (a noisy upload)
    assert html.count("data:image/png;base64,") == 3
    assert (demo_out / "figures" / "repeats.png").is_file()
    md = (demo_out / "report.md").read_text()
    assert "## The strongest attacker" in md and "| uploads of each photo |" in md
    assert "Identity, the strongest of every identity attack" in md
    assert "| figure | baseline (no privacy) | obfuscated | chance | change |" in md
    assert "Re-identification top-1" in md and "Male: attacker balanced accuracy" in md
    table = summary_table(demo_out)
    assert "Utility" in table and "obfuscated" in table


def test_every_audited_run_carries_its_phone_budget(demo_out):
    from deepobfuscator.defences import sent_positions
    from deepobfuscator.models import feature_shape
    from deepobfuscator.models.budget import phone_budget
    from deepobfuscator.runs import read_run_config
    from deepobfuscator.wire import encoded_size

    res = json.loads((demo_out / "audit.json").read_text())
    md = (demo_out / "report.md").read_text()
    assert "## Phone budget" in md
    assert md.index("## Phone budget") < md.index("## Reconstructions")  # near the verdict
    for run in ("baseline", "obfuscated"):
        b = res["runs"][run]["budget"]
        assert b["phone_macs"] > 0 and b["cloud_macs"] > 0
        cfg = read_run_config(res["runs_dirs"][run])
        # what travels: the whole map, or the K numbers of a sparse upload as (1, 1, K)
        k = sent_positions(cfg)
        sent = (1, 1, 1, k) if k else (1, *feature_shape(cfg))
        assert b["upload_bytes"] == encoded_size(sent, "int8")
        assert b["upload_numbers"] == (k or int(np.prod(feature_shape(cfg))))
        assert b == phone_budget(cfg).to_dict()
        assert f"{b['phone_share']:.1%}" in md and f"{b['upload_bytes']} B" in md
    # the demo's default sends 16 of its map's numbers; the baseline all of them
    assert res["runs"]["obfuscated"]["budget"]["upload_numbers"] == 16
    assert res["runs"]["obfuscated"]["budget"]["upload_bytes"] == encoded_size(
        (1, 1, 1, 16), "int8")
    # the baseline has no information cap; the report states the bound where there is one
    assert res["runs"]["baseline"]["budget"]["info_cap_bits"] is None
    cap = res["runs"]["obfuscated"]["budget"]["info_cap_bits"]
    rows = [line for line in md.splitlines() if line.startswith("| Information cap")]
    assert rows == ([] if cap is None else [f"| Information cap bound (bits) | none | {cap:.0f} |"])
    assert "Phone share of the compute" in (demo_out / "report.html").read_text()


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

    monkeypatch.setattr("deepobfuscator.training.steps.rotation_step", boom)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(*PAPER), tmp_path / "run", progress=False)
    monkeypatch.setattr("deepobfuscator.training.steps.rotation_step", steps.rotation_step)
    with pytest.raises(RunError, match="training has not finished.*resume"):
        audit(tmp_path / "run", settings=FAST)


def test_an_adversarially_trained_run_is_compared_with_its_own_adversaries(tmp_path,
                                                                          tiny_config):
    run = train(tiny_config(*PAPER), tmp_path / "run", progress=False)
    out = audit(run, None, tmp_path / "audit", FAST)
    obf = json.loads((out / "audit.json").read_text())["runs"]["obfuscated"]
    assert obf["run"] == "deepobfuscator"
    assert set(obf["training_adversaries"]) == {"Male", "Young"}
    for own in obf["training_adversaries"].values():
        assert 0 <= own["balanced_accuracy"] <= 1
    assert 0 <= obf["training_reconstructor"]["msssim"]["mean"] <= 1
    assert "Fresh attackers vs the training-time adversaries" in (out / "report.md").read_text()


def test_an_attacker_cut_short_by_a_time_cap_is_reported_as_a_lower_bound(tmp_path,
                                                                          tiny_config):
    from dataclasses import replace

    run = train(tiny_config("privacy.method=none"), tmp_path / "run", progress=False)
    out = audit(run, None, tmp_path / "audit", replace(FAST, max_attack_seconds=1e-9))
    res = json.loads((out / "audit.json").read_text())
    assert res["runs"]["obfuscated"]["curves"]["inversion"]["stopped"] == "time_limit"
    warned = " ".join(res["warnings"])
    assert "inversion attacker on the obfuscated run stopped at the time limit" in warned
    assert "identity embedder stopped at the time limit" in warned


def test_baseline_with_another_resolution_is_refused(tmp_path, tiny_config):
    run = train(tiny_config(), tmp_path / "run", progress=False)
    base = train(tiny_config("privacy.method=none", "data.image_size=[48,48]"),
                 tmp_path / "base", progress=False)
    with pytest.raises(RunError, match="differs .* in image size"):
        audit(run, base, settings=FAST)


def test_a_second_audit_of_the_same_baseline_reuses_its_figures(demo_out, tmp_path, capsys,
                                                               monkeypatch):
    first = json.loads((demo_out / "audit.json").read_text())
    # every setting the first audit used (device and precision are stored resolved)
    settings = AuditSettings(**{k: v for k, v in first["settings"].items()
                                if k in AuditSettings.__dataclass_fields__
                                and k not in ("device", "precision", "progress")},
                             progress=False)
    runs = first["runs_dirs"]
    import deepobfuscator.audit.runner as runner

    # a cache entry written before audits carried the phone budget: it is filled in
    entries = list((Path(runs["baseline"]) / "audit_cache").glob("*/result.json"))
    assert entries
    for entry in entries:
        cached = json.loads(entry.read_text())
        del cached["budget"]
        entry.write_text(json.dumps(cached))
    calls = []
    real = runner._audit_one
    monkeypatch.setattr(runner, "_audit_one",
                        lambda job, *a: calls.append(job.name) or real(job, *a))
    again = audit(runs["obfuscated"], runs["baseline"], tmp_path / "again", settings)
    assert calls == ["obfuscated"]  # the baseline's attackers were not trained again
    assert "reusing this baseline's audit" in capsys.readouterr().out
    second = json.loads((again / "audit.json").read_text())
    assert second["runs"]["baseline"] == first["runs"]["baseline"]
    assert (again / "attackers/baseline/inversion.safetensors").is_file()
    assert (again / "report.html").is_file()
    # asking by name for the device and precision "auto" resolved to is the same audit
    named = replace(settings, device=first["settings"]["device"],
                    precision=first["settings"]["precision"])
    audit(runs["obfuscated"], runs["baseline"], tmp_path / "named", named)
    assert calls == ["obfuscated", "obfuscated"]


def test_features_through_the_int8_wire_keep_each_channel_within_half_a_step():
    import torch

    from deepobfuscator.attackers.base import FeatureSet
    from deepobfuscator.audit.features import through_wire

    g = torch.Generator().manual_seed(0)
    scale = torch.linspace(0.1, 50, 4).view(1, 4, 1, 1)
    x = torch.relu(torch.randn(300, 4, 3, 3, generator=g)) * scale
    fs = FeatureSet(features=x, images=torch.zeros(300, 3, 8, 8), attributes={})
    assert through_wire(fs, "float32") is fs
    got = through_wire(fs, "int8").features
    assert got.shape == x.shape and not torch.equal(got, x)
    step = x.amax(dim=(2, 3), keepdim=True) / 255  # per image and channel: [0, max] on 256 levels
    assert torch.all((got - x).abs() <= step / 2 + 1e-6)
    assert torch.all(got[x == 0] == 0)


def test_the_demo_audits_through_the_int8_wire_and_float32_changes_nothing(demo_out, tmp_path):
    first = json.loads((demo_out / "audit.json").read_text())
    assert first["settings"]["wire"] == "int8"
    for run in ("baseline", "obfuscated"):  # a real round trip, within half an int8 step
        change = first["runs"][run]["wire"]
        # relative to the largest magnitude: a step spans (max - min) / 255, at most twice
        # the largest magnitude for signed (capped) features, equal to it for rectified ones
        assert change["format"] == "int8" and 0 < change["max_change"] <= 1 / 255 + 1e-6
    runs = first["runs_dirs"]
    out = audit(runs["obfuscated"], None, tmp_path / "f32",
                AuditSettings(max_epochs=1, whitebox_images=2, whitebox_steps=2, grid_images=2,
                              wire="float32", progress=False, prior_images=0))
    res = json.loads((out / "audit.json").read_text())
    assert res["runs"]["obfuscated"]["wire"] == {"format": "float32", "max_change": 0.0,
                                                 "mean_change": 0.0}
    with np.load(demo_out / "scores.npz") as a, np.load(out / "scores.npz") as b:
        p8, p32 = a["obfuscated/task_prob"], b["obfuscated/task_prob"]
    assert np.abs(p32 - p8).max() < 0.05  # int8 is a small change, not a different model


def test_an_unknown_upload_format_is_refused_before_any_work(demo_out, tmp_path):
    runs = json.loads((demo_out / "audit.json").read_text())["runs_dirs"]
    with pytest.raises(RunError, match="unknown upload format 'int4'.*int8"):
        audit(runs["obfuscated"], None, tmp_path / "x", AuditSettings(wire="int4"))
    assert not (tmp_path / "x").exists()


def test_a_run_is_attacked_and_scored_on_data_it_never_saw(tmp_path, tiny_config):
    """Cross-dataset audit: another face population (synthfaces of another seed), with its
    own private attributes, prepared with the run's preprocessing, not the config's."""
    run = train(tiny_config(*PAPER), tmp_path / "run", progress=False)  # Male, Young
    other = tmp_path / "other.yaml"
    other.write_text("data:\n  source: synthfaces\n  synth_seed: 7\n  synth_images: 200\n"
                     "  synth_images_per_identity: 10\n  task: Smiling\n"
                     "  private: [Male, Eyeglasses]\n  image_size: [48, 48]\n  crop: none\n")
    from dataclasses import replace

    out = audit(run, None, tmp_path / "audit", replace(FAST, data_config=str(other)))
    res = json.loads((out / "audit.json").read_text())
    obf = res["runs"]["obfuscated"]
    assert set(obf["attributes"]) == {"Smiling", "Male", "Eyeglasses"}
    assert set(obf["training_adversaries"]) == {"Male"}  # the run's names the data also has
    d = res["data"]
    assert d["trained_on"]["private"] == ["Male", "Young"]
    assert d["audited_on"]["config"] == str(other)
    assert d["audited_on"]["image_size"] == [32, 32] and d["audited_on"]["crop"] == "square"
    assert d["attacker"]["images"] + d["test"]["images"] < 200  # the other data's roles
    own = audit(run, None, tmp_path / "own", FAST)
    own_res = json.loads((own / "audit.json").read_text())
    assert own_res["data"]["audited_on"] == "the run's own attacker and test splits"
    assert obf["utility"]["accuracy"] != own_res["runs"]["obfuscated"]["utility"]["accuracy"]
    assert "Cross-dataset audit" in (out / "report.md").read_text()
    assert "Cross-dataset audit" not in (own / "report.md").read_text()


def test_audit_takes_a_data_config_on_the_command_line(tmp_path):
    from deepobfuscator.cli import audit_settings, build_parser

    args = build_parser().parse_args(["audit", "RUN", "--data", "configs/lfw-shared.yaml"])
    assert audit_settings(args).data_config == "configs/lfw-shared.yaml"
    assert audit_settings(build_parser().parse_args(["audit", "RUN"])).data_config == ""


def test_identity_attacks_report_verification_and_their_raw_photo_ceiling(tmp_path,
                                                                          tiny_config):
    run = train(tiny_config("privacy.method=none"), tmp_path / "run", progress=False)
    out = audit(run, None, tmp_path / "audit", FAST)
    reid = json.loads((out / "audit.json").read_text())["runs"]["obfuscated"]["reid"]
    for side in ("raw", "reconstruction"):
        v = reid["verification"][side]
        assert v["pairs"] == 2 * v["same_pairs"] > 0 and 0 <= v["auc"] <= 1
    md = (out / "report.md").read_text()
    assert "Face verification AUC (photo vs reconstruction)" in md
    assert "Identity attackers on the raw test photos (their ceiling)" in md
    assert "dlib" not in json.dumps(reid)  # recogniser="off"


@pytest.mark.skipif(not __import__("deepobfuscator.attackers.reid", fromlist=["x"])
                    .dlib_available(), reason="the [recognition] extra is not installed")
def test_dlibs_recogniser_attacks_when_installed(tmp_path, tiny_config):
    from dataclasses import replace

    run = train(tiny_config("privacy.method=none"), tmp_path / "run", progress=False)
    out = audit(run, None, tmp_path / "audit", replace(FAST, recogniser="auto"))
    reid = json.loads((out / "audit.json").read_text())["runs"]["obfuscated"]["reid"]
    assert 0 <= reid["dlib_raw_probes"]["top1"] <= 1
    assert 0 <= reid["dlib_verification"]["reconstruction"]["auc"] <= 1
    assert "dlib recogniser" in (out / "report.md").read_text()


def test_reid_chance_counts_only_the_people_the_gallery_can_hold():
    """Singletons cannot be re-identified (they have no second photo), so chance is one in
    the number of people with 2+ test photos: the gallery's size."""
    import torch

    from deepobfuscator.attackers.base import FeatureSet
    from deepobfuscator.attackers.reid import gallery_probe_split, reid_scores
    from deepobfuscator.audit.runner import _chance

    ids = np.array([0, 0, 1, 2, 2, 2, 3, 4])
    imgs = torch.rand(len(ids), 3, 16, 16)
    test = FeatureSet(torch.zeros(len(ids), 1, 2, 2), imgs, {"Smiling": np.zeros(len(ids))},
                      ids)
    from deepobfuscator.config import load_config
    from deepobfuscator.data.base import FaceDataset

    role = FaceDataset((imgs * 255).byte().permute(0, 2, 3, 1).numpy(),
                       np.zeros((len(ids), 1), np.int8), ["Smiling"], ids,
                       [str(i) for i in range(len(ids))], np.zeros(len(ids), np.int8))
    cfg = load_config("cpu", ["data.private=[]"])
    chance = _chance({"attacker": role, "test": role}, test, cfg)["reid"]
    g, p = gallery_probe_split(ids, 0)
    emb = torch.randn(len(ids), 4)
    assert chance["identities"] == 2
    assert chance["top1"] == reid_scores(emb[g], ids[g], emb[p], ids[p])[0]["chance_top1"]


def test_the_demo_ends_with_an_export_its_printed_serve_command_serves(demo_out, capsys):
    """`make demo` then the `deepobfuscator serve ...` line it prints: the export and the
    audit it names start a server with the page and the attacker view."""
    import httpx
    from deploy_helpers import LiveServer

    from deepobfuscator.deploy.server import create_app

    export = demo_out.parent / "export"
    assert (export / "manifest.json").is_file()
    app = create_app(export, attacker_view=demo_out)
    with LiveServer(app) as server:
        assert "static/app.js" in httpx.get(f"{server.url}/").text
        info = httpx.get(f"{server.url}/v1/attacker-view").json()
        assert info["enabled"] and info["baseline"]["features"]["shape"]


def test_an_audit_repeated_with_its_seed_gives_the_same_figures(tmp_path, tiny_config):
    """Every attacker is seeded (init, batch order, the upload noise): the same audit twice
    reports the same numbers, so a figure can be reproduced and a cache can be trusted."""
    run = train(tiny_config(), tmp_path / "run", progress=False)
    # a fixed thread count: `threads: 0` takes the cores free at the start, and float sums
    # split over another count of threads round differently
    fixed = replace(FAST, threads=1)
    first = json.loads((audit(run, None, tmp_path / "a", fixed) / "audit.json").read_text())
    second = json.loads((audit(run, None, tmp_path / "b", fixed) / "audit.json").read_text())

    def timeless(x):  # wall-clock seconds are the one thing allowed to differ
        if isinstance(x, dict):
            return {k: timeless(v) for k, v in x.items() if k != "seconds"}
        return [timeless(v) for v in x] if isinstance(x, list) else x

    first, second = timeless(first), timeless(second)
    assert first["runs"] == second["runs"] and first["chance"] == second["chance"]
    assert first["runs"]["obfuscated"]["attributes"]["Male"]["balanced_accuracy"] > 0


def test_the_task_answer_floor_is_the_best_table_of_answers():
    """A hand-computed case: with the answer 1, the attribute is 1 in 3 of 4 training rows,
    with the answer 0 in 1 of 4: the table predicts the attribute from the answer, and on
    test rows where that holds 3 times in 4 per class its balanced accuracy is 0.75."""
    from deepobfuscator.metrics import answer_floor

    answers = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    attr = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    assert answer_floor(answers, attr, answers, attr) == 0.75
    # two answers: the pair (1, 1) alone marks the attribute; an unseen pair predicts 0
    two = np.array([[1, 1], [1, 1], [1, 0], [0, 1], [0, 0], [0, 0]])
    target = np.array([1, 1, 0, 0, 0, 0])
    assert answer_floor(two, target, two, target) == 1.0
    assert answer_floor(two, target, np.array([[1, 1], [2, 2]]), np.array([1, 0])) == 1.0
    # answers that say nothing leave chance
    assert answer_floor(np.zeros(6), target, np.zeros(6), target) == 0.5


def test_the_audit_records_and_reports_the_task_answer_floor(demo_out):
    res = json.loads((demo_out / "audit.json").read_text())
    task = res["config"]["data"]["task"]
    # recomputed by hand: on the attacker split, each Smiling answer predicts the Male
    # class under which it is relatively more frequent; balanced accuracy on the test split
    from deepobfuscator.data.splits import make_splits
    from deepobfuscator.runs import read_run_config

    roles = make_splits(read_run_config(res["runs_dirs"]["obfuscated"]))
    att, test = roles["attacker"], roles["test"]
    for a in res["config"]["data"]["private"]:
        ans, y = att.attribute(task), att.attribute(a).astype(bool)
        rule = {v: int(((ans == v) & y).sum() / max(y.sum(), 1)
                       > ((ans == v) & ~y).sum() / max((~y).sum(), 1)) for v in (0, 1)}
        pred = np.array([rule[v] for v in test.attribute(task)])
        truth = test.attribute(a).astype(bool)
        want = 0.5 * ((pred[truth] == 1).mean() + (pred[~truth] == 0).mean())
        assert res["chance"]["attributes"][a]["task_answer_floor"] == pytest.approx(want)
    assert "Floor: an attacker who sees only the true answer" in \
        (demo_out / "report.md").read_text()


def test_results_records_carry_each_runs_figures_and_tables_average_them(demo_out, tmp_path):
    """Results as data: a record per audited run, with the audit's own figures; adding the
    same audit again replaces it; a table is the mean [min-max] of an arm's records."""
    from deepobfuscator.audit import records
    from deepobfuscator.audit.result import AuditResult

    result = AuditResult.load(demo_out)
    path = tmp_path / "records.jsonl"
    ob = records.record(demo_out, "default")
    base = records.record(demo_out, "baseline", run="baseline")
    assert ob["figures"] == result.values("obfuscated") and ob["figures"]
    assert base["figures"] == result.values("baseline")
    assert ob["budget"]["upload_bytes"] == 48 and base["budget"]["upload_bytes"] > 48
    assert ob["training_seed"] == result.data["config"]["seed"]
    assert ob["floors"]["attribute:Male"] == result.data["chance"]["attributes"]["Male"][
        "task_answer_floor"]
    records.add([ob, base], path)
    records.add([ob], path)  # the same audit, run and arm: replaced, not doubled
    assert len(records.load(path)) == 2
    twin = {**ob, "audit": "/elsewhere", "figures": {k: v + 0.1 for k, v in
                                                      ob["figures"].items()}}
    records.add([twin], path)
    got = records.load(path)
    male = ob["figures"]["attribute:Male"]
    want = records.cell([male, male + 0.1])
    assert want.startswith(f"{male + 0.05:.3f} [")
    text = records.table(got, ["baseline", "default"], ["attribute:Male"])
    assert f"| attribute:Male | {records.cell([base['figures']['attribute:Male']])} | {want} |" \
        in text and "default (2)" in text
    with pytest.raises(UserError, match=r"no records of arm\(s\) \['robust'\]"):
        records.table(got, ["robust"], ["attribute:Male"])
    # chance and floor come from the table's own arms: another protocol's records (other
    # private attributes, other floors) change neither; the default rows are what they hold
    floor = ob["floors"]["attribute:Male"]
    other = {**ob, "arm": "elsewhere", "audit": "/other",
             "floors": {"attribute:Male": floor + 0.2}, "chance": {"attribute:Male": 0.3},
             "figures": {"attribute:Youth": 0.6}}
    text = records.table([other, *got], ["default"])
    male_row = next(line for line in text.splitlines() if line.startswith("| attribute:Male"))
    assert male_row.endswith(f" | {floor:.3f} |") and "0.300" not in male_row
    assert "attribute:Youth" not in text and text.count("\n| attribute:") == sum(
        k.startswith("attribute:") and k.count(":") == 1 for k in ob["figures"])
    mixed = records.table([other, *got], ["default", "elsewhere"], ["attribute:Male"])
    assert f"| {floor + 0.2:.3f} / {floor:.3f} |" in mixed, "differing floors are all shown"
    with pytest.raises(UserError, match="has no 'baseline' run"):
        records.record(_without_baseline(demo_out, tmp_path), "x", run="baseline")


def _without_baseline(audit_dir, tmp_path):
    import json

    d = tmp_path / "one-run"
    d.mkdir()
    data = json.loads((audit_dir / "audit.json").read_text())
    data["runs"].pop("baseline")
    (d / "audit.json").write_text(json.dumps(data))
    return d

