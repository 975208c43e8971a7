"""Dynamic batching (issue 37, item 7): concurrent requests' features run through the
classifier together, each request gets exactly its own rows back, and a lone request never
waits for company."""

import asyncio
import time

import httpx
import numpy as np
import onnxruntime as ort
from deploy_helpers import TOKEN, LiveServer

from deepobfuscator.deploy import wire
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
