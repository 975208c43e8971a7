import importlib.util
import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch

from deepobfuscator import __version__
from deepobfuscator.deploy.export import (
    ExportError,
    check_onnx_parity,
    export_run,
    load_export,
    task_probability,
)
from deepobfuscator.deploy.manifest import FORMAT_VERSION, sha256_file
from deepobfuscator.models import feature_shape
from deepobfuscator.runs import load_run


def test_manifest_describes_the_export(tiny_run, tiny_export):
    cfg, _ = load_run(tiny_run)
    m = json.loads((tiny_export / "manifest.json").read_text())
    assert m["format_version"] == FORMAT_VERSION and m["package_version"] == __version__
    assert m["run"]["config_fingerprint"] == cfg.fingerprint()
    assert m["input"]["size"] == [32, 32] and m["input"]["crop"] == "square"
    assert m["input"]["value_range"] == [0.0, 1.0] and m["input"]["channel_order"] == "RGB"
    assert m["input"]["layout"] == "NCHW" and m["input"]["resample"] == "bilinear"
    assert m["features"]["shape"] == list(feature_shape(cfg))
    assert m["wire"] == {"format_version": 2, "dtype": "int8",
                         "quantization": "per-channel affine", "bytes_per_image": 24 + 8 * 16
                         + 16 * 8 * 8, "image_bytes_uint8": 3 * 32 * 32}
    assert m["task"]["name"] == "Smiling"
    for name in ("obfuscator", "classifier"):
        entry = m["models"][name]
        path = tiny_export / entry["file"]
        assert entry["sha256"] == sha256_file(path) and entry["bytes"] == path.stat().st_size
    p = m["parity"]
    assert p["image_source"].startswith("test split") and p["images"] == 32
    assert p["features_max_abs_diff"] <= p["features_tolerance"]
    assert p["probability_max_abs_diff"] <= p["probability_tolerance"]
    if importlib.util.find_spec("executorch") is None:
        assert m["models"]["obfuscator_pte"] is None and m["mobile"].startswith("skipped")


@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_matches_pytorch_at_any_batch(tiny_run, tiny_export, batch):
    _, models = load_run(tiny_run)
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        z = models.encoder(x)
        p = torch.sigmoid(models.classifier(z))
    enc = ort.InferenceSession(str(tiny_export / "obfuscator.onnx"))
    cls = ort.InferenceSession(str(tiny_export / "classifier.onnx"))
    z_o = enc.run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(z_o, z.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(cls.run(None, {"features": z.numpy()})[0], p.numpy(), atol=1e-6)


def test_parity_check_fails_loudly_when_models_differ(tiny_run, tiny_export):
    _, models = load_run(tiny_run)
    with torch.no_grad():
        models.encoder.blocks[0][0].weight.mul_(1.01)  # the "PyTorch" model drifted
    images = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    with pytest.raises(ExportError, match="parity check failed: features differ"):
        check_onnx_parity(tiny_export, models.encoder, task_probability(models.classifier),
                          images)


def _copy(tiny_export, tmp_path):
    dst = tmp_path / "export"
    shutil.copytree(tiny_export, dst)
    return dst


def test_tampered_model_is_refused(tiny_export, tmp_path):
    d = _copy(tiny_export, tmp_path)
    with open(d / "classifier.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ExportError, match="classifier.onnx: SHA-256 .* does not match"):
        load_export(d)
    load_export(d, check_hashes=False)  # only the hash was wrong


@pytest.mark.parametrize("missing", ["obfuscator.onnx", "classifier.onnx", "manifest.json"])
def test_incomplete_folder_is_refused_naming_the_file(tiny_export, tmp_path, missing):
    d = _copy(tiny_export, tmp_path)
    (d / missing).unlink()
    with pytest.raises(ExportError, match=f"{missing} is missing"):
        load_export(d)


def test_bad_manifest_and_bad_options(tiny_run, tiny_export, tmp_path):
    d = _copy(tiny_export, tmp_path)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(ExportError, match="not valid JSON"):
        load_export(d)
    m = json.loads((tiny_export / "manifest.json").read_text())
    m["format_version"] = 99
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ExportError, match="version 99 is not supported"):
        load_export(d)
    m["format_version"] = FORMAT_VERSION
    m["wire"]["format_version"] = 1  # an export made before the wire format's version 2
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ExportError, match="wire format version 1, this package speaks 2"):
        load_export(d)
    m["wire"]["format_version"] = 2
    m["models"]["classifier"]["file"] = "../classifier.onnx"
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ExportError, match="malformed model entry"):
        load_export(d)
    del m["models"]["classifier"]["sha256"]
    m["models"]["classifier"]["file"] = "classifier.onnx"
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ExportError, match="malformed model entry"):
        load_export(d)
    (d / "manifest.json").write_text(json.dumps({**m, "wire": "int8"}))
    with pytest.raises(ExportError, match="'wire' missing or not an object"):
        load_export(d)
    with pytest.raises(ExportError, match="folder not found"):
        load_export(tmp_path / "nope")
    with pytest.raises(ExportError, match="unknown wire dtype"):
        export_run(tiny_run, tmp_path / "x", wire_dtype="int4")


