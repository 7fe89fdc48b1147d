"""Bad input to the orchestrator and the sweep scripts: one clear line each, before Ray starts.

None of these tests starts Ray: every check runs before the scripts connect.
"""

from __future__ import annotations

import math
import socket
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator import worker
from orchestrator.aggregate import display_frame, write_and_summarise
from orchestrator.jobs import StorageError, prepare_storage
from orchestrator.ray_utils import ClusterUnreachable, check_address, job_env
from orchestrator.results import read_results, result_rows
from orchestrator.space import Param, SearchSpace, SpaceError
from orchestrator.sweep import SweepConfig
from orchestrator.train_fn import (
    BEST_KEY,
    DataRef,
    JobResources,
    make_job,
)
from orchestrator.worker import report_metrics, running_best
from sweeps import reconboost_tune, umt_tune, unimodal_ensembles
from trainers.config import ConfigError, TrainConfig
from trainers.loop import EpochReport
from trainers.storage import Storage

UMT = {"lambda_distill": "uniform:0:100", "lr": "loguniform:3e-4:3e-3"}


def one_line_error(capsys: pytest.CaptureFixture[str], code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(("space", "needle"), [
    ({"lamda": "uniform:0:1"}, "unknown key 'lamda'; valid keys: lambda_distill"),
    ({"lr": "uniform:0.1:0.1"}, "range uniform:0.1:0.1 is empty"),
    ({"lr": "uniform:0.1:0.01"}, "is inverted (low > high); swap the ends: uniform:0.01:0.1"),
    ({"lr": "loguniform:0:1"}, "loguniform needs low > 0"),
    ({"lr": "normal:0:1"}, "unknown distribution 'normal'"),
    ({"lr": "choice:"}, "choice has no values"),
    ({"lr": "uniform:a:b"}, "two numbers"),
    ({"lambda_distill": "uniform:-1:3"}, "lambda_distill cannot be negative but got -1.0"),
])
def test_bad_search_space_names_key_value_and_fix(space: dict, needle: str) -> None:
    with pytest.raises(SpaceError) as err:
        SearchSpace.from_dict("umt", space)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unknown_strategy_and_empty_space() -> None:
    with pytest.raises(SpaceError, match="unknown strategy 'umtt'; valid strategies: .*umt"):
        SearchSpace.from_dict("umtt", UMT)
    with pytest.raises(SpaceError, match="empty"):
        SearchSpace.from_dict("umt", {})


def test_space_routes_keys_and_converts_to_tune() -> None:
    space = SearchSpace.from_dict("reconboost", {"lr": "loguniform:1e-3:0.1",
                                                 "stages": "int:1:3", "head": "choice:linear,mlp"})
    from trainers.config import TrainConfig

    cfg = space.apply(TrainConfig(strategy="reconboost"), {"lr": 0.05, "stages": 2, "head": "mlp"})
    assert cfg.params == {"lr": 0.05, "stages": 2} and cfg.head == "mlp" and cfg.lr == 1e-3
    assert space.corner() == {"lr": 0.1, "stages": 3, "head": "linear"}
    assert set(space.to_tune()) == {"lr", "stages", "head"}
    assert Param.parse("k", ("uniform", 0, 1)) == Param("k", "uniform", 0.0, 1.0)


def test_sweep_and_job_configs_validate() -> None:
    space = SearchSpace.from_dict("umt", UMT)
    with pytest.raises(ConfigError, match="num_samples must be an integer >= 1 but got 0"):
        SweepConfig(space, num_samples=0)
    with pytest.raises(ConfigError, match="reduction_factor"):
        SweepConfig(space, reduction_factor=1)
    with pytest.raises(ConfigError, match="--cpus-per-job must be a positive number but got 0"):
        JobResources(cpus_per_worker=0)
    with pytest.raises(ConfigError, match="--gpus-per-job must be auto or a number >= 0"):
        JobResources(gpus_per_worker=math.inf)
    with pytest.raises(ConfigError, match="--workers-per-job must be an integer >= 1"):
        JobResources(workers=0)
    with pytest.raises(ConfigError, match="unknown dataset 'nope'; valid datasets"):
        DataRef("nope")


def test_val_best_is_running_max_and_nan_before_first_score() -> None:
    best = None
    for score in (None, 0.5, 0.4, 0.7):
        best = running_best(best, score)
    assert best == 0.7
    assert math.isnan(report_metrics({"score": None, "epoch": 1}, None)[BEST_KEY])
    assert report_metrics({"score": None, "epoch": 1}, 0.5) == {"epoch": 1, BEST_KEY: 0.5}


def test_address_with_no_cluster_fails_fast() -> None:
    t0 = time.perf_counter()
    with pytest.raises(ClusterUnreachable, match="no Ray cluster at '127.0.0.1:"):
        check_address(f"127.0.0.1:{free_port()}", timeout_s=1.0)
    assert time.perf_counter() - t0 < 5
    with pytest.raises(ClusterUnreachable, match="not host:port"):
        check_address("10.0.0.1:port")


def test_storage_must_be_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StorageError, match="is not writable .* pass --storage"):
        prepare_storage(blocker / "results")
    assert prepare_storage(tmp_path / "new" / "store").is_dir()


