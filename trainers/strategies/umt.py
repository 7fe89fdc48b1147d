"""``umt``: Uni-Modal Teacher. A fusion_concat model trained with
CE(head(concat(z_m)), y) + lambda_distill * sum_m MSE(z_m, sg(t_m)), where t_m is the embedding
of a frozen unimodal teacher (a finished ``unimodal`` run of that modality, same backbone).

Teachers are held outside the module tree: they are not parameters, not in the optimiser and not
in the checkpoint, and they always run in eval mode under ``no_grad``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainers.config import ConfigError, TrainConfig, non_negative
from trainers.data.contract import DatasetSpec
from trainers.strategies.base import Phase, register_strategy
from trainers.strategies.fusion import FusionConcat


@dataclass(frozen=True)
class UMTParams:
    lambda_distill: float = 50.0
    teachers: Mapping[str, str] = field(default_factory=dict)  # modality -> unimodal checkpoint

    def __post_init__(self) -> None:
        non_negative("umt lambda_distill", self.lambda_distill)


@register_strategy("umt")
class UMT(FusionConcat):
    Params = UMTParams
    SEARCH_SPACE = {"lambda_distill": "choice:0,1,10,20,50,100", "lr": "loguniform:3e-4:3e-3"}

    def __init__(self, spec: DatasetSpec, cfg: TrainConfig) -> None:
        super().__init__(spec, cfg)  # builds the fused model first: same init as fusion_concat
        missing = [m for m in spec.modality_names if m not in self.p.teachers]
        if missing and self.p.lambda_distill > 0:
            raise ConfigError(
                f"umt needs a teacher for modality {missing[0]!r}: set params['teachers'] = "
                "{modality: checkpoint of a finished unimodal run} (the orchestrator and "
                "trainers.runs.train_or_reuse produce them)")
        self._teachers = _load_teachers(spec, self.p.teachers, cfg)

    def teachers(self) -> dict[str, nn.Module]:
        return dict(self._teachers.items)

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 - keep teachers on our device
        super()._apply(fn, recurse)
        for t in self._teachers.items.values():
            t._apply(fn, recurse)
        return self

    def forward_loss(self, batch: Mapping[str, Any], phase: Phase) -> dict[str, torch.Tensor]:
        out = super().forward_loss(batch, phase)
        if self.p.lambda_distill == 0:
            return {**out, "distill": out["loss"].new_zeros(())}
        with torch.no_grad():
            targets = {m: t(batch["x"][m]) for m, t in self._teachers.items.items()}
        distill = sum(F.mse_loss(out["embeddings"][m], targets[m]) for m in targets)
        loss = out["loss"] + self.p.lambda_distill * distill
        return {**out, "loss": loss, "distill": distill.detach()}


class _Frozen:
    """A plain container so ``nn.Module`` does not register the teachers as submodules."""

    def __init__(self, items: dict[str, nn.Module]) -> None:
        self.items = items


def _load_teachers(spec: DatasetSpec, paths: Mapping[str, str], cfg: TrainConfig) -> _Frozen:
    from trainers.checkpoint import load_member

    teachers = {}
    for m, path in paths.items():
        if m not in spec.modality_names:
            raise ConfigError(f"umt teacher for unknown modality {m!r}; dataset has "
                              f"{list(spec.modality_names)}")
        teacher = load_member(path, spec, "unimodal", m)
        _check_same_backbone(teacher.cfg, cfg, spec, m, path)
        enc = teacher.encoder(m).eval()
        for p in enc.parameters():
            p.requires_grad_(False)
        teachers[m] = enc
    return _Frozen(teachers)


def _check_same_backbone(teacher: TrainConfig, student: TrainConfig, spec: DatasetSpec,
                         m: str, path: str) -> None:
    """The teacher of ``m`` has the student's backbone and embedding size (MSE compares them);
    ``hidden_dim`` counts for our own encoders, whose size it sets."""
    from trainers.models.encoders import DEFAULT_BY_KIND, ENCODERS

    def backbone(cfg: TrainConfig) -> str:
        name = cfg.encoders.get(m, "auto")
        return DEFAULT_BY_KIND[spec.modality(m).kind] if name == "auto" else name

    checks = [("encoder", backbone(teacher), backbone(student)),
              ("embed_dim", teacher.embed_dim, student.embed_dim)]
    if backbone(student) in ENCODERS:
        checks.append(("hidden_dim", teacher.hidden_dim, student.hidden_dim))
    for what, t, s in checks:
        if t != s:
            raise ConfigError(f"umt teacher {str(path)!r} of {m!r} has {what} {t!r} but the "
                              f"student has {s!r}; train the teacher with the student's {what}")
