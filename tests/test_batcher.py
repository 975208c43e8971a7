"""Dynamic batching (issue 37, item 7): concurrent requests' features run through the
classifier together, each request gets exactly its own rows back, and a lone request never
waits for company."""

import asyncio
import time

import httpx
import numpy as np
import onnxruntime as ort
from deploy_helpers import TOKEN, LiveServer

from deepobfuscator import wire
from deepobfuscator.deploy.batcher import Batcher
from deepobfuscator.deploy.server import create_app


def _slow_double(calls):
    def run(z):
        calls.append(len(z))
        time.sleep(0.05)  # the model is busy: requests queue behind it
        return z * 2
    return run


def test_concurrent_submissions_share_runs_and_get_their_own_rows():
    calls: list[int] = []
    batcher = Batcher(_slow_double(calls), max_rows=64, wait_ms=1)

    async def main():
        zs = [np.full((1 + i % 3, 2), i, np.float32) for i in range(12)]
        outs = await asyncio.gather(*(batcher.submit(z) for z in zs))
        return zs, outs

    zs, outs = asyncio.run(main())
    for z, (out, queued, model) in zip(zs, outs, strict=True):
        np.testing.assert_array_equal(out, z * 2)  # its own rows, in order
        assert queued >= 0 and model >= 0.05
    assert sum(calls) == sum(len(z) for z in zs) and len(calls) < len(zs)
    assert batcher.batches == len(calls)


def test_batches_never_exceed_max_rows():
    calls: list[int] = []
    batcher = Batcher(_slow_double(calls), max_rows=5, wait_ms=1)

    async def main():
        return await asyncio.gather(*(batcher.submit(np.ones((2, 1), np.float32))
                                      for _ in range(9)))

    asyncio.run(main())
    assert max(calls) <= 5 and sum(calls) == 18


def test_a_lone_request_does_not_wait_for_company():
    batcher = Batcher(lambda z: z, wait_ms=60_000)  # would wait a minute for arrivals

    async def main():
        return await asyncio.wait_for(batcher.submit(np.ones((1, 1), np.float32)), 5)

    out, queued, _ = asyncio.run(main())
    assert out.tolist() == [[1.0]] and queued < 5


def test_the_batcher_waits_for_requests_still_arriving():
    calls: list[int] = []
    batcher = Batcher(lambda z: calls.append(len(z)) or z, wait_ms=2_000)

    async def main():
        with batcher.arriving_one():  # a second request is reading its body
            first = asyncio.ensure_future(batcher.submit(np.ones((1, 1), np.float32)))
            await asyncio.sleep(0.1)
            assert not first.done()  # held for the arriving one
            second = batcher.submit(np.zeros((1, 1), np.float32))
        return await asyncio.gather(first, second)

    asyncio.run(main())
    assert calls == [2]


def test_a_failing_run_fails_every_request_of_its_batch_and_the_next_batch_runs():
    state = {"fail": True}

    def run(z):
        time.sleep(0.02)
        if state.pop("fail", False):
            raise RuntimeError("boom")
        return z

    batcher = Batcher(run, wait_ms=1)

    async def main():
        got = await asyncio.gather(*(batcher.submit(np.ones((1, 1), np.float32))
                                     for _ in range(3)), return_exceptions=True)
        return got, await batcher.submit(np.ones((1, 1), np.float32))

    got, after = asyncio.run(main())
    assert any(isinstance(g, RuntimeError) for g in got)
    assert after[0].tolist() == [[1.0]]


def test_the_server_answers_concurrent_requests_as_the_classifier_does_one_by_one(
        tiny_export):
    rng = np.random.default_rng(3)
    zs = [rng.random((1 + i % 4, 16, 8, 8), dtype=np.float32) * 2 for i in range(24)]
    ref = ort.InferenceSession(str(tiny_export / "classifier.onnx"))
    app = create_app(tiny_export, token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def main(url):
        async with httpx.AsyncClient(base_url=url, timeout=20) as http:
            return await asyncio.gather(*(http.post("/v1/classify", headers=auth,
                                                    content=wire.encode(z, "float32"))
                                          for z in zs))

    with LiveServer(app) as s:
        rs = asyncio.run(main(s.url))
    for z, r in zip(zs, rs, strict=True):
        assert r.status_code == 200, r.text
        want = ref.run(None, {"features": z})[0]
        got = [p["probability"] for p in r.json()["predictions"]]
        np.testing.assert_allclose(got, want, atol=1e-5)
        timing = r.headers["server-timing"]
        assert all(f"{k};dur=" in timing for k in ("read", "decode", "queue", "model"))
    assert app.state.batcher.rows == sum(len(z) for z in zs)
    assert app.state.batcher.batches <= len(zs)


def test_batching_can_be_turned_off(tiny_export):
    app = create_app(tiny_export, batch_wait_ms=-1)
    assert app.state.batcher is None
    with LiveServer(app) as s:
        r = httpx.post(s.url + "/v1/classify",
                       content=wire.encode(np.ones((2, 16, 8, 8), np.float32), "float32"))
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2
    assert "queue;dur=0.00" in r.headers["server-timing"]


def _children(pid: int) -> list[int]:
    import os

    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d))
    return out


def test_serve_with_two_worker_processes_answers_as_one_does(tiny_export, tmp_path):
    """`serve --workers 2`: two processes share the port, the token reaches both through
    the environment (never a command line), and every answer is the classifier's."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k != "DEEPOBFUSCATOR_TOKEN"}
    proc = subprocess.Popen([sys.executable, "-m", "deepobfuscator.deploy.cli_commands",
                             "serve", str(tiny_export), "--port", str(port), "--workers", "2",
                             "--threads", "1", "--token-file", str(token_file),
                             "--log-level", "warning"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        z = np.random.default_rng(5).random((3, 16, 8, 8), dtype=np.float32)
        want = ort.InferenceSession(str(tiny_export / "classifier.onnx")).run(
            None, {"features": z})[0]
        for _ in range(4):  # whichever worker takes it
            r = httpx.post(url + "/v1/classify", content=wire.encode(z, "float32"),
                           headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
            assert r.status_code == 200, r.text
            np.testing.assert_allclose([p["probability"] for p in r.json()["predictions"]],
                                       want, atol=1e-5)
        assert httpx.post(url + "/v1/classify", content=wire.encode(z, "float32"),
                          timeout=10).status_code == 401
        workers = [c for c in _children(proc.pid)
                   if b"spawn" in open(f"/proc/{c}/cmdline", "rb").read()]
        assert len(workers) == 2
        for c in workers:  # the token is in no worker's command line
            assert TOKEN.encode() not in open(f"/proc/{c}/cmdline", "rb").read()
    finally:
        proc.terminate()
        proc.wait(20)
