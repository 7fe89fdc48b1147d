"""The one training loop. Every strategy runs through ``fit``; a strategy's behaviour is its
phase schedule, its ``forward_loss`` and its hooks (``fit_split`` once, ``on_phase_start``,
``on_epoch_start``, and ``after_backward`` between ``backward()`` and ``step()``), never a loop
of its own.

Model selection is on the validation split only (docs/protocol.md): the loop keeps the best
state by the validation score of ``phase.select_on`` and restores it when training ends. The
test split is never touched here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch

from trainers.data.contract import DataBundle, DataError, MultimodalDataset, iterate_batches
from trainers.distributed import average_gradients, shard, world
from trainers.metrics import classification_metrics
from trainers.seed import resolve_device
from trainers.strategies.base import Phase, Strategy

Metrics = dict[str, dict[str, float]]
LOG = logging.getLogger(__name__)  # INFO: one progress line per epoch (python -m trainers)


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the run is failed (a sweep goes on without it)."""


@dataclass(frozen=True)
class EpochReport:
    """What the loop knows after one epoch; sent to every callback."""

    epoch: int  # epochs completed, counted over the whole schedule (1-based)
    total_epochs: int
    phase: str
    stage: int
    train: dict[str, float]
    val: Metrics | None
    score: float | None  # validation score used for selection, if evaluated
    is_best: bool
    wall_time_s: float

    def flat(self) -> dict[str, Any]:
        """One flat dict (``val/fused/accuracy`` ...) for loggers and Ray reports."""
        out = {k: v for k, v in asdict(self).items() if k not in ("train", "val")}
        out.update({f"train/{k}": v for k, v in self.train.items()})
        for key, metrics in (self.val or {}).items():
            out.update({f"val/{key}/{k}": v for k, v in metrics.items()})
        return out


class Callback(Protocol):
    def on_epoch_end(self, report: EpochReport, state: Callable[[], dict[str, Any]]) -> None:
        """``state()`` returns the resumable loop state (only built when asked for)."""


@dataclass
class FitResult:
    history: list[EpochReport]
    best: EpochReport | None
    epochs_run: int
    wall_time_s: float


@dataclass
class _Selection:
    score: float = -math.inf
    state: dict[str, torch.Tensor] | None = None
    report: dict[str, Any] | None = None


@dataclass
class _LoopState:
    epoch: int = 0
    optimizer: dict | None = None
    run: _Selection = field(default_factory=_Selection)
    phase: _Selection = field(default_factory=_Selection)
    history: list[EpochReport] = field(default_factory=list)


def selection_score(val: Metrics, key: str) -> float:
    if key not in val:
        raise KeyError(f"cannot select on {key!r}: validation has {sorted(val)}")
    return val[key]["map"] if "map" in val[key] else val[key]["accuracy"]


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    out = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    out["x"] = {m: t.to(device) for m, t in batch["x"].items()}
    return out


def batches(strategy: Strategy | None, ds: MultimodalDataset, batch_size: int, epoch_seed: int,
            train: bool) -> Iterator[dict]:
    """Shuffled, augmented batches for training (P x K identity batches for reid), ordered
    ones else; only the modalities the strategy reads are decoded (``trainers.data.pipeline``)."""
    mods = strategy.input_modalities() if strategy is not None else None
    seed = epoch_seed if train else None
    idx = None
    gen = torch.Generator().manual_seed(epoch_seed)
    if train and ds.spec.task == "reid":
        from trainers.reid.sampler import pk_batches

        k, labels = 4, ds.labels.tolist()
        p, ids = max(2, batch_size // k), len(set(labels))
        if p > ids:
            raise DataError(f"batch_size {batch_size} makes P x K batches of {p} identities x "
                            f"{k} images, but the train split of {ds.spec.name} has only {ids} "
                            f"identities; use --batch-size {k * ids} or less")
        idx = pk_batches(labels, p=p, k=k, seed=epoch_seed, epoch=0)
    rank, size = world()
    if train and size > 1:  # data-parallel: every worker draws the same global batches
        if idx is None:
            order = torch.randperm(len(ds), generator=gen).tolist()
            idx = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        idx = shard(idx)
        seed = epoch_seed + 1_000_003 * rank  # each worker's share gets its own draws
    return iterate_batches(ds, batch_size, shuffle=train, generator=gen, batches=idx,
                           modalities=mods, augment_seed=seed)


def train_epoch(strategy: Strategy, ds: MultimodalDataset, phase: Phase,
                opt: torch.optim.Optimizer, batch_size: int, epoch_seed: int,
                device: torch.device) -> dict[str, float]:
    strategy.set_train_mode(phase)
    totals: dict[str, float] = {}
    seen = 0
    full = batch_size // world()[1]  # this worker's share of a full global batch
    for batch in batches(strategy, ds, batch_size, epoch_seed, train=True):
        if phase.drop_last and len(batch["y"]) < full:
            continue
        batch = to_device(batch, device)
        out = strategy.forward_loss(batch, phase)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"{strategy.name}: loss became {float(loss.detach())} in phase {phase.name!r}; "
                "lower the learning rate or check the data")
        strategy.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(strategy.parameters())  # data-parallel workers; else a no-op
        strategy.after_backward(phase)
        opt.step()
        n = len(batch["y"])
        seen += n
        for k, v in out.items():
            if isinstance(v, torch.Tensor) and v.dim() == 0:
                totals[k] = totals.get(k, 0.0) + float(v.detach()) * n
    return {k: v / seen for k, v in totals.items()}


