"""The Parquet results schema: the one module that defines, writes, reads and migrates results.

Long format: one row per run x split x modality-or-fused x metric, so any new metric, split or
modality is a new row, never a new column. A results store is a **directory of part files**, one
``<run>-<hash>.parquet`` per ``run_id``, written to a hidden temporary name and renamed into place:
writers in different processes (Tune trials, Ray tasks, machines sharing NFS/S3) never touch the
same file unless they write the same run, and then the last complete write wins (a rerun of a
deterministic ``run_id`` replaces its rows instead of duplicating them). Write all rows of a run
in one call. ``pd.read_parquet(path)`` opens the directory in one line (while every part has the
current version); :func:`read_results` also validates and migrates parts of older versions, adds
one ``hp.<name>`` column per searched hyper-parameter (flattened from ``hp_json``), and
leaves out a part that is not readable Parquet with a one-line ``UnreadablePartWarning``. Paths
may be local or ``s3://``/``gs://`` URIs (through :mod:`trainers.storage`; tested on a local S3
server).

| column | type | meaning |
|---|---|---|
| `schema_version` | int64 | version of this schema the row was written with (currently 2) |
| `run_id` | string | deterministic run name (`trainers.runs.run_name`), no timestamps |
| `trial_id` | string | Ray Tune trial id, `""` when the run was not a Tune trial |
| `strategy` | string | strategy name (`unimodal`, `fusion_concat`, `ume`, `unicat`, `umt`, ...) |
| `run_modality` | string | the modality a `unimodal` run trained on; `""` for other runs |
| `dataset` | string | dataset name as registered |
| `dataset_version` | string | data recipe and its version, e.g. `cremad-stft512-v1` |
| `seed` | int64 | random seed of the run |
| `split` | string | `train`, `val`, `test`, `query` or `gallery` |
| `modality` | string | `fused` for the model's output, or a modality name (per-modality metric) |
| `metric` | string | `accuracy`, `macro_f1`, `map`, `rank1`/`5`/`10`, `minp`, `loss`, ... |
| `value` | float64 | the number; fractions in [0, 1] for accuracy/F1/mAP/CMC/mINP; NaN = none |
| `status` | string | `finished`, `stopped` (by the Tune scheduler: ASHA), `diverged`, `failed` |
| `config_json` | string | the run's full config as canonical JSON (sorted keys, no spaces) |
| `hp_json` | string | the searched hyper-parameters (a trial's sampled values) as canonical JSON |
| `wall_time_s` | float64 | wall-clock seconds of training only |
| `queue_time_s` | float64 | seconds outside training (waiting, start-up); NaN = unknown |
| `epochs` | int64 | epochs consumed (after early stopping / model selection) |
| `selected_on` | string | split that selected epochs/stages/hyper-params: `val` (see below) |
| `created_by` | string | package and version that wrote the row, e.g. `fusion-orchestrator 0.1.0` |

``selected_on`` is ``val`` for this project's runs (SPEC section 8); ``unknown`` marks migrated rows
and ``test`` numbers reproduced with published code that selects on test.

Validation on write (a ``ValueError`` naming the column, the bad value and the run): unknown split,
empty string fields (``trial_id`` excepted), non-JSON-serialisable config, wrong types, duplicate
(run_id, split, modality, metric), fraction metrics outside [0, 1], and non-finite numbers. The one
exception: ``value`` may be NaN, meaning "this metric of this run could not be computed" (the
``status`` column says why: a ``diverged`` or ``failed`` run); :func:`summary_table` reports those
in ``n_failed`` and leaves them out of mean and std. +/-inf is always rejected.

Schema versions live in the Parquet key-value metadata (``fusion_orchestrator.schema_version``)
and in the ``schema_version`` column. Version 0 (the early prototype, no version recorded) was
wide: one row per run x split x modality with one float column ``metric.<name>`` per metric and no
``schema_version``, ``trial_id``, ``dataset_version``, ``selected_on`` or ``created_by`` columns.
Version 1 had no ``run_modality``, ``status``, ``hp_json`` or ``queue_time_s`` (NaN ``value``
meant failed, and ``wall_time_s`` of a stopped trial was Tune's total). :data:`MIGRATIONS`
upgrades each version to the next on read (v1 rows: ``status`` ``failed`` for a run with a NaN
value, else ``finished``; ``hp_json`` ``{}``; ``queue_time_s`` NaN).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trainers.storage import Storage

SCHEMA_VERSION = 2
VERSION_KEY = b"fusion_orchestrator.schema_version"
SPLITS = ("train", "val", "test", "query", "gallery")
SELECTED_ON = ("val", "test", "unknown")
FUSED = "fused"
STATUSES = ("finished", "stopped", "diverged", "failed")
HP_PREFIX = "hp."  # read_results: one column per searched hyper-parameter, e.g. hp.lr
FRACTION_METRICS = frozenset({"accuracy", "macro_f1", "map", "rank1", "rank5", "rank10", "minp"})

_FIELDS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("schema_version", pa.int64(), "version of the results schema the row was written with"),
    ("run_id", pa.string(), "deterministic run name (no timestamps)"),
    ("trial_id", pa.string(), "Ray Tune trial id, empty when not a Tune trial"),
    ("strategy", pa.string(), "strategy name"),
    ("run_modality", pa.string(), "the modality of a unimodal run, empty for other runs"),
    ("dataset", pa.string(), "dataset name"),
    ("dataset_version", pa.string(), "data recipe / preprocessing version"),
    ("seed", pa.int64(), "random seed"),
    ("split", pa.string(), "train, val, test, query or gallery"),
    ("modality", pa.string(), "'fused' or a modality name"),
    ("metric", pa.string(), "metric name, e.g. accuracy, macro_f1, map, rank1, minp, loss"),
    ("value", pa.float64(), "metric value; fractions in [0, 1]; NaN = could not be computed"),
    ("status", pa.string(), "the run's outcome: finished, stopped, diverged or failed"),
    ("config_json", pa.string(), "full run config as canonical JSON (sorted keys)"),
    ("hp_json", pa.string(), "the searched hyper-parameters as canonical JSON, {} if none"),
    ("wall_time_s", pa.float64(), "wall-clock seconds of training (no queueing)"),
    ("queue_time_s", pa.float64(), "seconds outside training (waiting, start-up); NaN = unknown"),
    ("epochs", pa.int64(), "epochs consumed"),
    ("selected_on", pa.string(), "split used for model selection"),
    ("created_by", pa.string(), "package version that wrote the row"),
)
SCHEMA = pa.schema(
    [pa.field(n, t, nullable=False, metadata={"description": d}) for n, t, d in _FIELDS],
    metadata={VERSION_KEY: str(SCHEMA_VERSION).encode()},
)
COLUMNS = tuple(SCHEMA.names)
_KEY = ["run_id", "split", "modality", "metric"]
_MAY_BE_EMPTY = frozenset({"trial_id", "run_modality"})


def canonical_json(config: Mapping[str, Any] | Any) -> str:
    """Sorted-key compact JSON of a mapping or dataclass; the same config gives the same text."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a mapping or a dataclass but got {type(config).__name__}")
    try:
        return json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"config is not JSON-serialisable ({e}); use only dicts, lists, str, int, finite "
            "float, bool and None"
        ) from None


