"""The one crop-and-resize implementation: known boxes, known pixels, clear refusals."""

import json

import numpy as np
import pytest
from PIL import Image

from deepobfuscator import preprocessing
from deepobfuscator.config import ConfigError, load_config
from deepobfuscator.data.base import DataError, Preprocess
from deepobfuscator.deploy.preprocess_np import ImageError, check_settings
from deepobfuscator.preprocessing import crop_box, parse_crop, to_uint8


@pytest.mark.parametrize(("size", "crop", "box"), [
    ((250, 250), "square", (0, 0, 250, 250)),
    ((178, 218), "square", (0, 20, 178, 198)),
    ((250, 250), "none", None),
    ((250, 250), "center:0.4", (75, 75, 175, 175)),  # LFW: the central 100 x 100
    ((178, 218), "center:0.5", (44, 64, 133, 153)),  # side 89 of the shorter 178
    ((45, 60), "center:0.5", (11, 18, 34, 41)),  # 22.5 rounds half up to 23
    ((250, 250), "center:100px", (75, 75, 175, 175)),
    ((80, 60), "center:100px", (10, 0, 70, 60)),  # a smaller photo: the shorter side
    ((250, 250), "center:1", (0, 0, 250, 250)),
])
def test_crop_boxes_have_known_answers(size, crop, box):
    assert crop_box(*size, crop) == box


def test_a_centre_crop_keeps_only_the_centre():
    arr = np.zeros((250, 250, 3), np.uint8)
    arr[..., 2] = 255  # blue frame
    arr[75:175, 75:175] = (255, 0, 0)  # red centre: what center:0.4 keeps
    out = to_uint8(Image.fromarray(arr), (64, 64), "center:0.4")
    assert out.shape == (64, 64, 3)
    assert (out[..., 0] == 255).all() and (out[..., 2] == 0).all()
    sq = to_uint8(Image.fromarray(arr), (64, 64), "square")
    assert (sq[0, 0] == (0, 0, 255)).all()  # the frame survives the largest square


@pytest.mark.parametrize("bad", ["center", "center:0", "center:1.5", "center:abc",
                                 "center:0px", "middle", "center:-0.2", "center:nan"])
def test_unknown_crops_are_refused_everywhere_with_the_accepted_forms(bad):
    with pytest.raises(ValueError, match="center:0.4"):
        parse_crop(bad)
    with pytest.raises(DataError, match="center:Npx"):
        Preprocess(crop=bad)
    with pytest.raises(ConfigError, match="data.crop"):
        load_config("cpu", [f"data.crop={bad}"])
    with pytest.raises(ImageError, match="manifest"):
        check_settings({**Preprocess().to_dict(), "crop": bad})


def test_the_run_records_the_crop_the_phone_must_apply(tmp_path, tiny_config):
    from deepobfuscator.runs import RunPaths
    from deepobfuscator.training.trainer import _write_preprocessing

    cfg = tiny_config("data.crop=center:0.4")
    paths = RunPaths(tmp_path)
    paths.root.mkdir(parents=True, exist_ok=True)
    _write_preprocessing(cfg, paths)
    pre = json.loads(paths.preprocessing.read_text())
    assert pre["crop"] == "center:0.4" and "center:F" in pre["note"]


def _png_bomb(path, side: int = 20000) -> None:
    """A valid 1-bit PNG of side x side pixels: ~50 KB on disk, 400 MB once decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    row = b"\0" * (1 + (side + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))


@pytest.fixture(scope="module", params=[10000, 20000], ids=["100MP", "400MP"])
def bomb(tmp_path_factory, request):
    """100 MP: under Pillow's own limit (it would decode, ~300 MB); 400 MP: over it."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    _png_bomb(path, request.param)
    assert path.stat().st_size < 100_000
    return path


def test_a_decompression_bomb_is_refused_from_its_header(bomb):
    from deepobfuscator.preprocessing import ImageRefused, decode

    with pytest.raises(ImageRefused, match=r"too large: .*bomb.png"):
        decode(bomb)


def test_training_data_skips_a_bomb_when_asked_and_names_it_otherwise(bomb, tmp_path):
    from deepobfuscator.data.base import load_images

    good = tmp_path / "good.png"
    Image.fromarray(np.full((40, 30, 3), 200, np.uint8)).save(good)
    images, keep = load_images([good, bomb], Preprocess(size=(16, 16)), on_bad_image="skip")
    assert keep.tolist() == [True, False] and images.shape == (1, 16, 16, 3)
    with pytest.raises(DataError, match="too large.*bomb.png.*on_bad_image=skip"):
        load_images([good, bomb], Preprocess(size=(16, 16)))


def test_the_client_refuses_a_bomb_in_one_line(bomb, tmp_path):
    from deepobfuscator.deploy.preprocess_np import load_batch

    with pytest.raises(ImageError, match="too large"):
        load_batch([bomb], Preprocess(size=(16, 16)).to_dict())
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="corrupt or unreadable image"):
        load_batch([junk], Preprocess(size=(16, 16)).to_dict())


def test_16_bit_greyscale_keeps_its_gradient_instead_of_saturating(tmp_path):
    """A 16-bit PNG ramp: Pillow's convert("RGB") made 99.6% of it 255; the high byte of
    each value is kept (as Pillow does for 16-bit colour), in training and on the device."""
    from deepobfuscator.deploy.preprocess_np import load_batch

    ramp = np.linspace(0, 65535, 256).astype(np.uint16)[None].repeat(4, 0)  # 4 x 256
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I;16")
        out = preprocessing.to_uint8(img, (4, 256), "none")
    np.testing.assert_array_equal(out[0, :, 0], (ramp[0] >> 8).astype(np.uint8))
    assert (out == 255).mean() < 0.01
    x = load_batch([path], {"size": [4, 256], "crop": "none", "resample": "bilinear",
                            "value_range": [0.0, 1.0], "channel_order": "RGB"})
    np.testing.assert_allclose(x[0, 0, 0] * 255, ramp[0] >> 8, atol=1e-3)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_is_composited_over_white_with_known_answers(mode):
    """round(c a / 255) + 255 - a per channel: opaque keeps its colour, transparent is
    white whatever colour it stores, half alpha is halfway to white."""
    rgba = np.array([[[200, 10, 90, 255], [200, 10, 90, 0], [200, 10, 90, 128]]], np.uint8)
    want = np.array([[[200, 10, 90], [255, 255, 255], [227, 132, 172]]])
    if mode == "LA":
        rgba[..., 1:3] = rgba[..., :1]  # grey: every channel 200
        want = np.array([[[200] * 3, [255] * 3, [227] * 3]])
        img = Image.fromarray(rgba, "RGBA").convert("LA")
    elif mode == "P":  # a palette PNG whose entry 1 is transparent
        img = Image.new("P", (3, 1))
        img.putpalette([200, 10, 90, 0, 255, 0])
        img.putdata([0, 1, 0])
        img.info["transparency"] = 1
        want = np.array([[[200, 10, 90], [255, 255, 255], [200, 10, 90]]])
    else:
        img = Image.fromarray(rgba, "RGBA")
    got = np.asarray(preprocessing.on_white(img), int)
    np.testing.assert_array_equal(got, want)
    opaque = Image.fromarray(rgba[..., :3], "RGB")
    assert preprocessing.on_white(opaque).tobytes() == opaque.tobytes()
