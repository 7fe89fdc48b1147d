"""The strategy interface: one module per method, registered by name.

A strategy owns its model (it is an ``nn.Module``), declares a schedule of :class:`Phase` s
(what is trained, for how many epochs, with which optimiser) and computes a dict of losses for a
batch in a phase. The single training loop (``trainers.loop``) runs every strategy. ReconBoost's
alternation is a longer phase schedule, not a second loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from trainers.config import ConfigError, TrainConfig, config_default, make_params
from trainers.data.contract import DatasetSpec, MultimodalDataset
from trainers.models.encoders import create_encoder
from trainers.models.fusion import ConcatFusion, LateFusion, create_head
from trainers.registry import Registry
from trainers.reid.losses import ReidCriterion


@dataclass(frozen=True)
class NoParams:
    """For strategies without settings of their own."""


@dataclass(frozen=True)
class OptimSpec:
    kind: str
    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> OptimSpec:
        return cls(cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)

    def build(self, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
        """A fresh optimiser over ``params`` (fresh per phase, as ReconBoost's code does)."""
        if self.kind == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum,
                                   weight_decay=self.weight_decay)
        cls = torch.optim.Adam if self.kind == "adam" else torch.optim.AdamW
        return cls(params, lr=self.lr, weight_decay=self.weight_decay)


@dataclass(frozen=True, eq=False)
class Phase:
    """A span of epochs that updates ``params`` only.

    ``evaluate``: when the loop scores the model on validation for model selection
    (``epoch``: after every epoch; ``end``: after the phase's last epoch; ``never``).
    ``select_on``: which prediction is scored (``fused`` or a modality). ``select_scope``:
    ``run`` keeps the best state over the whole schedule (restored when training ends);
    ``phase`` restores this phase's best state when the phase ends (e.g. one UME member).
    ``drop_last``: train on full batches only (ReconBoost's released code does).
    """

    name: str
    epochs: int
    params: tuple[nn.Parameter, ...]
    optim: OptimSpec
    evaluate: Literal["epoch", "end", "never"] = "epoch"
    modality: str | None = None
    stage: int = -1
    select_on: str = "fused"
    select_scope: Literal["run", "phase"] = "run"
    drop_last: bool = False  # skip each epoch's last partial training batch


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", "strategies")


def register_strategy(name: str):  # noqa: ANN201 - decorator
    def deco(cls: type[Strategy]) -> type[Strategy]:
        cls.name = name
        return STRATEGIES.register(name)(cls)

    return deco


