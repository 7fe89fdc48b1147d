"""Validation of strategy settings on top of the shared validators of :mod:`trainers.config`:
one-line errors that name the setting, the bad value and the fix (NaN and inf are bad values)."""

from __future__ import annotations

from typing import Any

from trainers.config import ConfigError, at_least, finite


def number(owner: str, name: str, value: Any, low: float = 0.0, high: float | None = None,
           high_open: bool = False, fix: str = "") -> None:
    """``value`` must be a finite number in ``[low, high]`` (``[low, high)`` if ``high_open``);
    type, NaN and inf are checked by the shared :func:`trainers.config.finite`."""
    hint = f"; {fix}" if fix else ""
    finite(f"{owner} {name}", value)
    if value < low:
        what = "cannot be negative" if low == 0 else f"must be >= {low:g}"
        raise ConfigError(f"{owner} {name} {what} but got {value!r}{hint}")
    if high is not None and (value > high or (high_open and value == high)):
        interval = f"[{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{owner} {name} must be in {interval} but got {value!r}{hint}")


def positive(owner: str, name: str, value: Any, fix: str = "") -> None:
    number(owner, name, value, fix=fix)
    if value == 0:
        raise ConfigError(f"{owner} {name} must be positive but got {value!r}"
                          + (f"; {fix}" if fix else ""))


def integer(owner: str, name: str, value: Any, low: int = 0) -> None:
    at_least(f"{owner} {name}", value, low)


def window(owner: str, start: Any, end: Any) -> None:
    """An epoch window ``[start, end]`` (both ends included, epochs counted from 0)."""
    integer(owner, "start", start)
    integer(owner, "end", end)
    if end < start:
        raise ConfigError(f"{owner} epoch window end {end} is before start {start}; give "
                          f"end >= start (e.g. start={start}, end={start + 50})")
