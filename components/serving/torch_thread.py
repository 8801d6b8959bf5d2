"""One thread for all of a serving process's torch work: loading, warm-up, resampling and inference.

Why: torch's CPU kernels run on OpenMP (libgomp). libgomp gives every thread that opens a parallel
region its own team of helper threads, and once the teams together outnumber the cores it stops
spinning between regions and sleeps instead. A cascade forward opens thousands of small regions, so
every one of them then pays a futex wake-up. Measured on 2 cores, one 3 s utterance: 34 ms when only
one thread ever ran torch, 45-50 ms once a second thread had, 80-130 ms in the service when the loader,
the batcher and the request threads each had (benchmarks/serving.py).

    result = run_on_torch_thread(fn, *args)               # blocks; runs inline on the torch thread itself
    result = await run_on_torch_thread_async(fn, *args)   # from an event loop
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cascadapt-torch")
_TORCH_THREAD_ID = _EXECUTOR.submit(threading.get_ident).result()  # starts the thread and remembers it


def on_torch_thread() -> bool:
    return threading.get_ident() == _TORCH_THREAD_ID


def run_on_torch_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    """fn(*args, **kwargs) on the torch thread, after the work queued before it; its exception re-raised here."""
    if on_torch_thread():  # already there: queueing would wait on ourselves
        return fn(*args, **kwargs)
    return _EXECUTOR.submit(fn, *args, **kwargs).result()


async def run_on_torch_thread_async(fn: Callable[..., T], *args, **kwargs) -> T:
    """The same, awaited: the event loop keeps serving while the torch thread works."""
    return await asyncio.wrap_future(_EXECUTOR.submit(fn, *args, **kwargs))