def package_version() -> str:
    """The ``created_by`` value for rows written by this installation."""
    try:
        return f"fusion-orchestrator {version('fusion-orchestrator')}"
    except PackageNotFoundError:
        return "fusion-orchestrator (not installed)"


def result_rows(
    run_id: str,
    strategy: str,
    dataset: str,
    seed: int,
    config: Mapping[str, Any],
    metrics_by_split: Mapping[str, Mapping[str, Mapping[str, float]]],
    *,
    dataset_version: str,
    wall_time_s: float,
    epochs: int,
    trial_id: str = "",
    selected_on: str = "val",
    created_by: str | None = None,
    status: str = "finished",
    hp: Mapping[str, Any] | None = None,
    queue_time_s: float = math.nan,
) -> list[dict[str, Any]]:
    """Validated long-format rows from ``{split: {modality_or_fused: {metric: value}}}``;
    ``hp`` are the searched hyper-parameters (a sweep's sampled values)."""
    try:
        config_json, hp_json = canonical_json(config), canonical_json(dict(hp or {}))
    except ValueError as e:
        raise ValueError(f"result_rows: run {run_id!r}: {e}") from None
    common = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "trial_id": trial_id,
        "strategy": strategy,
        "run_modality": run_modality(strategy, config_json),
        "dataset": dataset,
        "dataset_version": dataset_version,
        "seed": seed,
        "status": status,
        "config_json": config_json,
        "hp_json": hp_json,
        "wall_time_s": wall_time_s,
        "queue_time_s": queue_time_s,
        "epochs": epochs,
        "selected_on": selected_on,
        "created_by": package_version() if created_by is None else created_by,
    }
    rows = [
        {**common, "split": split, "modality": modality, "metric": metric, "value": value}
        for split, by_modality in metrics_by_split.items()
        for modality, by_metric in by_modality.items()
        for metric, value in by_metric.items()
    ]
    if not rows:
        raise ValueError(f"metrics_by_split of run {run_id!r} holds no metric; nothing to record")
    rows = [{c: row[c] for c in COLUMNS} for row in rows]
    for row in rows:
        row["value"] = _as_float(row)
    _validate(pd.DataFrame(rows, columns=list(COLUMNS)), "result_rows")
    return rows


