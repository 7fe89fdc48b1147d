"""Search spaces declared as data and validated before anything runs.

A space maps a key to a distribution, written ``"uniform:0:100"``, ``"loguniform:1e-4:1e-2"``,
``"int:1:4"`` (both ends included) or ``"choice:0,1,10"``. A key is either a setting of the
strategy (``cfg.params``, e.g. ``lambda_distill``) or one of :data:`TRAIN_KEYS` of
:class:`~trainers.config.TrainConfig`; a strategy setting wins when both exist (ReconBoost's own
``lr``). Unknown keys, unknown distributions, empty or inverted ranges and values the strategy
itself rejects (a negative lambda) are one-line :class:`SpaceError` s at construction.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from ray import tune

from trainers.config import ConfigError, TrainConfig
from trainers.strategies import list_strategies, strategy_class

KINDS = ("uniform", "loguniform", "int", "choice")
TRAIN_KEYS = ("lr", "weight_decay", "momentum", "batch_size", "embed_dim", "hidden_dim",
              "epochs", "optimizer", "head")


class SpaceError(ConfigError):
    """A search space that cannot be searched; the message names the key, the value and the fix."""


def _number(text: str) -> float | int | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@dataclass(frozen=True)
class Param:
    """One searched setting: ``kind`` over ``[low, high]``, or ``choice`` over ``values``."""

    key: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    values: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        where = f"search space {self.key!r}"
        if self.kind not in KINDS:
            raise SpaceError(f"{where}: unknown distribution {self.kind!r}; use one of "
                             f"{', '.join(KINDS)}, e.g. uniform:0:1")
        if self.kind == "choice":
            if not self.values:
                raise SpaceError(f"{where}: choice has no values; list them, e.g. choice:0,1,10")
            return
        self._check_range(where)

    def _check_range(self, where: str) -> None:
        text = f"{self.kind}:{self.low:g}:{self.high:g}"
        if self.low == self.high:
            raise SpaceError(f"{where}: range {text} is empty; give low < high (or choice:"
                             f"{self.low:g} for a fixed value)")
        if self.low > self.high:
            raise SpaceError(f"{where}: range {text} is inverted (low > high); swap the ends: "
                             f"{self.kind}:{self.high:g}:{self.low:g}")
        if self.kind == "loguniform" and self.low <= 0:
            raise SpaceError(f"{where}: loguniform needs low > 0 but got {self.low:g}; use "
                             "uniform for a range that includes 0")
        if self.kind == "int" and not (float(self.low).is_integer()
                                       and float(self.high).is_integer()):
            raise SpaceError(f"{where}: int range {text} needs whole-number ends")

    @classmethod
    def parse(cls, key: str, spec: str | tuple | list) -> Param:
        """From ``"kind:low:high"``, ``"choice:a,b"`` or a tuple ``(kind, low, high)``."""
        if isinstance(spec, str):
            kind, _, rest = spec.partition(":")
            parts = rest.split(",") if kind == "choice" else rest.split(":")
            args = [_number(p.strip()) for p in parts if p.strip()]
        else:
            kind, *args = spec
        if kind == "choice":
            return cls(key, kind, values=tuple(args))
        if len(args) != 2 or not all(isinstance(a, int | float) for a in args):
            raise SpaceError(f"search space {key!r}: {spec!r} is not {kind}:<low>:<high> with "
                             "two numbers, e.g. uniform:0:1")
        return cls(key, kind, float(args[0]), float(args[1]))

    def to_tune(self) -> Any:
        if self.kind == "choice":
            return tune.choice(list(self.values))
        if self.kind == "int":
            return tune.randint(int(self.low), int(self.high) + 1)  # randint excludes high
        return (tune.loguniform if self.kind == "loguniform" else tune.uniform)(self.low,
                                                                                self.high)

    def contains(self, value: Any) -> bool:
        """Whether a trial of this parameter can get ``value``."""
        if self.kind == "choice":
            return value in self.values
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        whole = self.kind != "int" or float(value).is_integer()
        return whole and self.low <= value <= self.high

    def as_sampled(self, value: Any) -> Any:
        """``value`` as a trial gets it (a choice's own element, an int for ``int``)."""
        if self.kind == "choice":
            return next(v for v in self.values if v == value)
        return int(value) if self.kind == "int" else float(value)

    def ends(self) -> tuple[Any, ...]:
        """The values that bound what a trial can get (checked against the strategy)."""
        if self.kind == "choice":
            return self.values
        cast = int if self.kind == "int" else float
        return cast(self.low), cast(self.high)


def tunable_keys(strategy: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(strategy settings, TrainConfig keys) that a space may search for ``strategy``."""
    cls = strategy_class(strategy)
    own = tuple(f.name for f in fields(cls.Params)
                if not isinstance(_default(f), Mapping | tuple | list))
    return own, tuple(k for k in TRAIN_KEYS if k not in own and k not in cls.ignored_config)


def _default(f: Any) -> Any:
    return f.default_factory() if callable(f.default_factory) else f.default


def native(value: Any) -> Any:
    """Plain Python numbers (Tune and Optuna may hand out NumPy scalars)."""
    return value.item() if hasattr(value, "item") else value


@dataclass(frozen=True)
class SearchSpace:
    strategy: str
    params: tuple[Param, ...]

    def __post_init__(self) -> None:
        if self.strategy not in list_strategies():
            raise SpaceError(f"unknown strategy {self.strategy!r}; valid strategies: "
                             f"{', '.join(list_strategies())}")
        if not self.params:
            raise SpaceError(f"search space for {self.strategy} is empty; give at least one key")
        own, train = tunable_keys(self.strategy)
        for p in self.params:
            if p.key not in own + train:
                raise SpaceError(f"search space for {self.strategy}: unknown key {p.key!r}; "
                                 f"valid keys: {', '.join(own + train)}")
        for p in self.params:
            for value in p.ends():
                self._check_value(p.key, value)

    @classmethod
    def from_dict(cls, strategy: str, space: Mapping[str, str | tuple | list]) -> SearchSpace:
        return cls(strategy, tuple(Param.parse(k, v) for k, v in space.items()))

    def __iter__(self) -> Iterator[Param]:
        return iter(self.params)

    def _check_value(self, key: str, value: Any) -> None:
        try:
            own, top = self.split({key: value})
            strategy_class(self.strategy).make_params(own)
            TrainConfig(**top)
        except (ConfigError, TypeError) as err:
            raise SpaceError(f"search space {key!r}: value {value!r} is invalid for "
                             f"{self.strategy} ({err}); narrow the range") from None

    def split(self, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(strategy settings, TrainConfig fields) of a sampled configuration."""
        own, _ = tunable_keys(self.strategy)
        values = {k: native(v) for k, v in values.items()}
        return ({k: v for k, v in values.items() if k in own},
                {k: v for k, v in values.items() if k not in own})

    def apply(self, base: TrainConfig, values: Mapping[str, Any]) -> TrainConfig:
        """``base`` with the sampled ``values`` (keys of this space only) filled in."""
        keys = {p.key for p in self.params}
        own, top = self.split({k: v for k, v in values.items() if k in keys})
        return base.replace(strategy=self.strategy, params={**base.params, **own}, **top)

    def to_tune(self) -> dict[str, Any]:
        return {p.key: p.to_tune() for p in self.params}

    def point_of(self, base: TrainConfig) -> dict[str, Any] | None:
        """``base``'s own value of every key (the untuned configuration as a point of this
        space), or None when one of them lies outside the space."""
        own, _ = tunable_keys(self.strategy)
        params = strategy_class(self.strategy).make_params(base.params)
        point = {p.key: getattr(params if p.key in own else base, p.key) for p in self.params}
        if not all(p.contains(point[p.key]) for p in self.params):
            return None
        return {p.key: p.as_sampled(point[p.key]) for p in self.params}

    def corner(self) -> dict[str, Any]:
        """The largest value of every key: the longest trial (ASHA's ``max_t``)."""
        return {p.key: max(p.ends()) if all(isinstance(v, int | float) for v in p.ends())
                else p.ends()[0] for p in self.params}
