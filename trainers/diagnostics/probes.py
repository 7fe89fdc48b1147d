"""Linear probes: how much of the label each frozen encoder of a trained model still carries.

A fused model whose weak modality's encoder learned little is "lazy" in that modality (UniCat,
UME/UMT, ReconBoost). The probe measures it: freeze the encoder f_m of ANY trained strategy
(``strategy.encoder(m)``), embed the train/val/test splits, fit a fresh linear head on the
train embeddings and score it on every split. The gap to the same modality's ``unimodal`` run is
the laziness; the train-split probe tells laziness (train is low too) from overfitting (train
high, test low), as in UniCat's Figure 2.

The head is multinomial logistic regression on standardised features (train mean/std), fitted
full batch with L-BFGS (strong Wolfe line search) for at most ``max_iter`` iterations, from a
zero initialisation, with an L2 penalty ``weight_decay * ||W||^2`` that keeps separable problems
bounded. Zero init + full batch make the fit deterministic: no seed is needed, and the same
frozen features always give the same probe. Embeddings are held in memory (N x embed_dim).

Re-identification (task ``reid``): the probe is that modality's embedding alone, ranked by
Euclidean distance and scored by mAP (``trainers.reid.evaluate``): ``query`` ranks the query
split against the gallery; ``train``/``val`` rank a split against itself (same identity and
camera are junk, so a sample never retrieves itself). Nothing is fitted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainers.config import ConfigError, at_least, non_negative
from trainers.data.contract import DataBundle, MultimodalDataset, iterate_batches
from trainers.metrics import accuracy
from trainers.strategies.base import Strategy


class ProbeError(ValueError):
    """A probe was asked for something the model or the data cannot give."""


@dataclass(frozen=True)
class ProbeConfig:
    """How probes are fitted: full-batch L-BFGS, ``max_iter`` iterations, L2 ``weight_decay``."""

    max_iter: int = 200
    weight_decay: float = 1e-4
    batch_size: int = 256  # batch size of the feature extraction only

    def __post_init__(self) -> None:
        for name in ("max_iter", "batch_size"):
            at_least(f"ProbeConfig.{name}", getattr(self, name), 1)
        non_negative("ProbeConfig.weight_decay", self.weight_decay)  # 0: no penalty


@dataclass(frozen=True)
class ProbeResult:
    """Scores of one modality's probe: ``metric`` is ``accuracy`` (classification) or ``map``."""

    modality: str
    metric: str
    scores: dict[str, float]  # split -> score in [0, 1]


class Standardize(nn.Module):
    """(x - mean) / std with the statistics of the train features."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def model_modalities(strategy: Strategy) -> tuple[str, ...]:
    """The modalities ``strategy`` has an encoder for (a unimodal model has one)."""
    out = []
    for m in strategy.spec.modality_names:
        try:
            strategy.encoder(m)
        except (ConfigError, KeyError, NotImplementedError):
            continue
        out.append(m)
    return tuple(out)


def check_probe_target(strategy: Strategy, data: DataBundle, modality: str) -> nn.Module:
    """The frozen encoder of ``modality``, or a :class:`ProbeError` saying what exists."""
    if strategy.spec != data.spec:
        raise ProbeError(f"the {strategy.name} model was trained on dataset "
                         f"{strategy.spec.name!r} but the probe data is {data.spec.name!r}; "
                         "probe it on the data it was trained on")
    have = model_modalities(strategy)
    if modality not in have:
        raise ProbeError(f"cannot probe modality {modality!r}: the {strategy.name} model has "
                         f"modalities {list(have)}")
    return strategy.encoder(modality)


@torch.no_grad()
def extract_features(encoder: nn.Module, ds: MultimodalDataset, modality: str,
                     batch_size: int = 256) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Embeddings of ``modality`` for a whole split (eval mode) and its ids (y, camid...)."""
    param = next(iter(encoder.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    encoder.eval()
    feats, ids = [], {"y": [], "camid": [], "sceneid": []}
    for batch in iterate_batches(ds, batch_size):
        feats.append(encoder(batch["x"][modality].to(device)).flatten(1).float().cpu())
        for k in ids:
            ids[k].append(batch[k])
    return torch.cat(feats), {k: torch.cat(v) for k, v in ids.items()}


def fit_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int,
               cfg: ProbeConfig = ProbeConfig()) -> nn.Module:
    """A linear classifier (standardise + ``nn.Linear``) fitted on frozen features."""
    std = x.std(0, unbiased=False).clamp_min(1e-6)
    scale = Standardize(x.mean(0), std)
    head = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    xs = scale(x)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=cfg.max_iter, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head(xs), y) + cfg.weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return nn.Sequential(scale, head).eval().requires_grad_(False)