def run_modality(strategy: str, config_json: str) -> str:
    """The modality a unimodal run trained on (its ``params.modality``), else ``""``."""
    if strategy != "unimodal":
        return ""
    params = json.loads(config_json).get("params")
    modality = params.get("modality") if isinstance(params, dict) else None
    return str(modality) if modality else ""


def write_results(
    rows_or_df: Sequence[Mapping[str, Any]] | pd.DataFrame, path: str | Path
) -> list[str]:
    """Validate, then write one part file per run_id into directory ``path``; returns the paths.

    A part is written to a hidden temporary file and renamed, so readers never see half a file and
    a second write of the same run_id replaces it.
    """
    df = rows_or_df if isinstance(rows_or_df, pd.DataFrame) else pd.DataFrame(list(rows_or_df))
    if df.empty:
        raise ValueError("write_results got no rows; build them with result_rows")
    _validate(df, "write_results")
    store = Storage.open(path)
    if store.is_file():
        raise ValueError(
            f"{path} is a file; results are a directory of part files, pass a directory"
        )
    written = []
    for run_id, part in df.groupby("run_id", sort=True):
        buffer = pa.BufferOutputStream()
        pq.write_table(_to_table(part), buffer)
        name = part_filename(str(run_id))
        store.write_bytes(buffer.getvalue().to_pybytes(), name)
        written.append(store.uri(name))
    return written


def part_filename(run_id: str) -> str:
    """File name of a run's part: a readable slug plus a hash of the exact run_id (no clashes)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._")[:80] or "run"
    return f"{slug}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}.parquet"


def read_results(path: str | Path) -> pd.DataFrame:
    """All rows of a results directory (or one Parquet file), validated and migrated."""
    store = Storage.open(path)
    fs = store.fs
    if store.is_file():
        files = [store.root]
    elif store.is_dir():
        files = [
            f.path
            for f in store.list()
            if f.is_file and f.base_name.endswith(".parquet") and f.base_name[0] not in "._"
        ]
    else:
        raise FileNotFoundError(f"no results at {path}; write some with write_results first")
    folder = not store.is_file()
    tables = [t for f in files if (t := _read_or_skip(fs, f, folder)) is not None]
    return with_hp_columns(pa.concat_tables(tables or [SCHEMA.empty_table()]).to_pandas())


def with_hp_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with one ``hp.<name>`` column per searched hyper-parameter (from ``hp_json``; NaN
    for runs that did not search it), right after ``hp_json``."""
    hps = [json.loads(t) for t in df["hp_json"]]
    names = sorted({k for hp in hps for k in hp})
    at = list(df.columns).index("hp_json") + 1
    for i, name in enumerate(names):
        df.insert(at + i, HP_PREFIX + name, [hp.get(name, math.nan) for hp in hps])
    return df