@pytest.mark.parametrize(("script", "args", "needle"), [
    (umt_tune, ["--num-samples", "0"], "num_samples must be an integer >= 1 but got 0"),
    (umt_tune, ["--seeds-per-trial", "0"], "seeds_per_trial must be an integer >= 1 but got 0"),
    (umt_tune, ["--budget", "-1"], "sweep budget must be >= 0 default runs but got -1.0"),
    (reconboost_tune, ["--budget", "nan"], "sweep budget must be a finite number"),
    (umt_tune, ["--min-gain", "-0.5"], "sweep min_gain must be >= 0 validation points"),
    (umt_tune, ["--min-gain", "inf"], "sweep min_gain must be a finite number"),
    (umt_tune, ["--seeds", "3", "--seeds-per-trial", "2"],
     "--seeds-per-trial 2 needs as many --seeds but got [3]; e.g. --seeds 3 4"),
    (umt_tune, ["--space", "lambda_distill=choice:-1,-2"], "cannot be negative"),
    (umt_tune, ["--space", "lr=uniform:0.01:0.001"], "inverted"),
    (umt_tune, ["--space", "lr=uniform:0.01:0.01"], "empty"),
    (reconboost_tune, ["--space", "lamda=uniform:0:1"], "unknown key 'lamda'"),
    # a TrainConfig key ReconBoost ignores (its length is stages x (E1 + E2)): not a no-op
    (reconboost_tune, ["--space", "epochs=int:1:3"], "unknown key 'epochs'; valid keys: "),
    (reconboost_tune, ["--space", "lambda_boost"], "is not KEY=DIST"),
    (unimodal_ensembles, ["--dataset", "nope"], "unknown dataset 'nope'"),
    (unimodal_ensembles, ["--seeds", "-1"], "seed cannot be negative but got -1"),
    (unimodal_ensembles, ["--dataset", "rgbnt201"],
     "dataset 'rgbnt201' needs the argument 'root' (command line: --dataset-arg root=VALUE)"),
    (umt_tune, ["--dataset-arg", "n"], "--dataset-arg 'n' is not KEY=VALUE"),
    (umt_tune, ["--dataset-arg", "size=3"], "dataset 'synthetic_both' has no argument 'size'"),
    (unimodal_ensembles, ["--gpus-per-job", "-1"], "--gpus-per-job must be auto or a number >= 0"),
    (unimodal_ensembles, ["--gpus-per-job", "two"], "--gpus-per-job must be auto or a number"),
    (unimodal_ensembles, ["--workers-per-job", "0"], "--workers-per-job must be an integer >= 1"),
    (unimodal_ensembles, ["--cpus-per-job", "nan"], "--cpus-per-job must be a positive number"),
])
def test_script_bad_input_is_one_line(script, args: list[str], needle: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*args, "--storage", str(tmp_path)]
    if "--dataset" not in args:
        argv += ["--dataset", "synthetic_both"]
    assert needle in one_line_error(capsys, script.main(argv))


