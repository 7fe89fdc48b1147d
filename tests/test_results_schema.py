"""The results schema: round trip, concurrent writers, summaries, migrations and rejections."""

from __future__ import annotations

import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.results import (
    COLUMNS,
    SCHEMA,
    SCHEMA_VERSION,
    VERSION_KEY,
    canonical_json,
    format_summary,
    part_filename,
    read_results,
    result_rows,
    summary_table,
    write_results,
)

KEY = ["run_id", "split", "modality", "metric"]


def _rows(run_id: str = "r1", seed: int = 0, acc: float = 0.8, **kw: Any) -> list[dict[str, Any]]:
    args: dict[str, Any] = {
        "strategy": "fusion_concat",
        "dataset": "cremad",
        "seed": seed,
        "config": {"lr": 0.01, "encoders": ["resnet18", "resnet18"], "batch": 64},
        "metrics_by_split": {
            "val": {"fused": {"accuracy": acc, "macro_f1": 0.7}},
            "test": {"fused": {"accuracy": acc, "loss": 1.25}, "audio": {"accuracy": 0.5}},
        },
        "dataset_version": "cremad-stft512-v1",
        "wall_time_s": 12.5,
        "epochs": 7,
    }
    args.update(kw)
    return result_rows(run_id, **args)


def _reid_rows() -> list[dict[str, Any]]:
    return result_rows(
        "rgbnt201-unicat-seed1",
        "unicat",
        "rgbnt201",
        1,
        {"lambda_id": 1.0},
        {"query": {"fused": {"map": 0.61, "rank1": 0.72, "rank5": 0.8, "minp": 0.33}}},
        dataset_version="rgbnt201-v1",
        wall_time_s=100.0,
        epochs=60,
        trial_id="a1b2c3d4_00001",
    )


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows in key order; NaN (an unmeasured queue time) as None, so equal rows compare equal."""
    return df.sort_values(KEY).astype(object).where(df.notna(), None).to_dict("records")


def test_rows_follow_the_schema() -> None:
    rows = _rows()
    assert len(rows) == 5
    assert all(list(r) == list(COLUMNS) for r in rows)
    first = rows[0]
    assert first["schema_version"] == SCHEMA_VERSION == 2
    assert first["config_json"] == '{"batch":64,"encoders":["resnet18","resnet18"],"lr":0.01}'
    assert first["trial_id"] == "" and first["selected_on"] == "val"
    assert first["created_by"].startswith("fusion-orchestrator")
    assert SCHEMA.field("value").type == pa.float64()
    assert SCHEMA.field("run_id").metadata[b"description"]


def test_round_trip(tmp_path: Path) -> None:
    rows = _rows() + _rows("r2", seed=1, acc=0.9) + _reid_rows()
    written = write_results(rows, tmp_path / "results")
    assert len(written) == 3
    df = read_results(tmp_path / "results")
    assert list(df.columns) == list(COLUMNS)
    assert _records(df) == _records(pd.DataFrame(rows))
    assert df["value"].dtype == "float64" and df["seed"].dtype == "int64"
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == sorted(
        part_filename(r) for r in ("r1", "r2", "rgbnt201-unicat-seed1")
    )


def test_pandas_opens_results_in_one_line(tmp_path: Path) -> None:
    rows = _rows() + _reid_rows()
    write_results(pd.DataFrame(rows), tmp_path)
    df = pd.read_parquet(tmp_path)
    assert len(df) == len(rows) and list(df.columns) == list(COLUMNS)
    part = next(tmp_path.glob("*.parquet"))
    assert pq.read_schema(part).metadata[VERSION_KEY] == b"2"


def test_rewriting_a_run_replaces_it(tmp_path: Path) -> None:
    write_results(_rows(acc=0.5), tmp_path)
    write_results(_rows(acc=0.6), tmp_path)
    df = read_results(tmp_path)
    assert len(df) == 5
    assert set(df.loc[df["split"] == "val", "value"]) == {0.6, 0.7}


def test_two_writer_processes_share_a_directory(tmp_path: Path) -> None:
    jobs = []
    for i in range(8):
        jobs.append(_rows(f"a{i}", seed=i, acc=0.25))
        jobs.append(_rows(f"b{i}", seed=i, acc=0.75))
        jobs.append(_rows("shared", acc=0.25 if i % 2 else 0.75))
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        for future in [pool.submit(write_results, rows, str(tmp_path)) for rows in jobs]:
            future.result()
    df = read_results(tmp_path)
    assert df["run_id"].nunique() == 17 and len(df) == 17 * 5
    shared = _records(df[df["run_id"] == "shared"])
    versions = [_records(pd.DataFrame(_rows("shared", acc=acc))) for acc in (0.25, 0.75)]
    assert shared in versions  # one complete write won, never a mix of the two
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_summary_mean_std_by_hand() -> None:
    rows = []
    for seed, acc in enumerate([0.80, 0.82, 0.84]):
        rows += _rows(f"concat-{seed}", seed=seed, acc=acc)
    for seed, acc in enumerate([0.70, 0.90, math.nan]):
        rows += _rows(f"ume-{seed}", seed=seed, acc=acc, strategy="ume")
    summary = summary_table(pd.DataFrame(rows)).set_index("strategy")
    # fusion_concat: mean 0.82; deviations -0.02, 0, +0.02 -> std sqrt(0.0008 / 2) = 0.02
    assert summary.loc["fusion_concat", "mean"] == pytest.approx(0.82)
    assert summary.loc["fusion_concat", "std"] == pytest.approx(0.02)
    assert summary.loc["fusion_concat", "count"] == 3
    # ume: seed 2 failed (NaN); mean of 0.7, 0.9 = 0.8; std sqrt((0.01 + 0.01) / 1) = 0.141421
    assert summary.loc["ume", "mean"] == pytest.approx(0.80)
    assert summary.loc["ume", "std"] == pytest.approx(0.1414213562)
    assert summary.loc["ume", "count"] == 2 and summary.loc["ume", "n_failed"] == 1
    text = format_summary(summary.reset_index())
    assert "82.00 ± 2.00" in text and "80.00 ± 14.14 (1 failed)" in text
    assert text.splitlines()[0].startswith("accuracy on test (fused) x100")
    assert format_summary(pd.DataFrame(rows)) == text


def test_summary_per_modality_and_errors() -> None:
    rows = _rows("c0", seed=0) + _rows("c1", seed=1)
    audio = summary_table(pd.DataFrame(rows), modality="audio")
    assert audio.loc[0, "mean"] == pytest.approx(0.5) and audio.loc[0, "std"] == 0
    with pytest.raises(ValueError, match=r"no rows with metric='top1'.*metrics present"):
        summary_table(pd.DataFrame(rows), metric="top1")
    twice = rows + _rows("c0-other-lr", seed=0)
    with pytest.raises(ValueError, match=r"several runs with seed 0"):
        summary_table(pd.DataFrame(twice))


def _write_v0(path: Path) -> pd.DataFrame:
    """The prototype's wide format: metric columns, no version anywhere."""
    wide = pd.DataFrame(
        {
            "run_id": ["old-1", "old-1", "old-1"],
            "strategy": ["ume"] * 3,
            "dataset": ["ave"] * 3,
            "seed": [3, 3, 3],
            "split": ["val", "test", "test"],
            "modality": ["fused", "fused", "visual"],
            "config_json": ['{"lr": 0.1, "arch": "r18"}'] * 3,
            "wall_time_s": [5.0] * 3,
            "epochs": [2] * 3,
            "metric.accuracy": [0.6, 0.55, 0.4],
            "metric.macro_f1": [0.5, 0.45, math.nan],
        }
    )
    wide.to_parquet(path, index=False)
    return wide


