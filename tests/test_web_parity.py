"""The page's JavaScript (deploy/web/obfuscator.js) against the Python client, in node:
the same crop and PIL-bilinear resize byte for byte, and the same wire bytes for the same
features, for every crop form, odd sizes, up- and downscaling, all wire encodings."""

import base64
import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from deepobfuscator import preprocessing
from deepobfuscator.deploy import wire
from deepobfuscator.deploy.web_assets import WEB

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

RUNNER = """
import { readFileSync } from "node:fs";
import * as js from "%s";
const cases = JSON.parse(readFileSync(process.argv[2], "utf8"));
const b64 = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString("base64");
const out = cases.map((c) => {
  if (c.kind === "preprocess") {
    const rgba = new Uint8Array(Buffer.from(c.rgba, "base64"));
    const rgb = js.preprocess(rgba, c.width, c.height, c.input);
    const x = js.toInput(rgb, c.input.size[0], c.input.size[1]);
    return { rgb: b64(rgb), x: b64(x) };
  }
  const f = new Float32Array(new Uint8Array(Buffer.from(c.features, "base64")).buffer);
  return { wire: b64(js.encode(f, c.shape, c.dtype, c.perChannel)) };
});
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
