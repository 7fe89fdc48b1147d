"""Test-time robustness (ReconBoost D.2): Gaussian noise on one modality or all, and a missing
modality, for any trained classification strategy.

Noise: x_m + level * sigma_m * N(0, 1), where sigma_m is the standard deviation of modality m
over ALL values of its train split (one number per modality, so images and vectors alike are
corrupted in units of their own scale). Level 0 leaves the input untouched, so its accuracy
equals the plain test accuracy exactly. The noise is drawn from a generator seeded per
(seed, condition), so a condition gives the same numbers on every call and for every model.
Missing modality: x_m replaced by zeros (the usual "absent input" of late fusion).

Only the fused prediction (``strategy.predict(x)["fused"]``) is scored; batches are the same as
``trainers.loop.evaluate``'s, so unperturbed numbers match it bit for bit.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from trainers.config import ConfigError, non_negative
from trainers.data.contract import DataBundle, MultimodalDataset, iterate_batches
from trainers.metrics import accuracy
from trainers.strategies.base import Strategy

ALL = "all"  # target meaning every modality at once
Inputs = dict[str, torch.Tensor]


@dataclass(frozen=True)
class NoiseConfig:
    """Noise levels (in units of each modality's train std), targets, seed, missing modality.

    ``targets`` lists modality names and/or ``"all"``; empty = each modality, then ``"all"``.
    """

    levels: tuple[float, ...] = (0.0, 0.1, 0.2, 0.5, 1.0)
    targets: tuple[str, ...] = ()
    missing: bool = True
    seed: int = 0
    split: str = "test"

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(self.levels))
        object.__setattr__(self, "targets", tuple(self.targets))
        for v in self.levels:
            non_negative("NoiseConfig.levels entry", v)  # stds such as (0, 0.1, 0.5, 1)
        non_negative("NoiseConfig.seed", self.seed, int)


@dataclass(frozen=True)
class Condition:
    """One test-time condition: ``kind`` is ``noise`` (with ``level``) or ``missing``."""

    kind: str
    target: str  # a modality or "all"
    level: float = 0.0


def conditions(modalities: Sequence[str], cfg: NoiseConfig) -> list[Condition]:
    """Every noise level for every target, then a missing condition per modality."""
    targets = cfg.targets or (*modalities, ALL)
    for t in targets:
        if t != ALL and t not in modalities:
            raise ConfigError(f"NoiseConfig.targets names modality {t!r}; the data has "
                              f"{list(modalities)} (or use {ALL!r})")
    out = [Condition("noise", t, float(level)) for t in targets for level in cfg.levels]
    if cfg.missing:
        out += [Condition("missing", m) for m in modalities]
    return out


def train_std(data: DataBundle, modalities: Sequence[str], batch_size: int = 256
              ) -> dict[str, float]:
    """Std of each modality over all values of the train split (streamed, float64 sums)."""
    sums = {m: torch.zeros(3, dtype=torch.float64) for m in modalities}
    for batch in iterate_batches(data["train"], batch_size):
        for m in modalities:
            v = batch["x"][m].double()
            sums[m] += torch.stack([v.new_tensor(float(v.numel())), v.sum(), (v * v).sum()]).cpu()
    out = {}
    for m, (n, s, ss) in sums.items():
        var = max(float(ss / n - (s / n) ** 2), 0.0)
        out[m] = var ** 0.5
    return out


def perturbation(cond: Condition, stds: Mapping[str, float],
                 seed: int) -> Callable[[Inputs], Inputs]:
    """The input transform of ``cond`` (a fresh seeded generator per call of this function)."""
    hit = set(stds) if cond.target == ALL else {cond.target}
    if cond.kind == "missing":
        return lambda x: {m: torch.zeros_like(v) if m in hit else v for m, v in x.items()}
    if cond.level == 0:
        return lambda x: x
    key = f"{seed}:{cond.target}:{cond.level!r}".encode()
    gen = torch.Generator().manual_seed(zlib.crc32(key))

    def noisy(x: Inputs) -> Inputs:
        return {m: v + cond.level * stds[m] * torch.randn(v.shape, generator=gen).to(v)
                if m in hit else v for m, v in x.items()}

    return noisy


@torch.no_grad()
def fused_accuracy(strategy: Strategy, ds: MultimodalDataset,
                   transform: Callable[[Inputs], Inputs], batch_size: int) -> float:
    """Accuracy of the fused prediction on ``ds`` with every input batch passed through
    ``transform`` (inputs are transformed on the CPU, in batch order)."""
    device = next(iter(strategy.parameters())).device
    strategy.eval()
    preds, ys = [], []
    for batch in iterate_batches(ds, batch_size):
        x = {m: v.to(device) for m, v in transform(batch["x"]).items()}
        preds.append(strategy.predict(x)["fused"].argmax(-1))
        ys.append(batch["y"].to(device))
    return accuracy(torch.cat(preds), torch.cat(ys))


def robustness(strategy: Strategy, data: DataBundle,
               cfg: NoiseConfig = NoiseConfig()) -> dict[Condition, float]:
    """Fused accuracy on ``cfg.split`` under every condition."""
    if data.spec.task != "classification":
        raise ConfigError(f"robustness scores classification accuracy; dataset "
                          f"{data.spec.name!r} is a {data.spec.task} task")
    if strategy.spec != data.spec:
        raise ConfigError(f"the {strategy.name} model was trained on {strategy.spec.name!r}, "
                          f"not {data.spec.name!r}")
    names = data.spec.modality_names
    stds = train_std(data, names)
    bs = strategy.cfg.batch_size
    return {c: fused_accuracy(strategy, data[cfg.split], perturbation(c, stds, cfg.seed), bs)
            for c in conditions(names, cfg)}