def test_bench_reports_every_figure(tiny_export):
    from deepobfuscator.deploy.bench import bench

    res = bench(tiny_export, threads=(1,), runs=3, warmup=1, verbose=False)
    keys = set(res["latency_ms"])
    for k in ("obfuscator onnxruntime fp32 t1", "obfuscator onnxruntime int8 t1",
              "whole model onnxruntime fp32 t1", "obfuscator torch eager fp32 t1",
              "whole model torch eager fp32 t1"):
        assert k in keys and res["latency_ms"][k]["median"] > 0
    # analytic MACs of the tiny obfuscator: 4 convs of 3x3 at 32 and 16 px (8 and 16 channels)
    assert res["macs"]["obfuscator"] == 32 * 32 * 8 * (27 + 72) + 16 * 16 * 16 * (72 + 144)
    pb = res["payload_bytes"]
    assert pb["wire_int8"] < pb["wire_float16"] < pb["wire_float32"]
    assert pb["jpeg_q90_original"] > 0 and pb["jpeg_q90_input_resolution"] > 0
    assert pb["jpeg_q75_original"] > 0 and pb["jpeg_q75_input_resolution"] > 0
    assert pb["wire_int8_gzip"] < pb["wire_int8"]  # ReLU zeros compress
    assert res["int8_model_check"]["labels_flipped"] >= 0


def test_feature_noise_stays_out_of_the_graph_and_goes_into_the_manifest(
        tiny_run, tmp_path, monkeypatch):
    """An obfuscator trained with feature noise: ONNX without it (parity holds), the manifest
    tells the device to add it, and the device client does."""
    import deepobfuscator.runs as runs
    from deepobfuscator.deploy.client import DeviceObfuscator

    real_load_run = runs.load_run

    def noisy_load_run(path, *a, **k):
        cfg, models = real_load_run(path, *a, **k)
        models.encoder.noise_std = 0.25  # what privacy.feature_noise=0.25 builds
        return cfg, models

    monkeypatch.setattr(runs, "load_run", noisy_load_run)
    out = export_run(tiny_run, tmp_path / "noisy", parity_images=8)
    m = json.loads((out / "manifest.json").read_text())
    assert m["features"]["noise_std"] == 0.25 and m["features"]["min"] is None
    assert "adds Gaussian noise of std 0.25" in m["features"]["noise"]
    device = DeviceObfuscator(out)
    assert device.bundle.noise_std == 0.25
    x = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    clean = device.features(x, noise=False)
    np.testing.assert_array_equal(clean, device.features(x, noise=False))  # graph: no noise
    _, models = real_load_run(tiny_run)
    with torch.no_grad():
        np.testing.assert_allclose(clean, models.encoder(torch.from_numpy(x)).numpy(),
                                   atol=1e-5)
    noise = device.features(x) - clean
    assert noise.std() == pytest.approx(0.25, rel=0.05) and abs(noise.mean()) < 0.01
    # keyed to the photo by default: a repeat carries the same noise (keyed_noise.py)
    assert m["features"]["noise_key"] == "photo" and "keyed to the photo" in m["features"][
        "noise"]
    np.testing.assert_array_equal(device.features(x), device.features(x))
    # --noise-key fresh: new noise for every upload, as exports made before keyed noise
    from deepobfuscator.deploy.cli_commands import main

    assert main(["export", str(tiny_run), "--out", str(tmp_path / "fresh"), "--noise-key",
                 "fresh", "--parity-images", "8", "--no-mobile"]) == 0
    fresh = DeviceObfuscator(tmp_path / "fresh")
    f = json.loads((tmp_path / "fresh" / "manifest.json").read_text())["features"]
    assert f["noise_key"] == "fresh" and "drawn afresh" in f["noise"]
    assert fresh.bundle.noise_key == "fresh" and fresh.bundle.noise_std == 0.25
    assert not np.array_equal(fresh.features(x), fresh.features(x))  # fresh every time
    with pytest.raises(ExportError, match="unknown noise key 'daily': use 'photo'"):
        export_run(tiny_run, tmp_path / "x", noise_key="daily")


