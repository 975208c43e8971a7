"""Feature noise keyed to the photo (deploy/keyed_noise.py): the same photo always carries
the same noise, so a server sent it N times cannot average the noise away. The module and
its tests need no torch; the client tests use the session's tiny export (conftest.py)."""

import hashlib
import hmac
import json
import math
import os
import stat
import struct

import numpy as np
import pytest

from deepobfuscator.deploy.keyed_noise import (
    DOMAIN,
    SECRET_ENV,
    DeviceSecretError,
    device_secret,
    keyed_normal,
    photo_key,
    secret_path,
)
from deepobfuscator.deploy.manifest import ExportError, load_export

SECRET = bytes(range(32))


def _pixels(seed: int = 0, shape=(3, 16, 16)) -> np.ndarray:
    """A model input as the client makes it: uint8 / 255 in float32."""
    rgb = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    return rgb.astype(np.float32) / np.float32(255.0)


def _reference_normals(key: bytes, n: int) -> list[float]:
    """The spec, written out with struct and math: SHA-256(key || i big-endian) -> 8
    little-endian uint32 -> Box-Muller of each consecutive pair."""
    out: list[float] = []
    i = 0
    while len(out) < n:
        words = struct.unpack("<8I", hashlib.sha256(key + struct.pack(">I", i)).digest())
        for u0, u1 in zip(words[0::2], words[1::2], strict=True):
            a, b = (u0 + 1) / 4294967297, u1 / 4294967296
            out.append(math.sqrt(-2 * math.log(a)) * math.cos(2 * math.pi * b))
        i += 1
    return out[:n]


# ---- the derivation


def test_the_key_is_an_hmac_of_the_uint8_model_input():
    x = _pixels()
    q = np.rint(x.astype(np.float64) * 255).astype(np.uint8)
    assert photo_key(SECRET, x) == hmac.new(SECRET, DOMAIN + q.tobytes(),
                                            hashlib.sha256).digest()
    # the key reads the uint8 image: float wobble below half a level keys the same photo
    assert photo_key(SECRET, x + np.float32(1e-4)) == photo_key(SECRET, x)


def test_keyed_normals_follow_the_spec_exactly():
    key = photo_key(SECRET, _pixels())
    for n in (0, 1, 5, 37):  # whole blocks and a partial one
        got = keyed_normal(key, n)
        assert got.dtype == np.float32 and got.shape == (n,)
        np.testing.assert_array_equal(got, np.float32(_reference_normals(key, n)))
    # a longer draw extends a shorter one: an image's noise does not depend on n's rounding
    np.testing.assert_array_equal(keyed_normal(key, 1000)[:37], keyed_normal(key, 37))


def test_the_same_secret_and_photo_give_the_same_noise():
    x = _pixels()
    a = keyed_normal(photo_key(SECRET, x), 4096)
    b = keyed_normal(photo_key(bytes(SECRET), x.copy()), 4096)
    np.testing.assert_array_equal(a, b)


def test_another_secret_or_one_pixel_changes_the_noise():
    x = _pixels()
    base = keyed_normal(photo_key(SECRET, x), 4096)
    other_secret = keyed_normal(photo_key(bytes(31) + b"\x01", x), 4096)
    y = x.copy()
    y[1, 7, 3] = (round(float(y[1, 7, 3]) * 255) ^ 1) / 255  # one level of one pixel
    one_pixel = keyed_normal(photo_key(SECRET, y), 4096)
    for other in (other_secret, one_pixel):
        assert not np.array_equal(other, base)
        # unrelated draws, not a shifted copy: they correlate like independent noise
        assert abs(np.corrcoef(base, other)[0, 1]) < 0.06


