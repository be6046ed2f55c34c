"""Ordered, bounded, streaming thread-pool map.

:func:`ordered_map` runs ``fn`` over an iterable on a few threads and yields
the results in input order while the consumer works on earlier ones: a feeder
thread submits work into a bounded queue, so at most ``window`` items are
submitted-but-not-yet-consumed however long the input is. This is the queue
between the fetchers and the batcher: fetching continues while the consumer
runs the model on earlier results, and memory stays bounded.

Why threads (not asyncio): the work is blocking HTTP (``requests``) plus image
decoding (PIL and zlib release the GIL), the consumer is synchronous (ONNX
Runtime), and a few dozen threads cost little; asyncio would need another HTTP
library and a second event loop beside the model.

Torch-free.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = [
    "ordered_map",
]

T = TypeVar("T")
R = TypeVar("R")

_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def ordered_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int, window: int,
                name: str = "galmerge-worker") -> Generator[R, None, None]:
    """Yield ``fn(item)`` for each item, in order, computed on ``workers`` threads.

    Args:
        fn: the work; an exception it raises is re-raised to the consumer when
            its result is reached (after which the map stops).
        items: any iterable; it is consumed on a background thread.
        workers: threads running ``fn``.
        window: most items in flight or waiting to be consumed (>= workers).

    Closing the generator early (``break``, ``.close()``) stops the feeder,
    cancels work not yet started and waits for work already running.
    """
    workers = max(1, int(workers))
    window = max(workers, int(window))
    pending: queue.Queue[object] = queue.Queue(maxsize=window)
    stop = threading.Event()
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    def put(obj: object) -> bool:
        while not stop.is_set():
            try:
                pending.put(obj, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def feed() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                fut = executor.submit(fn, item)
                if not put(fut):
                    fut.cancel()
                    return
        except BaseException as exc:  # the input iterable failed: tell the consumer
            put(_Failed(exc))
            return
        put(_END)

    feeder = threading.Thread(target=feed, name=f"{name}-feeder", daemon=True)
    feeder.start()
    try:
        while True:
            obj = pending.get()
            if obj is _END:
                return
            if isinstance(obj, _Failed):
                raise obj.exc
            assert isinstance(obj, Future)
            yield obj.result()
    finally:
        stop.set()
        feeder.join()
        while True:
            try:
                obj = pending.get_nowait()
            except queue.Empty:
                break
            if isinstance(obj, Future):
                obj.cancel()
        executor.shutdown(wait=True, cancel_futures=True)
