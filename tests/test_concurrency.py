"""ordered_map: order, bounded look-ahead, errors, early close."""

from __future__ import annotations

import threading
import time

import pytest

from galmerge.inference.concurrency import ordered_map


def test_results_in_input_order_despite_uneven_work() -> None:
    def slow_square(i: int) -> int:
        time.sleep(0.02 if i % 3 == 0 else 0.001)
        return i * i

    assert list(ordered_map(slow_square, range(50), workers=4, window=8)) == [
        i * i for i in range(50)]


def test_look_ahead_is_bounded_while_the_consumer_is_slow() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
        return i

    gen = ordered_map(work, iter(range(10_000)), workers=2, window=6)
    for consumed, _ in enumerate(gen, start=1):
        time.sleep(0.002)
        with lock:
            ahead = len(started) - consumed
        assert ahead <= 6 + 1
        if consumed == 50:
            break
    gen.close()
    assert len(started) <= 50 + 7


def test_work_error_reaches_the_consumer() -> None:
    def work(i: int) -> int:
        if i == 5:
            raise RuntimeError("boom")
        return i

    out: list[int] = []
    with pytest.raises(RuntimeError, match="boom"):
        for x in ordered_map(work, range(20), workers=3, window=4):
            out.append(x)
    assert out == [0, 1, 2, 3, 4]


def test_input_error_reaches_the_consumer() -> None:
    def items():
        yield 1
        raise ValueError("bad catalogue row")

    with pytest.raises(ValueError, match="bad catalogue"):
        list(ordered_map(lambda x: x, items(), workers=2, window=2))


def test_threads_end_after_close() -> None:
    before = threading.active_count()
    gen = ordered_map(lambda x: time.sleep(0.01) or x, range(1000), workers=4, window=8)
    next(gen)
    gen.close()
    time.sleep(0.05)
    assert threading.active_count() <= before