def test_version_0_is_migrated(tmp_path: Path) -> None:
    write_results(_rows(), tmp_path)
    _write_v0(tmp_path / "legacy.parquet")
    df = read_results(tmp_path)
    old = df[df["run_id"] == "old-1"]
    assert len(old) == 5  # 3 accuracies + 2 measured macro-F1 (the NaN cell was "not measured")
    assert set(old["schema_version"]) == {2} and set(old["trial_id"]) == {""}
    assert set(old["dataset_version"]) == {"unknown"} and set(old["selected_on"]) == {"unknown"}
    assert set(old["config_json"]) == {canonical_json({"lr": 0.1, "arch": "r18"})}
    row = old[(old["split"] == "test") & (old["modality"] == "visual")]
    assert row[["metric", "value"]].values.tolist() == [["accuracy", 0.4]]
    assert len(read_results(tmp_path / "legacy.parquet")) == 5


def test_newer_version_is_rejected(tmp_path: Path) -> None:
    table = pa.Table.from_pylist(_rows(), schema=SCHEMA)
    pq.write_table(table.replace_schema_metadata({VERSION_KEY: b"3"}), tmp_path / "new.parquet")
    with pytest.raises(
        ValueError, match=r"new\.parquet: results schema version 3 is newer.*upgrade"
    ):
        read_results(tmp_path)


