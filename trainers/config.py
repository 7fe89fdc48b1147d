"""Training configuration: a frozen dataclass validated at construction.

Errors name the field, the bad value and the fix. Strategy-specific settings live in
``params`` and are validated by the strategy's own frozen ``Params`` dataclass, so a typo such
as ``lamda`` fails here, not after an hour of training.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which and how to fix it."""


OPTIMIZERS = ("sgd", "adam", "adamw")
HEADS = ("linear", "mlp")
DEVICES = ("auto", "cpu", "cuda", "mps")


def _positive(name: str, value: Any, kind: type = int) -> None:
    if isinstance(value, bool) or not isinstance(value, kind | int) or value <= 0:
        raise ConfigError(f"{name} must be a positive {kind.__name__} but got {value!r}")


def _non_negative(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{name} cannot be negative but got {value!r}")


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{name} must be one of {list(valid)} but got {value!r}")


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
            _positive(name, getattr(self, name))
        _positive("lr", self.lr, float)
        _non_negative("momentum", self.momentum)
        _non_negative("weight_decay", self.weight_decay)
        _non_negative("num_threads", self.num_threads)
        _non_negative("lambda_id", self.lambda_id)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("head", self.head, HEADS)
        _choice("device", self.device, DEVICES)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative int but got {self.seed!r}")
        for name in ("params", "encoders", "pretrained"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise ConfigError(f"{name} must be a mapping but got {type(value).__name__}")
            object.__setattr__(self, name, dict(value))
        self.strategy_params()  # validates the strategy name and its params

    def strategy_params(self) -> Any:
        """The strategy's validated ``Params`` instance."""
        from trainers.strategies import strategy_class

        try:
            cls = strategy_class(self.strategy)
        except KeyError as err:
            raise ConfigError(f"strategy: {err.args[0]}") from None
        return cls.make_params(self.params)

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