class UnreadablePartWarning(UserWarning):
    """A part of a results directory is not readable Parquet (left out of what is read)."""


def _read_or_skip(fs: pafs.FileSystem, file: str, in_folder: bool) -> pa.Table | None:
    """One part; a part that is not readable Parquet (truncated, corrupt) is left out with a
    one-line warning when a directory is read, so the other runs' rows are still reported;
    a single file asked for by name is a one-line error."""
    try:
        return _read_part(fs, file)
    except (OSError, pa.ArrowException) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        msg = (f"{file}: not readable Parquet ({why}); delete it and rerun the run named in its "
               "file name to write its rows again")
        if not in_folder:
            raise ValueError(msg) from None
        warnings.warn(f"{msg}; left out for now", UnreadablePartWarning, stacklevel=3)
        return None


def summary_table(
    df: pd.DataFrame, metric: str = "accuracy", split: str = "test", modality: str = FUSED
) -> pd.DataFrame:
    """Mean and sample std (ddof=1) over seeds per (dataset, strategy), with ``count`` and
    ``n_failed`` (NaN values, left out of mean and std). Each seed must appear once per group:
    filter a sweep down to its selected configuration first."""
    sel = df[(df["metric"] == metric) & (df["split"] == split) & (df["modality"] == modality)]
    if sel.empty:
        raise ValueError(
            f"no rows with metric={metric!r}, split={split!r}, modality={modality!r}; "
            f"metrics present: {sorted(df['metric'].unique())}, "
            f"splits: {sorted(df['split'].unique())}"
        )
    seeds = sel.groupby(["dataset", "strategy", "seed"])["run_id"].nunique()
    if (seeds > 1).any():
        dataset, strategy, seed = seeds[seeds > 1].index[0]
        raise ValueError(
            f"summary_table: dataset {dataset!r}, strategy {strategy!r} has several runs with "
            f"seed {seed}; keep one configuration per (dataset, strategy) before summarising"
        )
    grouped = sel.groupby(["dataset", "strategy"], sort=True)["value"]
    out = grouped.agg(mean="mean", std="std", count="count")
    out["n_failed"] = grouped.size() - out["count"]
    out = out.reset_index()
    return out.assign(metric=metric, split=split, modality=modality)


def format_summary(df: pd.DataFrame, *, scale: float = 100.0, digits: int = 2) -> str:
    """A papers-style text table (strategies x datasets, cells "81.23 ± 0.45") of a
    :func:`summary_table`; a raw results frame is summarised with the defaults first."""
    summary = summary_table(df) if "value" in df.columns else df
    cells = [_cell(r, scale, digits) for r in summary.to_dict("records")]
    table = summary.assign(cell=cells).pivot(index="strategy", columns="dataset", values="cell")
    counts = sorted(set(summary["count"]))
    n = f"n = {counts[0]}" if len(counts) == 1 else f"n = {counts[0]}-{counts[-1]}"
    first = summary.iloc[0]
    unit = f" x{scale:g}" if scale != 1 else ""
    title = (
        f"{first['metric']} on {first['split']} ({first['modality']}){unit}: "
        f"mean ± std over seeds ({n})"
    )
    return f"{title}\n{table.fillna('').to_string()}"


# --- validation ------------------------------------------------------------------------------


def _validate(df: pd.DataFrame, source: str) -> None:
    missing = [c for c in COLUMNS if c not in df.columns]
    extra = [c for c in df.columns if c not in COLUMNS and not c.startswith(HP_PREFIX)]
    if missing or extra:
        raise ValueError(
            f"{source}: columns do not match schema version {SCHEMA_VERSION}: missing {missing}, "
            f"unexpected {extra}; build rows with result_rows"
        )
    for name, dtype, _ in _FIELDS:
        _check_type(df, name, dtype, source)
    _check_values(df, source)
    dup = df.duplicated(_KEY)
    if dup.any():
        key = df.loc[dup, _KEY].iloc[0].tolist()
        raise ValueError(f"{source}: duplicate row for (run_id, split, modality, metric) = {key}")


