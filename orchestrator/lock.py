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
from collections.abc import Iterator
from contextlib import contextmanager

from trainers.config import ConfigError
from trainers.locks import alive_here, describe, holder
from trainers.storage import Storage

LOG = logging.getLogger(__name__)


class ExperimentLocked(ConfigError):
    """Another live process runs this experiment; the message names it."""


@contextmanager
def experiment_lock(store: Storage, name: str) -> Iterator[None]:
    """Hold ``<store>/<name>.lock`` for the duration of the block (see the module docstring)."""
    file = f"{name}.lock"
    if store.is_file(file):
        try:
            held = json.loads(store.read_text(file))
        except (ValueError, OSError):
            held = {}
        if held and alive_here(held):
            raise ExperimentLocked(
                f"experiment {name} is being run by {describe(held)}; wait for it to finish, "
                f"or if that process is gone, delete {store.uri(file)} and run again")
        LOG.warning("[sweep] taking over a stale lock of %s (its holder is gone)", name)
    store.write_text(json.dumps(holder()), file)
    try:
        yield
    finally:
        store.delete(file)
