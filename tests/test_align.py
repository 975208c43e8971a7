"""Face detection and alignment (data.align=mtcnn, issue 36): the same face at another
scale, position and small rotation gives the same aligned crop; no face is a clear
refusal, never a guess; several faces: the largest, and the client says so; an export
that aligns ships its detector, hashed, and the torch-free client aligns as training did."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepobfuscator.align import TEMPLATE, NoFaceFound, aligner_for, similarity
from deepobfuscator.align.nets import detector_graphs
from deepobfuscator.config import load_config
from deepobfuscator.data.synthfaces import generate_synthfaces
from deepobfuscator.errors import UserError

# a face region of CelebA's frame (eyes to chin, cheek to cheek): what must agree
FACE = (slice(95, 175), slice(50, 130))


@pytest.fixture(scope="module")
def aligner(tmp_path_factory):
    return aligner_for(detector_graphs(tmp_path_factory.mktemp("mtcnn")))


@pytest.fixture(scope="module")
def faces() -> list[Image.Image]:
    """Drawn faces the detector finds (128 x 128); a few of synthfaces' are too stylised."""
    ds = generate_synthfaces(12, 1, (128, 128), seed=3)
    return [Image.fromarray(im) for im in ds.images]


def _found(aligner, faces) -> list[Image.Image]:
    out = []
    for img in faces:
        try:
            aligner.align(img)
            out.append(img)
        except NoFaceFound:
            pass
    assert len(out) >= 6, "the detector should find most drawn faces"
    return out


def _moved(img: Image.Image, scale: float, angle: float, at: tuple[int, int],
           canvas: tuple[int, int] = (420, 360)) -> Image.Image:
    """The photo smaller or larger, turned by `angle` degrees, pasted at `at` on a plain
    background: the same face, framed differently."""
    w, h = img.size
    moved = img.resize((round(w * scale), round(h * scale)), Image.Resampling.BICUBIC)
    moved = moved.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=(90, 110, 70))
    out = Image.new("RGB", canvas, (90, 110, 70))
    out.paste(moved, at)
    return out


def test_similarity_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, (5, 2))
    t = np.deg2rad(17.0)
    rot = 1.3 * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    dst = src @ rot.T + [12.0, -40.0]
    m = similarity(src, dst)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], [12.0, -40.0], atol=1e-7)
    # a mirror image is not a similarity: the fit keeps a proper rotation
    assert np.linalg.det(similarity(src, src * [-1, 1])[:, :2]) > 0


@pytest.mark.parametrize("scale,angle,at", [(1.7, 0.0, (150, 80)), (2.2, 9.0, (10, 20)),
                                            (1.3, -12.0, (240, 150))])
def test_a_moved_face_gives_the_same_aligned_crop(aligner, faces, scale, angle, at) -> None:
    for img in _found(aligner, faces)[:4]:
        ref = aligner.align(img)
        got = aligner.align(_moved(img, scale, angle, at))
        assert got.faces == 1
        # the landmarks land where CelebA's are, and both crops agree on the face
        pts = np.c_[got.face.landmarks, np.ones(5)] @ got.matrix.T
        assert np.abs(pts - TEMPLATE).max() < 6, "landmarks within a few pixels of CelebA's"
        a = np.asarray(ref.image, np.float32)[FACE]
        b = np.asarray(got.image, np.float32)[FACE]
        # (measured: 4-16 levels of 255 on average, the moved photo being resampled twice)
        assert np.abs(a - b).mean() < 20, "the aligned faces differ"
        # the same photo without alignment does not agree at all (19-78 levels)
        plain = np.asarray(_moved(img, scale, angle, at).resize((178, 218)), np.float32)[FACE]
        assert np.abs(a - b).mean() < 0.6 * np.abs(a - plain).mean()


def test_no_face_is_refused_by_name(aligner) -> None:
    blank = Image.new("RGB", (200, 160), (128, 128, 128))
    with pytest.raises(NoFaceFound, match=r"no face found in holiday\.jpg"):
        aligner.align(blank, "holiday.jpg")
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (160, 200, 3), np.uint8))
    with pytest.raises(NoFaceFound):
        aligner.align(noise)


def test_several_faces_the_largest_is_aligned(aligner, faces) -> None:
    big, small = _found(aligner, faces)[:2]
    group = Image.new("RGB", (460, 300), (200, 200, 200))
    group.paste(small.resize((96, 96)), (20, 180))
    group.paste(big.resize((220, 220)), (220, 40))
    got = aligner.align(group)
    assert got.faces == 2
    box = got.face.box
    assert box[0] > 200 and (box[2] - box[0]) > 80, "the larger face, on the right"
    alone = aligner.align(big)
    a = np.asarray(alone.image, np.float32)[FACE]
    b = np.asarray(got.image, np.float32)[FACE]
    assert np.abs(a - b).mean() < 20


