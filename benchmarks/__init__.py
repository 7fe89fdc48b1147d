"""Benchmarks, run from the repository root as ``python -m benchmarks.<name>`` (``--help``).

What the Ray benchmarks share lives here, so each script is only its measurement: a local Ray
started once per script (with a short ``RAY_TMPDIR``: Ray's socket paths must stay under ~107
characters) and always shut down, throw-away storage so no finished run is ever reused, the Train
health-check setting (it changes every job's fixed cost, so it is always printed), and the
summary block each script ends with, written to be pasted into a README.

Only the standard library is imported at the top; :func:`local_ray` imports the orchestrator
(and so Ray) when a script starts Ray.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
HEALTH_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
RAY_DEFAULT_HEALTH_S = 2.0  # ray.train.v2 default of HEALTH_ENV
DATASET = "avdigits"


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and its wall time in seconds."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def verdict(value: float, target: float) -> str:
    """``met`` when ``value <= target`` (every target here is an upper bound)."""
    return "met" if value <= target else "MISSED"


def summary_block(title: str, rows: Sequence[tuple[str, str]], notes: Sequence[str] = ()) -> str:
    """The block a script ends with: aligned ``name: value`` rows and notes, fenced by rules."""
    width = max(len(name) for name, _ in rows)
    rule = "-" * 78
    lines = [rule, title, *(f"  {name:<{width}} : {value}" for name, value in rows)]
    lines += [f"  {note}" for note in notes]
    return "\n".join([*lines, rule])


def make_parser(doc: str) -> argparse.ArgumentParser:
    """``--help`` shows the script's whole docstring: what it measures and how."""
    head, _, rest = doc.partition("\n\n")
    return argparse.ArgumentParser(description=head, epilog=rest,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``--quick`` and ``--health-check-s``, the same in every Ray benchmark."""
    parser.add_argument("--quick", action="store_true",
                        help="a fast run (about a minute) to check that the script works")
    parser.add_argument("--health-check-s", type=float, default=None,
                        help=f"set {HEALTH_ENV} (how often the Train controller polls its "
                             "worker; default: the orchestrator's, 0.2 s, unless already set in "
                             f"the environment; Ray's own is {RAY_DEFAULT_HEALTH_S:g} s)")


def apply_health_check(seconds: float | None) -> str:
    """Set the Train health-check interval (before Ray starts) and describe the setting used:
    what :func:`orchestrator.ray_utils.job_env` gives every job."""
    from orchestrator.ray_utils import job_env

    if seconds is not None:
        os.environ[HEALTH_ENV] = f"{seconds:g}"
    origin = "as set" if HEALTH_ENV in os.environ else "the orchestrator's default"
    return (f"{HEALTH_ENV}={job_env()[HEALTH_ENV]} ({origin}; Ray's own default is "
            f"{RAY_DEFAULT_HEALTH_S:g} s)")


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A fresh temporary folder, deleted afterwards: no run is ever found and reused."""
    folder = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def local_ray(num_cpus: int = 2) -> Iterator[dict[str, float]]:
    """A local Ray (dashboard on, see docs/ray.md, point 5) for the block, then shut down.

    Yields a dict that holds ``startup_s`` at once and ``shutdown_s`` after the block, so a
    script can report Ray's own start/stop cost separately from the per-job costs.
    """
    from orchestrator.ray_utils import ray_session

    times: dict[str, float] = {}
    with _short_ray_tmpdir():
        session = ray_session(num_cpus=num_cpus)
        _, times["startup_s"] = timed(session.__enter__)
        try:
            yield times
        finally:
            _, times["shutdown_s"] = timed(lambda: session.__exit__(None, None, None))


@contextmanager
def _short_ray_tmpdir() -> Iterator[None]:
    """Point ``RAY_TMPDIR`` at a short fresh folder when it is unset; remove it afterwards."""
    if os.environ.get("RAY_TMPDIR"):
        yield
        return
    folder = tempfile.mkdtemp(prefix="ray", dir="/tmp" if os.path.isdir("/tmp") else None)
    os.environ["RAY_TMPDIR"] = folder
    try:
        yield
    finally:
        os.environ.pop("RAY_TMPDIR", None)
        shutil.rmtree(folder, ignore_errors=True)


def fmt_s(seconds: float) -> str:
    return f"{seconds:.1f} s"


