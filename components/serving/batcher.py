"""Adaptive batching: the requests that arrive while the model is busy form its next batch.

An idle model takes a request at once (no batching window to wait out at low load); under load the
queue fills while a batch runs and batches grow up to ``max_batch_size``, so throughput follows the
load. ``max_wait_ms`` optionally holds a short batch back for more requests.

Refill: the clients a batch answers tend to send their next requests together, but not at one instant.
Taking the first of them at once would split them into a batch of one and a batch of the rest (1, 15,
1, 15, ... at 16 clients: a whole forward for one row). So after a batch of n > 1, the next batch waits
for up to n requests, at most REFILL_SHARE of that batch's run time (an idle model still starts at once).

    batcher = MicroBatcher(predict, max_batch_size=16)   # predict(list[item]) -> list[result]
    result, batch_size = await batcher.submit(item)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


REFILL_SHARE = 0.1  # of the last batch's seconds: how long the next one may wait for the last one's clients


class QueueFull(RuntimeError):
    """More requests are waiting than ``max_queue``: the caller should answer 503 (retry later)."""


class MicroBatcher:
    def __init__(self, fn: Callable[[list[Any]], Sequence[Any]], max_batch_size: int = 16, max_wait_ms: float = 0.0, max_queue: int = 1024) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.fn, self.max_batch_size, self.max_wait, self.max_queue = fn, max_batch_size, max_wait_ms / 1000, max_queue
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch")  # one batch at a time
        self._last = (0, 0.0)  # the last batch's size and seconds (see Refill)

    async def submit(self, item: Any) -> tuple[Any, int]:
        """The item's result and the size of the batch it ran in; fn's exception if its batch failed."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        if self._queue.qsize() >= self.max_queue:
            raise QueueFull(f"{self._queue.qsize()} requests waiting (max_queue {self.max_queue})")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            start = time.monotonic()
            refill = self._last[0] if self._last[0] > 1 else 0
            wait_until, refill_until = start + self.max_wait, start + REFILL_SHARE * self._last[1]
            while len(batch) < self.max_batch_size:
                now = time.monotonic()
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                elif now < wait_until or (len(batch) < refill and now < refill_until):
                    await asyncio.sleep(0.001)
                else:
                    break
            batch = [(item, fut) for item, fut in batch if not fut.cancelled()]  # clients that gave up
            if not batch:
                continue
            try:
                started = time.monotonic()
                results = await loop.run_in_executor(self._executor, self.fn, [item for item, _ in batch])
                self._last = (len(batch), time.monotonic() - started)
                if len(results) != len(batch):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
            except Exception as exc:  # the whole batch failed: every caller gets the error
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(batch, results):
                if not fut.done():
                    fut.set_result((result, len(batch)))

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
