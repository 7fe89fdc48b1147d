"""Encoders by name: ``cnn``, ``mlp``, ``gru``, ``lstm`` or any timm model.

Every encoder maps one modality's batch to an embedding of size ``embed_dim``. timm models are
created with ``pretrained=False`` unless a local weights file is given: nothing is downloaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from trainers.config import ConfigError
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
    backbone = timm.create_model(name, pretrained=False, in_chans=spec.channels, num_classes=0)
    if pretrained_file:
        load_backbone_weights(backbone, name, pretrained_file)
    return nn.Sequential(backbone, nn.Linear(backbone.num_features, embed_dim))


def read_weights(path: str) -> dict[str, torch.Tensor]:
    """A state dict from a local ``.safetensors`` or ``.pth``/``.pt`` file (tensors only: a
    pickle is never run); errors name the file."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"pretrained weights file {path!r} does not exist; give the path of a "
                          "local .safetensors or .pth file (nothing is downloaded)")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure means the file is unusable
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"pretrained weights file {path!r} cannot be read ({reason[:200]}); "
                          "save it again with torch.save(model.state_dict()) or "
                          "safetensors") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ConfigError(f"pretrained weights file {path!r} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_backbone_weights(backbone: nn.Module, name: str, path: str) -> None:
    """Load a timm state dict strictly: every backbone key must come from the file (timm's own
    loader would leave a non-fitting file's layers random with only a warning). The classifier
    is dropped, and the first conv is adapted to the modality's channels as timm does."""
    from timm.models import adapt_input_conv

    state = read_weights(path)
    cfg = getattr(backbone, "pretrained_cfg", {}) or {}
    classifiers = cfg.get("classifier") or ()
    for clf in (classifiers,) if isinstance(classifiers, str) else classifiers:
        state.pop(f"{clf}.weight", None)
        state.pop(f"{clf}.bias", None)
    convs = cfg.get("first_conv") or ()
    own = backbone.state_dict()
    for conv in (convs,) if isinstance(convs, str) else convs:
        key = f"{conv}.weight"
        if key in state and key in own and state[key].shape[1] != own[key].shape[1]:
            state[key] = adapt_input_conv(own[key].shape[1], state[key])
    for k in own:  # a BatchNorm counter, not a weight: files often leave it out
        if k.endswith("num_batches_tracked"):
            state.setdefault(k, own[k])
    missing = [k for k in own if k not in state]
    if missing:
        raise ConfigError(f"pretrained weights file {path!r} does not fit timm model {name!r}: "
                          f"{len(missing)} of its {len(own)} keys are missing "
                          f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); "
                          f"give weights saved from {name!r}")
    wrong = [k for k in own if state[k].shape != own[k].shape]
    if wrong:
        raise ConfigError(f"pretrained weights file {path!r} does not fit timm model {name!r}: "
                          f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, the model "
                          f"{tuple(own[wrong[0]].shape)}; give weights saved from {name!r}")
    backbone.load_state_dict({k: state[k] for k in own}, strict=True)


def check_encoder_name(name: str, where: str = "encoder") -> None:
    """``auto``, one of ours, or a timm model name (``timm.list_models()``)."""
    if name == "auto" or name in ENCODERS or is_timm_model(name):
        return
    raise ConfigError(f"{where}: unknown encoder {name!r}; valid encoders: auto, "
                      f"{', '.join(ENCODERS.names())} or any timm model name "
                      "(timm.list_models())")


def create_encoder(name: str, spec: ModalitySpec, embed_dim: int, hidden_dim: int = 128,
                   pretrained_file: str | None = None) -> nn.Module:
    """Build encoder ``name`` for ``spec``; ``auto`` picks the default for the modality kind."""
    check_encoder_name(name, f"modality {spec.name!r}")
    if name == "auto":
        name = DEFAULT_BY_KIND[spec.kind]
    if name in ENCODERS:
        if pretrained_file:
            raise ConfigError(f"pretrained weights are only supported for timm encoders, not "
                              f"{name!r} (modality {spec.name!r})")
        return ENCODERS.get(name)(spec, embed_dim=embed_dim, hidden_dim=hidden_dim)
    return timm_encoder(name, spec, embed_dim, pretrained_file)


def is_timm_model(name: str) -> bool:
    import timm

    return bool(timm.is_model(name))


def _need_kind(spec: ModalitySpec, kind: str, encoder: str) -> None:
    if spec.kind != kind:
        raise ValueError(f"encoder {encoder!r} needs a {kind} modality but {spec.name!r} is a "
                         f"{spec.kind} of shape {spec.shape}; use "
                         f"{DEFAULT_BY_KIND[spec.kind]!r} or 'mlp'")
