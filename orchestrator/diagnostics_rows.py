"""Diagnostics as rows of the Parquet results schema (``orchestrator.results``), so the report is
only a view of results.

A finished run ``R`` (a folder of a ``trainers.runs`` store) gets its training rows under run_id
``R`` (only when the results do not hold ``R`` yet: rows written by the Ray jobs are never
replaced) and its diagnostics under run_id ``R/diagnostics``, with R's strategy, seed and config.
Values are fractions unless said otherwise:

| metric | split | modality | meaning |
|---|---|---|---|
| `probe_accuracy` | train, val, test | the probed modality | linear probe on the frozen encoder |
| `probe_map` | train, val, query | the probed modality | reid: mAP of that embedding alone |
| `probe_gap` | test (reid: query) | the probed modality | unimodal score (*) - probe, same seed |
| `mir` | test (reid: query) | `fused` | MIR_mm of the method's probes (a ratio) |
| `dmc` | test (reid: query) | `fused` | MIR_mm / MIR_uni (a ratio) |
| `noise_accuracy@<level>` | test | noised modality, `all` | fused accuracy, noise = level x std |
| `missing_accuracy` | test | the zeroed modality | fused accuracy with that modality set to 0 |

(*) Like with like (:func:`reference_score`): for classification the unimodal run's own test
accuracy; for reid the mAP of the unimodal run's raw encoder embedding (its probe), because the
probe of a fused model ranks the raw encoder output (there is no per-modality BNNeck) while the
run's reported mAP uses its BNNeck features. MIR_uni and DMC use the same reference scores.

Two per-seed pseudo-runs summarise the unimodal runs of a seed (strategy ``unimodal``, run_id
``<dataset>-unimodal-<hash>-s<seed>/mir``, metric ``mir`` = MIR_uni) and the selection trick
(strategy ``selection_trick``, run_id ``<dataset>-selection_trick-<hash>-s<seed>/selection``,
split ``val``, modality ``fused``: ``selection_linear_accuracy``, ``selection_ume_accuracy`` and
``selection_umt`` = 1.0 when UMT is recommended, else 0.0). ``<level>`` is printed with ``:g``
(``noise_accuracy@0.5``). The unimodal runs paired with a method are the ones it names
(UME members, UMT teachers, ReconBoost warm starts) or else the unimodal runs of the same seed and
the same backbone settings (the config without strategy and params).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.results import FUSED, read_results, result_rows, write_results
from trainers.checkpoint import load_checkpoint, read_checkpoint
from trainers.config import TrainConfig
from trainers.data.contract import DataBundle, DatasetSpec
from trainers.diagnostics import (
    NoiseConfig,
    ProbeConfig,
    ProbeResult,
    Selection,
    modality_competition,
    probe,
    probe_all,
    robustness,
    selection_trick,
)
from trainers.runs import RunRecord, finished_runs
from trainers.storage import Storage

DIAGNOSTICS_SUFFIX = "/diagnostics"
SELECTION = "selection_trick"
Metrics = dict[str, dict[str, dict[str, float]]]  # split -> modality -> metric -> value
# Settings that do not change what a backbone is: left out when pairing runs with unimodal runs.
NOT_BACKBONE = ("strategy", "params", "device", "num_threads")


def dataset_version(spec: DatasetSpec) -> str:
    """The ``dataset_version`` column: the data recipe (or name) and its version."""
    return f"{spec.recipe or spec.name} v{spec.version}"


def eval_split(spec: DatasetSpec) -> str:
    return "test" if spec.task == "classification" else "query"


def score_metric(spec: DatasetSpec) -> str:
    return "accuracy" if spec.task == "classification" else "map"


@dataclass(frozen=True)
class StoredRun:
    """A finished run of a store with its config."""

    record: RunRecord
    config: TrainConfig

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def modality(self) -> str | None:
        return self.config.params.get("modality") if self.config.strategy == "unimodal" else None

    def backbone_key(self) -> str:
        return json.dumps({k: v for k, v in self.config.to_dict().items()
                           if k not in NOT_BACKBONE}, sort_keys=True, default=str)

    def score(self, spec: DatasetSpec, modality: str) -> float | None:
        """This run's own test score of ``modality`` (None when it has none). Records keep
        the test split under ``test`` for both tasks (reid: query against gallery)."""
        by_key = self.record.metrics.get("test", {})
        return by_key.get(modality, {}).get(score_metric(spec))


def reference_score(run: StoredRun, data: DataBundle, modality: str,
                    probe_cfg: ProbeConfig) -> float | None:
    """The unimodal run's score that a probe is compared with, like with like.

    Classification: the run's own test accuracy (its encoder and its trained head; the probe
    fits a linear head on a frozen encoder). Reid: the mAP of the run's raw encoder embedding
    (pre-BNNeck), i.e. the probe of the unimodal run itself, because a fused model has no
    per-modality BNNeck and its probe ranks the raw encoder output; the run's reported mAP uses
    its BNNeck features and would not compare.
    """
    if data.spec.task == "classification":
        return run.score(data.spec, modality)
    model = load_checkpoint(run.record.checkpoint, data.spec, run.record.store)
    return probe(model, data, modality, probe_cfg, splits=(eval_split(data.spec),)).scores[
        eval_split(data.spec)]


def stored_runs(store: str | Path | Storage, spec: DatasetSpec) -> list[StoredRun]:
    """The finished runs in ``store`` trained on exactly this data (same dataset name and
    ``spec.identity``: registered dataset, its arguments and the fingerprint of what was
    loaded, as the checkpoint records it), in name order."""
    return [r for r, same in _runs_of(store, spec.name, spec.identity) if same]


def _runs_of(store: str | Path | Storage, dataset: str,
             identity: str) -> list[tuple[StoredRun, bool]]:
    """The store's finished runs of dataset name ``dataset``, each with whether it was trained
    on the data ``identity`` names."""
    root = Storage.open(store)
    if not root.is_dir():
        raise FileNotFoundError(f"run store {root.location!r} does not exist; train runs into "
                                "it first (python -m trainers --storage ROOT, with the same ROOT)")
    out = []
    for record in finished_runs(root):
        payload = read_checkpoint(record.checkpoint)
        if payload["dataset"] == dataset:
            run = StoredRun(record, TrainConfig.from_dict(json.loads(payload["config"])))
            out.append((run, payload.get("data_identity") == identity))
    return out


def record_rows(record: RunRecord, cfg: TrainConfig, spec: DatasetSpec,
                trial_id: str = "") -> list[dict[str, Any]]:
    """The training rows of a finished run (its metrics as ``trainers.runs`` saved them)."""
    return result_rows(record.name, cfg.strategy, spec.name, cfg.seed, cfg.to_dict(),
                       record.metrics, dataset_version=dataset_version(spec),
                       wall_time_s=record.wall_time_s, epochs=record.epochs, trial_id=trial_id)


def _put(out: Metrics, split: str, modality: str, metric: str, value: float) -> None:
    out.setdefault(split, {}).setdefault(modality, {})[metric] = float(value)


def probe_metrics(probes: Mapping[str, ProbeResult], unimodal: Mapping[str, float],
                  spec: DatasetSpec) -> Metrics:
    """probe_<metric> per split and modality, probe_gap, and mir/dmc when >= 2 modalities."""
    out: Metrics = {}
    test = eval_split(spec)
    for m, res in probes.items():
        for split, value in res.scores.items():
            _put(out, split, m, f"probe_{res.metric}", value)
        if m in unimodal and test in res.scores:
            _put(out, test, m, "probe_gap", unimodal[m] - res.scores[test])
    tested = {m: r.scores[test] for m, r in probes.items() if test in r.scores}
    if len(tested) >= 2 and set(tested) == set(unimodal) and min(tested.values()) > 0:
        comp = modality_competition(unimodal, tested)
        _put(out, test, FUSED, "mir", comp.mir_mm)
        _put(out, test, FUSED, "dmc", comp.dmc)
    return out


def robustness_metrics(results: Mapping[Any, float], split: str = "test") -> Metrics:
    out: Metrics = {}
    for cond, value in results.items():
        name = "missing_accuracy" if cond.kind == "missing" else f"noise_accuracy@{cond.level:g}"
        _put(out, split, cond.target, name, value)
    return out


def unimodal_partners(run: StoredRun, runs: list[StoredRun]) -> dict[str, StoredRun]:
    """The unimodal run of each modality that ``run`` is compared with (see module doc)."""
    unimodal = [r for r in runs if r.modality is not None]
    linked = _linked_runs(run.config)
    if linked:
        by_name = {r.name: r for r in unimodal}
        by_path = {str(r.record.checkpoint.resolve()): r for r in unimodal}
        return {m: by_name.get(ref) or by_path[_resolved(ref)] for m, ref in linked.items()
                if ref in by_name or _resolved(ref) in by_path}
    same = [r for r in unimodal
            if r.config.seed == run.config.seed and r.backbone_key() == run.backbone_key()]
    out: dict[str, StoredRun] = {}
    for m in {r.modality for r in same}:
        found = [r for r in same if r.modality == m]
        if len(found) == 1:
            out[m] = found[0]
    return out


def _linked_runs(cfg: TrainConfig) -> dict[str, str]:
    """modality -> the run (name, or checkpoint path) that ``cfg`` depends on."""
    for key in ("members", "teachers", "warm_start"):
        refs = cfg.params.get(key)
        if isinstance(refs, Mapping) and refs:
            return {m: str(ref) for m, ref in refs.items()}
    return {}


def _resolved(ref: str) -> str:
    return str(Path(ref).resolve())


def run_diagnostics(run: StoredRun, runs: list[StoredRun], data: DataBundle,
                    probe_cfg: ProbeConfig, noise_cfg: NoiseConfig) -> list[dict[str, Any]]:
    """Probes (+ gap, MIR/DMC) and robustness of one stored run, as rows of ``R/diagnostics``."""
    spec = data.spec
    strategy = load_checkpoint(run.record.checkpoint, spec, run.record.store)
    partners = {run.modality: run} if run.modality else unimodal_partners(run, runs)
    unimodal = {m: s for m, r in partners.items()
                if (s := reference_score(r, data, m, probe_cfg)) is not None}
    metrics = probe_metrics(probe_all(strategy, data, probe_cfg), unimodal, spec)
    if spec.task == "classification":
        for split, by_mod in robustness_metrics(robustness(strategy, data, noise_cfg)).items():
            for m, values in by_mod.items():
                metrics.setdefault(split, {}).setdefault(m, {}).update(values)
    return result_rows(run.name + DIAGNOSTICS_SUFFIX, run.config.strategy, spec.name,
                       run.config.seed, run.config.to_dict(), metrics,
                       dataset_version=dataset_version(spec), wall_time_s=0.0, epochs=0)


def unimodal_groups(runs: list[StoredRun], spec: DatasetSpec) -> list[dict[str, StoredRun]]:
    """Complete sets (one unimodal run per modality) of the same seed and backbone settings."""
    groups: dict[tuple, dict[str, list[StoredRun]]] = {}
    for r in runs:
        if r.modality is not None:
            key = (r.config.seed, r.backbone_key())
            groups.setdefault(key, {}).setdefault(r.modality, []).append(r)
    return [{m: found[0] for m, found in g.items()} for g in groups.values()
            if set(g) == set(spec.modality_names) and all(len(f) == 1 for f in g.values())]


def _pseudo_run_id(spec: DatasetSpec, kind: str, group: Mapping[str, StoredRun],
                   suffix: str) -> str:
    names = sorted(r.name for r in group.values())
    digest = hashlib.sha256(json.dumps(names).encode()).hexdigest()[:10]
    seed = next(iter(group.values())).config.seed
    return f"{spec.name}-{kind}-{digest}-s{seed}/{suffix}"


def _pseudo_rows(run_id: str, strategy: str, group: Mapping[str, StoredRun], spec: DatasetSpec,
                 metrics: Metrics) -> list[dict[str, Any]]:
    first = next(iter(group.values()))
    config = {"diagnostic": run_id.rsplit("/", 1)[1],
              "unimodal_runs": {m: r.name for m, r in sorted(group.items())}}
    return result_rows(run_id, strategy, spec.name, first.config.seed, config, metrics,
                       dataset_version=dataset_version(spec), wall_time_s=0.0, epochs=0)


def mir_uni_rows(group: Mapping[str, StoredRun], data: DataBundle,
                 probe_cfg: ProbeConfig) -> list[dict[str, Any]]:
    """MIR_uni of one seed's unimodal runs (strategy ``unimodal``, metric ``mir``), from the
    same scores the methods' DMC divides by (:func:`reference_score`)."""
    spec = data.spec
    scores = {m: reference_score(r, data, m, probe_cfg) for m, r in group.items()}
    if len(scores) < 2 or any(s is None or s <= 0 for s in scores.values()):
        return []
    comp = modality_competition(scores, scores)
    metrics = {eval_split(spec): {FUSED: {"mir": comp.mir_uni}}}
    return _pseudo_rows(_pseudo_run_id(spec, "unimodal", group, "mir"), "unimodal", group, spec,
                        metrics)


