"""Progress and logging of the ``lsm3`` command: what long work tells a person at a terminal.

:class:`Progress` redraws one status line on stderr (rows, bytes, rows per second) at most
every half second, and only when stderr is a terminal: piped or redirected, the command
stays quiet. :func:`configure_logging` routes the library's ``logging`` records (the
``lsm3``, ``catalog`` and ``compactor`` loggers) to stderr as ``lsm3: warning: ...`` lines;
``-v`` shows INFO records with their logger names, ``-vv`` DEBUG.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import IO

from lsm3.cli.args import PROG
from lsm3.cli.io import human_bytes

#: Loggers of lsm3 and the packages that ship with it.
LOGGERS = ("lsm3", "catalog", "compactor")
#: Seconds between redraws (``LSM3_PROGRESS_INTERVAL`` overrides it, e.g. for tests).
INTERVAL = 0.5


class Progress:
    """One status line on ``stream`` for work counted in rows (and bytes)."""

    def __init__(self, what: str, stream: IO[str] | None = None, enabled: bool | None = None):
        self.what = what
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = _isatty(self.stream) or os.environ.get("LSM3_PROGRESS") == "1"
        self.enabled = enabled
        self.rows = 0
        self.bytes = 0
        self._started = time.monotonic()
        self._last = self._started
        self._width = 0
        self._interval = float(os.environ.get("LSM3_PROGRESS_INTERVAL", INTERVAL))

    def add(self, rows: int, nbytes: int = 0) -> None:
        self.rows += rows
        self.bytes += nbytes
        now = time.monotonic()
        if self.enabled and now - self._last >= self._interval:
            self._last = now
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self._started, 1e-9)
        size = f", {human_bytes(self.bytes)}" if self.bytes else ""
        return (
            f"{PROG}: {self.what}: {self.rows:,} rows{size}, {self.rows / elapsed:,.0f} rows/s, "
            f"{elapsed:.1f} s"
        )

    def _draw(self, now: float) -> None:
        text = self.line(now)
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def clear(self) -> None:
        """Remove the status line (before other output, and when the work is done)."""
        if self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Format(logging.Formatter):
    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        where = f"{record.name}: " if self.verbose else ""
        text = f"{PROG}: {record.levelname.lower()}: {where}{record.getMessage()}"
        if record.exc_info and self.verbose:
            text += "\n" + self.formatException(record.exc_info)
        return text


@contextlib.contextmanager
def logging_to_stderr(verbosity: int, stream: IO[str] | None = None) -> Iterator[None]:
    """While the command runs, send the records of :data:`LOGGERS` to ``stream`` (stderr):
    warnings and errors by default, INFO with ``verbosity`` 1, DEBUG with 2 or more. The
    loggers are put back as they were afterwards (``main`` may run inside another program)."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_Format(verbose=verbosity > 0))
    saved = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    try:
        yield
    finally:
        for logger, old_level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
            logger.propagate = propagate
