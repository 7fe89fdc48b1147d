"""``reconboost``: modality-alternating boosting (ReconBoost; docs/reconboost.md).

Per modality a learner = encoder f_m + ONE shared head h, logits s_m = h(f_m(x_m)); the ensemble
keeps the newest learner of each modality, F(x) = beta * sum_m s_m (``fusion="na"``) or
sum_m beta_m s_m (``"lw"``, learnable weights). Stage t picks modality m_t round-robin and runs

1. a boosting phase (E1 epochs, updating f_{m_t} and h): with q = softmax(sg(F without m_t)),
   l = (1 - lambda * q_y) * CE(s_{m_t}, y) + alpha * MSE(softmax(s_{m_t}), sg(softmax(s_prev))),
   s_prev being the learner updated at stage t-1 (q_y = 0 while no other learner is in the
   ensemble);
2. a global rectification phase (E2 epochs, every learner in the ensemble + h + beta) on
   CE(F(x), y).

Every phase gets a fresh SGD optimiser (``params`` lr, momentum, weight_decay: the released
code's 0.01, 0.9, 5e-4); the TrainConfig's ``epochs``/``optimizer``/``lr``/``momentum``/
``weight_decay`` do not apply and must stay at their defaults. The best stage is chosen on
validation accuracy.

Warm start (``warm_start``: modality -> finished unimodal run): as in the paper's settings, the
pretrained learners enter the ensemble before stage 0, each with its own unimodal classifier,
which it keeps until its first boosting phase puts it on the shared head (the own classifiers are
not trained further); rectification trains every learner in the ensemble.

``variant="released"`` reproduces the authors' released code (huacong/ReconBoost, train.py and
models/dynamic_net.py) where it departs from the paper: the boosting loss is
(w1 / C) * (1 - lambda q_y) * CE (their class-averaged loss with weight1 = w1), q_y = 1 at stage 0
without warm start (their empty ensemble returns a constant), every encoder stays in train mode
during boosting (q and the memory target use batch statistics and update running statistics),
the memory term is computed on detached logits (a no-op for gradients) and the last partial
batch of each epoch is dropped. Selection stays on validation (the released code selects on
test from stage 3 on).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainers.config import (
    ConfigError,
    TrainConfig,
    at_least,
    choice,
    in_range,
    non_negative,
    positive,
)
from trainers.data.contract import DatasetSpec
from trainers.strategies.base import OptimSpec, Phase, Strategy, register_strategy, trainable

RELEASED_W1 = 5.0  # the released code's --weight1


@dataclass(frozen=True)
class ReconBoostParams:
    lambda_boost: float = 0.25  # lambda = w2 / w1 of the paper
    alpha: float = 0.5  # memory consolidation weight
    epochs_per_stage: int = 4  # E1
    rectify_epochs: int = 4  # E2 (0 disables global rectification)
    stages: int = 6
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay: float = 1.0  # lr of stage t = lr * lr_decay ** t
    order: tuple[str, ...] = ()  # modality order (default: the dataset's)
    fusion: str = "na"  # "na" naive average with one beta, "lw" learnable weight per modality
    variant: str = "paper"  # "paper", or "released": the authors' code (module docstring)
    w1: float = RELEASED_W1  # variant "released" only: boosting loss x w1 / C
    warm_start: Mapping[str, str] = field(default_factory=dict)  # modality -> unimodal ckpt

    def __post_init__(self) -> None:
        in_range("reconboost lambda_boost", self.lambda_boost, 0, 1,
                 "lambda > 1 makes the boosting weight 1 - lambda * q_y negative")
        for name in ("alpha", "weight_decay", "momentum"):
            non_negative(f"reconboost {name}", getattr(self, name))
        for name in ("epochs_per_stage", "stages"):
            at_least(f"reconboost {name}", getattr(self, name), 1,
                     "E1 = 0 would never train a learner")
        at_least("reconboost rectify_epochs", self.rectify_epochs, 0)
        for name in ("lr", "lr_decay", "w1"):
            positive(f"reconboost {name}", getattr(self, name), float)
        choice("reconboost fusion", self.fusion, ("na", "lw"))
        choice("reconboost variant", self.variant, ("paper", "released"))
        if self.variant != "released" and self.w1 != RELEASED_W1:
            raise ConfigError(f"reconboost w1 = {self.w1!r} only applies to variant='released' "
                              "(the paper's loss has no such scale); drop w1 or set "
                              "variant='released'")
        object.__setattr__(self, "order", tuple(self.order))


@register_strategy("reconboost")
class ReconBoost(Strategy):
    Params = ReconBoostParams
    tasks = ("classification",)
    ignored_config = ("epochs", "optimizer", "lr", "momentum", "weight_decay")
    ignored_hint = ("its optimiser is a fresh SGD per phase set by params lr, momentum and "
                    "weight_decay, and its length is stages x (epochs_per_stage + "
                    "rectify_epochs)")
    SEARCH_SPACE = {"lambda_boost": "uniform:0:1", "alpha": "uniform:0:1",
                    "epochs_per_stage": "int:1:4", "rectify_epochs": "int:0:4",
                    "stages": "int:2:6", "lr": "loguniform:1e-3:0.1"}
    host_buffers = ("in_ensemble", "own_head")  # read on the host every step

    def __init__(self, spec: DatasetSpec, cfg: TrainConfig) -> None:
        super().__init__(spec, cfg)
        self.order = self._order()
        self.released = self.p.variant == "released"
        self.encoders = nn.ModuleDict({m: self.make_encoder(m) for m in spec.modality_names})
        self.head = self.make_head(cfg.embed_dim)
        n_beta = len(spec.modality_names) if self.p.fusion == "lw" else 1
        self.beta = nn.Parameter(torch.ones(n_beta))
        n = len(spec.modality_names)
        self.register_buffer("in_ensemble", torch.zeros(n, dtype=torch.bool))
        self.register_buffer("own_head", torch.zeros(n, dtype=torch.bool))
        self.own_heads = nn.ModuleDict()
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
        """Pretrained learners join the ensemble before stage 0 with their own classifiers."""
        from trainers.checkpoint import load_member

        for m, path in self.p.warm_start.items():
            unimodal = load_member(path, self.spec, "unimodal", self.check_modality(m))
            self.encoders[m].load_state_dict(unimodal.encoder(m).state_dict())
            head = unimodal.model.head
            for p in head.parameters():
                p.requires_grad_(False)
            self.own_heads[m] = head
            self.in_ensemble[self.index(m)] = True
            self.own_head[self.index(m)] = True

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
                             evaluate=last, modality=m, stage=t, drop_last=self.released))
            if self.p.rectify_epochs:
                out.append(Phase(f"stage{t}:rectify", self.p.rectify_epochs,
                                 self.rectify_params(t), optim, evaluate="end", stage=t,
                                 drop_last=self.released))
        return out

    def rectify_params(self, stage: int) -> tuple[nn.Parameter, ...]:
        """Every learner in the ensemble by ``stage`` (round-robin, plus the warm-started
        ones), the shared head and beta."""
        members = [m for m in self.spec.modality_names
                   if m in self.order[:stage + 1] or m in self.p.warm_start]
        return (*trainable(*(self.encoders[m] for m in members), self.head), self.beta)

    def on_phase_start(self, phase: Phase) -> None:
        if phase.modality is not None:  # the newest learner of m_t replaces the old one
            self.in_ensemble[self.index(phase.modality)] = True
            self.own_head[self.index(phase.modality)] = False

    def set_train_mode(self, phase: Phase) -> None:
        self.train()
        self.own_heads.eval()
        if phase.modality is not None and not self.released:
            for m, enc in self.encoders.items():
                enc.train(m == phase.modality)

    # --- losses ----------------------------------------------------------------------------
    def index(self, m: str) -> int:
        return self.spec.modality_names.index(m)

    def learner_logits(self, x: Mapping[str, torch.Tensor], m: str) -> torch.Tensor:
        head = self.own_heads[m] if self.own_head[self.index(m)] else self.head
        return head(self.encoders[m](x[m]))[1]

    def weight(self, m: str) -> torch.Tensor:
        return self.beta[self.index(m)] if len(self.beta) > 1 else self.beta[0]

    def members(self, exclude: str | None = None) -> list[str]:
        """The modalities whose learner is in the ensemble, ``exclude`` left out."""
        return [m for m in self.spec.modality_names
                if self.in_ensemble[self.index(m)] and m != exclude]

    def ensemble_logits(self, x: Mapping[str, torch.Tensor], exclude: str | None = None,
                        logits: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor | None:
        """beta-weighted sum of the ensemble members' logits (None when it is empty)."""
        members = self.members(exclude)
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
        w = self.boosting_weight(x, y, m).to(s.device)
        if self.released:
            if not self.members(exclude=m):
                w = w * (1 - self.p.lambda_boost)  # their empty ensemble is a constant: q_y = 1
            w = w * (self.p.w1 / self.spec.num_classes)  # their mean over classes, x weight1
        boost = (w * F.cross_entropy(s, y, reduction="none")).mean()
        prev = self.previous_modality(phase.stage)
        mc = torch.zeros((), device=s.device)
        if prev is not None and self.p.alpha > 0:
            with torch.no_grad():
                target = self.learner_logits(x, prev).softmax(-1)
            mc = F.mse_loss((s.detach() if self.released else s).softmax(-1), target)
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
