import gzip
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from deploy_helpers import TOKEN, LiveServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepobfuscator import wire
from deepobfuscator.deploy.manifest import ExportError, sha256_file
from deepobfuscator.deploy.server import create_app

MAX_BODY = 64 * 1024
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(tiny_export):
    with LiveServer(create_app(tiny_export, token=TOKEN, max_body_bytes=MAX_BODY,
                               max_batch=32)) as s:
        with httpx.Client(base_url=s.url, timeout=10) as client:
            yield client


def _features(n=3, seed=0):
    return np.random.default_rng(seed).random((n, 16, 8, 8), dtype=np.float32) * 2


def test_classify_happy_path_matches_the_onnx_classifier(server, tiny_export):
    z = _features()
    r = server.post("/v1/classify", content=wire.encode(z, "float32"), headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == "Smiling" and len(body["predictions"]) == 3
    ref = ort.InferenceSession(str(tiny_export / "classifier.onnx")).run(
        None, {"features": z})[0]
    for pred, p in zip(body["predictions"], ref, strict=True):
        assert pred["probability"] == pytest.approx(float(p), abs=1e-6)
        assert pred["label"] == int(p >= 0.5)
    for dtype in ("float16", "int8"):
        r = server.post("/v1/classify", content=wire.encode(z, dtype), headers=AUTH)
        assert r.status_code == 200 and len(r.json()["predictions"]) == 3


def test_health_manifest_and_docs(server):
    assert server.get("/healthz").json()["status"] == "ok"  # no token needed
    m = server.get("/v1/manifest", headers=AUTH).json()
    assert m["features"]["shape"] == [16, 8, 8] and "path" not in m["run"]
    # FastAPI's /docs and /redoc load Swagger UI and fonts from outside the server: off
    assert server.get("/docs").status_code == 404 and server.get("/redoc").status_code == 404
    spec = server.get("/openapi.json").json()
    assert "application/octet-stream" in spec["paths"]["/v1/classify"]["post"]["requestBody"][
        "content"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": TOKEN}])
def test_requests_without_the_right_token_get_401(server, headers):
    for r in (server.post("/v1/classify", content=wire.encode(_features()), headers=headers),
              server.get("/v1/manifest", headers=headers)):
        assert r.status_code == 401
        assert r.json()["error"] == "unauthorized" and "bearer token" in r.json()["detail"]
        assert r.headers["www-authenticate"] == "Bearer"


def _patch(data: bytes, offset: int, value: bytes) -> bytes:
    b = bytearray(data)
    b[offset:offset + len(value)] = value
    return bytes(b)


GOOD = wire.encode(_features(2), "float32")
BAD_BODIES = {
    "empty": (b"", "empty"),
    "truncated": (GOOD[:-10], "truncated"),
    "truncated_header": (GOOD[:6], "truncated"),
    "bad_magic": (_patch(GOOD, 0, b"JPEG"), "bad_magic"),
    "bad_version": (_patch(GOOD, 4, b"\x01"), "bad_version"),  # version 1: batch-wide int8
    "bad_dtype": (_patch(GOOD, 5, b"\x09"), "bad_dtype"),
    "wrong_shape": (wire.encode(np.ones((1, 8, 8, 8), np.float32)), "shape_mismatch"),
    "extra_bytes": (GOOD + b"xyz", "length_mismatch"),
    "nan": (_patch(GOOD, 24, struct.pack("<f", float("nan"))), "non_finite"),
    "inf": (_patch(GOOD, 28, struct.pack("<f", float("-inf"))), "non_finite"),
    "json_body": (b'{"image": "aGVsbG8="}', "bad_magic"),
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_each_bad_body_gets_a_4xx_json_error_naming_it(server, name):
    body, code = BAD_BODIES[name]
    r = server.post("/v1/classify", content=body, headers=AUTH)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == code and r.json()["detail"]


def test_oversized_bodies_and_batches_get_413(server):
    big = wire.encode(np.ones((70, 16, 8, 8), np.float32), "float32")  # 286 KiB > 64 KiB
    r = server.post("/v1/classify", content=big, headers=AUTH)
    assert r.status_code == 413 and r.json()["error"] == "too_large"

    def chunks():  # no Content-Length: the limit is enforced while reading
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    r = server.post("/v1/classify", content=chunks(), headers=AUTH)
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    r = server.post("/v1/classify", content=wire.encode(np.ones((40, 16, 8, 8)), "int8"),
                    headers=AUTH)
    assert r.status_code == 413 and r.json()["error"] == "batch_too_large"


GZ = {**AUTH, "Content-Encoding": "gzip"}


def test_gzip_bodies_answer_the_same(server):
    body = wire.encode(_features(), "int8")
    plain = server.post("/v1/classify", content=body, headers=AUTH).json()
    packed = gzip.compress(body)
    assert len(packed) < len(body)
    assert server.post("/v1/classify", content=packed, headers=GZ).json() == plain
    r = server.post("/v1/classify", content=packed, headers={**AUTH, "Content-Encoding": "x-gzip"})
    assert r.json() == plain


def _declare(n: int, dtype: str) -> bytes:
    """The header of a float batch of n (16, 8, 8) feature tensors, nothing behind it."""
    return struct.pack("<4sBBBB4I", b"DOBF", wire.VERSION, wire.DTYPES[dtype], 0, 4, n, 16, 8,
                       8)


BAD_GZIP = {
    "not_gzip": (wire.encode(_features(1)), 400, "bad_encoding"),
    "truncated": (gzip.compress(wire.encode(_features(1)))[:-12], 400, "bad_encoding"),
    "trailing": (gzip.compress(wire.encode(_features(1))) + b"junk", 400, "bad_encoding"),
    "bad_crc": (_patch(gzip.compress(wire.encode(_features(1))), -8, b"\0\0\0\0"), 400,
                "bad_encoding"),
    # 64 KiB + 1 of zeros packs into ~100 bytes: refused from its first bytes (no header)
    "bomb": (gzip.compress(bytes(MAX_BODY + 1)), 400, "bad_magic"),
    # a valid header declaring far more images than the batch limit, zeros behind it
    "bomb_declared_batch": (gzip.compress(_declare(1_398_099, "float32") + bytes(MAX_BODY)),
                            413, "batch_too_large"),
    # within the batch limit, but more bytes than the body limit
    "bomb_declared_size": (gzip.compress(_declare(30, "float32") + bytes(MAX_BODY)), 413,
                           "too_large"),
    "longer_than_declared": (gzip.compress(wire.encode(_features(1)) + bytes(100)), 400,
                             "length_mismatch"),
    "empty_inflated": (gzip.compress(b""), 400, "empty"),
    "garbage_inflated": (gzip.compress(b"DOBF\x02junk"), 400, "bad_dtype"),
}


@pytest.mark.parametrize("name", sorted(BAD_GZIP))
def test_bad_gzip_bodies_get_a_4xx_json_error(server, name):
    body, status, code = BAD_GZIP[name]
    r = server.post("/v1/classify", content=body, headers=GZ)
    assert r.status_code == status, r.text
    assert r.json()["error"] == code and r.json()["detail"]


def test_gzip_without_its_header_says_so(server):
    r = server.post("/v1/classify", content=gzip.compress(wire.encode(_features(1))),
                    headers=AUTH)
    assert r.status_code == 400 and r.json()["error"] == "bad_magic"
    assert "Content-Encoding: gzip" in r.json()["detail"]


def test_other_content_encodings_get_415(server):
    r = server.post("/v1/classify", content=wire.encode(_features()),
                    headers={**AUTH, "Content-Encoding": "br"})
    assert r.status_code == 415 and r.json()["error"] == "unsupported_encoding"


def test_extreme_features_are_a_4xx_not_a_crash(server):
    r = server.post("/v1/classify", content=wire.encode(np.full((1, 16, 8, 8), 3e38)),
                    headers=AUTH)
    assert r.status_code in (200, 422), r.text
    r = server.get("/v1/classify", headers=AUTH)
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def _post_corrupted(server, data, body: bytes, headers: dict) -> None:
    """Flip 1-3 random bytes, truncate at a random length, post: a 4xx JSON error or an
    answer, never a 500."""
    b = bytearray(body)
    for _ in range(data.draw(st.integers(1, 3))):
        b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
    r = server.post("/v1/classify", content=bytes(b[:data.draw(st.integers(0, len(b)))]),
                    headers=headers)
    assert r.status_code in (200, 400, 413, 422), r.text
    assert "error" in r.json() or "predictions" in r.json()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_corruptions_never_produce_a_500(server, data):
    dtype = data.draw(st.sampled_from(["float32", "int8"]))
    _post_corrupted(server, data, wire.encode(_features(1), dtype), AUTH)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_corruptions_of_gzip_bodies_never_produce_a_500(server, data):
    _post_corrupted(server, data, gzip.compress(wire.encode(_features(1), "int8")), GZ)


def test_an_empty_token_is_refused_not_an_open_door(tiny_export):
    # regression: token "" matched requests without any Authorization header
    with pytest.raises(ValueError, match="empty bearer token"):
        create_app(tiny_export, token="")
    from deepobfuscator.deploy.cli_commands import main

    assert main(["serve", str(tiny_export), "--token", "", "--port", "1"]) == 2


def test_an_empty_token_variable_is_refused_as_an_empty_flag_is(tiny_export, monkeypatch):
    """Issue 37, item 5: DEEPOBFUSCATOR_TOKEN= (set, empty) served with no authentication."""
    monkeypatch.setenv("DEEPOBFUSCATOR_TOKEN", "  ")
    with pytest.raises(ValueError, match=r"empty bearer token.*unset \$DEEPOBFUSCATOR_TOKEN"):
        create_app(tiny_export)
    monkeypatch.delenv("DEEPOBFUSCATOR_TOKEN")
    create_app(tiny_export)  # unset: no authentication, as documented


def test_the_token_from_a_file_and_a_warning_for_one_on_the_command_line(tmp_path, capsys):
    import argparse

    from deepobfuscator.deploy.cli_commands import UsageError, resolve_token

    f = tmp_path / "token"
    f.write_text("s3cret\n")
    ns = argparse.Namespace
    assert resolve_token(ns(token=None, token_file=str(f))) == "s3cret"
    assert capsys.readouterr().err == ""  # a file is the quiet, safe form
    assert resolve_token(ns(token="visible", token_file=None)) == "visible"
    assert "shows in `ps`" in capsys.readouterr().err
    assert resolve_token(ns(token=None, token_file=None)) is None  # the environment's
    (tmp_path / "empty").write_text("\n")
    for bad, message in ((ns(token="a", token_file=str(f)), "not both"),
                         (ns(token=None, token_file=str(tmp_path / "empty")), "is empty"),
                         (ns(token=None, token_file=str(tmp_path / "nope")), "cannot read it")):
        with pytest.raises(UsageError, match=message):
            resolve_token(bad)


def test_token_from_the_environment(tiny_export, monkeypatch):
    monkeypatch.setenv("DEEPOBFUSCATOR_TOKEN", "from-env")
    with LiveServer(create_app(tiny_export)) as s:
        assert httpx.get(s.url + "/v1/manifest").status_code == 401
        r = httpx.get(s.url + "/v1/manifest", headers={"Authorization": "Bearer from-env"})
        assert r.status_code == 200


def _edit_manifest(d, edit):
    m = json.loads((d / "manifest.json").read_text())
    edit(m)
    (d / "manifest.json").write_text(json.dumps(m))


def _garbage_classifier(d):
    """A classifier.onnx that is not ONNX, with its hash recomputed: it passes the hash check."""
    (d / "classifier.onnx").write_bytes(b"\x08\x07 this is not a protobuf " * 40)
    _edit_manifest(d, lambda m: m["models"]["classifier"].update(
        sha256=sha256_file(d / "classifier.onnx")))


def _broken(tiny_export, tmp_path, how):
    d = tmp_path / "export"
    shutil.copytree(tiny_export, d)
    if how == "missing":
        (d / "classifier.onnx").unlink()
    elif how == "tampered":
        (d / "obfuscator.onnx").write_bytes((d / "obfuscator.onnx").read_bytes()[:-1] + b"!")
    elif how == "wrong_shape":
        _edit_manifest(d, lambda m: m["features"].update(shape=[3, 5, 5]))
    elif how == "no_task_name":
        _edit_manifest(d, lambda m: m["task"].pop("name"))
    elif how == "bad_dtype":
        _edit_manifest(d, lambda m: m["wire"].update(dtype="int4"))
    elif how == "garbage_onnx":
        _garbage_classifier(d)
    return d


@pytest.mark.parametrize("how,message", [
    ("missing", "classifier.onnx is missing"),
    ("tampered", "obfuscator.onnx: SHA-256"),
    ("wrong_shape", "features: shape, .* the manifest was edited"),
    ("no_task_name", "manifest field task.name is missing"),
    ("bad_dtype", "manifest field wire.dtype is 'int4'"),
    ("garbage_onnx", "onnxruntime cannot load it"),
])
def test_refuses_to_start_on_a_broken_export(tiny_export, tmp_path, how, message):
    d = _broken(tiny_export, tmp_path, how)
    with pytest.raises(ExportError, match=message):
        create_app(d)
    src = Path(__file__).resolve().parents[1] / "src"
    proc = subprocess.run(
        [sys.executable, "-m", "deepobfuscator.deploy.cli_commands", "serve", str(d),
         "--port", "1"], capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert message.split(":")[0] in proc.stderr and proc.stderr.startswith("error:")


def test_a_pinned_manifest_hash_refuses_any_other_export(tiny_export):
    digest = sha256_file(tiny_export / "manifest.json")
    assert create_app(tiny_export, manifest_sha256=digest.upper()).state.bundle
    with pytest.raises(ExportError, match="is not the pinned"):
        create_app(tiny_export, manifest_sha256="0" * 64)


def test_a_small_gzip_body_cannot_make_the_server_inflate_a_huge_batch():
    """The hardening issue's body: 16 KB of gzip that inflates into a valid 16 MiB batch of
    1,398,099 images. Refused from its header: the server never holds the inflated batch."""
    import tracemalloc

    from deepobfuscator.deploy.server import ApiError
    from deepobfuscator.deploy.server import _features as body_to_features

    n = (16 * 1024 * 1024 - wire.HEADER_BYTES) // 12  # int8 (1, 2, 2): 8 B params + 4 B
    assert n == 1_398_099
    raw = struct.pack("<4sBBBB4I", b"DOBF", wire.VERSION, 3, 1, 4, n, 1, 2, 2)
    raw += bytes(8 * n) + bytes(4 * n)  # per-tensor int8 params + payload
    packed = gzip.compress(raw, 9)
    assert len(packed) < 64 * 1024 and len(raw) > 8 * 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(ApiError) as err:
            body_to_features(packed, True, (1, 2, 2), 16 * 1024 * 1024, 256)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.status_code == 413 and err.value.code == "batch_too_large"
    assert peak < 1024 * 1024  # far below the 16 MiB the body inflates to


# ---- several tasks: every prediction answers each of them


@pytest.fixture(scope="module")
def multi(multi_export):
    # a live server as above (starlette's TestClient warns that its httpx use is deprecated)
    with LiveServer(create_app(multi_export, token=TOKEN)) as s:
        with httpx.Client(base_url=s.url, timeout=10) as client:
            yield client


def test_a_multi_task_answer_names_every_task(multi, multi_export):
    from deploy_helpers import HAIR

    shape = (5, *json.loads((multi_export / "manifest.json").read_text())["features"]["shape"])
    z = np.random.default_rng(1).random(shape, dtype=np.float32) * 2
    r = multi.post("/v1/classify", content=wire.encode(z, "float32"), headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tasks"] == ["Smiling", "Eyeglasses", "hair"]
    assert "task" not in body and "threshold" not in body  # nothing one-task to misread
    ref = ort.InferenceSession(str(multi_export / "classifier.onnx")).run(
        None, {"features": z})[0]
    assert len(body["predictions"]) == 5
    for pred, p in zip(body["predictions"], ref, strict=True):
        assert set(pred) == {"answers"} and list(pred["answers"]) == body["tasks"]
        for k, name in enumerate(("Smiling", "Eyeglasses")):
            a = pred["answers"][name]
            assert set(a) == {"probability", "label"}
            assert a["probability"] == pytest.approx(float(p[k]), abs=1e-6)
            assert a["label"] == int(p[k] >= 0.5)
        hair = pred["answers"]["hair"]
        assert set(hair) == {"class", "probability", "probabilities"}
        assert list(hair["probabilities"]) == HAIR
        assert sum(hair["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(list(hair["probabilities"].values()), p[2:], atol=1e-6)
        assert hair["class"] == HAIR[int(np.argmax(p[2:]))]
        assert hair["probability"] == max(hair["probabilities"].values())
    # each task read from its own columns: the six outputs differ, so a slice off by one
    # would fail above (the tiny model answers alike for most inputs, not column to column)
    assert len(set(np.round(ref[0], 6))) == 6


def test_multi_task_health_manifest_and_docs(multi):
    health = multi.get("/healthz").json()
    assert health["tasks"] == ["Smiling", "Eyeglasses", "hair"] and "task" not in health
    m = multi.get("/v1/manifest", headers=AUTH).json()
    assert [t["name"] for t in m["tasks"]] == health["tasks"]
    spec = multi.get("/openapi.json").json()
    assert "`hair`" in spec["info"]["description"]
    answer = spec["components"]["schemas"]["Answer"]["properties"]
    assert {"probability", "label", "class", "probabilities"} <= set(answer)


def test_a_single_task_answer_keeps_its_fields_and_adds_answers(server):
    r = server.post("/v1/classify", content=wire.encode(_features(2), "float32"), headers=AUTH)
    body = r.json()
    assert body["task"] == "Smiling" and body["threshold"] == 0.5
    assert body["tasks"] == ["Smiling"]
    for pred in body["predictions"]:
        assert pred["answers"] == {"Smiling": {"probability": pred["probability"],
                                               "label": pred["label"]}}
    health = server.get("/healthz").json()
    assert health["task"] == "Smiling" and health["tasks"] == ["Smiling"]


def test_a_manifest_that_does_not_match_the_classifiers_outputs_is_refused(multi_export,
                                                                           tmp_path):
    d = tmp_path / "export"
    shutil.copytree(multi_export, d)
    _edit_manifest(d, lambda m: m.update(tasks=m["tasks"][:2]))  # hair's 4 columns unlisted
    with pytest.raises(ExportError, match=r"tasks gives classifier.onnx an output of \[2\] "
                       r"per image, but the graph's is \[6\]"):
        create_app(d)


def test_a_client_that_leaves_mid_body_is_one_log_line(tiny_export, caplog):
    """Issue 37, item 4: every client that disconnected mid-body logged a 60-line
    ClientDisconnect traceback (anyone could flood the log). Now: one info line."""
    import asyncio
    import logging

    app = create_app(tiny_export)
    events = [{"type": "http.request", "body": b"DOBF", "more_body": True},
              {"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive() -> dict:
        return events.pop(0) if events else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/classify", "raw_path":
             b"/v1/classify", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/octet-stream"),
                         (b"content-length", b"1000")],
             "client": ("203.0.113.5", 4321), "server": ("127.0.0.1", 8000)}
    with caplog.at_level(logging.INFO):
        asyncio.run(app(scope, receive, send))  # raises nothing
    lines = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(lines) == 1 and "203.0.113.5" in lines[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
