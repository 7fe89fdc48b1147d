"""Encoders by name: ``cnn``, ``mlp``, ``gru``, ``lstm`` or any timm model.

Every encoder maps one modality's batch to an embedding of size ``embed_dim``. timm models are
created with ``pretrained=False`` unless a local weights file is given: nothing is downloaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from trainers.data.contract import ModalitySpec
from trainers.registry import Registry

ENCODERS: Registry[Callable[..., nn.Module]] = Registry("encoder")
DEFAULT_BY_KIND = {"image": "cnn", "vector": "mlp", "sequence": "gru"}


@ENCODERS.register("mlp")
def mlp_encoder(spec: ModalitySpec, embed_dim: int, hidden_dim: int, **_: object) -> nn.Module:
    """Two-layer MLP on the flattened input (any kind)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(spec.shape), hidden_dim), nn.ReLU(),
                         nn.Linear(hidden_dim, embed_dim))


@ENCODERS.register("cnn")
def cnn_encoder(spec: ModalitySpec, embed_dim: int, hidden_dim: int, **_: object) -> nn.Module:
    """Small CPU-friendly CNN: 3 conv-BN-ReLU blocks (32 ch), global average pool, linear."""
    _need_kind(spec, "image", "cnn")
    c = 32

    def block(cin: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]

    return nn.Sequential(*block(spec.channels, 1), *block(c, 2), *block(c, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, embed_dim))


class RecurrentEncoder(nn.Module):
    """GRU/LSTM over a (T, D) sequence; the last hidden state is projected to the embedding."""

    def __init__(self, cell: type[nn.RNNBase], spec: ModalitySpec, embed_dim: int,
                 hidden_dim: int) -> None:
        super().__init__()
        self.rnn = cell(spec.channels, hidden_dim, batch_first=True)
        self.proj = nn.Linear(hidden_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.proj(out[:, -1])


@ENCODERS.register("gru")
def gru_encoder(spec: ModalitySpec, embed_dim: int, hidden_dim: int, **_: object) -> nn.Module:
    _need_kind(spec, "sequence", "gru")
    return RecurrentEncoder(nn.GRU, spec, embed_dim, hidden_dim)


@ENCODERS.register("lstm")
def lstm_encoder(spec: ModalitySpec, embed_dim: int, hidden_dim: int, **_: object) -> nn.Module:
    _need_kind(spec, "sequence", "lstm")
    return RecurrentEncoder(nn.LSTM, spec, embed_dim, hidden_dim)


def timm_encoder(name: str, spec: ModalitySpec, embed_dim: int,
                 pretrained_file: str | None = None) -> nn.Module:
    """A timm backbone with ``in_chans`` = the modality's channels and a linear projection."""
    import timm

    _need_kind(spec, "image", name)
    kwargs: dict = {"pretrained": False, "in_chans": spec.channels, "num_classes": 0}
    if pretrained_file:
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": pretrained_file})
    backbone = timm.create_model(name, **kwargs)
    return nn.Sequential(backbone, nn.Linear(backbone.num_features, embed_dim))


def create_encoder(name: str, spec: ModalitySpec, embed_dim: int, hidden_dim: int = 128,
                   pretrained_file: str | None = None) -> nn.Module:
    """Build encoder ``name`` for ``spec``; ``auto`` picks the default for the modality kind."""
    if name == "auto":
        name = DEFAULT_BY_KIND[spec.kind]
    if name in ENCODERS:
        if pretrained_file:
            raise ValueError(f"pretrained weights are only supported for timm encoders, not "
                             f"{name!r} (modality {spec.name!r})")
        return ENCODERS.get(name)(spec, embed_dim=embed_dim, hidden_dim=hidden_dim)
    if is_timm_model(name):
        return timm_encoder(name, spec, embed_dim, pretrained_file)
    raise KeyError(f"unknown encoder {name!r} for modality {spec.name!r}; valid encoders: "
                   f"auto, {', '.join(ENCODERS.names())} or any timm model name "
                   "(timm.list_models())")


def is_timm_model(name: str) -> bool:
    import timm

    return bool(timm.is_model(name))


def _need_kind(spec: ModalitySpec, kind: str, encoder: str) -> None:
    if spec.kind != kind:
        raise ValueError(f"encoder {encoder!r} needs a {kind} modality but {spec.name!r} is a "
                         f"{spec.kind} of shape {spec.shape}; use "
                         f"{DEFAULT_BY_KIND[spec.kind]!r} or 'mlp'")