def test_noise_free_obfuscator_is_exported_as_is(tiny_export):
    m = json.loads((tiny_export / "manifest.json").read_text())
    assert m["features"]["noise_std"] == 0.0 and m["features"]["min"] == 0.0
    assert "noise_key" not in m["features"]  # no noise, nothing to key


def test_the_on_device_profile_exports_with_only_the_head_in_the_cloud(tmp_path):
    """`--config on-device` keeps every conv block on the device: the cloud graph is the MLP
    head alone, and the upload is the 1-channel bottleneck at the last block."""
    from deploy_helpers import DEPLOY_TINY

    from deepobfuscator.config import load_config
    from deepobfuscator.deploy.cli_commands import main
    from deepobfuscator.training import train

    profile = load_config("on-device")
    tiny = [o for o in DEPLOY_TINY if not o.startswith(("model.split_block", "model.bottleneck"))]
    cfg = load_config("on-device", tiny)
    assert (cfg.model.split_block, cfg.model.bottleneck) == (5, 1) == (
        profile.model.split_block, profile.model.bottleneck)
    run = train(cfg, tmp_path / "run", progress=False)
    assert main(["export", str(run), "--out", str(tmp_path / "export")]) == 0  # parity-checked
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["features"]["shape"] == [1, 1, 1]  # 32 px after five 2x2 pools
    cls = ort.InferenceSession(str(tmp_path / "export" / "classifier.onnx"))
    z = np.random.default_rng(0).random((3, 1, 1, 1), dtype=np.float32)
    assert cls.run(None, {"features": z})[0].shape == (3,)


def test_the_private_profile_trains_without_attackers_and_exports_its_tighter_cap(tmp_path):
    """`--config private`: the default's phone with noise 4, a learned gain per uploaded
    number and the step-matched task-only continuation (no attacker stage); the exported
    manifest states noise 4 and the graph holds the trained gain (parity-checked)."""
    from deploy_helpers import DEPLOY_TINY

    from deepobfuscator.config import load_config
    from deepobfuscator.training import train

    tiny = [o for o in DEPLOY_TINY if not o.startswith(("model.split_block", "model.bottleneck",
                                                        "privacy."))]
    cfg = load_config("private", tiny)
    run = train(cfg, tmp_path / "run", progress=False)
    stages = {json.loads(line)["stage"] for line in
              (run / "metrics.jsonl").read_text().splitlines()}
    assert stages == {"task", "adversarial"}  # no attacker pre-training: nothing to attack
    out = export_run(run, tmp_path / "export", parity_images=8)  # parity-checked
    f = json.loads((out / "manifest.json").read_text())["features"]
    assert f["normalization"] == "unit_rms" and f["noise_std"] == 4.0


def test_the_information_cap_survives_export(tmp_path):
    """The default keeps the paper's split and caps the upload: obfuscator.onnx itself scales
    every image's features to unit RMS (so no runtime can skip it), the manifest states the
    noise and the bound, and the device client adds noise of exactly that std."""
    from deploy_helpers import DEPLOY_TINY

    from deepobfuscator.config import load_config
    from deepobfuscator.deploy.client import DeviceObfuscator
    from deepobfuscator.training import train

    default = load_config("cpu")
    assert default.model.split_block == 2 and default.privacy.normalize_features
    tiny = [o for o in DEPLOY_TINY if not o.startswith(("model.split_block", "model.bottleneck",
                                                        "privacy."))]
    cfg = load_config("cpu", [*tiny, "privacy.method=none"])  # the cap needs no adversary
    run = train(cfg, tmp_path / "run", progress=False)
    out = export_run(run, tmp_path / "export", parity_images=8)  # parity-checked
    m = json.loads((out / "manifest.json").read_text())
    f = m["features"]
    assert f["normalization"] == "unit_rms" and f["noise_std"] == cfg.privacy.feature_noise
    assert f["min"] is None and "bits per image" in f["information_cap"]
    x = np.random.default_rng(0).random((5, 3, 32, 32), dtype=np.float32)
    enc = ort.InferenceSession(str(out / "obfuscator.onnx"))
    z = enc.run(None, {"image": x})[0]
    np.testing.assert_allclose(np.sqrt((z ** 2).mean((1, 2, 3))), 1.0, atol=1e-4)
    device = DeviceObfuscator(out)
    clean = device.features(x, noise=False)
    np.testing.assert_allclose(clean, z, atol=1e-6)
    # the device's noise comes from the OS, unseeded: with 25,600 draws a 10% miss of the
    # stated std is over 20 standard errors away (5 images were too few: a flaky test)
    many = np.random.default_rng(1).random((400, 3, 32, 32), dtype=np.float32)
    drawn = device.features(many) - device.features(many, noise=False)
    assert drawn.std() == pytest.approx(cfg.privacy.feature_noise, rel=0.1)


