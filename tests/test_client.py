import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from deploy_helpers import TOKEN, LiveServer
from PIL import Image

from deepobfuscator import wire
from deepobfuscator.data.base import Preprocess, to_tensor_batch
from deepobfuscator.data.synthfaces import generate_synthfaces
from deepobfuscator.deploy.cli_commands import main
from deepobfuscator.deploy.client import ClientError, DeviceObfuscator, classify_images
from deepobfuscator.deploy.preprocess_np import ImageError, to_input, to_uint8
from deepobfuscator.deploy.server import create_app
from deepobfuscator.runs import load_run

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def live(tiny_export):
    with LiveServer(create_app(tiny_export, token=TOKEN)) as s:
        yield s


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Photos bigger than the model input and not square: crop and resize both matter."""
    d = tmp_path_factory.mktemp("photos")
    faces = generate_synthfaces(3, 2, (54, 44), seed=3).images
    paths = []
    for i, img in enumerate(faces):
        p = d / f"face{i}.{'jpg' if i % 3 == 0 else 'png'}"
        im = Image.fromarray(img)
        (im.convert("RGBA") if i == 1 else im).save(p)
        paths.append(p)
    return paths


def _photo(seed: int, size: tuple[int, int], mode: str) -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    return Image.fromarray(arr, "RGBA").convert(mode)


@pytest.mark.parametrize("crop", ["square", "none", "center:0.4", "center:20px"])
@pytest.mark.parametrize("resample", ["bilinear", "bicubic", "lanczos", "nearest"])
def test_numpy_preprocessing_equals_the_training_preprocessing(crop, resample):
    pre = Preprocess(size=(32, 24), crop=crop, resample=resample)
    manifest_pre = {**pre.to_dict()}
    for i, (size, mode) in enumerate([((50, 70), "RGB"), ((71, 40), "RGBA"), ((24, 32), "L"),
                                      ((32, 32), "P"), ((33, 33), "RGB")]):
        img = _photo(i, size, mode)
        ref = to_tensor_batch(pre.apply(img)[None].copy()).numpy()
        got = to_input(to_uint8(img, manifest_pre)[None])
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, ref)


def _torch_answers(run, paths):
    """In-process PyTorch: training preprocessing, encoder, int8 wire round trip, classifier."""
    cfg, models = load_run(run)
    pre = Preprocess(size=tuple(cfg.data.image_size), crop=cfg.data.crop)
    x = to_tensor_batch(np.stack([pre.apply(Image.open(p)) for p in paths]))
    with torch.no_grad():
        z = models.encoder(x)
        z_wire = torch.from_numpy(wire.decode(wire.encode(z.numpy(), "int8")))
        p = torch.sigmoid(models.classifier(z_wire)).numpy()
        p_raw = torch.sigmoid(models.classifier(z)).numpy()
    return z.numpy(), p, p_raw


def test_end_to_end_answer_equals_pytorch(live, tiny_run, tiny_export, photos):
    got = classify_images(live.url, tiny_export, photos, token=TOKEN, batch_size=4)
    z, p, p_raw = _torch_answers(tiny_run, photos)
    assert [r["image"] for r in got] == [str(p) for p in photos]
    probs = np.array([r["probability"] for r in got])
    # int8 on the wire on both sides; where ONNX's float32 and PyTorch's differ by an ulp at
    # a rounding boundary one code flips, moving the answer by ~1e-5
    assert np.abs(probs - p).max() < 1e-4
    assert [r["label"] for r in got] == [int(v >= 0.5) for v in p]
    assert np.abs(probs - p_raw).max() < 1e-2  # what int8 costs against float32 features
    # the answers differ between images by far more than the tolerance: not vacuous
    assert p.std() > 1e-3
    device = DeviceObfuscator(tiny_export)
    np.testing.assert_allclose(device.features(device.preprocess(photos)), z, atol=1e-5)


def test_answers_do_not_depend_on_the_batch_size(live, tiny_export, photos):
    # regression: int8 ranges were shared across a request, so an image's probability
    # changed with --batch-size and with the other images sent beside it
    one = classify_images(live.url, tiny_export, photos, token=TOKEN, batch_size=1)
    assert classify_images(live.url, tiny_export, photos, token=TOKEN, batch_size=32) == one
    assert classify_images(live.url, tiny_export, photos[::-1], token=TOKEN) == one[::-1]


def test_gzip_is_the_default_and_changes_no_answer(live, tiny_export, photos, monkeypatch):
    import httpx

    sent = []
    real_post = httpx.Client.post

    def spy(self, url, **kw):
        sent.append((kw["headers"].get("Content-Encoding"), len(kw["content"])))
        return real_post(self, url, **kw)

    monkeypatch.setattr(httpx.Client, "post", spy)
    packed = classify_images(live.url, tiny_export, photos, token=TOKEN)
    plain = classify_images(live.url, tiny_export, photos, token=TOKEN, compress=False)
    assert packed == plain
    (enc_a, size_a), (enc_b, size_b) = sent
    assert (enc_a, enc_b) == ("gzip", None) and size_a < size_b


def test_a_body_gzip_would_grow_goes_uncompressed(monkeypatch):
    import httpx

    from deepobfuscator.deploy.client import gzip_body, post_features

    sent = {}

    class Answer:
        status_code = 200

        def json(self):
            return {"ok": True}

    def fake_post(url, content, headers, timeout):
        sent.update(headers=headers, content=content)
        return Answer()

    monkeypatch.setattr(httpx, "post", fake_post)
    tiny = bytes(range(40))  # e.g. 4 int8 numbers and the header
    assert len(gzip_body(tiny)) > len(tiny)
    post_features("http://127.0.0.1:9", tiny)
    assert "Content-Encoding" not in sent["headers"] and sent["content"] == tiny


def test_client_runs_without_torch(live, tiny_export, photos):
    code = (
        "import json, sys\n"
        "sys.modules['torch'] = None  # any import of torch now fails\n"
        "from deepobfuscator.deploy.client import classify_images\n"
        f"r = classify_images({live.url!r}, {str(tiny_export)!r}, "
        f"{[str(p) for p in photos]!r}, token={TOKEN!r})\n"
        "assert sys.modules['torch'] is None\n"
        "print(json.dumps(r))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    in_process = classify_images(live.url, tiny_export, photos, token=TOKEN)
    assert json.loads(proc.stdout) == in_process


def test_classify_command_of_the_main_cli_runs_without_torch(live, tiny_export, photos):
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any import of torch now fails\n"
        "from deepobfuscator.cli import main\n"
        f"rc = main(['classify', '--server', {live.url!r}, '--model', {str(tiny_export)!r}, "
        f"'--token', {TOKEN!r}, '--json', {str(photos[0])!r}])\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["image"] == str(photos[0])


def test_client_errors_say_what_to_do(live, tiny_export, photos, tmp_path):
    with pytest.raises(ClientError, match="401.*--token"):
        classify_images(live.url, tiny_export, photos[:1], token="wrong")
    with pytest.raises(ClientError, match="cannot reach"):
        classify_images("http://127.0.0.1:1", tiny_export, photos[:1], token=TOKEN)
    with pytest.raises(ImageError, match="image file not found"):
        classify_images(live.url, tiny_export, [tmp_path / "none.png"], token=TOKEN)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ImageError, match="corrupt or unreadable image"):
        classify_images(live.url, tiny_export, [tmp_path / "bad.png"], token=TOKEN)


def test_classify_command(live, tiny_export, photos, capsys):
    args = ["classify", "--server", live.url, "--model", str(tiny_export), "--token", TOKEN]
    assert main([*args, *map(str, photos[:2])]) == 0
    out = capsys.readouterr().out
    assert out.count("Smiling probability") == 2
    assert main(["classify", "--server", live.url, "--model", str(tiny_export),
                 str(photos[0])]) == 2
    assert "401" in capsys.readouterr().err


# ---- several tasks: every image gets every task's answer


@pytest.fixture(scope="module")
def live_multi(multi_export):
    with LiveServer(create_app(multi_export, token=TOKEN)) as s:
        yield s


def test_every_task_is_answered_as_pytorch_answers_it(live_multi, multi_run, multi_export,
                                                      photos):
    from deploy_helpers import HAIR

    from deepobfuscator.tasks import task_set

    got = classify_images(live_multi.url, multi_export, photos, token=TOKEN, batch_size=2)
    assert [r["image"] for r in got] == [str(p) for p in photos]
    cfg, models = load_run(multi_run)
    pre = Preprocess(size=tuple(cfg.data.image_size), crop=cfg.data.crop)
    x = to_tensor_batch(np.stack([pre.apply(Image.open(p)) for p in photos]))
    with torch.no_grad():  # int8 on the wire, as the client sends it
        z = torch.from_numpy(wire.decode(wire.encode(models.encoder(x).numpy(), "int8")))
        smiling, glasses, hair = (p.numpy() for p in
                                  task_set(cfg).probabilities(models.classifier(z)))
    for i, r in enumerate(got):
        assert set(r) == {"image", "answers"}  # no one-task fields to misread
        a = r["answers"]
        assert list(a) == ["Smiling", "Eyeglasses", "hair"]
        assert a["Smiling"]["probability"] == pytest.approx(smiling[i], abs=1e-4)
        assert a["Eyeglasses"]["probability"] == pytest.approx(glasses[i], abs=1e-4)
        assert a["Smiling"]["label"] == int(smiling[i] >= 0.5)
        probs = a["hair"]["probabilities"]
        assert list(probs) == HAIR and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(list(probs.values()), hair[i], atol=1e-4)
        assert a["hair"]["class"] == HAIR[int(hair[i].argmax())]


def test_the_classify_command_prints_every_task_on_one_line(live_multi, multi_export, photos,
                                                            capsys):
    args = ["classify", "--server", live_multi.url, "--model", str(multi_export), "--token",
            TOKEN]
    assert main([*args, *map(str, photos[:2])]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2  # one per image
    for line, path in zip(lines, photos[:2], strict=True):
        assert line.startswith(f"{path}: Smiling probability ")
        assert "; Eyeglasses probability " in line and " label " in line
        hair = line.split("; hair ")[1]
        assert hair.split(" probability ")[0] in {"Black_Hair", "Blond_Hair", "Brown_Hair",
                                                  "other"}
    assert main([*args, "--json", str(photos[0])]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out[0]["answers"]) == ["Smiling", "Eyeglasses", "hair"]


def test_a_one_task_answer_keeps_its_fields(live, tiny_export, photos):
    r = classify_images(live.url, tiny_export, photos[:1], token=TOKEN)[0]
    assert r["task"] == "Smiling"
    assert r["answers"] == {"Smiling": {"probability": r["probability"], "label": r["label"]}}


def test_a_server_of_another_export_is_an_error(live, live_multi, tiny_export, multi_export,
                                                photos):
    with pytest.raises(ClientError, match=r"server answered tasks \['Smiling'\], but the "
                       r"export answers \['Smiling', 'Eyeglasses', 'hair'\]"):
        # the two exports share the feature shape: only the answers tell them apart
        classify_images(live.url, multi_export, photos[:1], token=TOKEN)
    with pytest.raises(ClientError, match="serves another export"):
        classify_images(live_multi.url, tiny_export, photos[:1], token=TOKEN)
