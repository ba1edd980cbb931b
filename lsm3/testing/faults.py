"""A fault-injecting object store, for reliability tests and the soak run.

:class:`FaultyStore` wraps any :class:`~lsm3.io.store.ObjectStore` and makes chosen requests
fail the way S3 requests fail in production, *after* the client's own retries gave up (for
S3, boto3 already retried 5xx, throttling and connection errors; what reaches lsm3 is what is
left). A table opened on it (``lsm3.open_table(FaultyStore(inner))``) exercises lsm3's own
error handling: what it retries, what it reports, and what it leaves behind.

Fault kinds (the ``fault`` of a :class:`Rule`):

``transient``
    The server answered 500 InternalError or 503 SlowDown; nothing happened on the server.
``reset``
    The connection was reset before the request reached the server; nothing happened.
``timeout``
    The request hangs for ``hang_seconds``, then the client gives up; nothing happened.
``ambiguous``
    The request *succeeded on the server* (the object was written or deleted), but the
    client sees an error (a timeout after the PUT was sent, a lost response). For reads it is
    the same as ``transient``. This is the case the commit identity exists for.
``denied``
    403 AccessDenied: a permanent error that no retry can fix.
``crash_before`` / ``crash_after``
    The process kills itself with SIGKILL just before (or just after) the request: a crash
    point at an exact request, for crash tests run in a child process.

Rules select requests by operation and key: ``ops`` is ``"*"``, one operation name or a
collection of them (``put put_if_absent put_if_match get get_range get_buffer head list
delete delete_many``; ``"read"`` and ``"write"`` name groups) and ``pattern`` is an
:mod:`fnmatch` glob on the key (``"snapshot/*"``; ``*`` also matches ``/``), matched against
the key as the wrapped store sees it. A rule fires on its ``nth`` matching request (scripted
mode: "fail the 3rd put_if_absent under snapshot/"), or on any matching request with
``probability`` (random mode, reproducible from ``seed``), at most ``times`` times.

Example::

    store = FaultyStore(LocalStore("/tmp/t"))
    store.script("ambiguous", "put_if_absent", "snapshot/*", nth=1)
    table = lsm3.open_table(store)
    ...
    FaultyStore.random(inner, probability=0.05, seed=7)  # every kind of fault, 5% of requests

Every injected fault is recorded in :attr:`FaultyStore.injected` (and counted by kind in
:meth:`FaultyStore.counts`), so a test can tell which request failed and how.

**Pauses.** :meth:`FaultyStore.pause` runs a callback just before a chosen request is sent,
in the requesting thread: the request waits while the callback runs. That is a committer
paused between reading the latest snapshot and putting the next one (a GC pause, a
suspended VM) while the callback commits, compacts or expires through another table
object, without sleeps::

    store.pause("put_if_absent", "snapshot/*", lambda: expire_snapshots(other, 1, 0))
"""

from __future__ import annotations

import fnmatch
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyarrow as pa

from lsm3.errors import StorageError
from lsm3.io.store import ObjectInfo, ObjectStore

__all__ = [
    "ALL_OPS",
    "FAULTS",
    "RETRYABLE_FAULTS",
    "FaultyStore",
    "InjectedFault",
    "Injection",
    "Rule",
]

#: Every operation a rule can select.
ALL_OPS = (
    "put",
    "put_if_absent",
    "put_if_match",
    "get",
    "get_range",
    "get_buffer",
    "head",
    "list",
    "delete",
    "delete_many",
)
_GROUPS = {
    "*": ALL_OPS,
    "read": ("get", "get_range", "get_buffer", "head", "list"),
    "write": ("put", "put_if_absent", "put_if_match"),
    "delete": ("delete", "delete_many"),
}
_MUTATING = frozenset({"put", "put_if_absent", "put_if_match", "delete", "delete_many"})

#: Every fault kind, see the module docstring.
FAULTS = ("transient", "reset", "timeout", "ambiguous", "denied", "crash_before", "crash_after")
#: The kinds a real S3 client sees after its retries that a further retry may fix.
RETRYABLE_FAULTS = ("transient", "reset", "timeout", "ambiguous")

T = TypeVar("T")

#: Set in a thread while it runs a pause's action, so the action's own requests pass.
_pausing = threading.local()


class InjectedFault(StorageError):
    """A failure made up by :class:`FaultyStore` (a :class:`StorageError`, as real ones are)."""

    def __init__(self, message: str, fault: str, op: str, key: str, applied: bool) -> None:
        super().__init__(message)
        self.fault = fault
        self.op = op
        self.key = key
        #: Whether the request took effect on the server before the client saw the error.
        self.applied = applied


