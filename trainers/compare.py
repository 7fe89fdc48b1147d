"""A fair comparison of strategies on one dataset, run locally (no Ray).

Unimodal runs are trained once per (modality, seed) and reused by UME (members), UMT (teachers)
and ReconBoost (optional warm start); every strategy gets the same backbones, epochs budget and
seeds, selects on validation and touches test once. The orchestrator runs the same plan on Ray.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainers.config import TrainConfig, config_default
from trainers.data.contract import DataBundle
from trainers.loop import TrainingDiverged
from trainers.runs import RunRecord, train_or_reuse
from trainers.strategies import strategy_class

DEFAULT_STRATEGIES = {
    "classification": ("unimodal", "fusion_concat", "fusion_avg", "ume", "umt", "reconboost",
                       "gblending", "ogm_ge", "pmr", "modality_dropout", "mmpareto", "mla"),
    "reid": ("unimodal", "fusion_concat", "fusion_avg", "unicat", "modality_dropout"),
}
TABLE_METRICS = {"classification": ("accuracy",), "reid": ("map", "rank1")}
NEEDS_UNIMODAL = ("ume", "unicat", "umt")  # (and reconboost with warm_start)


@dataclass(frozen=True)
class FailedRun:
    """A run that did not finish: its loss diverged, or a unimodal run it needs failed."""

    reason: str
    metrics: Mapping[str, Any] = field(default_factory=dict)
    reused: bool = False


Outcome = RunRecord | FailedRun
Runner = Callable[[DataBundle, TrainConfig], Outcome]


@dataclass(frozen=True)
class PlannedRun:
    label: str  # row label in tables: the strategy, or unimodal:<modality>
    config: TrainConfig


def unimodal_configs(data: DataBundle, base: TrainConfig) -> dict[str, TrainConfig]:
    return {m: base.replace(strategy="unimodal", params={"modality": m})
            for m in data.spec.modality_names}


def dependent_config(strategy: str, base: TrainConfig, ckpts: dict[str, str],
                     extra: dict | None = None) -> TrainConfig:
    """The config of a strategy that reuses the finished unimodal runs ``ckpts`` (modality ->
    run name, looked up in the run store when the strategy is built)."""
    params = dict(extra or {})
    if strategy in ("ume", "unicat"):
        params.setdefault("members", ckpts)
    elif strategy == "umt":
        params.setdefault("teachers", ckpts)
    elif strategy == "reconboost" and params.pop("warm_start", False) is True:
        params["warm_start"] = ckpts
    # settings the strategy does not use (ReconBoost's optimiser and length are its own params)
    # keep their defaults instead of the shared budget's
    unused = {k: config_default(k) for k in strategy_class(strategy).ignored_config}
    return base.replace(strategy=strategy, params=params, **unused)


def plan_and_run(data: DataBundle, base: TrainConfig, strategies: Sequence[str],
                 seeds: Sequence[int], runner: Runner,
                 params: dict[str, dict] | None = None,
                 log: Callable[[str], None] | None = None) -> list[tuple[str, Outcome]]:
    """Run every strategy for every seed (unimodal runs first, reused by the others). A failed
    run is a :class:`FailedRun` and the plan goes on; a strategy that needs a failed unimodal
    run is not run (a FailedRun saying why, also sent to ``log``)."""
    params = params or {}
    out: list[tuple[str, Outcome]] = []
    for seed in seeds:
        seeded = base.replace(seed=seed)
        uni = {m: runner(data, cfg) for m, cfg in unimodal_configs(data, seeded).items()}
        lost = [m for m, r in uni.items() if isinstance(r, FailedRun)]
        ckpts = {m: r.name for m, r in uni.items() if isinstance(r, RunRecord)}
        if "unimodal" in strategies:
            out += [(f"unimodal:{m}", r) for m, r in uni.items()]
        for s in strategies:
            if s == "unimodal":
                continue
            extra = params.get(s) or {}
            if lost and (s in NEEDS_UNIMODAL or (s == "reconboost" and extra.get("warm_start"))):
                failed = FailedRun(f"not run: it needs unimodal:{lost[0]}, which failed")
                if log is not None:
                    log(f"[run] {s} seed {seed}: {failed.reason}")
                out.append((s, failed))
                continue
            out.append((s, runner(data, dependent_config(s, seeded, ckpts, extra))))
    return out


def local_runner(store: str | Path, log: Callable[[str], None] | None = None) -> Runner:
    """Train (or reuse) each run in ``store``; ``log`` gets one progress line per run. A run
    whose loss diverges is a :class:`FailedRun` (as a sweep marks a diverged trial failed)."""
    def run(data: DataBundle, cfg: TrainConfig) -> Outcome:
        try:
            rec: Outcome = train_or_reuse(data, cfg, store)
        except TrainingDiverged as err:
            rec = FailedRun(f"FAILED, {err}")
        if log is not None:
            log(progress_line(rec, cfg))
        return rec
    return run


def progress_line(rec: Outcome, cfg: TrainConfig) -> str:
    """``[run] unimodal:audio seed 0: trained in 8.1 s (10 epochs), val accuracy 81.23%``."""
    label = cfg.strategy + (f":{cfg.params['modality']}" if "modality" in cfg.params else "")
    if isinstance(rec, FailedRun):
        return f"[run] {label} seed {cfg.seed}: {rec.reason}"
    how = "reused" if rec.reused else f"trained in {rec.wall_time_s:.1f} s ({rec.epochs} epochs)"
    return f"[run] {label} seed {cfg.seed}: {how}{val_score_text(rec)}"


def val_score_text(rec: RunRecord) -> str:
    """``, val accuracy 81.23%`` (reid: ``, val map ...``), or ``""`` when val was not scored."""
    val = rec.metrics.get("val", {}).get("fused", {})
    metric = "map" if "map" in val else "accuracy"
    return f", val {metric} {100 * val[metric]:.2f}%" if metric in val else ""


def summary_rows(results: list[tuple[str, Outcome]], split: str = "test",
                 metric: str = "accuracy") -> list[dict]:
    """Mean and std over seeds (in %) of ``metric`` for the fused output and each modality,
    one row per label, over the finished runs; ``failed`` counts the others (a label with
    no finished run shows ``failed`` as its fused score)."""
    by_label: dict[str, list[Outcome]] = {}
    for label, rec in results:
        by_label.setdefault(label, []).append(rec)
    rows = []
    for label, recs in by_label.items():
        done = [r for r in recs if isinstance(r, RunRecord)]
        row: dict = {"strategy": label, "seeds": len(done), "failed": len(recs) - len(done)}
        for key in done[0].metrics[split] if done else ():
            accs = [100 * r.metrics[split][key][metric] for r in done]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            row[key] = f"{statistics.mean(accs):.2f} ± {sd:.2f}"
        if not done:
            row["fused"] = "failed"
        row["reused"] = sum(r.reused for r in done)
        rows.append(row)
    return rows


def format_table(rows: list[dict], columns: Sequence[str]) -> str:
    """A plain-text table; the ``failed`` column appears when some run failed."""
    cols = ["strategy", *columns, "seeds"] + (["failed"] if any(r.get("failed") for r in rows)
                                              else [])
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([line, "-" * len(line), *body])