def _digests(folder):
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir())}


def test_a_failed_export_leaves_the_previous_export_intact(tiny_run, tiny_export, tmp_path,
                                                          monkeypatch):
    from deepobfuscator.deploy import export as export_module

    d = _copy(tiny_export, tmp_path)
    before = _digests(d)

    def broken(*args, **kwargs):
        raise ExportError("parity check failed: features differ (injected)")

    monkeypatch.setattr(export_module, "check_onnx_parity", broken)
    with pytest.raises(ExportError, match="injected"):
        export_run(tiny_run, d, parity_images=4, force=True)
    assert _digests(d) == before
    load_export(d)  # still a good, servable export
    assert not list(tmp_path.glob(".export.*"))  # no staging folder left behind


def test_an_existing_export_is_replaced_only_when_asked(tiny_run, tiny_export, tmp_path):
    d = _copy(tiny_export, tmp_path)
    before = _digests(d)
    with pytest.raises(ExportError, match="already holds an export; pass --force"):
        export_run(tiny_run, d, parity_images=4)
    assert _digests(d) == before
    export_run(tiny_run, d, parity_images=4, wire_dtype="float16", force=True)
    assert json.loads((d / "manifest.json").read_text())["wire"]["dtype"] == "float16"
    load_export(d)
    assert not list(tmp_path.glob(".export.*"))