def test_alignment_settings_are_one_line_errors() -> None:
    with pytest.raises(UserError, match=r"data.align='eyes' is not valid; choose one of"):
        load_config("cpu", ["data.align=eyes"])
    with pytest.raises(UserError, match=r"synthfaces are drawn already framed"):
        load_config("cpu", ["data.align=mtcnn"])


def test_alignment_off_keeps_every_earlier_key() -> None:
    """Runs and caches from before alignment keep their fingerprints and cache keys."""
    from deepobfuscator.data.base import Preprocess

    assert "align" not in Preprocess().to_dict()
    assert Preprocess(align="mtcnn").to_dict()["align"] == "mtcnn"
    cfg = load_config("cpu", [])
    assert cfg.fingerprint() == load_config("cpu", ["data.align=none"]).fingerprint()


def write_face_folder(root: Path, n: int = 48) -> Path:
    """A folder source of drawn faces at 128 px with their labels (file, attributes,
    person): photos that must be aligned before the model sees them."""
    ds = generate_synthfaces(n // 4, 4, (128, 128), seed=5)
    rows = []
    for i, im in enumerate(ds.images):
        name = f"img/{i:03d}.png"
        (root / "img").mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(root / name)
        rows.append([name, *(int(ds.attribute(a)[i]) for a in ("Smiling", "Male", "Young")),
                     int(ds.identities[i])])
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "Smiling", "Male", "Young", "person"], *rows])
    return root / "labels.csv"


@pytest.fixture(scope="module")
def aligned_export(tmp_path_factory) -> Path:
    from deploy_helpers import DEPLOY_TINY

    from deepobfuscator.deploy.export import export_run
    from deepobfuscator.training import train

    root = tmp_path_factory.mktemp("faces")
    labels = write_face_folder(root)
    cfg = load_config("cpu", [*DEPLOY_TINY, "data.source=folder", f"data.root={root}",
                              f"data.csv={labels}", "data.identity_column=person",
                              "data.align=mtcnn", "data.on_bad_image=skip",
                              "train.task.epochs=1", "data.private=[Male]",
                              "data.val_fraction=0.2", "data.attacker_fraction=0.2",
                              "data.test_fraction=0.2"])
    run = train(cfg, root / "run", progress=False)
    pre = json.loads((run / "preprocessing.json").read_text())
    assert pre["align"] == "mtcnn", "the run records its alignment"
    return export_run(run, root / "export", parity_images=2, mobile=False)


def test_an_aligned_export_ships_its_detector_and_the_client_aligns(aligned_export, faces,
                                                                     tmp_path) -> None:
    from deepobfuscator.deploy.client import DeviceObfuscator, describe
    from deepobfuscator.deploy.preprocess_np import ImageError

    manifest = json.loads((aligned_export / "manifest.json").read_text())
    assert manifest["input"]["align"] == "mtcnn"
    for net in ("pnet", "rnet", "onet"):
        assert manifest["models"][f"face_{net}"]["sha256"]
    device = DeviceObfuscator(aligned_export)
    img = next(f for f in faces
               if _detects(device, f) and _detects(device, _moved(f, 1.8, 6.0, (120, 60))))
    img.save(tmp_path / "face.png")
    _moved(img, 1.8, 6.0, (120, 60)).save(tmp_path / "moved.png")
    counts: list[int] = []
    x = device.preprocess([tmp_path / "face.png", tmp_path / "moved.png"], counts)
    assert counts == [1, 1]
    assert np.abs(x[0] - x[1]).mean() < 0.08, "the moved photo reaches the model framed alike"
    Image.new("RGB", (120, 90), (30, 30, 30)).save(tmp_path / "dark.png")
    with pytest.raises(ImageError, match=r"no face found in .*dark\.png"):
        device.preprocess([tmp_path / "dark.png"])
    line = describe({"image": "g.jpg", "faces": 3,
                     "answers": {"Smiling": {"probability": 0.5, "label": 1}}})
    assert line.endswith("(3 faces found: the largest was answered)")


def _detects(device, img: Image.Image) -> bool:
    try:
        device.aligner.align(img)
        return True
    except NoFaceFound:
        return False


def test_an_edited_alignment_is_refused(aligned_export, tmp_path) -> None:
    import shutil

    from deepobfuscator.deploy.client import DeviceObfuscator

    copy = tmp_path / "export"
    shutil.copytree(aligned_export, copy)
    path = copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["input"]["alignment"]["template"][0][0] += 9.0
    path.write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"input.alignment differs"):
        DeviceObfuscator(copy)


