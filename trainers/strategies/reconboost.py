"""``reconboost``: modality-alternating boosting (ReconBoost, SPEC.md section 4).

Per modality a learner = encoder f_m + ONE shared head h, logits s_m = h(f_m(x_m)); the ensemble
keeps the newest learner of each modality, F(x) = beta * sum_m s_m (``fusion="na"``) or
sum_m beta_m s_m (``"lw"``, learnable weights). Stage t picks modality m_t round-robin and runs

1. a boosting phase (E1 epochs, updating f_{m_t} and h): with q = softmax(sg(F without m_t)),
   l = (1 - lambda * q_y) * CE(s_{m_t}, y) + alpha * MSE(softmax(s_{m_t}), sg(softmax(s_prev))),
   s_prev being the learner updated at stage t-1 (q_y = 0 while no other learner is in the
   ensemble);
2. a global rectification phase (E2 epochs, all encoders + h + beta) on CE(F(x), y).

Every phase gets a fresh SGD optimiser; the best stage is chosen on validation accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainers.config import ConfigError, TrainConfig
from trainers.data.contract import DatasetSpec
from trainers.strategies.base import OptimSpec, Phase, Strategy, register_strategy, trainable


@dataclass(frozen=True)
class ReconBoostParams:
    lambda_boost: float = 0.25  # lambda = w2 / w1 of the paper
    alpha: float = 0.5  # memory consolidation weight (0 = the released code's behaviour)
    epochs_per_stage: int = 4  # E1
    rectify_epochs: int = 4  # E2 (0 disables global rectification)
    stages: int = 6
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay: float = 1.0  # lr of stage t = lr * lr_decay ** t
    order: tuple[str, ...] = ()  # modality order (default: the dataset's)
    fusion: str = "na"  # "na" naive average with one beta, "lw" learnable weight per modality
    warm_start: Mapping[str, str] = field(default_factory=dict)  # modality -> unimodal ckpt

    def __post_init__(self) -> None:
        for name in ("lambda_boost", "alpha", "weight_decay", "momentum"):
            _check_number(name, getattr(self, name), 0.0)
        for name in ("epochs_per_stage", "stages"):
            _check_int(name, getattr(self, name), 1)
        _check_int("rectify_epochs", self.rectify_epochs, 0)
        for name in ("lr", "lr_decay"):
            value = getattr(self, name)
            _check_number(name, value, 0.0)
            if value == 0:
                raise ConfigError(f"reconboost {name} must be positive but got {value!r}")
        if self.fusion not in ("na", "lw"):
            raise ConfigError(f"reconboost fusion must be 'na' or 'lw' but got {self.fusion!r}")
        object.__setattr__(self, "order", tuple(self.order))


def _check_number(name: str, value: Any, low: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        raise ConfigError(f"reconboost {name} cannot be negative but got {value!r}")


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"reconboost {name} must be an integer >= {low} but got {value!r}"
                          + (" (E1 = 0 would never train a learner)" if low == 1 else ""))


@register_strategy("reconboost")
class ReconBoost(Strategy):
    Params = ReconBoostParams
    tasks = ("classification",)
    SEARCH_SPACE = {"lambda_boost": "uniform:0:1", "alpha": "uniform:0:1",
                    "epochs_per_stage": "int:1:4", "rectify_epochs": "int:0:4",
                    "stages": "int:2:6", "lr": "loguniform:1e-3:0.1"}
    host_buffers = ("in_ensemble",)  # which learners are summed: read on the host every step

    def __init__(self, spec: DatasetSpec, cfg: TrainConfig) -> None:
        super().__init__(spec, cfg)
        self.order = self._order()
        self.encoders = nn.ModuleDict({m: self.make_encoder(m) for m in spec.modality_names})
        self.head = self.make_head(cfg.embed_dim)
        n_beta = len(spec.modality_names) if self.p.fusion == "lw" else 1
        self.beta = nn.Parameter(torch.ones(n_beta))
        self.register_buffer("in_ensemble", torch.zeros(len(spec.modality_names), dtype=torch.bool))
        self._warm_start()

    def _order(self) -> tuple[str, ...]:
        order = self.p.order or self.spec.modality_names
        for m in order:
            self.check_modality(m)
        if sorted(order) != sorted(self.spec.modality_names):
            raise ConfigError(f"reconboost order {list(order)} must list each modality once: "
                              f"{list(self.spec.modality_names)}")
        return tuple(order)

    def _warm_start(self) -> None:
        from trainers.checkpoint import load_member

        for m, path in self.p.warm_start.items():
            unimodal = load_member(path, self.spec, "unimodal", self.check_modality(m))
            self.encoders[m].load_state_dict(unimodal.encoder(m).state_dict())

    # --- schedule ------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        out = []
        for t in range(self.p.stages):
            m = self.order[t % len(self.order)]
            optim = OptimSpec("sgd", self.p.lr * self.p.lr_decay ** t, self.p.momentum,
                              self.p.weight_decay)
            learner = tuple(trainable(self.encoders[m], self.head))
            last = "end" if self.p.rectify_epochs == 0 else "never"
            out.append(Phase(f"stage{t}:boost:{m}", self.p.epochs_per_stage, learner, optim,
                             evaluate=last, modality=m, stage=t))
            if self.p.rectify_epochs:
                out.append(Phase(f"stage{t}:rectify", self.p.rectify_epochs,
                                 self.rectify_params(t), optim, evaluate="end", stage=t))
        return out

    def rectify_params(self, stage: int) -> tuple[nn.Parameter, ...]:
        """Every learner in the ensemble by ``stage`` (round-robin), the head and beta."""
        members = self.order[:stage + 1]
        return (*trainable(*(self.encoders[m] for m in members), self.head), self.beta)

    def on_phase_start(self, phase: Phase) -> None:
        if phase.modality is not None:  # the newest learner of m_t replaces the old one
            self.in_ensemble[self.index(phase.modality)] = True

    def set_train_mode(self, phase: Phase) -> None:
        self.train()
        if phase.modality is not None:
            for m, enc in self.encoders.items():
                enc.train(m == phase.modality)

    # --- losses ----------------------------------------------------------------------------
    def index(self, m: str) -> int:
        return self.spec.modality_names.index(m)

    def learner_logits(self, x: Mapping[str, torch.Tensor], m: str) -> torch.Tensor:
        return self.head(self.encoders[m](x[m]))[1]

    def weight(self, m: str) -> torch.Tensor:
        return self.beta[self.index(m)] if len(self.beta) > 1 else self.beta[0]

    def ensemble_logits(self, x: Mapping[str, torch.Tensor], exclude: str | None = None,
                        logits: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor | None:
        """beta-weighted sum of the ensemble members' logits (None when it is empty)."""
        members = [m for m in self.spec.modality_names
                   if self.in_ensemble[self.index(m)] and m != exclude]
        if not members:
            return None
        get = (lambda m: logits[m]) if logits is not None else \
            (lambda m: self.learner_logits(x, m))
        return sum(self.weight(m) * get(m) for m in members)

    def boosting_weight(self, x: Mapping[str, torch.Tensor], y: torch.Tensor,
                        m: str) -> torch.Tensor:
        """1 - lambda * q_y, with q the (stop-gradient) softmax of the other learners."""
        with torch.no_grad():
            others = self.ensemble_logits(x, exclude=m)
            if others is None:
                return torch.ones(len(y), device=y.device)
            q_y = others.softmax(-1).gather(1, y[:, None]).squeeze(1)
            return 1 - self.p.lambda_boost * q_y

    def previous_modality(self, stage: int) -> str | None:
        return self.order[(stage - 1) % len(self.order)] if stage > 0 else None

    def boost_loss(self, batch: Mapping[str, Any], phase: Phase) -> dict[str, torch.Tensor]:
        x, y, m = batch["x"], batch["y"], phase.modality
        s = self.learner_logits(x, m)
        w = self.boosting_weight(x, y, m)
        boost = (w * F.cross_entropy(s, y, reduction="none")).mean()
        prev = self.previous_modality(phase.stage)
        mc = torch.zeros((), device=s.device)
        if prev is not None and self.p.alpha > 0:
            with torch.no_grad():
                target = self.learner_logits(x, prev).softmax(-1)
            mc = F.mse_loss(s.softmax(-1), target)
        loss = boost + self.p.alpha * mc
        return {"loss": loss, "boost": boost.detach(), "consolidation": mc.detach(),
                "logits": s, "boost_weight": w}

    def forward_loss(self, batch: Mapping[str, Any], phase: Phase) -> dict[str, torch.Tensor]:
        if phase.modality is not None:
            return self.boost_loss(batch, phase)
        logits = self.ensemble_logits(batch["x"])
        return {**self.task_loss(logits, logits, batch["y"]), "logits": logits}

    def predict(self, x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        per = {m: self.learner_logits(x, m) for m in self.spec.modality_names}
        fused = self.ensemble_logits(x, logits=per)
        if fused is None:
            fused = torch.zeros_like(next(iter(per.values())))
        return {"fused": fused, **per}

    def encoder(self, m: str) -> nn.Module:
        return self.encoders[self.check_modality(m)]