def test_script_unwritable_storage_and_dead_address(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_text("")
    code = unimodal_ensembles.main(["--storage", str(tmp_path / "f" / "x"),
                                    "--dataset", "synthetic_both"])
    assert "is not writable" in one_line_error(capsys, code)
    t0 = time.perf_counter()
    code = umt_tune.main(["--address", f"127.0.0.1:{free_port()}", "--storage", str(tmp_path),
                          "--dataset", "synthetic_both"])
    assert "no Ray cluster at" in one_line_error(capsys, code)
    assert time.perf_counter() - t0 < 10


def _v0_part(folder: Path) -> None:
    """A results file of the prototype's wide schema version 0 (no version recorded)."""
    folder.mkdir(parents=True)
    df = pd.DataFrame([{"run_id": "old-run", "strategy": "ume", "dataset": "synthetic_both",
                        "seed": 1, "split": "test", "modality": "fused", "config_json": "{}",
                        "wall_time_s": 1.0, "epochs": 0, "metric.accuracy": 0.5}])
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), folder / "old.parquet")


def test_results_of_an_older_schema_are_migrated(tmp_path: Path) -> None:
    _v0_part(tmp_path / "results")
    rows = {f"r{s}": result_rows(f"r{s}", "ume", "synthetic_both", s, {"seed": s},
                                 {"test": {"fused": {"accuracy": 0.6}}}, dataset_version="v1",
                                 wall_time_s=1.0, epochs=0) for s in (0, 2)}
    table = write_and_summarise(rows, tmp_path / "results")
    assert "ume" in table and "60.00 ± 0.00" in table
    df = read_results(tmp_path / "results")
    assert set(df["run_id"]) == {"old-run", "r0", "r2"}
    assert df.loc[df["run_id"] == "old-run", "schema_version"].tolist() == [2]


def test_unimodal_runs_are_labelled_by_modality() -> None:
    df = pd.DataFrame({"strategy": ["unimodal", "ume"],
                       "config_json": ['{"params":{"modality":"m1"}}', '{"params":{}}']})
    assert display_frame(df)["strategy"].tolist() == ["unimodal:m1", "ume"]


def _epoch(epoch: int, total: int = 10) -> EpochReport:
    return EpochReport(epoch, total, "train", -1, {"loss": 1.0}, None, None, False, 0.1)


def test_reports_are_spaced_out_but_the_last_epoch_and_the_drill_always_report(monkeypatch):
    """Short epochs are summed up in one report per interval (Train V2 would stall every epoch
    until its controller's next poll otherwise); the final epoch and a fault drill's epoch
    report."""
    monkeypatch.setenv("FUSION_REPORT_INTERVAL_S", "1")
    clock = iter([0.0, 0.3, 0.6, 1.2, 1.4, 2.5])
    monkeypatch.setattr(worker.time, "monotonic", lambda: next(clock))
    ref = DataRef("synthetic_both")
    job = make_job(ref, ref.load().spec, TrainConfig(), "/tmp/x", fail_once_at_epoch=3)
    reporter = worker.RayReporter(job, [])  # clock 0.0
    assert reporter.interval == 1.0
    assert [reporter._due(_epoch(e)) for e in (1, 2)] == [False, False]  # 0.3, 0.6 s
    assert reporter._due(_epoch(3))  # the drill's epoch (clock not read)
    assert reporter._due(_epoch(4))  # 1.2 s since the start
    reporter.last_report = 1.2
    assert not reporter._due(_epoch(5))  # 0.2 s later
    assert reporter._due(_epoch(10))  # the last epoch
    assert reporter._due(_epoch(6, total=6))


