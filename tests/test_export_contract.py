"""The export's contract is checked where it is used (issue 37, item 3): the manifest's
shapes against the ONNX graphs, its privacy settings against the digest the graphs carry,
and a pinned manifest hash, in the client, the server and bench; all in one line, before
any photo is read."""

import json
import shutil

import httpx
import numpy as np
import pytest
from deploy_helpers import TOKEN, LiveServer, export_with_features
from PIL import Image

from deepobfuscator.deploy.bench import bench
from deepobfuscator.deploy.cli_commands import main
from deepobfuscator.deploy.client import ClientError, DeviceObfuscator, classify_images
from deepobfuscator.deploy.manifest import (
    PRIVACY_KEY,
    ExportError,
    load_export,
    privacy_digest,
    sha256_file,
)
from deepobfuscator.deploy.server import create_app


def _edited(export, tmp_path, section: str, key: str, value, name: str = "edited"):
    """A copy of the export whose manifest alone was edited (models and hashes untouched)."""
    dst = tmp_path / name
    shutil.copytree(export, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m[section][key] = value
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_both_graphs_carry_the_manifests_privacy_digest(tiny_export):
    import onnxruntime as ort

    bundle = load_export(tiny_export)
    want = privacy_digest(bundle.manifest["features"])
    for name in ("obfuscator", "classifier"):
        meta = ort.InferenceSession(str(bundle.model_path(name))).get_modelmeta()
        assert meta.custom_metadata_map[PRIVACY_KEY] == want


@pytest.mark.parametrize("key,value", [("noise_std", 4.0), ("normalization", "unit_rms"),
                                       ("erased", {"name": "erase"})])
def test_an_edited_privacy_setting_is_refused_everywhere(tiny_export, tmp_path, key, value):
    d = _edited(tiny_export, tmp_path, "features", key, value)
    load_export(d)  # the fields are well-formed and the files' hashes still match
    pattern = r"privacy settings .* are not the ones \w+\.onnx was exported with"
    for build in (lambda: DeviceObfuscator(d), lambda: create_app(d),
                  lambda: bench(d, threads=(1,), runs=1, warmup=0, verbose=False)):
        with pytest.raises(ExportError, match=pattern) as err:
            build()
        assert "\n" not in str(err.value)


def test_turning_the_noise_off_in_the_manifest_is_refused(tiny_export, tmp_path):
    """The issue's case: an export made with noise, whose manifest is edited to 0."""
    noisy = export_with_features(tiny_export, tmp_path / "noisy", noise_std=4.0,
                                 noise_key="photo")
    DeviceObfuscator(noisy, device_secret=bytes(range(32)))  # as exported: accepted
    d = _edited(noisy, tmp_path, "features", "noise_std", 0)
    with pytest.raises(ExportError, match="the manifest was edited"):
        DeviceObfuscator(d, device_secret=bytes(range(32)))
    with pytest.raises(ExportError, match="the manifest was edited"):
        create_app(d)


@pytest.mark.parametrize("size", [[64, 64], [32, 31], [100000, 100000]])
def test_an_input_size_the_graph_does_not_take_is_refused_before_any_photo(tiny_export,
                                                                           tmp_path, size):
    d = _edited(tiny_export, tmp_path, "input", "size", size)
    with pytest.raises(ExportError, match=rf"input.size gives obfuscator.onnx an input of "
                       rf"\[3, {size[0]}, {size[1]}\] per image, but the graph's is "
                       r"\[3, 32, 32\]"):
        DeviceObfuscator(d)
    with pytest.raises(ExportError, match="input.size gives obfuscator.onnx"):
        create_app(d)  # the server checks the graph the page downloads too


def test_a_pinned_manifest_is_checked_by_the_client(live_pin, tiny_export, tmp_path, capsys):
    digest = sha256_file(tiny_export / "manifest.json")
    assert DeviceObfuscator(tiny_export, pin=digest.upper()).bundle
    other = _edited(tiny_export, tmp_path, "input", "resample", "bicubic")
    with pytest.raises(ExportError, match="is not the pinned"):
        DeviceObfuscator(other, pin=digest)
    photo = tmp_path / "face.png"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(photo)
    assert main(["classify", "--server", live_pin.url, "--model", str(other),
                 "--manifest-sha256", digest, str(photo)]) == 2
    assert "is not the pinned" in capsys.readouterr().err


@pytest.fixture(scope="module")
def live_pin(tiny_export):
    with LiveServer(create_app(tiny_export, token=TOKEN)) as s:
        yield s


def test_classify_sends_nothing_to_a_server_with_other_privacy_settings(live_pin, tiny_export,
                                                                         tmp_path, monkeypatch):
    """A device export made with noise, a server whose classifier was exported without:
    the client stops before any features leave."""
    from deepobfuscator.deploy import client

    noisy = export_with_features(tiny_export, tmp_path / "noisy", noise_std=0.5,
                                 noise_key="fresh")
    sent = []
    monkeypatch.setattr(client, "post_features", lambda *a, **k: sent.append(a) or {})
    photo = tmp_path / "face.png"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(photo)
    with pytest.raises(ClientError, match="other privacy settings than this export's"):
        classify_images(live_pin.url, noisy, [photo], token=TOKEN)
    assert sent == []
    healthz = httpx.get(live_pin.url + "/healthz").json()
    assert healthz["privacy_sha256"] == privacy_digest(load_export(tiny_export)
                                                       .manifest["features"])
