"""A service that holds under slow clients (issue 37, item 4): a trickled body is answered
408 after the body timeout, bodies beyond the cap on concurrent uploads get 503 at once, and
/docs, when asked for, is rendered by the server with nothing loaded from outside it."""

import re
import socket
import time

import httpx
import numpy as np
import pytest
from deploy_helpers import TOKEN, LiveServer

from deepobfuscator import wire
from deepobfuscator.deploy.server import create_app
from deepobfuscator.errors import UserError

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _stall(url: str, declared: int = 10_000, sent: bytes = b"DOBF") -> socket.socket:
    """A client that declares a body, sends its first bytes and then nothing."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(f"POST /v1/classify HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}"
                 f"\r\nContent-Type: application/octet-stream\r\nContent-Length: {declared}"
                 "\r\n\r\n".encode() + sent)
    return sock


def _status(sock: socket.socket) -> int:
    head = sock.recv(4096).decode("latin-1")
    return int(re.match(r"HTTP/1.1 (\d+)", head).group(1))


@pytest.fixture(scope="module")
def slow(tiny_export):
    with LiveServer(create_app(tiny_export, token=TOKEN, body_timeout=1.0,
                               max_uploads=2)) as s:
        yield s


def _good_body() -> bytes:
    return wire.encode(np.ones((1, 16, 8, 8), np.float32), "int8")


def test_a_trickled_body_is_answered_408_after_the_timeout(slow):
    t0 = time.monotonic()
    sock = _stall(slow.url)
    try:
        assert _status(sock) == 408
        assert 0.9 < time.monotonic() - t0 < 5
    finally:
        sock.close()


def test_uploads_beyond_the_cap_get_503_at_once_and_the_slots_come_back(slow):
    stalled = [_stall(slow.url) for _ in range(2)]
    try:
        time.sleep(0.3)  # both are reading their bodies now
        r = httpx.post(slow.url + "/v1/classify", content=_good_body(), headers=AUTH,
                       timeout=5)
        assert r.status_code == 503 and r.json()["error"] == "busy"
        assert r.headers["retry-after"] == "1"
        assert httpx.get(slow.url + "/healthz", timeout=5).status_code == 200  # still up
        assert all(_status(s) == 408 for s in stalled)  # the stalled ones time out
    finally:
        for s in stalled:
            s.close()
    r = httpx.post(slow.url + "/v1/classify", content=_good_body(), headers=AUTH, timeout=5)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("kwargs", [{"body_timeout": 0}, {"body_timeout": float("nan")},
                                    {"max_uploads": 0}])
def test_limits_that_allow_nothing_are_refused(tiny_export, kwargs):
    with pytest.raises(UserError, match="give a timeout above 0 seconds"):
        create_app(tiny_export, **kwargs)


def test_api_docs_are_served_from_the_server_itself_when_asked(tiny_export):
    with LiveServer(create_app(tiny_export, token=TOKEN, api_docs=True)) as s:
        r = httpx.get(s.url + "/docs", timeout=5)
    assert r.status_code == 200
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    page = r.text
    assert "/v1/classify" in page and "ClassifyResponse" in page and "Bearer" in page
    # nothing from outside: no absolute URL to another host, no script at all
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "<script" not in page