def _data_url(img: Image.Image) -> str:
    import base64
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_the_page_finds_and_aligns_the_face_as_the_client_does(aligned_export, faces) -> None:
    """The page runs the export's detector in the browser: the same faces, the same
    landmarks and the same aligned crops as the Python client's; a photo
    with no face gets 'no face found' and nothing is sent; the page shows the face found
    and the aligned frame beside the answer."""
    from browser import Chromium, find_chromium
    from deploy_helpers import LiveServer

    from deepobfuscator.deploy.client import DeviceObfuscator
    from deepobfuscator.deploy.server import create_app
    from deepobfuscator.deploy.web_assets import installed

    chromium = find_chromium()
    if chromium is None or not installed():
        pytest.skip("Chromium or onnxruntime-web is not installed (make setup installs the "
                    "latter; Debian: apt-get install chromium)")
    device = DeviceObfuscator(aligned_export)
    photos = [img for img in _found(device.aligner, faces)[:3]]
    photos += [_moved(photos[0], 1.8, 6.0, (120, 60)), _moved(photos[1], 2.2, -9.0, (20, 40))]
    with LiveServer(create_app(aligned_export)) as server, Chromium(chromium) as browser:
        browser.open(f"{server.url}/")
        browser.wait_for("document.body.dataset.state === 'ready'")
        compared = 0
        for img in photos:
            try:
                want = device.aligner.align(img)
            except NoFaceFound:
                continue
            compared += 1
            got = browser.evaluate(f"window.deepobfuscator.align('{_data_url(img)}')")
            assert got["faces"] == want.faces
            gap = np.abs(np.asarray(got["landmarks"]) - want.face.landmarks).max()
            # measured on 30 LFW photos: 2e-5 px and 1e-4 levels apart (the same graphs, a
            # Pillow-exact resize and warp); the bounds leave room for float rounding only
            assert gap < 0.5, f"landmarks {gap:.2f} px apart"
            page = np.asarray(got["rgb"], np.float32).reshape(218, 178, 3)
            assert np.abs(page - np.asarray(want.image, np.float32)).mean() < 0.5
        assert compared >= 3
        dark = _data_url(Image.new("RGB", (120, 90), (30, 30, 30)))
        browser.evaluate(f"window.deepobfuscator.show('{dark}')")
        browser.wait_for("document.body.dataset.state === 'error'")
        status = browser.evaluate("document.getElementById('status').textContent")
        assert "no face found" in status and "nothing was sent" in status, status
        browser.evaluate(f"window.deepobfuscator.show('{_data_url(photos[0])}')")
        browser.wait_for("document.body.dataset.state === 'done'")
        assert not browser.evaluate("document.getElementById('alignment').hidden")
        assert browser.evaluate("document.getElementById('aligned').width") == 178
        assert "probability" in browser.evaluate("document.getElementById('answer').textContent")


def test_a_photo_from_the_camera_goes_the_way_a_dropped_photo_does(aligned_export) -> None:
    """The camera button (getUserMedia): Chromium's fake camera draws a test pattern, no
    face, so the aligned export's page says so and sends nothing; the camera is then off."""
    from browser import Chromium, find_chromium
    from deploy_helpers import LiveServer

    from deepobfuscator.deploy.server import create_app
    from deepobfuscator.deploy.web_assets import installed

    chromium = find_chromium()
    if chromium is None or not installed():
        pytest.skip("Chromium or onnxruntime-web is not installed")
    fake = ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream")
    with LiveServer(create_app(aligned_export)) as server, \
            Chromium(chromium, extra_args=fake) as browser:
        browser.open(f"{server.url}/")
        browser.wait_for("document.body.dataset.state === 'ready'")
        assert not browser.evaluate("document.getElementById('camera').hidden")
        browser.evaluate("document.getElementById('camera').click()")
        browser.wait_for("!document.getElementById('camera-view').hidden")
        browser.wait_for("document.getElementById('preview').videoWidth > 0")
        browser.evaluate("document.getElementById('snap').click()")
        browser.wait_for("document.body.dataset.state === 'error'")
        status = browser.evaluate("document.getElementById('status').textContent")
        assert "no face found" in status, status
        assert browser.evaluate("document.getElementById('camera-view').hidden")


def test_the_command_line_tools_say_no_face_found_in_one_line(aligned_export, faces,
                                                              tmp_path, capsys) -> None:
    """classify (against a live server) and bench refuse a photo without a face in one
    line naming it; bench times the alignment of an export that aligns."""
    from deploy_helpers import LiveServer

    from deepobfuscator.cli import main
    from deepobfuscator.deploy.bench import bench
    from deepobfuscator.deploy.server import create_app

    dark = tmp_path / "dark.png"
    Image.new("RGB", (120, 90), (30, 30, 30)).save(dark)
    with LiveServer(create_app(aligned_export)) as server:
        code = main(["classify", str(dark), "--server", server.url, "--model",
                     str(aligned_export)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "no face found in" in err[0] and "dark.png" in err[0]
    assert main(["bench", str(aligned_export), "--image", str(dark), "--runs", "2",
                 "--threads", "1"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no face found in" in err[0], err
    face = tmp_path / "face.png"
    next(f for f in faces if _detects_with(aligned_export, f)).save(face)
    res = bench(aligned_export, threads=[1], runs=2, warmup=0, image=face, verbose=False)
    assert res["latency_ms"]["face detection and alignment (MTCNN + warp) t1"]["median"] > 0


def _detects_with(export, img: Image.Image) -> bool:
    from deepobfuscator.deploy.client import DeviceObfuscator

    return _detects(DeviceObfuscator(export), img)