@torch.no_grad()
def predict_split(strategy: Strategy, ds: MultimodalDataset, batch_size: int = 256,
                  device: torch.device | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """All of ``strategy.predict`` over a split, concatenated, plus the ids (y, camid...)."""
    device = device or next(iter(strategy.parameters())).device
    strategy.eval()
    outs: dict[str, list[torch.Tensor]] = {}
    ids: dict[str, list[torch.Tensor]] = {"y": [], "camid": [], "sceneid": []}
    for batch in iterate_batches(ds, batch_size, modalities=strategy.input_modalities()):
        for k, v in strategy.predict(to_device(batch, device)["x"]).items():
            outs.setdefault(k, []).append(v)
        for k in ids:
            ids[k].append(batch[k])
    return ({k: torch.cat(v) for k, v in outs.items()},
            {k: torch.cat(v).to(device) for k, v in ids.items()})


def evaluate(strategy: Strategy, ds: MultimodalDataset, batch_size: int = 256) -> Metrics:
    """Metrics of every prediction (fused and per modality) on one split; for reid the split
    is its own query and gallery (as RGBNT201's protocol does)."""
    out, ids = predict_split(strategy, ds, batch_size)
    if ds.spec.task == "reid":
        return retrieval_metrics(out, ids, out, ids)
    return classification_metrics(out, ids["y"], ds.spec.num_classes)


def evaluate_split(strategy: Strategy, data: DataBundle, split: str,
                   batch_size: int = 256) -> Metrics:
    """``evaluate`` on ``data[split]``; for reid, ``test`` means query against gallery."""
    if data.spec.task == "reid" and split == "test":
        query = predict_split(strategy, data["query"], batch_size)
        gallery = predict_split(strategy, data["gallery"], batch_size)
        return retrieval_metrics(*query, *gallery)
    return evaluate(strategy, data[split], batch_size)


def retrieval_metrics(q_out: dict[str, torch.Tensor], q_ids: dict,
                      g_out: dict[str, torch.Tensor], g_ids: dict) -> Metrics:
    """mAP, Rank-1/5/10 and mINP of every embedding (fused and per modality)."""
    from trainers.reid.evaluate import evaluate_reid

    scenes = bool((q_ids["sceneid"] >= 0).any())
    out = {}
    for key in q_out:
        m = evaluate_reid(q_out[key], g_out[key], q_ids["y"], g_ids["y"], q_ids["camid"],
                          g_ids["camid"], query_sceneids=q_ids["sceneid"] if scenes else None,
                          gallery_sceneids=g_ids["sceneid"] if scenes else None,
                          max_rank=min(10, len(g_ids["y"])))
        out[key] = {"map": m.mAP, "rank1": m.rank1, "rank5": m.rank5, "rank10": m.rank10,
                    "minp": m.mINP}
    return out


def _snapshot(strategy: Strategy) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in strategy.state_dict().items()}


def _select(sel: _Selection, score: float, strategy: Strategy, report: dict) -> bool:
    if score > sel.score:
        sel.score, sel.state, sel.report = score, _snapshot(strategy), report
        return True
    return False


