"""Dynamic batching for the cloud service: the feature tensors of concurrent requests are
gathered into one classifier run and the answers split back, in order.

One worker runs the model. It takes the first waiting request and everything queued behind
it; while other requests are still arriving (their bodies read or decoded right now) it
waits up to `wait_ms` for them too. With a single client nothing else is ever arriving, so
a lone request never waits: latency at one client is today's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from starlette.concurrency import run_in_threadpool


@dataclass
class _Item:
    z: np.ndarray
    done: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class Batcher:
    """run: features (N, ...) -> outputs (N, ...), called from a worker thread."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_rows: int = 256,
                 wait_ms: float = 2.0) -> None:
        self.run, self.max_rows, self.wait = run, max_rows, wait_ms / 1e3
        self.arriving = 0  # requests counted in by `arriving_one`, not yet submitted
        self.batches = 0
        self.rows = 0
        self._queue: asyncio.Queue[_Item] | None = None
        self._worker: asyncio.Task | None = None

    def arriving_one(self) -> _Arrival:
        """A context for a request from the moment its body starts to arrive until it is
        submitted (or fails): the worker waits for such requests, never for absent ones."""
        return _Arrival(self)

    async def submit(self, z: np.ndarray) -> tuple[np.ndarray, float, float]:
        """The outputs for z, and the seconds it queued and the model took (its batch's)."""
        if self._queue is None:  # created on the serving loop, at the first request
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._work())
        item = _Item(z, asyncio.get_running_loop().create_future())
        await self._queue.put(item)
        return await item.done

    async def _gather(self) -> list[_Item]:
        assert self._queue is not None
        items = [await self._queue.get()]
        rows = len(items[0].z)
        deadline = time.perf_counter() + self.wait
        while rows < self.max_rows:
            if not self._queue.empty():
                nxt = self._queue.get_nowait()
            elif self.arriving > 0 and (left := deadline - time.perf_counter()) > 0:
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
            else:
                break
            if rows + len(nxt.z) > self.max_rows:  # it starts the next batch
                self._queue.put_nowait(nxt)  # behind anything queued since: fair enough
                break
            items.append(nxt)
            rows += len(nxt.z)
        return items

    async def _work(self) -> None:
        while True:
            items = await self._gather()
            start = time.perf_counter()
            try:
                out = await run_in_threadpool(self.run, np.concatenate([i.z for i in items]))
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for i in items:
                    if not i.done.done():
                        i.done.set_exception(exc)
                continue
            took = time.perf_counter() - start
            self.batches += 1
            self.rows += sum(len(i.z) for i in items)
            at = 0
            for i in items:
                if not i.done.done():  # a client that left has cancelled its future
                    i.done.set_result((out[at:at + len(i.z)], start - i.queued, took))
                at += len(i.z)


class _Arrival:
    def __init__(self, batcher: Batcher) -> None:
        self.batcher = batcher

    def __enter__(self) -> None:
        self.batcher.arriving += 1

    def __exit__(self, *exc: object) -> None:
        self.batcher.arriving -= 1