def test_report_interval_and_job_environment(monkeypatch):
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(key, raising=False)  # the S3 tests' server may have set them
    monkeypatch.delenv("FUSION_REPORT_INTERVAL_S", raising=False)
    assert worker.report_interval_s() == worker.DEFAULT_REPORT_INTERVAL_S == 5.0
    monkeypatch.setenv("FUSION_REPORT_INTERVAL_S", "0")
    assert worker.report_interval_s() == 0.0
    monkeypatch.setenv("FUSION_REPORT_INTERVAL_S", "soon")
    with pytest.raises(ConfigError, match="FUSION_REPORT_INTERVAL_S must be a number of seconds "
                                          ">= 0 but got 'soon'"):
        worker.report_interval_s()
    monkeypatch.delenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", raising=False)
    assert job_env() == {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
                         "FUSION_REPORT_INTERVAL_S": "soon"}
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "1")
    monkeypatch.delenv("FUSION_REPORT_INTERVAL_S")
    assert job_env() == {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "1"}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")  # reaches every worker
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "never-copied")
    assert job_env() == {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "1",
                         "AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}


def test_tpe_models_after_a_third_of_the_trials():
    from orchestrator.search import startup_trials

    assert [startup_trials(n) for n in (1, 6, 8, 12, 30, 64)] == [2, 2, 2, 4, 10, 10]


def test_a_later_seed_reports_epochs_on_and_the_mean_score() -> None:
    from orchestrator.trials import across_seeds

    first = across_seeds({"epoch": 3, "val_best": 0.8}, offset=0, done=())
    assert first["epoch"] == 3 and first["val_best"] == pytest.approx(0.8)
    second = across_seeds({"epoch": 2, "val_best": 0.6}, offset=5, done=(0.8,))
    assert second["epoch"] == 7 and second["val_best"] == pytest.approx(0.7)
    assert second["seeds_done"] == 1
    before_any_score = across_seeds({"epoch": 1, "val_best": math.nan}, offset=5, done=(0.8,))
    assert before_any_score["val_best"] == pytest.approx(0.8)  # NaN of the new seed left out
    assert math.isnan(across_seeds({"epoch": 1, "val_best": math.nan}, 0, ())["val_best"])


def test_tune_table_follows_quiet() -> None:
    import logging

    from orchestrator.sweep import tune_verbosity

    log = logging.getLogger("orchestrator")
    before = log.level
    try:
        log.setLevel(logging.WARNING)  # -q
        assert tune_verbosity() == {"verbose": 0}
        log.setLevel(logging.INFO)  # default
        assert tune_verbosity() == {}
        log.setLevel(logging.NOTSET)  # a Python caller who set up no logging
        assert tune_verbosity() == {}
    finally:
        log.setLevel(before)


@pytest.mark.parametrize("max_t, grace, factor", [(10, 2, 2), (8, 2, 2), (48, 12, 2),
                                                  (30, 1, 3), (9, 3, 3), (5, 5, 2), (40, 10, 4)])
def test_asha_rungs_are_where_ray_places_them(max_t: int, grace: int, factor: int) -> None:
    from ray.tune.schedulers import ASHAScheduler

    from orchestrator.search import asha_rungs

    asha = ASHAScheduler(time_attr="epoch", max_t=max_t, grace_period=grace,
                         reduction_factor=factor)
    assert asha_rungs(max_t, grace, factor) == tuple(sorted(m for m, _ in
                                                            asha._brackets[0]._rungs))


def test_a_trial_reports_the_schedulers_rungs_between_saved_states(monkeypatch) -> None:
    """A trial shorter than one report interval still tells Tune its score at every rung
    (without saving a state), counted in the trial's epochs (a second seed counts on)."""
    import functools

    from orchestrator.trials import across_seeds

    monkeypatch.setenv("FUSION_REPORT_INTERVAL_S", "60")
    ref = DataRef("synthetic_both")
    job = make_job(ref, ref.load().spec, TrainConfig(epochs=8), "/tmp/x")
    sent: list[tuple[int, bool]] = []

    class Sink(worker.TuneSink):
        def report(self, metrics, state):
            sent.append((int(self.adjust(metrics)["epoch"]), state is not None))

    second_seed = functools.partial(across_seeds, offset=8, done=(0.5,))
    for adjust in (None, second_seed):
        reporter = worker.RayReporter(job, [], Sink(job, adjust, report_epochs=(2, 4, 8, 12)))
        for e in range(1, 9):
            reporter.on_epoch_end(_epoch(e, total=8), dict)
    assert sent == [(2, False), (4, False), (12, False)]  # epoch 8 / 16: the final report
    everything = worker.TuneSink(job, None, report_epochs=None)
    assert everything.wants({"epoch": 3}) and not worker.TrainSink().wants({"epoch": 2})


@pytest.mark.parametrize("strategy, params, expected", [
    ("fusion_concat", {}, (10, 1, 1)),  # scored every epoch: ASHA may judge from epoch 1 on
    ("fusion_concat", {"epochs": 40}, (40, 1, 5)),  # an eighth of the longest trial
    ("reconboost", {}, (48, 8, 8)),  # 6 stages of 4 + 4; first score after stage 0's rectify
    ("reconboost", {"stages": 2, "epochs_per_stage": 1, "rectify_epochs": 1}, (4, 2, 2)),
])
def test_asha_judges_from_the_first_validation_score_or_an_eighth_of_the_longest_trial(
        strategy: str, params: dict, expected: tuple[int, int, int]) -> None:
    from orchestrator.search import asha_plan, schedule
    from orchestrator.sweep import SweepContext

    ref = DataRef("synthetic_both")
    params = dict(params)
    epochs = {"epochs": params.pop("epochs", 10)} if strategy == "fusion_concat" else {}
    base = TrainConfig(strategy=strategy, params=params, **epochs)
    space = SearchSpace.from_dict(strategy, {"lr": "choice:0.01"})
    ctx = SweepContext(ref, ref.load().spec, base, space, Storage.open("/tmp/x"),
                       JobResources(cpus_per_worker=1, gpus_per_worker=0))
    max_t, first_score = schedule(ctx)
    max_t_, grace, factor = asha_plan(ctx, SweepConfig(space))
    assert (max_t, first_score, grace) == expected and max_t_ == max_t and factor == 3


@pytest.mark.parametrize(("script", "args", "seeds", "per_trial"), [
    (reconboost_tune, [], (0, 1), 1),  # two final seeds, one per trial (the budget's choice)
    (reconboost_tune, ["--seeds", "3"], (3,), 1),
    (reconboost_tune, ["--seeds", "3", "4", "5", "--seeds-per-trial", "2"], (3, 4, 5), 2),
    (reconboost_tune, ["--smoke-test"], (0,), 1),
    (umt_tune, [], (0,), 1),
    (umt_tune, ["--seeds", "0", "1", "--seeds-per-trial", "2"], (0, 1), 2),
])
def test_seeds_per_trial_defaults_per_script(script, args: list[str], seeds: tuple[int, ...],
                                             per_trial: int, tmp_path: Path) -> None:
    from sweeps.common import parser, setup
    from trainers.experiment import parse_with_config

    argv = ["--dataset", "synthetic_both", "--storage", str(tmp_path), *args]
    s = setup(script.SCRIPT, parse_with_config(parser(script.SCRIPT), argv))
    assert s.seeds == seeds and s.sweep is not None and s.sweep.seeds_per_trial == per_trial


def test_a_config_files_budget_is_the_sweeps_default_and_the_flag_wins(tmp_path: Path) -> None:
    from sweeps.common import parser, setup
    from trainers.config import ConfigError
    from trainers.experiment import parse_with_config

    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("dataset: synthetic_both\nbudget: 2\n")
    bad.write_text("budget: -1\n")

    def sweep(*argv: str):  # noqa: ANN202
        args = parse_with_config(parser(umt_tune.SCRIPT), [*argv, "--storage", str(tmp_path)])
        return setup(umt_tune.SCRIPT, args).sweep

    assert sweep("--config", str(good)).budget == 2
    assert sweep("--config", str(good), "--budget", "0").budget == 0
    assert sweep("--dataset", "synthetic_both").budget == 3  # the scripts' default
    assert sweep("--dataset", "synthetic_both").min_gain == 1.5
    with pytest.raises(ConfigError, match="key 'budget': budget cannot be negative but got -1"):
        sweep("--config", str(bad))
