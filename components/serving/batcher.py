"""Adaptive batching: the requests that arrive while the model is busy form its next batch.

An idle model takes a request at once (no batching window to wait out at low load); under load the
queue fills while a batch runs and batches grow up to ``max_batch_size``, so throughput follows the
load. ``max_wait_ms`` optionally holds a short batch back for more requests.

    batcher = MicroBatcher(predict, max_batch_size=16)   # predict(list[item]) -> list[result]
    result, batch_size = await batcher.submit(item)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


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
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch_size:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                elif time.monotonic() < deadline:
                    await asyncio.sleep(min(0.001, deadline - time.monotonic()))
                else:
                    break
            batch = [(item, fut) for item, fut in batch if not fut.cancelled()]  # clients that gave up
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self._executor, self.fn, [item for item, _ in batch])
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