def _check_type(df: pd.DataFrame, name: str, dtype: pa.DataType, source: str) -> None:
    kind = (
        "string" if pa.types.is_string(dtype) else "int" if pa.types.is_integer(dtype) else "float"
    )
    ok, want = _TYPE_CHECKS[kind]
    for i, v in enumerate(df[name].tolist()):
        if not ok(v):
            raise ValueError(f"{source}: column {name!r} must be {want} but got {v!r}{_at(df, i)}")


def _check_values(df: pd.DataFrame, source: str) -> None:
    checks: list[tuple[str, pd.Series, str]] = [
        ("schema_version", df["schema_version"] != SCHEMA_VERSION, f"write {SCHEMA_VERSION}"),
        ("split", ~df["split"].isin(SPLITS), f"use one of {list(SPLITS)}"),
        ("status", ~df["status"].isin(STATUSES), f"use one of {list(STATUSES)}"),
        (
            "queue_time_s",
            ~((df["queue_time_s"] >= 0) | df["queue_time_s"].isna()),
            "use seconds >= 0, or NaN when not measured",
        ),
        ("hp_json", ~df["hp_json"].map(_is_canonical), "build it with canonical_json"),
        ("selected_on", ~df["selected_on"].isin(SELECTED_ON), f"use one of {list(SELECTED_ON)}"),
        (
            "wall_time_s",
            ~((df["wall_time_s"] >= 0) & df["wall_time_s"].map(math.isfinite)),
            "use finite seconds >= 0",
        ),
        ("epochs", df["epochs"] < 0, "use a count >= 0"),
        (
            "value",
            df["metric"].isin(FRACTION_METRICS) & ((df["value"] < 0) | (df["value"] > 1)),
            "store fractions in [0, 1], not percentages",
        ),
        ("config_json", ~df["config_json"].map(_is_canonical), "build it with canonical_json"),
    ]
    for name, dtype, _ in _FIELDS:
        if pa.types.is_string(dtype) and name not in _MAY_BE_EMPTY:
            checks.append((name, df[name] == "", "give a non-empty string"))
    for name, bad, fix in checks:
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            value = df[name].tolist()[i]
            raise ValueError(f"{source}: column {name!r} got {value!r}{_at(df, i)}; {fix}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_float(v: Any) -> bool:
    """Ints count as floats; NaN passes here (only ``value`` and ``queue_time_s`` keep it),
    +/-inf never does."""
    return _is_int(v) or (isinstance(v, float) and not math.isinf(v))


_TYPE_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "string": (lambda v: isinstance(v, str), "a string"),
    "int": (_is_int, "an integer"),
    "float": (_is_float, "a finite float (or NaN for value)"),
}


def _is_canonical(text: str) -> bool:
    try:
        config = json.loads(text)
        return isinstance(config, dict) and canonical_json(config) == text
    except ValueError:
        return False


def _as_float(row: Mapping[str, Any]) -> float:
    value = row["value"]
    try:
        if isinstance(value, bool | str):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"result_rows: metric {row['metric']!r} of split {row['split']!r}, modality "
            f"{row['modality']!r} must be a number but got {value!r}"
        ) from None


def _at(df: pd.DataFrame, i: int) -> str:
    run = df["run_id"].iloc[i] if "run_id" in df.columns else "?"
    return f" (row {i}, run_id {run!r})"


# --- storage and migration -------------------------------------------------------------------


def _to_table(df: pd.DataFrame) -> pa.Table:
    arrays = [pa.array(df[f.name].tolist(), type=f.type) for f in SCHEMA]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


@dataclass(frozen=True)
class Migration:
    """Upgrade from version ``from_version`` to the next; ``required`` columns must be present."""

    from_version: int
    required: tuple[str, ...]
    upgrade: Callable[[pd.DataFrame], pd.DataFrame]


_V0_COLUMNS = (
    "run_id", "strategy", "dataset", "seed", "split", "modality",
    "config_json", "wall_time_s", "epochs",
)  # fmt: skip
V0_METRIC_PREFIX = "metric."