def test_the_noise_is_standard_normal():
    g = keyed_normal(photo_key(SECRET, _pixels()), 100_000).astype(np.float64)
    assert abs(g.mean()) < 0.02 and abs(g.std() - 1) < 0.02
    # Kolmogorov-Smirnov against N(0, 1): 1.95 / sqrt(n) is the 0.1 % critical value
    s = np.sort(g)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(s / math.sqrt(2)))
    n = len(s)
    ks = max((np.arange(1, n + 1) / n - cdf).max(), (cdf - np.arange(n) / n).max())
    assert ks < 1.95 / math.sqrt(n)
    assert np.abs(g).max() < 6.7  # Box-Muller of (u0 + 1) / (2^32 + 1): never infinite


def test_photo_key_takes_one_photo_and_a_real_secret():
    with pytest.raises(ValueError, match=r"shape \(3, H, W\), got \(2, 3, 16, 16\)"):
        photo_key(SECRET, np.stack([_pixels(0), _pixels(1)]))
    with pytest.raises(ValueError, match="NaN or infinity"):
        photo_key(SECRET, np.full((3, 2, 2), np.nan, np.float32))
    with pytest.raises(DeviceSecretError, match="32 random bytes, got 16 bytes"):
        photo_key(bytes(16), _pixels())
    with pytest.raises(DeviceSecretError, match="got str"):
        photo_key("secret", _pixels())  # type: ignore[arg-type]


# ---- the device secret


def test_the_secret_is_made_once_and_only_its_user_can_read_it(tmp_path):
    path = tmp_path / "cfg" / "device_secret"
    first = device_secret(path)
    assert len(first) == 32 and path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert device_secret(path) == first  # kept, not made again
    assert device_secret(tmp_path / "other") != first  # os.urandom, not derived
    assert [p.name for p in path.parent.iterdir()] == ["device_secret"]  # no temp file left