class Strategy(nn.Module):
    """Base class. Subclasses set ``Params`` and implement ``forward_loss`` and ``predict``."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    tasks: ClassVar[tuple[str, ...]] = ("classification", "reid")
    # TrainConfig fields the strategy does not use: they must keep their defaults (checked at
    # construction) and are not searchable; ``ignored_hint`` says what to set instead.
    ignored_config: ClassVar[tuple[str, ...]] = ()
    ignored_hint: ClassVar[str] = ""
    # The main knobs a sweep searches, ``key -> "uniform:0:1"`` (orchestrator.space syntax); keys
    # are fields of ``Params`` or TrainConfig keys such as ``lr``.
    SEARCH_SPACE: ClassVar[Mapping[str, str]] = {}
    # Buffers that steer Python control flow: they stay on the CPU whatever device the model
    # moves to, so reading them needs no device sync (and no data on the ``meta`` device).
    host_buffers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: DatasetSpec, cfg: TrainConfig) -> None:
        super().__init__()
        if spec.task not in self.tasks:
            alternatives = [n for n in STRATEGIES.names() if spec.task in STRATEGIES.get(n).tasks]
            raise ConfigError(f"{self.name} does not support {spec.task} (dataset "
                              f"{spec.name!r}); strategies for {spec.task}: "
                              f"{', '.join(alternatives)}")
        for key in ("encoders", "pretrained"):
            unknown = [m for m in getattr(cfg, key) if m not in spec.modality_names]
            if unknown:
                raise ConfigError(f"{key} names {unknown[0]!r}, which is not a modality of "
                                  f"dataset {spec.name!r}; its modalities: "
                                  f"{', '.join(spec.modality_names)}")
        self.spec = spec
        self.cfg = cfg
        self.p = self.make_params(cfg.params)

    @classmethod
    def make_params(cls, values: Mapping[str, Any]) -> Any:
        return make_params(cls.Params, cls.name, values)

    @classmethod
    def check_config(cls, cfg: TrainConfig, params: Any) -> None:
        """Reject TrainConfig settings this strategy would ignore (called at construction)."""
        for key in cls.ignored_config:
            value, default = getattr(cfg, key), config_default(key)
            if value != default:
                raise ConfigError(f"{cls.name} does not use TrainConfig.{key} (got {value!r}): "
                                  f"{cls.ignored_hint}; leave {key} at its default {default!r}")

    # --- building blocks -------------------------------------------------------------
    def check_modality(self, m: str) -> str:
        if m not in self.spec.modality_names:
            raise ConfigError(f"{self.name}: unknown modality {m!r}; dataset {self.spec.name!r} "
                              f"has {list(self.spec.modality_names)}")
        return m

    def make_encoder(self, m: str) -> nn.Module:
        cfg = self.cfg
        return create_encoder(cfg.encoders.get(m, "auto"), self.spec.modality(m), cfg.embed_dim,
                              cfg.hidden_dim, cfg.pretrained.get(m))

    def make_head(self, in_dim: int) -> nn.Module:
        """The task's head: a classifier, or the BNNeck for reid (both give features, logits)."""
        cfg = self.cfg
        return create_head(cfg.head, in_dim, self.spec.num_classes, cfg.hidden_dim,
                           self.spec.task)

    def make_late_fusion(self, modalities: Sequence[str]) -> LateFusion:
        encoders = nn.ModuleDict({m: self.make_encoder(m) for m in modalities})
        head = self.make_head(self.cfg.embed_dim * len(modalities))
        return LateFusion(encoders, ConcatFusion(list(modalities)), head)

    def task_loss(self, fused: torch.Tensor, logits: torch.Tensor,
                  y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Classification: CE. Reid: soft-margin batch-hard triplet on the pre-BN embedding
        + lambda_id * CE through the BNNeck (docs/protocol.md)."""
        if self.spec.task == "reid":
            return ReidCriterion(self.cfg.lambda_id)(fused, logits, y)
        ce = F.cross_entropy(logits, y)
        return {"loss": ce, "ce": ce.detach()}

    def task_output(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """What evaluation consumes: retrieval features for reid, logits for classification."""
        return features if self.spec.task == "reid" else logits

    def default_phase(self, name: str = "train") -> Phase:
        optim = OptimSpec.from_config(self.cfg)
        return Phase(name, self.cfg.epochs, tuple(self.trainable()), optim)

    def trainable(self) -> list[nn.Parameter]:
        return trainable(self)

    # --- the interface the loop uses ---------------------------------------------------
    def phases(self) -> list[Phase]:
        """The schedule; the default is one phase of ``cfg.epochs`` over all parameters."""
        return [self.default_phase()]

    def set_train_mode(self, phase: Phase) -> None:
        """Put modules in train/eval mode for ``phase`` (frozen parts stay in eval)."""
        self.train()

    def forward_loss(self, batch: Mapping[str, Any], phase: Phase) -> dict[str, torch.Tensor]:
        """Losses for one batch: must contain ``loss`` (summed by the loop) and ``logits``."""
        raise NotImplementedError

    def predict(self, x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Under ``fused`` and, where defined, per modality: logits (or log-probabilities) for
        classification, retrieval features for reid."""
        raise NotImplementedError

    def encoder(self, m: str) -> nn.Module:
        """The encoder this model uses for modality ``m`` (probes, teachers, warm starts)."""
        raise NotImplementedError

    def input_modalities(self) -> tuple[str, ...]:
        """The modalities this model reads (the input pipeline decodes only these)."""
        return self.spec.modality_names

    def on_phase_start(self, phase: Phase) -> None:
        """Hook before a phase's first epoch (also called when a run resumes mid-phase)."""

    def fit_split(self, train: MultimodalDataset) -> MultimodalDataset:
        """The part of the train split the loop trains on (G-Blending holds some of it out)."""
        return train

    def on_epoch_start(self, phase: Phase, epoch: int, train: MultimodalDataset) -> None:
        """Hook before each epoch; ``epoch`` counts from 0 within ``phase`` and ``train`` is what
        the loop trains on (PMR refreshes its prototypes here, G-Blending its weights)."""

    def after_backward(self, phase: Phase) -> None:
        """Hook between ``loss.backward()`` and ``optimizer.step()``: gradient surgery
        (OGM-GE's scaling, MMPareto's Pareto combination, MLA's projection)."""

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 - nn.Module's signature
        kept = {name: getattr(self, name) for name in self.host_buffers}
        super()._apply(fn, recurse)
        for name, value in kept.items():
            setattr(self, name, value)
        return self

    def extra_meta(self) -> dict[str, Any]:
        """Plain values stored with checkpoints (e.g. the selected stage)."""
        return {}


def trainable(*modules: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``modules`` an optimiser may update (frozen ones, e.g. the BNNeck's
    bias, are left out)."""
    return [p for m in modules for p in m.parameters() if p.requires_grad]


def strategy_class(name: str) -> type[Strategy]:
    return STRATEGIES.get(name)
