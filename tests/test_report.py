"""The report (a view of Parquet results), the diagnostics rows and the orchestrator CLI."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd
import pytest
import torch

from orchestrator.__main__ import main
from orchestrator.diagnostics_rows import diagnose_store
from orchestrator.report import ReportError, build_report, load_report_data
from orchestrator.results import read_results, result_rows, write_results
from orchestrator.sweep_summary import natural_key, summarise_sweep
from tests.conftest import tiny_cfg
from trainers.compare import local_runner, plan_and_run
from trainers.diagnostics import NoiseConfig, ProbeConfig

torch.set_num_threads(1)
DS = "toy"


def rows(run_id: str, strategy: str, seed: int, metrics: dict, *, dataset: str = DS,
         config: dict | None = None, trial_id: str = "") -> list[dict]:
    cfg = config if config is not None else {"strategy": strategy, "seed": seed}
    return result_rows(run_id, strategy, dataset, seed, cfg, metrics, dataset_version="toy v1",
                       wall_time_s=1.0, epochs=3, trial_id=trial_id)


def acc(test: float, val: float | None = None, **modalities: float) -> dict:
    out = {"test": {"fused": {"accuracy": test}, **{m: {"accuracy": v}
                                                     for m, v in modalities.items()}}}
    out["val"] = {"fused": {"accuracy": test if val is None else val}}
    return out


def unimodal(m: str, seed: int, value: float) -> list[dict]:
    cfg = {"strategy": "unimodal", "seed": seed, "params": {"modality": m}}
    return rows(f"{DS}-unimodal-{m}-s{seed}", "unimodal", seed, acc(value, **{m: value}),
                config=cfg)


def diagnostics(seed: int, probe: dict[str, tuple[float, float]], gaps: dict[str, float],
                mir: float, dmc: float, noise: dict[float, float]) -> list[dict]:
    test: dict = {m: {"probe_accuracy": te, "probe_gap": gaps[m], "missing_accuracy": 0.5}
                  for m, (_, te) in probe.items()}
    test["fused"] = {"mir": mir, "dmc": dmc}
    test["all"] = {f"noise_accuracy@{lv:g}": v for lv, v in noise.items()}
    metrics = {"train": {m: {"probe_accuracy": tr} for m, (tr, _) in probe.items()},
               "test": test}
    return rows(f"{DS}-fusion_concat-s{seed}/diagnostics", "fusion_concat", seed, metrics)


def sweep_trials() -> list[dict]:
    out = []
    for i, (lam, val) in enumerate([(0, 0.6), (1, 0.7), (10, 0.9), (50, 0.8)]):
        cfg = {"strategy": "umt", "seed": 0, "params": {"lambda_distill": lam}}
        out += rows(f"{DS}-umt-t{i}-s0", "umt", 0, acc(0.5 + i / 10, val), config=cfg,
                    trial_id=f"sweep_{i:05d}")
    return out


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """2 strategies x 2 seeds (+ unimodal runs, diagnostics, a selection row and a sweep)."""
    out = tmp_path / "results"
    parts = [
        rows(f"{DS}-fusion_concat-s0", "fusion_concat", 0, acc(0.80, a=0.70, v=0.30)),
        rows(f"{DS}-fusion_concat-s1", "fusion_concat", 1, acc(0.90, a=0.72, v=0.34)),
        rows(f"{DS}-ume-s0", "ume", 0, acc(0.70)),
        rows(f"{DS}-ume-s1", "ume", 1, acc(0.75)),
        unimodal("a", 0, 0.75), unimodal("a", 1, 0.77), unimodal("v", 0, 0.60),
        unimodal("v", 1, 0.62),
        diagnostics(0, {"a": (0.9, 0.70), "v": (0.5, 0.30)}, {"a": 0.05, "v": 0.30}, 2.0, 1.6,
                    {0: 0.80, 0.5: 0.6}),
        diagnostics(1, {"a": (0.9, 0.74), "v": (0.5, 0.40)}, {"a": 0.03, "v": 0.22}, 1.8, 1.5,
                    {0: 0.90, 0.5: 0.7}),
        rows(f"{DS}-unimodal-x-s0/mir", "unimodal", 0, {"test": {"fused": {"mir": 1.25}}}),
        rows(f"{DS}-selection_trick-x-s0/selection", "selection_trick", 0, {"val": {"fused": {
            "selection_linear_accuracy": 0.8, "selection_ume_accuracy": 0.7,
            "selection_umt": 1.0}}}),
        sweep_trials(),
    ]
    write_results([r for p in parts for r in p], out)
    return out


def test_report_shows_hand_computed_tables_and_writes_readable_pngs(results, tmp_path):
    folder = Path(build_report(results, tmp_path / "report"))
    md = (folder / "report.md").read_text()
    # comparison: mean ± sample std over seeds, by hand: (80, 90) and (70, 75)
    assert "| fusion_concat | 85.00 ± 7.07 | 71.00 ± 1.41 | 32.00 ± 2.83 | 2 |" in md
    assert "| ume | 72.50 ± 3.54 |  |  | 2 |" in md
    assert "| unimodal:a | 76.00 ± 1.41 | 76.00 ± 1.41 |  | 2 |" in md
    # laziness: probe train, probe test, unimodal run, gap
    assert "| fusion_concat | v | 50.00 ± 0.00 | 35.00 ± 7.07 | 61.00 ± 1.41 | 26.00 ± 5.66 |" in md
    # MIR/DMC (ratios, not percent); unimodal MIR from the per-seed pseudo-run
    assert "| unimodal runs | 76.00 ± 1.41 | 61.00 ± 1.41 | 1.25 | - |" in md
    assert "| fusion_concat | 72.00 ± 2.83 | 35.00 ± 7.07 | 1.90 ± 0.14 | 1.55 ± 0.07 |" in md
    assert "| fusion_concat | 85.00 ± 7.07 | 65.00 ± 7.07 |" in md  # noise on all: 0, 0.5
    assert "| 80.00 | 70.00 | UMT by the mean over seeds (UMT won in 1 of 1 seeds) |" in md
    # the sweep: best val trial, its parameter, importance; the comparison keeps that trial
    assert "best trial sweep_00002" in md and "| params.lambda_distill | `10` |" in md
    assert "by at least --min-gain validation points" in md
    assert "Parameter importance" in md
    assert "umt, seed 0: 4 runs; kept toy-umt-t2-s0" in md
    assert "| umt | 70.00 |" in md
    for name in ("comparison", "probes", "robustness", "sweep_umt"):
        png = folder / f"{name}.png"
        assert png.stat().st_size > 10_000, name
        img = mpimg.imread(png)
        assert img.shape[0] > 300 and img.shape[1] > 600 and img[..., :3].std() > 0.05, name


def test_report_refuses_an_empty_results_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="holds no runs"):
        build_report(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no results at"):
        build_report(tmp_path / "missing")


def test_report_refuses_mixed_datasets_unless_one_is_picked(results, tmp_path):
    write_results(rows("other-ume-s0", "ume", 0, acc(0.5), dataset="other"), results)
    with pytest.raises(ReportError, match=r"mixes runs of datasets \['other', 'toy'\].*--dataset"):
        build_report(results)
    md = (Path(build_report(results, tmp_path / "r", dataset="other")) / "report.md").read_text()
    assert "# Report: other" in md and "fusion_concat" not in md
    with pytest.raises(ReportError, match="no rows of dataset 'nope'"):
        load_report_data(results, "nope")


def test_report_needs_run_results_not_only_diagnostics(tmp_path):
    write_results(diagnostics(0, {"a": (0.9, 0.7)}, {"a": 0.1}, 2.0, 1.5, {0: 0.8}),
                  tmp_path / "r")
    with pytest.raises(ReportError, match="no run results"):
        build_report(tmp_path / "r")


def test_cli_report_and_its_errors(results, tmp_path, capsys):
    assert main(["report", str(results), "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "report.md").is_file()
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "error:" in capsys.readouterr().err


def test_sweep_summary_orders_trials_and_needs_enough_of_them():
    assert sorted(["t_10", "t_2", "t_1"], key=natural_key) == ["t_1", "t_2", "t_10"]
    df = pd.DataFrame(sweep_trials())
    s = summarise_sweep("umt", df, "accuracy")
    assert [t.trial_id for t in s.trials] == [f"sweep_{i:05d}" for i in range(4)]
    assert s.best.params == {"params.lambda_distill": 10} and s.best.score == 0.9
    assert sum(s.importance.values()) == pytest.approx(1.0)
    few = summarise_sweep("umt", df[df["trial_id"] < "sweep_00002"], "accuracy")
    assert not few.importance and "2 finished trial(s)" in few.note


# --- diagnose: a store of finished runs -> rows -> report ------------------------------------


def test_diagnose_store_writes_every_diagnostic_and_the_report_reads_them(tiny, tmp_path):
    store, res = tmp_path / "runs", tmp_path / "results"
    plan_and_run(tiny, tiny_cfg(epochs=3), ["unimodal", "fusion_concat", "ume"], [0],
                 local_runner(store))
    diagnose_store(tiny, store, res, ProbeConfig(max_iter=50), NoiseConfig(levels=(0, 0.5)),
                   log=lambda _: None)
    df = read_results(res)
    want = {"accuracy", "probe_accuracy", "probe_gap", "mir", "dmc", "noise_accuracy@0",
            "noise_accuracy@0.5", "missing_accuracy", "selection_linear_accuracy",
            "selection_ume_accuracy", "selection_umt"}
    assert want <= set(df["metric"])

    def value(run_prefix: str, metric: str, split: str = "test", modality: str = "fused"):
        sel = df[df["run_id"].str.startswith(run_prefix) & (df["metric"] == metric)
                 & (df["split"] == split) & (df["modality"] == modality)]
        assert len(sel) == 1, (run_prefix, metric)
        return float(sel["value"].iloc[0])

    concat = "synthetic_unimodal-fusion_concat-"
    assert value(concat, "noise_accuracy@0", modality="all") == value(concat, "accuracy")
    uni_m2 = "synthetic_unimodal-unimodal-m2-"
    gap = value(uni_m2, "accuracy", modality="m2") - value(concat, "probe_accuracy",
                                                           modality="m2")
    assert value(concat, "probe_gap", modality="m2") == pytest.approx(gap)
    mir_uni = value("synthetic_unimodal-unimodal-", "mir")
    assert value(concat, "dmc") == pytest.approx(value(concat, "mir") / mir_uni)
    n = len(df)
    diagnose_store(tiny, store, res, ProbeConfig(max_iter=50), NoiseConfig(levels=(0, 0.5)),
                   log=lambda _: None, redo=True)
    assert len(read_results(res)) == n  # reruns replace their rows, never duplicate them
    said: list[str] = []
    diagnose_store(tiny, store, res, log=said.append)  # diagnosed runs are skipped
    assert len(said) == 4 and all("has diagnostics already" in s for s in said)
    md = (Path(build_report(res)) / "report.md").read_text()
    for section in ("## Comparison", "## Modality laziness", "## Modality imbalance",
                    "## Robustness", "## Selection trick"):
        assert section in md
    with pytest.raises(FileNotFoundError, match="no finished runs of dataset 'synthetic_both'"):
        diagnose_store(_renamed(tiny), store, res)


def _renamed(data):
    """The same data under another dataset name (a store holds none of its runs)."""
    from dataclasses import replace

    from trainers.data.contract import DataBundle, TensorDataset

    spec = replace(data.spec, name="synthetic_both")
    return DataBundle(spec, {s: TensorDataset(spec, s, data[s].tensors, data[s].labels)
                             for s in spec.split_names})


def test_cli_recommend_prints_both_numbers_and_writes_rows(tmp_path, capsys):
    code = main(["recommend", "--dataset", "synthetic_unimodal", "--store", str(tmp_path / "s"),
                 "--epochs", "1", "--results", str(tmp_path / "r"), "--threads", "1"])
    out = capsys.readouterr().out
    assert code == 0 and "recommendation: " in out and out.count("val accuracy") == 2
    metrics = set(read_results(tmp_path / "r")["metric"])
    assert {"selection_linear_accuracy", "selection_ume_accuracy", "selection_umt"} == metrics
    assert main(["recommend", "--dataset", "synthetic_unimodal", "--store", str(tmp_path / "s"),
                 "--epochs", "1"]) == 0
    assert capsys.readouterr().out.count("reused") == 2


def test_cli_diagnose_errors_on_an_empty_store(tmp_path, capsys):
    (tmp_path / "s").mkdir()
    code = main(["diagnose", "--dataset", "synthetic_unimodal", "--store", str(tmp_path / "s"),
                 "--results", str(tmp_path / "r")])
    assert code == 2 and "no finished runs" in capsys.readouterr().err


def test_selection_verdict_warns_when_the_difference_is_within_the_seed_spread():
    from orchestrator.report import selection_verdict

    umt = {"mean": 1 / 3, "count": 3}
    close = selection_verdict({"mean": 0.80, "std": 0.02}, {"mean": 0.79, "std": 0.01}, umt)
    assert close == ("UMT by the mean over seeds (UMT won in 1 of 3 seeds); the difference "
                     "(+1.00 pt) is within the spread over seeds: too close to call")
    clear = selection_verdict({"mean": 0.70, "std": 0.01}, {"mean": 0.79, "std": float("nan")},
                              {"mean": 0.0, "count": 3})
    assert clear == "UME by the mean over seeds (UMT won in 0 of 3 seeds)"


def test_a_trial_stopped_by_the_scheduler_is_shown_but_never_the_best(tmp_path):
    from orchestrator import report_plots

    df = pd.DataFrame(sweep_trials())
    df["status"] = df["trial_id"].map(lambda t: "stopped" if t == "sweep_00002" else "finished")
    s = summarise_sweep("umt", df, "accuracy")
    assert [t.status for t in s.trials] == ["finished", "finished", "stopped", "finished"]
    assert s.best.trial_id == "sweep_00003" and s.best.score == 0.8  # not the stopped 0.9
    png = report_plots.sweep_plot([100 * t.score for t in s.trials],
                                  [t.status == "stopped" for t in s.trials], "val", "t",
                                  tmp_path / "s.png")
    assert png.stat().st_size > 1000


def test_sweep_training_curves_come_from_the_run_store_beside_the_results(results, tmp_path):
    """results is <tmp>/results: its run store is <tmp>/runs. Two of the four trials have a
    stored run (the others: no curve), with their validation score per epoch."""
    from trainers.runs import write_record

    for i in (1, 2):
        history = [{"epoch": e, "score": 0.1 * e + i / 100} for e in (1, 2, 3)]
        write_record(tmp_path / "runs", f"{DS}-umt-t{i}-s0", {}, 3, 1.0, history)
    folder = Path(build_report(results, tmp_path / "report"))
    md = (folder / "report.md").read_text()
    assert "Training curves of the 2 finished trial(s)" in md
    assert (folder / "curves_sweep_umt.png").stat().st_size > 1000
    from orchestrator.report import load_report_data
    from orchestrator.report_sweeps import trial_curves
    from orchestrator.sweep_summary import summarise_sweep

    data = load_report_data(results)
    curves = trial_curves(data, summarise_sweep("umt", data.trials, "accuracy"))
    assert curves == {"sweep_00001": [(1, pytest.approx(11.0)), (2, pytest.approx(21.0)),
                                      (3, pytest.approx(31.0))],
                      "sweep_00002": [(1, pytest.approx(12.0)), (2, pytest.approx(22.0)),
                                      (3, pytest.approx(32.0))]}
