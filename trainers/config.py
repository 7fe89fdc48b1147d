"""Training configuration: a frozen dataclass validated at construction.

Errors name the field, the bad value and the fix. Strategy-specific settings live in
``params`` and are validated by the strategy's own frozen ``Params`` dataclass, so a typo such
as ``lamda`` fails here, not after an hour of training.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which and how to fix it."""


OPTIMIZERS = ("sgd", "adam", "adamw")
HEADS = ("linear", "mlp")
DEVICES = ("auto", "cpu", "cuda", "mps")  # and cuda:N, one GPU by index


# --- validators shared by TrainConfig and every strategy's Params ------------------------------
# Each raises ONE-line ConfigError naming the field, the bad value and what is valid. NaN and inf
# are never valid: a NaN compares False with everything, so a plain ``value < 0`` would let it in.


def _is_number(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if kind is int else isinstance(value, int | float)


def finite(name: str, value: Any, kind: type = float, rule: str = "") -> None:
    """``value`` is an int (``kind=int``) or a number, and neither NaN nor infinite."""
    what = "an integer" if kind is int else "a number"
    if not _is_number(value, kind):
        raise ConfigError(f"{name} must be {what}{rule and ' ' + rule} but got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite {what[what.index(' ') + 1:]}"
                          f"{rule and ' ' + rule} but got {value!r} (NaN and inf are not valid)")


def positive(name: str, value: Any, kind: type = int) -> None:
    finite(name, value, kind, "> 0")
    if value <= 0:
        raise ConfigError(f"{name} must be a positive {kind.__name__} but got {value!r}")


def non_negative(name: str, value: Any, kind: type = float) -> None:
    finite(name, value, kind, ">= 0")
    if value < 0:
        raise ConfigError(f"{name} cannot be negative but got {value!r}")


def at_least(name: str, value: Any, low: int, hint: str = "") -> None:
    """An integer >= ``low`` (``hint`` says why, e.g. what 0 would mean)."""
    finite(name, value, int, f">= {low}")
    if value < low:
        raise ConfigError(f"{name} must be an integer >= {low} but got {value!r}"
                          + (f" ({hint})" if hint else ""))


def in_range(name: str, value: Any, low: float, high: float, hint: str = "") -> None:
    """A number in the closed interval [low, high]."""
    finite(name, value, float, f"in [{low:g}, {high:g}]")
    if not low <= value <= high:
        raise ConfigError(f"{name} must be in [{low:g}, {high:g}] but got {value!r}"
                          + (f" ({hint})" if hint else ""))


def choice(name: str, value: Any, valid: Sequence[Any]) -> None:
    if value not in valid:
        raise ConfigError(f"{name} must be one of {list(valid)} but got {value!r}")


def check_device(name: str, value: Any) -> None:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (whether it exists is checked where
    the run happens: a Ray driver without a GPU may well send runs to GPU workers)."""
    if isinstance(value, str) and (value in DEVICES or re.fullmatch(r"cuda:\d+", value)):
        return
    raise ConfigError(f"{name} must be one of {', '.join(DEVICES)} or cuda:N (e.g. cuda:0) "
                      f"but got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs besides the data.

    ``encoders`` maps a modality to an encoder name (``cnn``, ``mlp``, ``gru``, ``lstm`` or any
    timm model); modalities not listed get the default for their kind. ``pretrained`` maps a
    modality to a local weights file for a timm encoder (nothing is downloaded).
    """

    strategy: str = "fusion_concat"
    params: Mapping[str, Any] = field(default_factory=dict)
    encoders: Mapping[str, str] = field(default_factory=dict)
    pretrained: Mapping[str, str] = field(default_factory=dict)
    embed_dim: int = 64
    hidden_dim: int = 128
    head: str = "linear"
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    num_threads: int = 0
    lambda_id: float = 1.0  # reid: weight of the identity (BNNeck CE) term next to the triplet

    def __post_init__(self) -> None:
        for name in ("embed_dim", "hidden_dim", "epochs", "batch_size"):
            positive(name, getattr(self, name))
        positive("lr", self.lr, float)
        for name in ("momentum", "weight_decay", "lambda_id"):
            non_negative(name, getattr(self, name))
        non_negative("num_threads", self.num_threads, int)
        non_negative("seed", self.seed, int)
        choice("optimizer", self.optimizer, OPTIMIZERS)
        choice("head", self.head, HEADS)
        check_device("device", self.device)
        for name in ("params", "encoders", "pretrained"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise ConfigError(f"{name} must be a mapping but got {type(value).__name__}")
            object.__setattr__(self, name, dict(value))
        _check_backbones(self.encoders, self.pretrained)
        params = self.strategy_params()  # validates the strategy name and its params
        self.strategy_class().check_config(self, params)

    def strategy_class(self) -> type:
        from trainers.strategies import strategy_class

        try:
            return strategy_class(self.strategy)
        except KeyError as err:
            raise ConfigError(f"strategy: {err.args[0]}") from None

    def strategy_params(self) -> Any:
        """The strategy's validated ``Params`` instance."""
        return self.strategy_class().make_params(self.params)

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig(**{**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): equal configs give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a plain mapping (CLI, YAML, Tune); unknown keys are errors."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ConfigError(
                f"unknown config key {unknown[0]!r}; valid keys: {', '.join(valid)}"
            )
        return cls(**data)


def config_default(name: str) -> Any:
    """The default of TrainConfig field ``name``."""
    f = TrainConfig.__dataclass_fields__[name]
    return f.default_factory() if callable(f.default_factory) else f.default


def _check_backbones(encoders: Mapping[str, Any], pretrained: Mapping[str, Any]) -> None:
    """Encoder names exist (ours or timm's) and weights files go with timm encoders only.

    Which modalities the keys name is checked when the config meets the dataset (strategy
    build); whether a weights file exists and fits, when the encoder is built.
    """
    from trainers.models.encoders import ENCODERS, check_encoder_name

    for m, name in encoders.items():
        if not isinstance(name, str):
            raise ConfigError(f"encoders[{m!r}] must be an encoder name but got {name!r}")
        check_encoder_name(name, f"encoders[{m!r}]")
    for m, path in pretrained.items():
        if not isinstance(path, str) or not path:
            raise ConfigError(f"pretrained[{m!r}] must be the path of a local weights file but "
                              f"got {path!r}")
        name = encoders.get(m, "auto")
        if name == "auto" or name in ENCODERS:
            raise ConfigError(f"pretrained[{m!r}] = {path!r} needs a timm encoder but "
                              f"encoders[{m!r}] is {name!r}; set encoders[{m!r}] to the timm "
                              "model the weights belong to")


def make_params(cls: type, strategy: str, values: Mapping[str, Any]) -> Any:
    """Instantiate a strategy's frozen Params dataclass; unknown keys list the valid ones."""
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown {strategy} param {unknown[0]!r}; valid params: {', '.join(valid) or 'none'}"
        )
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"{strategy} params: {err}") from None