def test_missing_columns_are_rejected(tmp_path: Path) -> None:
    table = pa.Table.from_pylist(_rows(), schema=SCHEMA).drop_columns(["value"])
    pq.write_table(table, tmp_path / "cut.parquet")
    with pytest.raises(
        ValueError, match=r"cut\.parquet: results of schema version 2 lack .*'value'"
    ):
        read_results(tmp_path)
    (tmp_path / "cut.parquet").unlink()
    _write_v0(tmp_path / "legacy.parquet")
    pd.read_parquet(tmp_path / "legacy.parquet").drop(columns="epochs").to_parquet(
        tmp_path / "legacy.parquet"
    )
    with pytest.raises(ValueError, match=r"version 0 \(no version recorded\) lack .*'epochs'"):
        read_results(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"run_id": ""}, r"column 'run_id' got ''.*non-empty"),
        ({"metrics_by_split": {"valid": {"fused": {"accuracy": 0.5}}}}, r"'split' got 'valid'"),
        ({"config": {"fn": print}}, r"config is not JSON-serialisable"),
        ({"config": {"lr": math.nan}}, r"config is not JSON-serialisable"),
        ({"metrics_by_split": {"test": {"fused": {"loss": math.inf}}}}, r"'value' must be a fin"),
        ({"metrics_by_split": {"test": {"fused": {"accuracy": 81.2}}}}, r"fractions in \[0, 1\]"),
        ({"metrics_by_split": {"test": {"fused": {"accuracy": "high"}}}}, r"must be a number"),
        ({"metrics_by_split": {}}, r"holds no metric"),
        ({"seed": "0"}, r"column 'seed' must be an integer but got '0'"),
        ({"wall_time_s": math.nan}, r"'wall_time_s' got nan.*finite seconds"),
        ({"selected_on": "test-set"}, r"'selected_on' got 'test-set'"),
        ({"dataset_version": ""}, r"'dataset_version' got ''"),
    ],
)
def test_bad_rows_are_rejected(kwargs: dict[str, Any], pattern: str) -> None:
    run_id = kwargs.pop("run_id", "r1")
    with pytest.raises(ValueError, match=pattern) as info:
        _rows(run_id, **kwargs)
    assert "\n" not in str(info.value)


def test_write_validates_dataframes(tmp_path: Path) -> None:
    df = pd.DataFrame(_rows())
    with pytest.raises(ValueError, match=r"duplicate row for .*'r1', 'val', 'fused', 'accuracy'"):
        write_results(pd.concat([df, df.iloc[:1]]), tmp_path)
    with pytest.raises(ValueError, match=r"missing \['epochs'\], unexpected \['epoch'\]"):
        write_results(df.rename(columns={"epochs": "epoch"}), tmp_path)
    with pytest.raises(ValueError, match=r"'config_json' got .*canonical_json"):
        write_results(df.assign(config_json='{"b": 1, "a": 2}'), tmp_path)
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(ValueError, match=r"x\.txt is a file; results are a directory"):
        write_results(df, tmp_path / "x.txt")
    assert not list(tmp_path.glob("*.parquet"))


def test_nan_value_marks_a_failed_metric(tmp_path: Path) -> None:
    write_results(_rows(acc=math.nan), tmp_path)
    df = read_results(tmp_path)
    assert df.loc[df["metric"] == "accuracy", "value"].isna().sum() == 2


def test_part_names_are_distinct_per_run_id() -> None:
    assert part_filename("a/b c") != part_filename("a_b_c")
    assert part_filename("cremad-ume-3f2a-s0") == part_filename("cremad-ume-3f2a-s0")
    assert part_filename("x" * 300).endswith(".parquet") and len(part_filename("x" * 300)) < 100


def test_reading_nothing(tmp_path: Path) -> None:
    assert list(read_results(tmp_path).columns) == list(COLUMNS)
    with pytest.raises(FileNotFoundError, match=r"no results at"):
        read_results(tmp_path / "absent")