@dataclass
class Rule:
    """Which requests fail, and how; see the module docstring."""

    fault: str
    ops: str | Iterable[str] = "*"
    pattern: str = "*"
    nth: int | None = None
    times: int | None = 1
    probability: float = 1.0
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; choose one of {FAULTS}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        if self.nth is not None and self.nth < 1:
            raise ValueError("nth counts from 1")
        names = [self.ops] if isinstance(self.ops, str) else list(self.ops)
        expanded: set[str] = set()
        for name in names:
            if name in _GROUPS:
                expanded.update(_GROUPS[name])
            elif name in ALL_OPS:
                expanded.add(name)
            else:
                raise ValueError(f"unknown operation {name!r}; choose from {ALL_OPS} or {_GROUPS}")
        self._ops = frozenset(expanded)

    def selects(self, op: str, keys: Sequence[str]) -> bool:
        return op in self._ops and any(fnmatch.fnmatchcase(k, self.pattern) for k in keys)


@dataclass(frozen=True)
class Injection:
    """One injected fault: the request it hit and what the fault did."""

    seq: int  # the request's number among all requests through this store (from 1)
    op: str
    key: str
    fault: str
    applied: bool  # the request took effect despite the error ("ambiguous" writes)


class FaultyStore(ObjectStore):
    """Wraps ``inner`` and injects the faults its rules select; shares ``inner``'s counters."""

    def __init__(
        self,
        inner: ObjectStore,
        rules: Iterable[Rule] = (),
        *,
        seed: int = 0,
        hang_seconds: float = 0.05,
        record: bool = False,
    ) -> None:
        super().__init__(inner.url, inner.stats)
        self.inner = inner
        self.rules: list[Rule] = list(rules)
        self.hang_seconds = hang_seconds
        self.enabled = True
        self.record = record
        #: Every request seen, as ``(op, key)``, when ``record`` is true.
        self.calls: list[tuple[str, str]] = []
        self.injected: list[Injection] = []
        self.requests = 0
        #: Called with every injection, before the error is raised (a test can script the
        #: next fault from here: "then fail the read that would have found it").
        self.on_inject: Callable[[Injection], None] | None = None
        self._pauses: list[tuple[Rule, Callable[[], None]]] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- configuration

    @classmethod
    def random(
        cls,
        inner: ObjectStore,
        probability: float,
        *,
        seed: int = 0,
        faults: Sequence[str] = RETRYABLE_FAULTS,
        ops: str | Iterable[str] = "*",
        pattern: str = "*",
        hang_seconds: float = 0.01,
    ) -> FaultyStore:
        """A store where each selected request fails with ``probability`` (kinds equally
        likely), reproducibly from ``seed``."""
        share = probability / max(1, len(faults))
        rules = [Rule(f, ops, pattern, times=None, probability=share) for f in faults]
        return cls(inner, rules, seed=seed, hang_seconds=hang_seconds)

    def script(
        self,
        fault: str,
        ops: str | Iterable[str] = "*",
        pattern: str = "*",
        nth: int | None = 1,
        times: int | None = 1,
    ) -> FaultyStore:
        """Add a scripted rule ("fail the ``nth`` matching request, ``times`` times in a
        row"); returns the store, so calls chain."""
        with self._lock:
            self.rules.append(Rule(fault, ops, pattern, nth=nth, times=times))
        return self

    def pause(
        self,
        ops: str | Iterable[str],
        pattern: str,
        action: Callable[[], None],
        nth: int = 1,
        times: int | None = 1,
    ) -> FaultyStore:
        """Run ``action`` just before the ``nth`` matching request is sent (``times`` times
        in a row), as if this client were paused there while ``action`` ran. Requests that
        ``action`` makes through this store do not trigger pauses. Returns the store."""
        with self._lock:
            self._pauses.append((Rule("transient", ops, pattern, nth=nth, times=times), action))
        return self

    def _paused(self, op: str, keys: Sequence[str]) -> None:
        if getattr(_pausing, "active", False):
            return
        due = []
        with self._lock:
            for rule, action in self._pauses:
                if not rule.selects(op, keys):
                    continue
                rule.seen += 1
                if rule.seen < (rule.nth or 1) or (
                    rule.times is not None and rule.fired >= rule.times
                ):
                    continue
                rule.fired += 1
                due.append(action)
        for action in due:
            _pausing.active = True
            try:
                action()
            finally:
                _pausing.active = False

    def clear(self) -> None:
        """Remove every rule and pause (the history of injected faults stays)."""
        with self._lock:
            self.rules = []
            self._pauses = []

    def counts(self) -> Counter[str]:
        """Injected faults by kind."""
        with self._lock:
            return Counter(i.fault for i in self.injected)

    # ----------------------------------------------------------------- the wrapper

    def _decide(self, op: str, keys: Sequence[str]) -> tuple[str | None, int]:
        with self._lock:
            self.requests += 1
            seq = self.requests
            if self.record:
                self.calls.extend((op, k) for k in keys)
            if not self.enabled:
                return None, seq
            chosen: str | None = None
            for rule in self.rules:
                if not rule.selects(op, keys):
                    continue
                rule.seen += 1
                if chosen is not None:
                    continue
                if rule.nth is not None and rule.seen < rule.nth:
                    continue
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                    continue
                rule.fired += 1
                chosen = rule.fault
            return chosen, seq

    def _call(self, op: str, keys: Sequence[str], fn: Callable[[], T]) -> T:
        self._paused(op, keys)
        fault, seq = self._decide(op, keys)
        if fault is None:
            return fn()
        key = keys[0] if keys else ""
        if fault == "crash_before":
            _die()
        applied = False
        if fault == "crash_after":
            try:
                fn()
            finally:
                _die()
        if fault == "ambiguous":
            try:
                fn()
                applied = op in _MUTATING
            except StorageError:  # the server's answer is lost along with the response
                pass
        injection = Injection(seq, op, key, fault, applied)
        with self._lock:
            self.injected.append(injection)
        if self.on_inject is not None:
            self.on_inject(injection)
        raise self._error(fault, op, key, applied)

    def _error(self, fault: str, op: str, key: str, applied: bool) -> InjectedFault:
        where = f"{self.url}/{key}"
        verb = op.upper()
        if fault == "transient":
            code = self._rng.choice(
                ["503 SlowDown: Please reduce your request rate", "500 InternalError"]
            )
            text = f"{verb} {where} failed: {code} (injected)"
        elif fault == "reset":
            text = f"{verb} {where} failed: Connection reset by peer (injected)"
        elif fault == "timeout":
            time.sleep(self.hang_seconds)
            text = f"{verb} {where} failed: Read timeout after {self.hang_seconds}s (injected)"
        elif fault == "ambiguous":
            time.sleep(min(self.hang_seconds, 0.01))
            text = (
                f"{verb} {where} failed: Read timeout on endpoint URL after the request was "
                "sent (injected; the request took effect)"
            )
        else:  # denied
            text = f"{verb} {where} was refused (AccessDenied) (injected)"
        return InjectedFault(text, fault, op, key, applied)

    # ----------------------------------------------------------------- ObjectStore

    def put(self, key: str, data: bytes | pa.Buffer) -> None:
        self._call("put", [key], lambda: self.inner.put(key, data))

    def put_if_absent(self, key: str, data: bytes) -> None:
        self._call("put_if_absent", [key], lambda: self.inner.put_if_absent(key, data))

    def put_if_match(self, key: str, data: bytes, etag: str) -> None:
        self._call("put_if_match", [key], lambda: self.inner.put_if_match(key, data, etag))

    def get(self, key: str) -> bytes:
        return self._call("get", [key], lambda: self.inner.get(key))

    def get_with_etag(self, key: str) -> tuple[bytes, str | None]:
        return self._call("get", [key], lambda: self.inner.get_with_etag(key))

    def get_buffer(self, key: str, size: int | None = None) -> pa.Buffer:
        return self._call("get_buffer", [key], lambda: self.inner.get_buffer(key, size))

    def get_range(
        self, key: str, start: int, length: int, expected_size: int | None = None
    ) -> bytes:
        return self._call(
            "get_range", [key], lambda: self.inner.get_range(key, start, length, expected_size)
        )

    def head(self, key: str) -> ObjectInfo | None:
        return self._call("head", [key], lambda: self.inner.head(key))

    def list(self, prefix: str = "", start_after: str | None = None) -> list[ObjectInfo]:
        return self._call("list", [prefix], lambda: self.inner.list(prefix, start_after))

    def delete(self, key: str) -> None:
        self._call("delete", [key], lambda: self.inner.delete(key))

    def delete_many(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        self._call("delete_many", list(keys), lambda: self.inner.delete_many(keys))

    def describe(self) -> str:
        return f"faulty({self.inner.describe()})"

    def __repr__(self) -> str:
        return f"FaultyStore({self.inner.url!r}, rules={len(self.rules)})"


def _die() -> Any:
    """SIGKILL this process: no exit handlers, no flushing, like a power cut of the client."""
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # the signal is delivered at once; never return into the caller
    raise SystemExit(137)
