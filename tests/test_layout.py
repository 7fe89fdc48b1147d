"""One storage root for every command (issue 13): the layout, older layouts named in one line,
smoke runs apart, the report beside the Parquet folder, results a pandas user can use at once."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.__main__ import main as orchestrator_main
from orchestrator.aggregate import trial_rows
from orchestrator.results import COLUMNS, VERSION_KEY, read_results, result_rows, write_results
from orchestrator.sweep import TrialOutcome
from orchestrator.train_fn import DataRef, make_job, ray_storage
from sweeps import unimodal_ensembles
from sweeps.common import parser, script_layout
from trainers.__main__ import main as trainers_main
from trainers.config import TrainConfig
from trainers.layout import (
    DEFAULT_ROOT,
    STORAGE_ENV,
    Layout,
    old_layout_notes,
    ray_files,
    runtime_env_warning,
)
from trainers.storage import Storage

TINY = ["--dataset", "synthetic_both", "--dataset-arg", "n=60", "--dataset-arg", "dim=4",
        "--strategies", "fusion_avg", "--epochs", "1"]


def _fake_run(store: Path, name: str = "synthetic_both-unimodal-m1-abc") -> None:
    (store / name).mkdir(parents=True)
    (store / name / "result.json").write_text("{}")


def test_one_root_with_fixed_children_and_one_default(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert Layout.open().root.location == str(tmp_path / Path(DEFAULT_ROOT).name)
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "env"))
    layout = Layout.open()
    assert [s.location for s in (layout.runs, layout.results, layout.reports, layout.ray)] == [
        str(tmp_path / "env" / d) for d in ("runs", "results", "reports", "_ray")]
    assert layout.smoke().runs.location == str(tmp_path / "env" / "smoke" / "runs")


def test_ray_files_live_beside_the_run_store_not_in_it(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path / "root")
    assert ray_files(layout.runs, "tune").location == str(tmp_path / "root" / "_ray" / "tune")
    assert ray_storage(layout.runs, "train") == {"storage_path": str(tmp_path / "root/_ray/train")}
    bare = Storage.open(tmp_path / "bare")  # a run store outside a layout keeps them inside
    assert ray_files(bare, "train").location == str(tmp_path / "bare" / "_ray" / "train")


def test_old_layouts_are_named_in_one_line_each(tmp_path: Path) -> None:
    root = tmp_path / "results"  # the sweeps' old default root: runs at its top
    _fake_run(root)
    (root / "results" / "results").mkdir(parents=True)
    (root / "results" / "results" / "x.parquet").write_bytes(b"")
    (root / "results" / "report").mkdir()
    _fake_run(tmp_path / "runs")  # python -m trainers' old ./runs
    notes = old_layout_notes(Layout.open(tmp_path / "fusion-results"), cwd=tmp_path)
    assert len(notes) == 2 and all("\n" not in n for n in notes)
    assert f"{tmp_path / 'runs'} are not reused; move them into" in notes[0]
    assert f"sweep runs in {root} are not reused" in notes[1]
    notes = old_layout_notes(Layout.open(root))
    assert [n.split(";")[0] for n in notes] == [
        f"old layout: finished runs directly in {root} are not reused",
        f"old layout: Parquet parts in {root}/results/results are not read",
        f"old layout: a report inside the Parquet folder ({root}/results/report) breaks "
        "pd.read_parquet"]
    assert old_layout_notes(Layout.open(tmp_path / "fresh"), cwd=tmp_path / "fresh") == []


def test_python_m_trainers_uses_the_root_and_names_old_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    _fake_run(tmp_path / "runs")
    assert trainers_main(TINY) == 0
    out, err = capsys.readouterr()
    assert err.startswith("warning: old layout: runs of 'python -m trainers --store runs'")
    assert sum(line.startswith("warning:") for line in err.splitlines()) == 1
    runs = sorted(p.name.split("-")[1] for p in (tmp_path / "fusion-results" / "runs").iterdir())
    assert runs == ["fusion_avg", "unimodal", "unimodal"]
    assert f"runs in {tmp_path / 'fusion-results' / 'runs'}/" in out
    assert trainers_main([*TINY, "--storage", str(tmp_path / "fusion-results")]) == 0
    out, err = capsys.readouterr()
    assert err.count(": reused") == 3 and "warning" not in err


def test_smoke_runs_get_a_layout_of_their_own(tmp_path: Path) -> None:
    args = parser(unimodal_ensembles.SCRIPT).parse_args(["--smoke-test", "--storage",
                                                        str(tmp_path)])
    layout, runs = script_layout(args)
    assert layout.root.location == str(tmp_path / "smoke") and runs.is_dir()
    full = parser(unimodal_ensembles.SCRIPT).parse_args(["--storage", str(tmp_path)])
    assert script_layout(full)[1].location == str(tmp_path / "runs")


def test_a_root_inside_rays_runtime_env_cache_is_warned_about(tmp_path: Path) -> None:
    job_dir = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_ab"
    warning = runtime_env_warning(Layout.open(job_dir / "fusion-results"))
    assert warning is not None and "\n" not in warning
    assert "runtime-env cache" in warning and "--storage" in warning
    assert runtime_env_warning(Layout.open(tmp_path / "fusion-results")) is None


def _rows(run_id: str, strategy: str, seed: int, acc: float, **kw: object) -> list[dict]:
    cfg = {"strategy": strategy, "seed": seed, "params": kw.pop("params", {})}
    return result_rows(run_id, strategy, "toy", seed, cfg,
                       {"val": {"fused": {"accuracy": acc}}, "test": {"fused": {"accuracy": acc}}},
                       dataset_version="toy v1", wall_time_s=1.0, epochs=1, **kw)


def test_report_of_a_root_leaves_results_parquet_only(tmp_path: Path) -> None:
    layout = Layout.open(tmp_path)
    rows = [*_rows("a-s0", "unimodal", 0, 0.6, params={"modality": "audio"}),
            *_rows("v-s0", "unimodal", 0, 0.7, params={"modality": "image"}),
            *_rows("u-s0", "umt", 0, 0.8, hp={"lambda_distill": 10.0}, trial_id="t1")]
    write_results(rows, layout.results.location)
    assert orchestrator_main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "reports" / "report.md").is_file()
    df = pd.read_parquet(tmp_path / "results")  # the README's one-liner, after the report
    assert list(df.columns) == list(COLUMNS) and set(df["status"]) == {"finished"}
    # the README's table: unimodal audio and image stay apart
    table = (df[(df.split == "test") & (df.metric == "accuracy") & (df.modality == "fused")]
             .groupby(["dataset", "strategy", "run_modality"])["value"].agg(["mean", "count"]))
    assert len(table) == 3
    read = read_results(tmp_path / "results")
    assert read["hp.lambda_distill"].tolist().count(10.0) == 2  # umt's val and test rows
    assert read.columns.get_loc("hp.lambda_distill") == read.columns.get_loc("hp_json") + 1
    assert orchestrator_main(["report", str(tmp_path / "nowhere")]) == 2


def _outcome(status: str, last: dict, tmp_path: Path) -> TrialOutcome:
    ref = DataRef("synthetic_both", {"n": 60, "dim": 4})
    job = make_job(ref, ref.load().spec, TrainConfig(strategy="umt", epochs=4), tmp_path)
    return TrialOutcome("t1", {"lr": 0.01}, job, status, None, last)


@pytest.mark.parametrize(("status", "want", "value"), [
    ("stopped", "stopped", 0.5), ("diverged", "diverged", None), ("error", "failed", None)])
def test_trial_rows_carry_status_hp_and_training_time(tmp_path: Path, status: str, want: str,
                                                      value: float | None) -> None:
    last = {"val/fused/accuracy": 0.5, "epoch": 2, "wall_time_s": 3.0, "time_total_s": 10.0}
    o = _outcome(status, last, tmp_path)
    rows = trial_rows(o, o.job.data.load().spec)
    assert {r["status"] for r in rows} == {want}
    assert {(r["wall_time_s"], r["queue_time_s"]) for r in rows} == {(3.0, 7.0)}
    assert {r["hp_json"] for r in rows} == {'{"lr":0.01}'}
    got = [r["value"] for r in rows]
    assert got == [value] if value is not None else all(math.isnan(v) for v in got)


def test_version_1_parts_are_migrated(tmp_path: Path) -> None:
    rows = _rows("a-s0", "unimodal", 0, 0.6, params={"modality": "audio"})
    rows += _rows("u-s0", "umt", 0, math.nan)
    v1 = pd.DataFrame(rows).drop(columns=["run_modality", "status", "hp_json", "queue_time_s"])
    v1["schema_version"] = 1
    table = pa.Table.from_pandas(v1, preserve_index=False)
    pq.write_table(table.replace_schema_metadata({VERSION_KEY: b"1"}), tmp_path / "v1.parquet")
    df = read_results(tmp_path)
    assert list(df.columns) == list(COLUMNS) and set(df["schema_version"]) == {2}
    by_run = df.groupby("run_id").first()
    assert by_run["run_modality"].to_dict() == {"a-s0": "audio", "u-s0": ""}
    assert by_run["status"].to_dict() == {"a-s0": "finished", "u-s0": "failed"}
    assert json.loads(by_run.loc["u-s0", "hp_json"]) == {}


def test_the_readme_pandas_example_runs_and_keeps_modalities_apart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b.split("\n", 1)[1] for b in readme.split("```python")[1:]
                 if 'pd.read_parquet("fusion-results/results")' in b).split("```")[0]
    rows = [*_rows("a-s0", "unimodal", 0, 0.6, params={"modality": "audio"}),
            *_rows("v-s0", "unimodal", 0, 0.7, params={"modality": "image"}),
            *_rows("u-s0", "umt", 0, 0.8)]
    write_results(rows, tmp_path / "fusion-results" / "results")
    monkeypatch.chdir(tmp_path)
    *setup, expression = block.replace("\\\n", "").strip().splitlines()
    scope: dict = {}
    exec("\n".join(setup), scope)  # noqa: S102 (the README's own lines)
    table = eval(expression, scope)  # noqa: S307
    assert len(table) == 3 and set(table["count"]) == {1}


@pytest.mark.parametrize("argv", [
    ["report", "nope://x"],
    ["recommend", "--dataset", "synthetic_both", "--storage", "nope://x"],
])
def test_a_bad_storage_is_one_line_everywhere(argv: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert orchestrator_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: storage 'nope://x'"), err
    assert trainers_main([*TINY, "--storage", "nope://x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "s3://bucket/prefix" in err, err