def selection_rows(group: Mapping[str, StoredRun], spec: DatasetSpec,
                   sel: Selection) -> list[dict[str, Any]]:
    """The selection trick's two validation accuracies and its recommendation."""
    metrics = {"val": {FUSED: {"selection_linear_accuracy": sel.linear_val_accuracy,
                               "selection_ume_accuracy": sel.ume_val_accuracy,
                               "selection_umt": float(sel.recommendation == "umt")}}}
    run_id = _pseudo_run_id(spec, SELECTION, group, "selection")
    return _pseudo_rows(run_id, SELECTION, group, spec, metrics)


def existing_run_ids(results: str | Path) -> set[str]:
    try:
        return set(read_results(results)["run_id"])
    except FileNotFoundError:
        return set()


def diagnose_store(data: DataBundle, store: str | Path | Storage, results: str | Path,
                   probe_cfg: ProbeConfig | None = None, noise_cfg: NoiseConfig | None = None,
                   log: Callable[[str], None] = print, redo: bool = False) -> list[str]:
    """Write training rows (when missing) and diagnostics rows for every finished run of
    ``data`` in ``store`` (matched by data identity, see :func:`stored_runs`); returns the
    run_ids written. Runs that already have
    diagnostics in ``results`` are skipped unless ``redo``."""
    probe_cfg, noise_cfg = probe_cfg or ProbeConfig(), noise_cfg or NoiseConfig()
    found = _runs_of(store, data.spec.name, data.spec.identity)
    runs = [r for r, same in found if same]
    if not runs:
        other = (f" ({len(found)} run(s) of {data.spec.name!r} there were trained on other "
                 "data: other dataset arguments or files)" if found else "")
        raise FileNotFoundError(f"no finished runs of dataset {data.spec.name!r} with these "
                                f"arguments and files in {str(store)!r}{other}; train some "
                                "first (python -m trainers with the same --dataset-arg)")
    have = existing_run_ids(results)
    batches = [record_rows(r.record, r.config, data.spec) for r in runs if r.name not in have]
    for r in runs:
        if not redo and r.name + DIAGNOSTICS_SUFFIX in have:
            log(f"{r.name}: has diagnostics already (redo to recompute)")
            continue
        log(f"diagnosing {r.name}")
        batches.append(run_diagnostics(r, runs, data, probe_cfg, noise_cfg))
    for group in unimodal_groups(runs, data.spec):
        batches.append(mir_uni_rows(group, data, probe_cfg))
        if data.spec.task == "classification":
            sel = selection_trick(data, {m: r.record.checkpoint for m, r in group.items()},
                                  probe_cfg)
            batches.append(selection_rows(group, data.spec, sel))
    rows = [row for batch in batches for row in batch]
    write_results(rows, results)
    return sorted({row["run_id"] for row in rows})
