"""Ensembles of independent unimodal runs (UME, UniCat): the shared machinery.

Members are finished ``unimodal`` checkpoints (``members``: reused, nothing to train) or built
here and trained one after the other, each in its own phase that touches only that member and
selects that member's best epoch on its own validation score. A member key is the modality
name, or ``<modality>#<i>`` when one modality appears several times (UniCat's single-modality
ensemble of independently trained backbones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from trainers.config import ConfigError, TrainConfig
from trainers.data.contract import DatasetSpec
from trainers.strategies.base import OptimSpec, Phase, Strategy, trainable


def member_keys(modalities: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    keys = []
    for m in modalities:
        seen[m] = seen.get(m, 0) + 1
        keys.append(m if seen[m] == 1 else f"{m}#{seen[m]}")
    return keys


def modality_of(key: str) -> str:
    return key.split("#", 1)[0]


class MemberEnsemble(Strategy):
    """Subclasses define ``Params`` (with ``members`` and ``modalities``) and ``predict``."""

    def __init__(self, spec: DatasetSpec, cfg: TrainConfig) -> None:
        super().__init__(spec, cfg)
        from trainers.checkpoint import load_member

        mods = list(getattr(self.p, "modalities", ()) or spec.modality_names)
        self.keys = member_keys([self.check_modality(m) for m in mods])
        unknown = [k for k in self.p.members if k not in self.keys]
        if unknown:
            self.check_modality(modality_of(unknown[0]))
            raise ConfigError(f"{self.name} members has {unknown[0]!r}, which is not one of its "
                              f"modalities {self.keys}; add it to modalities or drop it")
        self.members = nn.ModuleDict()
        for key in self.keys:
            path, m = self.p.members.get(key), modality_of(key)
            self.members[key] = (load_member(path, spec, "unimodal", m) if path
                                 else _build_unimodal(spec, cfg, m))

    def phases(self) -> list[Phase]:
        optim = OptimSpec.from_config(self.cfg)
        return [Phase(f"unimodal:{k}", self.cfg.epochs, tuple(trainable(self.members[k])),
                      optim, modality=k, select_on=k, select_scope="phase")
                for k in self.keys if k not in self.p.members]

    def forward_loss(self, batch: Mapping, phase: Phase) -> dict:
        return self.members[phase.modality].forward_loss(batch, phase)

    def input_modalities(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(modality_of(k) for k in self.keys))

    def member_outputs(self, x: Mapping) -> dict:
        return {k: self.members[k].predict(x)["fused"] for k in self.keys}

    def encoder(self, m: str) -> nn.Module:
        return self.members[self.keys[[modality_of(k) for k in self.keys].index(
            self.check_modality(m))]].encoder(m)


def _build_unimodal(spec: DatasetSpec, cfg: TrainConfig, m: str) -> Strategy:
    from trainers.strategies.unimodal import Unimodal

    return Unimodal(spec, cfg.replace(strategy="unimodal", params={"modality": m}))
