"""From finished runs to the results table: ensembles, best configurations on test, Parquet rows.

* UME and UniCat ensembles are assembled from finished unimodal runs (no training; a cheap
  local step).
* A sweep's best configuration (by validation) is rerun for every seed as ordinary jobs; the
  sweep's own seed reuses the winning trial's run. Each final model is scored on test once
  (:func:`ensure_test`: a trial only scored validation), and that score is cached in its record.
* Every run becomes rows of the one results schema (:mod:`orchestrator.results`): unimodal runs,
  every trial (a diverged one as NaN = failed, a trial ASHA stopped with its last validation
  numbers) and the final runs; :func:`write_and_summarise` writes them, reads them back and
  returns the papers-style mean ± std table over seeds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.diagnostics_rows import dataset_version, score_metric
from orchestrator.jobs import checkpoints, run_jobs
from orchestrator.results import FUSED, format_summary, read_results, result_rows, summary_table
from orchestrator.results import write_results as write_parquet
from orchestrator.sweep import SweepContext, TrialOutcome
from orchestrator.train_fn import make_job
from trainers.api import evaluate_splits
from trainers.checkpoint import load_checkpoint
from trainers.compare import dependent_config, unimodal_configs
from trainers.config import TrainConfig
from trainers.data import DataBundle
from trainers.data.contract import DatasetSpec
from trainers.runs import RunRecord, train_or_reuse, write_record
from trainers.storage import Storage

Rows = dict[str, list[dict[str, Any]]]  # run_id -> its rows (a run is written in one part)


def record_rows(record: RunRecord, cfg: TrainConfig, spec: DatasetSpec, trial_id: str = "",
                hp: Mapping[str, Any] | None = None,
                queue_time_s: float = math.nan) -> list[dict[str, Any]]:
    """A finished run's rows; ``hp``: the searched hyper-parameters that chose its config."""
    return result_rows(record.name, cfg.strategy, spec.name, cfg.seed, cfg.to_dict(),
                       record.metrics, dataset_version=dataset_version(spec),
                       wall_time_s=record.wall_time_s, epochs=record.epochs, trial_id=trial_id,
                       hp=hp, queue_time_s=queue_time_s)


