"""The page's JavaScript (deploy/web/obfuscator.js) against the Python client, in node:
the same crop and PIL-bilinear resize byte for byte, the same wire bytes for the same
features, for every crop form, odd sizes, up- and downscaling, all wire encodings, and the
same photo-keyed noise (Web Crypto in node as in the browser) for the same secret."""

import base64
import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from deepobfuscator import preprocessing, wire
from deepobfuscator.deploy.keyed_noise import keyed_normal, photo_key
from deepobfuscator.deploy.web_assets import WEB

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

RUNNER = """
import { readFileSync } from "node:fs";
import * as js from "%s";
const cases = JSON.parse(readFileSync(process.argv[2], "utf8"));
const b64 = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString("base64");
const bytes = (s) => new Uint8Array(Buffer.from(s, "base64"));
const out = await Promise.all(cases.map(async (c) => {
  if (c.kind === "keyed") {
    const x = new Float32Array(bytes(c.x).buffer);
    const key = await js.photoKey(bytes(c.secret), x);
    const noise = await js.keyedNormal(key, c.n);
    const f = new Float32Array(bytes(c.features).buffer);
    return { key: b64(key), noise: b64(noise), noisy: b64(await js.addKeyedNoise(f, c.std, key)) };
  }
  if (c.kind === "preprocess") {
    const rgba = new Uint8Array(Buffer.from(c.rgba, "base64"));
    const rgb = js.preprocess(rgba, c.width, c.height, c.input);
    const x = js.toInput(rgb, c.input.size[0], c.input.size[1]);
    return { rgb: b64(rgb), x: b64(x) };
  }
  const f = new Float32Array(new Uint8Array(Buffer.from(c.features, "base64")).buffer);
  return { wire: b64(js.encode(f, c.shape, c.dtype, c.perChannel)) };
}));
console.log(JSON.stringify(out));
"""