def probe(strategy: Strategy, data: DataBundle, modality: str,
          cfg: ProbeConfig = ProbeConfig(), splits: Sequence[str] | None = None) -> ProbeResult:
    """Probe the frozen encoder of ``modality``: accuracy per split (reid: mAP per split)."""
    encoder = check_probe_target(strategy, data, modality)
    strategy.eval()
    if data.spec.task == "reid":
        return _reid_probe(encoder, data, modality, cfg, tuple(splits or ("train", "query")))
    splits = tuple(splits or ("train", "val", "test"))
    feats = {s: extract_features(encoder, data[s], modality, cfg.batch_size)
             for s in dict.fromkeys(("train", *splits))}
    x, ids = feats["train"]
    head = fit_linear(x, ids["y"], data.spec.num_classes, cfg)
    scores = {s: accuracy(head(feats[s][0]).argmax(-1), feats[s][1]["y"]) for s in splits}
    return ProbeResult(modality, "accuracy", scores)


def _reid_probe(encoder: nn.Module, data: DataBundle, modality: str, cfg: ProbeConfig,
                splits: tuple[str, ...]) -> ProbeResult:
    from trainers.reid.evaluate import evaluate_reid

    bad = [s for s in splits if s not in ("train", "val", "query")]
    if bad:
        raise ProbeError(f"reid probe split {bad[0]!r} is not one of 'train', 'val', 'query' "
                         "(query is ranked against the gallery)")
    feats = {s: extract_features(encoder, data[s], modality, cfg.batch_size)
             for s in dict.fromkeys(s for q in splits for s in _reid_pair(q))}
    scores = {}
    for split in splits:
        (qf, q), (gf, g) = (feats[s] for s in _reid_pair(split))
        res = evaluate_reid(qf, gf, q["y"], g["y"], q["camid"], g["camid"],
                            query_sceneids=_scenes(q), gallery_sceneids=_scenes(g))
        scores[split] = res.mAP
    return ProbeResult(modality, "map", scores)


def _reid_pair(split: str) -> tuple[str, str]:
    return ("query", "gallery") if split == "query" else (split, split)


def _scenes(ids: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    return ids["sceneid"] if bool((ids["sceneid"] >= 0).all()) else None


def probe_all(strategy: Strategy, data: DataBundle, cfg: ProbeConfig = ProbeConfig(),
              splits: Sequence[str] | None = None) -> dict[str, ProbeResult]:
    """A probe for every modality the model has."""
    return {m: probe(strategy, data, m, cfg, splits) for m in model_modalities(strategy)}


@dataclass(frozen=True)
class LazinessRow:
    """One cell of the laziness table: a model's probe next to the modality's unimodal run."""

    strategy: str
    modality: str
    probe: float
    unimodal: float

    @property
    def gap(self) -> float:
        """Unimodal minus probe: positive = the fused training left this modality behind."""
        return self.unimodal - self.probe


def laziness_table(probes: Mapping[str, Mapping[str, float]],
                   unimodal: Mapping[str, float]) -> list[LazinessRow]:
    """``probes[strategy][modality]`` next to ``unimodal[modality]`` (UniCat Tables 2-3 shape).

    A modality without a unimodal reference is an error naming it (the gap needs both numbers).
    """
    rows = []
    for strategy, by_modality in probes.items():
        for m, score in by_modality.items():
            if m not in unimodal:
                raise ProbeError(f"no unimodal run for modality {m!r} (probed in {strategy}); "
                                 f"unimodal runs cover {sorted(unimodal)}")
            rows.append(LazinessRow(strategy, m, float(score), float(unimodal[m])))
    return rows