def test_where_the_secret_lives(tmp_path, monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert secret_path() == tmp_path / "xdg" / "deepobfuscator" / "device_secret"
    made = device_secret()
    assert (tmp_path / "xdg" / "deepobfuscator" / "device_secret").is_file()
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert secret_path() == tmp_path / "home" / ".config" / "deepobfuscator" / "device_secret"
    monkeypatch.setenv(SECRET_ENV, str(tmp_path / "env_secret"))
    assert secret_path() == tmp_path / "env_secret"
    assert device_secret() != made and device_secret(tmp_path / "xdg" / "deepobfuscator" /
                                                     "device_secret") == made


@pytest.mark.parametrize("content", [b"", b"zz" * 32, b"ab" * 31, b"\xff" * 64, b"ab" * 33])
def test_a_malformed_secret_file_is_one_line_naming_the_file_and_the_fix(tmp_path, content):
    path = tmp_path / "device_secret"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(DeviceSecretError) as err:
        device_secret(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "malformed" in msg and "delete it" in msg


def test_a_secret_others_can_read_or_a_folder_is_refused(tmp_path):
    path = tmp_path / "device_secret"
    device_secret(path)
    path.chmod(0o644)
    with pytest.raises(DeviceSecretError, match=f"is open to other users \\(mode 644\\); run "
                       f"`chmod 600 {path}`"):
        device_secret(path)
    os.chmod(path, 0o600)
    assert len(device_secret(path)) == 32
    with pytest.raises(DeviceSecretError, match="is a folder"):
        device_secret(tmp_path)


def test_the_secret_never_appears_in_an_error(tmp_path):
    path = tmp_path / "device_secret"
    secret = device_secret(path)
    path.chmod(0o640)
    with pytest.raises(DeviceSecretError) as err:
        device_secret(path)
    assert secret.hex() not in str(err.value)


# ---- the client


def _noisy(export, tmp_path, key: str | None, std: float = 0.5):
    """A copy of the tiny export made as if with noise of `std`, keyed `key` (None: the field
    absent, as in an export made before keyed noise). The models compute what the export's
    own do: only what the device adds changes."""
    from deploy_helpers import export_with_features

    return export_with_features(export, tmp_path / f"noisy-{key}", noise_std=std,
                                noise_key=key)


def test_photo_keyed_features_repeat_exactly(tiny_export, tmp_path):
    from deepobfuscator.deploy.client import DeviceObfuscator

    device = DeviceObfuscator(_noisy(tiny_export, tmp_path, "photo"), device_secret=SECRET)
    assert device.bundle.noise_key == "photo"
    x = np.stack([_pixels(i, (3, 32, 32)) for i in range(3)])
    first = device.features(x)
    np.testing.assert_array_equal(device.features(x), first)  # a retry sends the same
    np.testing.assert_array_equal(device.features(x[::-1]), first[::-1])  # per image
    np.testing.assert_array_equal(device.features(x[1:2]), first[1:2])  # any batch
    assert device.encode(device.features(x)) == device.encode(first)  # the same bytes
    # each image's noise is 0.5 x keyed_normal(photo_key(secret, its input))
    clean = device.features(x, noise=False)
    n = int(np.prod(first.shape[1:]))
    for i in range(3):
        want = 0.5 * keyed_normal(photo_key(SECRET, x[i]), n).reshape(first.shape[1:])
        np.testing.assert_allclose(first[i] - clean[i], want, atol=1e-5)
    assert (first - clean).std() == pytest.approx(0.5, rel=0.1)
    other = DeviceObfuscator(device.bundle.root, device_secret=bytes(32))
    assert not np.allclose(other.features(x), first)  # another device, another noise


def test_fresh_noise_differs_on_every_call(tiny_export, tmp_path):
    from deepobfuscator.deploy.client import DeviceObfuscator

    x = np.stack([_pixels(i, (3, 32, 32)) for i in range(2)])
    for key in ("fresh", None):  # None: an export made before keyed noise
        device = DeviceObfuscator(_noisy(tiny_export, tmp_path, key))
        assert device.bundle.noise_key == "fresh"
        a, b = device.features(x), device.features(x)
        assert not np.array_equal(a, b)
        clean = device.features(x, noise=False)
        assert (a - clean).std() == pytest.approx(0.5, rel=0.1)


def test_the_client_keeps_its_secret_in_the_device_secret_file(tiny_export, tmp_path):
    from deepobfuscator.deploy.client import DeviceObfuscator

    export = _noisy(tiny_export, tmp_path, "photo")
    x = _pixels(0, (3, 32, 32))[None]
    a = DeviceObfuscator(export).features(x)  # made on first use, in conftest's tmp folder
    path = secret_path()
    assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o600
    np.testing.assert_array_equal(DeviceObfuscator(export).features(x), a)
    np.testing.assert_array_equal(
        DeviceObfuscator(export, device_secret=device_secret(path)).features(x), a)
    with pytest.raises(DeviceSecretError, match="32 random bytes, got 3 bytes"):
        DeviceObfuscator(export, device_secret=b"abc")


def test_no_secret_is_made_for_an_export_without_keyed_noise(tiny_export, tmp_path,
                                                               monkeypatch):
    from deepobfuscator.deploy.client import DeviceObfuscator

    monkeypatch.setenv(SECRET_ENV, str(tmp_path / "unused"))
    DeviceObfuscator(tiny_export).features(_pixels(0, (3, 32, 32))[None])  # no noise
    DeviceObfuscator(_noisy(tiny_export, tmp_path, "fresh"))
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize("value", ["daily", None, 1, ["photo"]])
def test_a_bad_noise_key_in_the_manifest_is_one_line(tiny_export, tmp_path, value):
    d = _noisy(tiny_export, tmp_path, "photo")
    m = json.loads((d / "manifest.json").read_text())
    m["features"]["noise_key"] = value
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ExportError, match=r"manifest field features.noise_key is .*; expected "
                       r"'photo' or 'fresh' \(or absent\). Export the run again") as err:
        load_export(d)
    assert "\n" not in str(err.value)
