"""One builder per cache entry: the first job that misses it builds it, the others wait for it.

Jobs that start together (trials on one node, jobs on several nodes sharing one storage)
would otherwise each decode the same split. With :func:`build_once` the job that takes the
entry's lock builds it; every other job says in one log line that it waits and for whom, looks
again every ``POLL_S`` seconds until the entry is published (or the lock is gone: a builder that
failed lets the next one try), then opens it. No lock makes a job wait forever: one whose
holder ran on this host and is gone, or that nobody renewed for ``STALE_S`` seconds (its
holder renews it every tenth of that while building; a killed job on another host stops), is
taken over, in one log line. A waiter times that silence on its own clock, so the clocks of
other hosts do not matter.

Two kinds of lock, both naming their holder (host, pid, time):

* :class:`FileLock`, a file next to a local (or NFS) entry, created with ``O_CREAT | O_EXCL``:
  exactly one creator wins. Renewing it touches its modification time.
* :class:`LeaseLock`, an object on an object store, which offers no create-if-absent through
  ``pyarrow.fs``: a job that finds no lease writes its own, waits ``SETTLE_S`` and reads the
  lease back; it holds the lease if it reads its own token (writes that raced with it are over
  by then and the last one won). Residual race: a write that takes longer than ``SETTLE_S`` to
  land can arrive after the other job read back its own token, and then both build.

Every race that remains (that one; two waiters taking over one stale lock at the same moment;
a holder that stalled past ``STALE_S`` and then went on) ends in two jobs building one entry:
time lost, never correctness, since a build is published all-or-nothing
(:mod:`trainers.data.cache`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psutil

from trainers.storage import Storage

LOG = logging.getLogger(__name__)
POLL_S = 1.0  # how often a waiter looks for the published entry
STALE_S = 600.0  # a lock nobody renewed for this long is taken over
SETTLE_S = 1.0  # LeaseLock: from writing a lease to reading it back
T = TypeVar("T")


def holder(token: str = "", since: float | None = None) -> dict[str, Any]:
    """Who takes a lock: this host and process, since when, and a token for this taking."""
    held = {"host": socket.gethostname(), "pid": os.getpid(),
            "since": time.time() if since is None else since}
    return {**held, "token": token} if token else held


def alive_here(held: Mapping[str, Any]) -> bool:
    """False when the holder ran on this host and its process is gone (or is this process,
    from an earlier run); a holder on another host cannot be checked and counts as alive."""
    if held.get("host") != socket.gethostname():
        return True
    try:
        return psutil.pid_exists(int(held.get("pid", -1))) and int(held["pid"]) != os.getpid()
    except (TypeError, ValueError):
        return False


def describe(held: Mapping[str, Any]) -> str:
    """``pid 12 on host node-3 (since 2025-01-31 12:00)``."""
    since = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(held.get("since", 0))))
    return f"pid {held.get('pid', '?')} on host {held.get('host', '?')} (since {since})"


def _parse(text: str) -> dict[str, Any]:
    """A lock's record; {} while it is being written (or when it is not ours to read)."""
    try:
        held = json.loads(text)
    except ValueError:
        return {}
    return held if isinstance(held, dict) else {}


class Lock(Protocol):
    where: str

    def acquire(self) -> bool: ...

    def held(self) -> dict[str, Any] | None: ...  # None: free

    def renew(self) -> None: ...

    def release(self) -> None: ...

    def take_over(self, stale: dict[str, Any]) -> None: ...


class FileLock:
    """A lock file, created atomically; its holder record is what :func:`holder` returns."""

    def __init__(self, path: Path) -> None:
        self.path, self.token, self.where = Path(path), uuid.uuid4().hex, str(path)

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(holder(self.token)))
        return True

    def held(self) -> dict[str, Any] | None:
        try:
            return {**_parse(self.path.read_text()), "mtime_ns": self.path.stat().st_mtime_ns}
        except FileNotFoundError:
            return None

    def renew(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.path)

    def release(self) -> None:
        if (self.held() or {}).get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def take_over(self, stale: dict[str, Any]) -> None:
        """Move the lock aside (one mover wins); put it back if it was not the stale one."""
        aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            if _parse(aside.read_text()).get("token") != stale.get("token"):
                with contextlib.suppress(OSError):
                    os.link(aside, self.path)  # fails when a newer lock exists: it stays
        finally:
            aside.unlink(missing_ok=True)


class LeaseLock:
    """A lease object on an object store (see the module docstring for its race)."""

    def __init__(self, storage: Storage, *parts: str) -> None:
        self.storage, self.parts, self.token = storage, parts, uuid.uuid4().hex
        self.where, self.beat, self.since = storage.uri(*parts), 0, time.time()

    def acquire(self) -> bool:
        if self.held() is not None:
            return False
        self.since = time.time()
        self._write()
        time.sleep(SETTLE_S)
        return (self.held() or {}).get("token") == self.token

    def held(self) -> dict[str, Any] | None:
        try:
            return _parse(self.storage.read_text(*self.parts))
        except FileNotFoundError:
            return None

    def _write(self) -> None:
        record = {**holder(self.token, self.since), "beat": self.beat}
        self.storage.write_text(json.dumps(record), *self.parts)

    def renew(self) -> None:
        if (self.held() or {}).get("token") == self.token:
            self.beat += 1
            self._write()

    def release(self) -> None:
        if (self.held() or {}).get("token") == self.token:
            self.storage.delete(*self.parts)

    def take_over(self, stale: dict[str, Any]) -> None:
        if self.held() == stale:
            self.storage.delete(*self.parts)


class _Watch:
    """A waiter's view of a lock: whether it is stale, timed on the waiter's own clock."""

    def __init__(self, stale_s: float) -> None:
        self.stale_s, self.last, self.since = stale_s, None, 0.0

    def why_stale(self, held: dict[str, Any]) -> str:
        if not alive_here(held):
            return f"its holder, {describe(held)}, is gone"
        now = time.monotonic()
        if held != self.last:
            self.last, self.since = held, now
        elif now - self.since > self.stale_s:
            return f"its holder, {describe(held)}, has not renewed it for {self.stale_s:g} s"
        return ""


@contextlib.contextmanager
def _renewing(lock: Lock, every_s: float) -> Iterator[None]:
    """Renew ``lock`` every ``every_s`` seconds in a thread while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            with contextlib.suppress(OSError):  # a missed beat is retried at the next one
                lock.renew()

    thread = threading.Thread(target=beat, name=f"renew {lock.where}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def build_once(lock: Lock, what: str, ready: Callable[[], T | None],
               build: Callable[[], T]) -> T:
    """``ready()`` (the published entry, or None) once it finds it; ``build()`` in the one job
    that holds ``lock`` when it does not (see the module docstring)."""
    watch, waiting = _Watch(STALE_S), False
    while True:
        found = ready()
        if found is not None:
            return found
        if lock.acquire():
            try:
                with _renewing(lock, STALE_S / 10):
                    found = ready()  # published between the look above and the lock
                    return build() if found is None else found
            finally:
                lock.release()
        held = lock.held()
        if held is None:  # released meanwhile: look again
            continue
        why = watch.why_stale(held)
        if why:
            LOG.warning("[cache] taking over the lock of %s (%s): %s", what, lock.where, why)
            lock.take_over(held)
            continue
        if not waiting:
            LOG.info("[cache] %s is being built by %s; waiting for it (lock %s)", what,
                     describe(held), lock.where)
            waiting = True
        time.sleep(POLL_S)
