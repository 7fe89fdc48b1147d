"""Logging for every command: one logger per package (``trainers``, ``orchestrator``,
``sweeps``), progress on stderr, ``-q`` / ``-v`` to turn it down or up.

Library code only calls ``logging.getLogger(__name__)``; a command line calls
:func:`setup_logging` once. Final tables and ``error: ...`` lines stay on stdout / stderr as
plain prints: they are the command's output, not its log.
"""

from __future__ import annotations

import argparse
import logging
import sys

PACKAGES = ("trainers", "orchestrator", "sweeps")


def add_verbosity_options(p: argparse.ArgumentParser) -> None:
    """``-q`` (warnings and errors only) and ``-v`` (debug lines, and Ray's own INFO logs)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=0,
                   help="only warnings and errors (no progress lines)")
    g.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1,
                   help="more detail, and Ray's own logs")


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (pytest and notebooks swap it)."""

    @property
    def stream(self):  # noqa: ANN201 - logging's attribute
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def setup_logging(verbosity: int = 0) -> None:
    """-1: WARNING, 0: INFO (progress lines), 1: DEBUG. Idempotent: one stderr handler each."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    for name in PACKAGES:
        log = logging.getLogger(name)
        log.setLevel(level)
        log.propagate = False
        if not any(isinstance(h, _Stderr) for h in log.handlers):
            handler = _Stderr()
            handler.setFormatter(logging.Formatter("%(message)s"))
            log.addHandler(handler)


def verbose() -> bool:
    """True when ``-v`` was given (callers then let Ray's own logs through)."""
    return logging.getLogger("orchestrator").getEffectiveLevel() <= logging.DEBUG