class _Runner:
    """Holds the loop's state so each step is a short method."""

    def __init__(self, strategy: Strategy, data: DataBundle, callbacks: Sequence[Callback],
                 resume: Mapping[str, Any] | None) -> None:
        self.s, self.data, self.callbacks = strategy, data, list(callbacks)
        self.cfg = strategy.cfg
        self.device = resolve_device(self.cfg.device)
        self.s.to(self.device)
        self.train_ds = strategy.fit_split(data["train"])
        self.phases = strategy.phases()
        self.total = sum(p.epochs for p in self.phases)
        self.st = _LoopState()
        self.t0 = time.perf_counter()
        if resume:
            self._restore(resume)

    def run(self) -> FitResult:
        start = 0
        for phase in self.phases:
            if start + phase.epochs > self.st.epoch:
                self._run_phase(phase, start)
            start += phase.epochs
        if self.st.run.state is not None:
            self.s.load_state_dict(self.st.run.state)
        best = EpochReport(**self.st.run.report) if self.st.run.report else None
        return FitResult(self.st.history, best, self.st.epoch, time.perf_counter() - self.t0)

    def _run_phase(self, phase: Phase, start: int) -> None:
        self.s.on_phase_start(phase)
        opt = phase.optim.build(list(phase.params))
        if self.st.epoch > start and self.st.optimizer is not None:
            opt.load_state_dict(self.st.optimizer)  # resumed mid-phase
        else:
            self.st.phase = _Selection()
        for e in range(self.st.epoch - start, phase.epochs):
            epoch_seed = self.cfg.seed * 100_003 + start + e
            self.s.on_epoch_start(phase, e, self.train_ds)
            train = train_epoch(self.s, self.train_ds, phase, opt, self.cfg.batch_size,
                                epoch_seed, self.device)
            self.st.optimizer = opt.state_dict()
            self._end_epoch(phase, e == phase.epochs - 1, train)

    def _end_epoch(self, phase: Phase, last: bool, train: dict[str, float]) -> None:
        self.st.epoch += 1
        val = score = None
        if phase.evaluate == "epoch" or (phase.evaluate == "end" and last):
            val = evaluate(self.s, self.data["val"], self.cfg.batch_size)
            score = selection_score(val, phase.select_on)
        report = EpochReport(self.st.epoch, self.total, phase.name, phase.stage, train, val,
                             score, False, time.perf_counter() - self.t0)
        sel = self.st.phase if phase.select_scope == "phase" else self.st.run
        if score is not None and _select(sel, score, self.s, asdict(report)):
            report = EpochReport(**{**asdict(report), "is_best": True})
            sel.report = asdict(report)
        if last and phase.select_scope == "phase" and self.st.phase.state is not None:
            self.s.load_state_dict(self.st.phase.state)
        self.st.history.append(report)
        LOG.info("%s", epoch_line(self.cfg, report))
        for cb in self.callbacks:
            cb.on_epoch_end(report, self.state)

    def state(self) -> dict[str, Any]:
        """Everything needed to resume after this epoch (weights_only-loadable)."""
        st = self.st
        return {"epoch": st.epoch, "strategy": _snapshot(self.s), "optimizer": st.optimizer,
                "run": asdict(st.run), "phase": asdict(st.phase),
                "history": [asdict(r) for r in st.history]}

    def _restore(self, resume: Mapping[str, Any]) -> None:
        self.s.load_state_dict(resume["strategy"])
        self.st = _LoopState(epoch=int(resume["epoch"]), optimizer=resume["optimizer"],
                             run=_Selection(**resume["run"]), phase=_Selection(**resume["phase"]),
                             history=[EpochReport(**r) for r in resume["history"]])


def epoch_line(cfg: Any, r: EpochReport) -> str:
    """``  [epoch] ume seed 0: 3/10 loss 0.5120 val 81.25% (4.2 s)``: progress of a run."""
    label = cfg.strategy + (f":{cfg.params['modality']}" if "modality" in cfg.params else "")
    loss = r.train.get("loss")
    val = "" if r.score is None else f" val {100 * r.score:.2f}%"
    return (f"  [epoch] {label} seed {cfg.seed}: {r.epoch}/{r.total_epochs}"
            f"{'' if loss is None else f' loss {loss:.4f}'}{val} ({r.wall_time_s:.1f} s)")


def fit(strategy: Strategy, data: DataBundle, callbacks: Sequence[Callback] = (),
        resume: Mapping[str, Any] | None = None) -> FitResult:
    """Train ``strategy`` on ``data['train']``, selecting on ``data['val']``.

    ``resume`` is a dict from a callback's ``state()`` (e.g. a Ray checkpoint): the run goes
    on after the last completed epoch with the same data order.
    """
    if strategy.spec != data.spec:
        raise ValueError(f"strategy was built for dataset {strategy.spec.name!r} but the data "
                         f"is {data.spec.name!r}")
    if strategy.cfg.num_threads:
        torch.set_num_threads(strategy.cfg.num_threads)
    return _Runner(strategy, data, callbacks, resume).run()