def _v0_to_v1(df: pd.DataFrame) -> pd.DataFrame:
    """Wide -> long; NaN cells of the wide table meant "not measured" and are dropped."""
    metrics = [c for c in df.columns if c.startswith(V0_METRIC_PREFIX)]
    if not metrics:
        raise ValueError(f"no '{V0_METRIC_PREFIX}<name>' metric columns")
    long = df.melt(id_vars=list(_V0_COLUMNS), value_vars=metrics, var_name="metric")
    long = long[long["value"].notna()].copy()
    long["metric"] = long["metric"].str.removeprefix(V0_METRIC_PREFIX)
    long["config_json"] = long["config_json"].map(lambda t: canonical_json(json.loads(t)))
    long = long.assign(
        schema_version=1,
        trial_id="",
        dataset_version="unknown",
        selected_on="unknown",
        created_by="unknown (migrated from schema version 0)",
    )
    return long.sort_values(_KEY, kind="stable").reset_index(drop=True)[
        ["schema_version", *_V1_COLUMNS]]


_V1_COLUMNS = (
    "run_id", "trial_id", "strategy", "dataset", "dataset_version", "seed", "split", "modality",
    "metric", "value", "config_json", "wall_time_s", "epochs", "selected_on", "created_by",
)  # fmt: skip


def _v1_to_v2(df: pd.DataFrame) -> pd.DataFrame:
    """Adds ``run_modality`` (from the config), ``status`` (``failed`` for a run with a NaN
    value, which meant failure in version 1, else ``finished``), ``hp_json`` (``{}``: version 1
    did not record what was searched) and ``queue_time_s`` (NaN: not measured)."""
    failed = set(df.loc[df["value"].isna(), "run_id"])
    modality = [run_modality(s, c) for s, c in zip(df["strategy"], df["config_json"], strict=True)]
    df = df.assign(schema_version=2, run_modality=modality, hp_json="{}", queue_time_s=math.nan,
                   status=["failed" if r in failed else "finished" for r in df["run_id"]])
    return df[list(COLUMNS)]


MIGRATIONS: dict[int, Migration] = {
    0: Migration(0, _V0_COLUMNS, _v0_to_v1),
    1: Migration(1, _V1_COLUMNS, _v1_to_v2),
}


def _read_part(fs: pafs.FileSystem, file: str) -> pa.Table:
    table = pq.read_table(file, filesystem=fs)
    found = _file_version(table, file)
    if found > SCHEMA_VERSION:
        raise ValueError(
            f"{file}: results schema version {found} is newer than this fusion-orchestrator "
            f"reads (up to {SCHEMA_VERSION}); upgrade fusion-orchestrator to read it"
        )
    df = table.to_pandas()
    df = df[[c for c in df.columns if not c.startswith("__index_level_")]]
    for v in range(found, SCHEMA_VERSION):
        _require(df, MIGRATIONS[v].required, file, found)
        try:
            df = MIGRATIONS[v].upgrade(df)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{file}: cannot migrate schema version {v}: {e}") from None
    _require(df, COLUMNS, file, found)
    _validate(df, file)
    return _to_table(df)


def _file_version(table: pa.Table, file: str) -> int:
    meta = table.schema.metadata or {}
    if VERSION_KEY in meta:
        return int(meta[VERSION_KEY])
    if "schema_version" not in table.column_names:
        return 0  # the prototype format recorded no version
    versions = set(table.column("schema_version").to_pylist())
    if len(versions) != 1:
        raise ValueError(f"{file}: mixed schema versions {sorted(versions)}; rewrite it per run")
    return int(versions.pop())


def _require(df: pd.DataFrame, columns: Sequence[str], file: str, found: int) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        label = "0 (no version recorded)" if found == 0 else str(found)
        raise ValueError(
            f"{file}: results of schema version {label} lack column(s) {missing}; it was not "
            "written by write_results: rewrite it with write_results or move it out of the "
            "results directory"
        )


def _cell(row: Mapping[str, Any], scale: float, digits: int) -> str:
    count, failed = int(row["count"]), int(row["n_failed"])
    if count == 0:
        return "failed"
    text = f"{row['mean'] * scale:.{digits}f}"
    if count > 1:
        text += f" ± {row['std'] * scale:.{digits}f}"
    return text + (f" ({failed} failed)" if failed else "")