def _run_js(cases: list[dict], tmp_path) -> list[dict]:
    runner = tmp_path / "runner.mjs"
    runner.write_text(RUNNER % (WEB / "obfuscator.js").as_uri())
    data = tmp_path / "cases.json"
    data.write_text(json.dumps(cases))
    proc = subprocess.run([NODE, str(runner), str(data)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _photo(rng, w, h) -> Image.Image:
    """A smooth photo-like gradient plus noise: resampling errors show on both."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / max(w - 1, 1), yy * 255 / max(h - 1, 1),
                     (xx + yy) * 127 / max(w + h - 2, 1)], -1)
    noisy = base + rng.normal(0, 40, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


CASES = [  # photo (w, h), crop, model input (h, w)
    ((178, 218), "square", (64, 64)), ((250, 250), "center:0.4", (64, 64)),
    ((97, 131), "none", (32, 48)), ((40, 30), "square", (64, 64)),  # upscaling
    ((333, 201), "center:77px", (48, 48)), ((64, 64), "square", (64, 64)),  # identity
    ((1001, 37), "center:1.0", (17, 23)), ((251, 250), "center:0.33", (50, 50)),
]


def test_js_preprocessing_equals_the_python_clients_byte_for_byte(tmp_path):
    rng = np.random.default_rng(0)
    cases, expected = [], []
    for (w, h), crop, size in CASES:
        img = _photo(rng, w, h)
        rgba = np.asarray(img.convert("RGBA"))
        cases.append({"kind": "preprocess", "width": w, "height": h,
                      "rgba": base64.b64encode(rgba.tobytes()).decode(),
                      "input": {"size": list(size), "crop": crop, "resample": "bilinear"}})
        expected.append(preprocessing.to_uint8(img, size, crop))
    for got, want, case in zip(_run_js(cases, tmp_path), expected, CASES, strict=True):
        rgb = np.frombuffer(base64.b64decode(got["rgb"]), np.uint8).reshape(want.shape)
        assert np.array_equal(rgb, want), f"{case}: {np.abs(rgb.astype(int) - want).max()}"
        x = np.frombuffer(base64.b64decode(got["x"]), np.float32)
        py_x = (want.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)).reshape(-1)
        assert np.array_equal(x, py_x)


def test_js_wire_encoding_equals_pythons_byte_for_byte(tmp_path):
    rng = np.random.default_rng(1)
    feats = [
        np.maximum(rng.normal(0, 1, (1, 16, 8, 8)), 0).astype(np.float32),  # after a ReLU
        rng.normal(0, 1, (1, 1, 16, 16)).astype(np.float32),  # the cap: signed, unit RMS
        np.zeros((1, 2, 2, 2), np.float32),  # an all-zero channel gets scale 1
        (np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4) - 7.5) / 2,  # halves: ties
        rng.normal(0, 1e-30, (1, 3, 2, 2)).astype(np.float32),  # subnormal spans
    ]
    cases, expected = [], []
    for f in feats:
        for dtype, per_channel in (("int8", True), ("int8", False), ("float32", True)):
            cases.append({"kind": "wire", "features": base64.b64encode(f.tobytes()).decode(),
                          "shape": list(f.shape), "dtype": dtype, "perChannel": per_channel})
            expected.append(wire.encode(f, dtype, per_channel))
    for got, want in zip(_run_js(cases, tmp_path), expected, strict=True):
        assert base64.b64decode(got["wire"]) == want


def test_js_refuses_what_it_does_not_implement(tmp_path):
    bad = {"kind": "preprocess", "width": 4, "height": 4,
           "rgba": base64.b64encode(bytes(64)).decode(),
           "input": {"size": [4, 4], "crop": "middle", "resample": "bilinear"}}
    runner = tmp_path / "runner.mjs"
    runner.write_text(RUNNER % (WEB / "obfuscator.js").as_uri())
    data = tmp_path / "cases.json"
    data.write_text(json.dumps([bad]))
    proc = subprocess.run([NODE, str(runner), str(data)], capture_output=True, text=True)
    assert proc.returncode != 0 and "unknown crop" in proc.stderr


def test_js_keyed_noise_equals_pythons(tmp_path):
    """photoKey and keyedNormal against keyed_noise.py: the same key byte for byte and the
    same normals (float32, 1e-5: Math.log/cos and numpy's may differ in the last bit), for
    model inputs as the client makes them and for awkward floats (ties at x * 255 = k + 0.5,
    values outside [0, 1], a partial last block)."""
    rng = np.random.default_rng(2)
    secret = bytes(rng.integers(0, 256, 32, dtype=np.uint8))
    uint8_input = rng.integers(0, 256, (3, 16, 16), dtype=np.uint8).astype(np.float32) / 255
    awkward = rng.uniform(-0.2, 1.2, (3, 5, 7)).astype(np.float32)
    awkward.flat[:4] = [0.5, 0.5 / 255, 254.5 / 255, 1.0]  # 127.5: a tie, rounded to even
    cases, expected = [], []
    for x, n in ((uint8_input, 1024), (awkward, 105), (uint8_input[:, :1, :3], 1)):
        key = photo_key(secret, x)
        z = rng.normal(0, 1, n).astype(np.float32)
        cases.append({"kind": "keyed", "secret": base64.b64encode(secret).decode(),
                      "x": base64.b64encode(np.ascontiguousarray(x).tobytes()).decode(), "n": n,
                      "features": base64.b64encode(z.tobytes()).decode(), "std": 0.7})
        expected.append((key, keyed_normal(key, n), z))
    for got, (key, noise, z) in zip(_run_js(cases, tmp_path), expected, strict=True):
        assert base64.b64decode(got["key"]) == key
        js_noise = np.frombuffer(base64.b64decode(got["noise"]), np.float32)
        np.testing.assert_allclose(js_noise, noise, rtol=0, atol=1e-5)
        assert np.abs(noise).max() > 0.5  # not vacuous
        noisy = np.frombuffer(base64.b64decode(got["noisy"]), np.float32)
        np.testing.assert_allclose(noisy, z + np.float32(0.7) * noise, rtol=0, atol=1e-5)


SECRET_RUNNER = """
import * as js from "%s";
const store = new Map();
const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v) };
let calls = 0;
const random = (a) => { calls++; return globalThis.crypto.getRandomValues(a); };
const a = js.deviceSecret(storage, random), b = js.deviceSecret(storage, random);
let malformed = "";
try { js.deviceSecret({ getItem: () => "12", setItem: () => {} }, random); }
catch (e) { malformed = e.message; }
console.log(JSON.stringify({ a: Buffer.from(a).toString("hex"), b: Buffer.from(b).toString("hex"),
  stored: store.get(js.SECRET_ITEM), calls, malformed }));
"""


def test_the_page_makes_its_secret_once_and_keeps_it(tmp_path):
    runner = tmp_path / "secret.mjs"
    runner.write_text(SECRET_RUNNER % (WEB / "obfuscator.js").as_uri())
    proc = subprocess.run([NODE, str(runner)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["a"] == got["b"] == got["stored"] and len(got["a"]) == 64
    assert got["calls"] == 1 and int(got["a"], 16) != 0  # 32 random bytes, drawn once
    assert "malformed" in got["malformed"] and "clear this site's data" in got["malformed"]
