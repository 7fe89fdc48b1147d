"""One writer per experiment: a lock file in the storage, naming its holder (host and pid).

Two identical sweeps into one storage would otherwise replace each other's Tune state, resume
from each other's Train checkpoints and overwrite good result rows. The lock is a small JSON
object next to the sweep's state. A lock whose holder ran on this host and is gone is stale and
taken over (said in one line); a lock held by a live process, or by a process on another host
(which this host cannot check), makes the second sweep stop with a one-line error that says how
to go on. Object stores have no atomic create-if-absent here, so two sweeps started within the
same second may both pass; the lock guards against the common case, a second run of a command
that is still running.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

from trainers.config import ConfigError
from trainers.storage import Storage

LOG = logging.getLogger(__name__)


class ExperimentLocked(ConfigError):
    """Another live process runs this experiment; the message names it."""


def _holder() -> dict[str, object]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}


def _alive_here(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # another host: cannot check, assume it is alive
    try:
        return psutil.pid_exists(int(holder.get("pid", -1))) and int(holder["pid"]) != os.getpid()
    except (TypeError, ValueError):
        return False


@contextmanager
def experiment_lock(store: Storage, name: str) -> Iterator[None]:
    """Hold ``<store>/<name>.lock`` for the duration of the block (see the module docstring)."""
    file = f"{name}.lock"
    if store.is_file(file):
        try:
            holder = json.loads(store.read_text(file))
        except (ValueError, OSError):
            holder = {}
        if holder and _alive_here(holder):
            since = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(holder.get("since", 0))))
            raise ExperimentLocked(
                f"experiment {name} is being run by pid {holder.get('pid')} on host "
                f"{holder.get('host')} (since {since}); wait for it to finish, or if that process "
                f"is gone, delete {store.uri(file)} and run again")
        LOG.warning("[sweep] taking over a stale lock of %s (its holder is gone)", name)
    store.write_text(json.dumps(_holder()), file)
    try:
        yield
    finally:
        store.delete(file)
