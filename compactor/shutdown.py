"""How the compactor job stops: the first SIGTERM or SIGINT sets the Event the pass loop
checks between tasks (the current task finishes); a second one abandons the current task.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[list[str]]:
    """Set ``stop`` on the first SIGTERM or SIGINT; a second one raises KeyboardInterrupt
    (abandoning the current task). Yields the names of the signals received.

    The handler takes no lock: it runs in the main thread between two bytecodes, possibly
    while that thread holds the Event's own lock (inside ``stop.wait``), so ``stop.set()``
    there could deadlock. A watcher thread sets the Event instead, within 0.1 s.
    """
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signal.Signals(signum).name)

    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            if received:
                stop.set()
                return

    watcher = threading.Thread(target=watch, name="lsm3-compactor-signals", daemon=True)
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    watcher.start()
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        done.set()
        watcher.join(timeout=1.0)  # a daemon thread: never let it hold up the exit