def test_export_refuses_a_folder_holding_other_files(tiny_run, tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("years of work")
    with pytest.raises(ExportError, match="files an export does not write.*thesis.tex"):
        export_run(tiny_run, d, parity_images=4, force=True)
    assert (d / "thesis.tex").read_text() == "years of work"


def test_an_incomplete_export_is_replaced_without_force(tiny_run, tiny_export, tmp_path):
    d = _copy(tiny_export, tmp_path)
    (d / "manifest.json").unlink()  # what a killed export of the old code left
    export_run(tiny_run, d, parity_images=4)
    load_export(d)


# ---- several tasks: classifier.onnx answers (N, outputs), the manifest lists each task


def test_a_multi_task_export_lists_every_task_and_answers_each(multi_run, multi_export):
    from deploy_helpers import HAIR

    from deepobfuscator.tasks import task_set

    cfg, models = load_run(multi_run)
    m = json.loads((multi_export / "manifest.json").read_text())
    assert "task" not in m  # a package that predates `tasks` refuses it, not misreads it
    assert [(t["name"], t["kind"], t["outputs"]) for t in m["tasks"]] == [
        ("Smiling", "binary", [0, 1]), ("Eyeglasses", "binary", [1, 2]),
        ("hair", "classes", [2, 6])]
    assert m["tasks"][2]["classes"] == HAIR and "threshold" not in m["tasks"][2]
    assert [t.get("threshold") for t in m["tasks"][:2]] == [0.5, 0.5]
    p = m["parity"]  # every task's columns compared with PyTorch
    assert set(p["per_task"]) == {"Smiling", "Eyeglasses", "hair"}
    assert max(p["per_task"].values()) == p["probability_max_abs_diff"]
    assert p["probability_max_abs_diff"] <= p["probability_tolerance"]
    bundle = load_export(multi_export)
    assert not bundle.single and bundle.outputs == 6 and bundle.tasks == m["tasks"]
    assert bundle.task_names == ["Smiling", "Eyeglasses", "hair"]
    cls = ort.InferenceSession(str(multi_export / "classifier.onnx"))
    assert [o.name for o in cls.get_outputs()] == ["probabilities"]
    tasks = task_set(cfg)
    for batch in (1, 5):
        x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            z = models.encoder(x)
            ref = tasks.probabilities(models.classifier(z))
        got = cls.run(None, {"features": z.numpy()})[0]
        assert got.shape == (batch, 6)
        np.testing.assert_allclose(got[:, 0], ref[0].numpy(), atol=1e-6)
        np.testing.assert_allclose(got[:, 1], ref[1].numpy(), atol=1e-6)
        np.testing.assert_allclose(got[:, 2:], ref[2].numpy(), atol=1e-6)
        np.testing.assert_allclose(got[:, 2:].sum(1), 1.0, atol=1e-5)


def test_the_parity_check_covers_the_class_probabilities(multi_run, multi_export):
    from deepobfuscator.tasks import task_set

    cfg, models = load_run(multi_run)
    tasks = task_set(cfg)
    images = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    ok = check_onnx_parity(multi_export, models.encoder,
                           task_probability(models.classifier, tasks), images, tasks)
    assert set(ok["per_task"]) == set(tasks.names)
    with torch.no_grad():  # the PyTorch model drifted in the hair logits only
        models.classifier.head.net[-1].bias[2:].add_(torch.tensor([0.5, -0.5, 0.0, 0.0]))
    with pytest.raises(ExportError, match="parity check failed: .*probabilities by"):
        check_onnx_parity(multi_export, models.encoder,
                          task_probability(models.classifier, tasks), images, tasks)
    with pytest.raises(ExportError, match=r"answers shape \[4, 6\], PyTorch \[4\]"):
        check_onnx_parity(multi_export, models.encoder, task_probability(
            lambda z: models.classifier(z)[:, 0]), images)  # a single-task wrapper


def test_a_single_task_export_keeps_its_format_and_lists_one_task(tiny_export):
    m = json.loads((tiny_export / "manifest.json").read_text())
    assert "tasks" not in m and set(m["task"]) == {"name", "output", "threshold"}
    assert "per_task" not in m["parity"]
    cls = ort.InferenceSession(str(tiny_export / "classifier.onnx"))
    assert [o.name for o in cls.get_outputs()] == ["probability"]
    bundle = load_export(tiny_export)
    assert bundle.single and bundle.outputs == 1 and bundle.task == "Smiling"
    assert bundle.tasks == [{"name": "Smiling", "kind": "binary", "outputs": [0, 1],
                             "threshold": 0.5}]


def _drop_task(m):
    m["tasks"] = m["tasks"][:2]


def _both(m):
    m["task"] = {"name": "Smiling", "threshold": 0.5}


BAD_TASKS = {
    "both": (_both, "both 'task' and 'tasks'"),
    "neither": (lambda m: m.pop("tasks"), "'task' \\(or 'tasks'\\) missing"),
    "empty": (lambda m: m.update(tasks=[]), "tasks is \\[\\]; expected a non-empty list"),
    "not_a_list": (lambda m: m.update(tasks="Smiling"), "tasks is 'Smiling'"),
    "no_name": (lambda m: m["tasks"][1].pop("name"), "tasks\\[1\\] has no name"),
    "twice": (lambda m: m["tasks"][1].update(name="Smiling"), "names task 'Smiling' again"),
    "kind": (lambda m: m["tasks"][0].update(kind="regression"), "tasks\\[0\\].kind is"),
    "threshold": (lambda m: m["tasks"][0].update(threshold=1.5), "tasks\\[0\\].threshold"),
    "one_class": (lambda m: m["tasks"][2].update(classes=["x"]), "tasks\\[2\\].classes"),
    "gap": (lambda m: m["tasks"][1].update(outputs=[2, 3]),
            "tasks\\[1\\].outputs is \\[2, 3\\]; expected \\[1, 2\\]"),
    "classes_vs_outputs": (lambda m: m["tasks"][2]["classes"].append("Gray_Hair"),
                           "tasks\\[2\\].outputs is \\[2, 6\\]; expected \\[2, 7\\]"),
}


@pytest.mark.parametrize("name", sorted(BAD_TASKS))
def test_a_malformed_task_list_is_refused_in_one_line(multi_export, tmp_path, name):
    edit, message = BAD_TASKS[name]
    d = _copy(multi_export, tmp_path)
    m = json.loads((d / "manifest.json").read_text())
    edit(m)
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ExportError, match=message) as err:
        load_export(d)
    assert "\n" not in str(err.value)
