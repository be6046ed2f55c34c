"""Test helper: kill one busy Dask worker (SIGKILL) while a classify run is under way."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def run_and_kill_a_worker(client: Any, run: Callable[[], Any], work: Path, *, max_parts: int,
                          deadline_s: float = 120.0) -> tuple[int | None, list[Any]]:
    """Start ``run()`` in a thread; once ``work`` holds between 1 and ``max_parts - 1`` part
    files and a worker is processing a part task, SIGKILL that worker's process. Returns
    (the killed pid or None, ``[run()'s result]`` or ``[]`` if it did not finish)."""
    pids = client.run(os.getpid)
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(run()))
    thread.start()
    killed = None
    deadline = time.monotonic() + deadline_s
    while killed is None and time.monotonic() < deadline and thread.is_alive():
        busy = [w for w, keys in client.processing().items()
                if any("galmerge-part" in str(k) for k in keys)]
        done = len(list(work.glob("part-*"))) if work.exists() else 0
        if busy and 0 < done < max_parts:
            killed = pids[busy[0]]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.02)
    thread.join(timeout=300)
    return killed, result