def _reported_val(last: Mapping[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """``val/<output>/<metric>`` entries of a trial's last report, nested like run metrics."""
    out: dict[str, dict[str, float]] = {}
    for key, value in last.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "val" and isinstance(value, int | float):
            out.setdefault(parts[1], {})[parts[2]] = float(value)
    return {"val": out} if out else {}


TRIAL_STATUS = {"finished": "finished", "stopped": "stopped", "diverged": "diverged",
                "error": "failed"}  # TrialOutcome.status -> the results' status column


def _queue_time(last: Mapping[str, Any], training_s: float) -> float:
    """Tune's total time of a trial less its training time (NaN when Tune reported none)."""
    total = last.get("time_total_s")
    return max(0.0, float(total) - training_s) if isinstance(total, int | float) else math.nan


def trial_rows(outcome: TrialOutcome, spec: DatasetSpec) -> list[dict[str, Any]]:
    """A finished trial's record; a stopped one's last validation report; NaN for a failure.
    ``status`` says which; ``wall_time_s`` is training only, the rest of Tune's time is
    ``queue_time_s``."""
    cfg, tid, hp = outcome.job.config, outcome.trial_id, outcome.values
    if outcome.record is not None:
        wall = outcome.record.wall_time_s
        return record_rows(outcome.record, cfg, spec, tid, hp, _queue_time(outcome.last, wall))
    metrics = _reported_val(outcome.last)
    if outcome.status != "stopped" or not metrics:
        metrics = {"val": {FUSED: {score_metric(spec): math.nan}}}
    wall = float(outcome.last.get("wall_time_s", outcome.last.get("time_total_s", 0.0)))
    return result_rows(outcome.job.name, cfg.strategy, spec.name, cfg.seed, cfg.to_dict(),
                       metrics, dataset_version=dataset_version(spec), wall_time_s=wall,
                       epochs=int(outcome.last.get("epoch", 0)), trial_id=tid,
                       status=TRIAL_STATUS.get(outcome.status, "failed"), hp=hp,
                       queue_time_s=_queue_time(outcome.last, wall))


def ensure_test(record: RunRecord, data: DataBundle) -> RunRecord:
    """The record with test metrics: computed once from ``model.pt`` if missing, then cached."""
    if "test" in record.metrics:
        return record
    model = load_checkpoint(record.checkpoint, data.spec, record.store)
    metrics = {**record.metrics, **evaluate_splits(model, data, ["test"])}
    write_record(record.store, record.name, metrics, record.epochs, record.wall_time_s,
                 record.history())
    return replace(record, metrics=metrics)


def ensemble_runs(data: DataBundle, bases: Mapping[int, TrainConfig],
                  storage: str | Path | Storage) -> dict[int, RunRecord]:
    """One ensemble (UME or UniCat) per seed from that seed's finished unimodal runs (nothing
    is trained)."""
    return {seed: train_or_reuse(data, cfg, storage) for seed, cfg in bases.items()}


def final_runs(ctx: SweepContext, configs: Mapping[int, TrainConfig],
               data: DataBundle) -> dict[int, RunRecord]:
    """The best configuration for every seed (seed -> config) as jobs, each scored on test once;
    the sweep's own seed finds the winning trial's run in the store."""
    jobs = [make_job(ctx.data, ctx.spec, cfg, ctx.storage,
                     label=f"{ctx.space.strategy} best seed {seed}")
            for seed, cfg in configs.items()]
    records = run_jobs(jobs, ctx.resources)
    return {seed: ensure_test(rec, data) for seed, rec in zip(configs, records, strict=True)}


def strategy_bases(strategy: str, base: TrainConfig,
                   unimodal: Mapping[int, Mapping[str, RunRecord]],
                   extra: Mapping[str, Any] | None = None) -> dict[int, TrainConfig]:
    """Per seed, ``strategy``'s config reusing that seed's unimodal runs (teachers, warm start)."""
    return {seed: dependent_config(strategy, base.replace(seed=seed), checkpoints(runs),
                                   dict(extra or {}))
            for seed, runs in unimodal.items()}


def unimodal_rows(unimodal: Mapping[int, Mapping[str, RunRecord]], base: TrainConfig,
                  data: DataBundle) -> Rows:
    rows: Rows = {}
    for seed, runs in unimodal.items():
        configs = unimodal_configs(data, base.replace(seed=seed))
        rows.update({rec.name: record_rows(rec, configs[m], data.spec) for m, rec in runs.items()})
    return rows


def runs_rows(records: Mapping[int, RunRecord], configs: Mapping[int, TrainConfig],
              spec: DatasetSpec, trial_ids: Mapping[str, str] | None = None,
              hp: Mapping[str, Any] | None = None) -> Rows:
    """Rows of one record per seed; ``trial_ids`` maps a run name to the trial that trained it;
    ``hp``: the searched hyper-parameters of the configuration (a sweep's best values)."""
    ids = trial_ids or {}
    return {rec.name: record_rows(rec, configs[seed], spec, ids.get(rec.name, ""), hp)
            for seed, rec in records.items()}


def sweep_rows(outcomes: Sequence[TrialOutcome], spec: DatasetSpec) -> Rows:
    """Rows per trial; a trial that failed or stopped here never replaces the rows of a run
    that is finished in the store (another sweep, or an earlier run, finished it)."""
    rows: Rows = {}
    for o in outcomes:
        record = o.record if o.record is not None else o.job.record()
        if record is not None and o.status != "finished":
            o = replace(o, status="finished", record=record)
        rows[o.job.name] = trial_rows(o, spec)
    return rows


def display_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Results for the printed table: each unimodal run labelled with its modality."""
    modality = (df["run_modality"] if "run_modality" in df.columns else
                df["config_json"].map(lambda c: json.loads(c).get("params", {}).get("modality")))
    uni = (df["strategy"] == "unimodal") & modality.notna() & (modality != "")
    return df.assign(strategy=df["strategy"].where(~uni, "unimodal:" + modality.astype(str)))


def write_and_summarise(rows: Rows, results: str | Path | Storage, split: str = "test") -> str:
    """Write ``rows`` into the Parquet folder ``results`` (a layout's ``results/``), read them
    back and format the summary."""
    folder = Storage.open(results).location
    write_parquet([row for part in rows.values() for row in part], folder)
    df = read_results(folder)
    mine = display_frame(df[df["run_id"].isin(list(rows))])
    spec_metric = "map" if (mine["metric"] == "map").any() else "accuracy"
    table = format_summary(summary_table(mine, metric=spec_metric, split=split))
    return f"{table}\n(results: {folder}; pandas: pd.read_parquet({folder!r}))"

