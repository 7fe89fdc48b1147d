"""The orchestrator on the session's local Ray (2 CPUs, dashboard on): the three scripts' smoke
runs in-process, reuse, a worker crash resumed from its checkpoint, a diverged trial that fails
alone, and a sweep interrupted with Ctrl-C then restored with ``--resume``.

The tests share one run store (module scope), so the unimodal runs trained by the ensembles test
are the teachers / warm starts of the sweeps, as in real use.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from orchestrator.results import COLUMNS, read_results
from orchestrator.space import SearchSpace
from orchestrator.sweep import SweepConfig, SweepContext, run_sweep
from orchestrator.train_fn import (
    BEST_KEY,
    RAY_DIR,
    DataRef,
    JobResources,
    finished_record,
    fit_job,
    make_job,
)
from sweeps import reconboost_tune, umt_tune, unimodal_ensembles
from trainers.config import TrainConfig
from trainers.loop import selection_score
from trainers.storage import Storage

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--smoke-test", "--dataset", "synthetic_both"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


def ray_processes(tmp: str, wait_s: float = 5.0) -> list[str]:
    """Command lines of processes of the Ray whose RAY_TMPDIR is ``tmp`` (after a short wait)."""
    deadline = time.monotonic() + wait_s
    while True:
        ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        found = [line for line in ps.splitlines() if tmp in line]
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def smoke_runs(store: Path) -> Path:
    """The run store of a ``--smoke-test`` script given ``--storage store``."""
    return store / "smoke" / "runs"


def output(capsys: pytest.CaptureFixture[str]) -> str:
    """What a script printed (tables: stdout) and logged (progress lines: stderr)."""
    captured = capsys.readouterr()
    return captured.out + captured.err


def mtimes(store: Path, pattern: str) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in store.glob(f"{pattern}/model.pt")}


def test_unimodal_jobs_ensembles_and_reuse(ray_session: str, store: Path,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from ray import tune

    snapshots: list[str | None] = []  # Tune's snapshot period while a job batch runs
    fit = tune.Tuner.fit
    monkeypatch.setattr(tune.Tuner, "fit", lambda self: snapshots.append(
        os.environ.get("TUNE_GLOBAL_CHECKPOINT_S")) or fit(self))
    assert unimodal_ensembles.main([*COMMON, "--address", "auto", "--storage", str(store)]) == 0
    assert snapshots == ["auto"] and os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "1"  # restored
    monkeypatch.setattr(tune.Tuner, "fit", fit)
    out = output(capsys)
    assert len(re.findall(r"\[jobs\] trained unimodal:m\d seed 0", out)) == 2
    assert re.search(r"ume\s+\d+\.\d\d", out) and "unimodal:m2" in out
    df = read_results(store / "smoke" / "results")
    assert list(df.columns) == list(COLUMNS)
    test = df[df["split"] == "test"]
    assert sorted(test["strategy"].unique()) == ["ume", "unimodal"]
    assert test["run_id"].nunique() == 3 and (test["value"].between(0, 1)).all()
    before = mtimes(smoke_runs(store), "synthetic_both-*")

    assert unimodal_ensembles.main([*COMMON, "--address", "auto", "--storage", str(store)]) == 0
    out = output(capsys)
    assert "[jobs] reusing 2 finished run(s)" in out and "[jobs] training" not in out
    assert mtimes(smoke_runs(store), "synthetic_both-*") == before  # nothing trained or rewritten


def test_worker_failure_resumes_from_checkpoint(ray_session: str, store: Path) -> None:
    ref = DataRef("synthetic_both", {"n": 120, "dim": 4})
    cfg = TrainConfig(strategy="fusion_concat", epochs=3, embed_dim=4, hidden_dim=8)
    job = make_job(ref, ref.load().spec, cfg, store, fail_once_at_epoch=2)
    result = fit_job(job, JobResources(cpus_per_worker=1, max_failures=1))
    assert job.storage.read_text(*job.fail_marker).startswith("crashed after epoch 2")
    assert result.return_value["resumed_from"] == 2  # not a restart from scratch
    record = finished_record(job, result)
    assert record.epochs == 3 and set(record.metrics) == {"val", "test"}
    history = record.history()
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_umt_sweep_with_a_diverging_trial(ray_session: str, store: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = umt_tune.main([*COMMON, "--address", "auto", "--storage", str(store),
                          "--num-samples", "2", "--space", "lr=choice:0.001,1e30",
                          "--space", "lambda_distill=choice:1,10"])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "diverged" in out and "finished" in out and re.search(r"umt\s+\d+\.\d\d", out)
    df = read_results(store / "smoke" / "results")
    umt = df[df["strategy"] == "umt"]
    failed = umt[umt["value"].map(math.isnan)]
    assert len(failed) >= 1 and (failed["trial_id"] != "").all() and set(failed["split"]) == {
        "val"}
    assert set(failed["status"]) == {"diverged"}  # the status column says why, not NaN
    best = umt[(umt["split"] == "test") & (umt["modality"] == "fused")
               & (umt["metric"] == "accuracy")]
    assert len(best) == 1 and best["trial_id"].iloc[0] != ""  # seed 0 reuses the winning trial
    assert json.loads(best["config_json"].iloc[0])["lr"] == 0.001


def test_reconboost_sweep_warm_started(ray_session: str, store: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = reconboost_tune.main([*COMMON, "--address", "auto", "--storage", str(store)])
    out = output(capsys)
    assert code == 0, out[-3000:]
    assert "[jobs] reusing 2 finished run(s)" in out  # the warm starts: ensembles test's runs
    assert re.search(r"reconboost\s+\d+\.\d\d", out)
    df = read_results(store / "smoke" / "results")
    rb = df[(df["strategy"] == "reconboost") & (df["split"] == "test")]
    config = json.loads(rb["config_json"].iloc[0])
    assert set(config["params"]["warm_start"]) == {"m1", "m2"}
    # the weights were loaded: the pretrained learners' own classifiers (frozen, kept in the
    # ensemble's state) are exactly those of the finished unimodal runs
    import torch

    model = smoke_runs(store) / rb["run_id"].iloc[0] / "model.pt"
    state = torch.load(model, weights_only=True)["state"]
    for m in ("m1", "m2"):
        (uni_path,) = smoke_runs(store).glob(f"synthetic_both-unimodal-{m}-*/model.pt")
        uni = torch.load(uni_path, weights_only=True)["state"]
        head = {k.removeprefix("model.head."): v for k, v in uni.items()
                if k.startswith("model.head.")}
        assert head and all(torch.equal(state[f"own_heads.{m}.{k}"], v) for k, v in head.items())


def _terminated_trials(tune_dir: Path, known: set[Path]) -> set[str]:
    """Trials that Tune's latest snapshot of a new experiment under ``tune_dir`` marks finished
    (Tune's experiment_state JSON: what ``Tuner.restore`` will read)."""
    done: set[str] = set()
    for experiment in set(tune_dir.glob("umt-*")) - known:
        for state in sorted(experiment.glob("experiment_state-*.json"))[-1:]:
            try:
                trials = json.loads(state.read_text())["trial_data"]
            except (ValueError, KeyError):  # being rewritten
                continue
            done |= {t["trial_id"] for t in (json.loads(d[0]) for d in trials)
                     if t["status"] == "TERMINATED"}
    return done


def _interrupt_after_first_trial(argv: list[str], env: dict[str, str], tune_dir: Path
                                 ) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    known = set(tune_dir.glob("umt-*"))
    proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (finished := _terminated_trials(tune_dir, known)):
        assert proc.poll() is None and time.monotonic() < deadline, "no trial finished"
        time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), finished


def test_interrupted_sweep_resumes(ray_session: str, store: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A real script run on its own local Ray, stopped with Ctrl-C after its first trial:
    it exits 130 and shuts its Ray down; ``--resume`` finishes the sweep without rerunning the
    finished trial. Two CPUs per job: one trial at a time, so the second is the unfinished one."""
    args = [*COMMON, "--storage", str(store), "--num-samples", "2", "--cpus-per-job", "2",
            "--space", "lambda_distill=uniform:1:10"]
    own_tmp = tempfile.mkdtemp(prefix="rayi")
    env = {**os.environ, "RAY_TMPDIR": own_tmp}
    tune_dir = store / "smoke" / RAY_DIR / "tune"  # --smoke-test: the smoke/ layout
    done, finished = _interrupt_after_first_trial(["sweeps/umt_tune.py", *args], env, tune_dir)
    assert done.returncode == 130, done.stdout[-2000:] + done.stderr[-2000:]
    assert "dashboard: http://127.0.0.1:" in done.stderr
    assert "--resume" in done.stderr.strip().splitlines()[-1]
    assert not ray_processes(own_tmp)  # the script shut its Ray down
    shutil.rmtree(own_tmp, ignore_errors=True)
    model_times = mtimes(smoke_runs(store), "synthetic_both-umt-*")

    assert umt_tune.main([*args, "--address", "auto", "--resume"]) == 0
    out = output(capsys)
    assert "[sweep] resuming" in out and "umt sweep, 2 trial(s)" in out
    started = set(re.findall(r"Trial trial_fn_(\w+) started", out))
    assert not started & finished  # finished trials were not run again
    after = mtimes(smoke_runs(store), "synthetic_both-umt-*")
    assert all(after[p] == t for p, t in model_times.items())

    # the same sweep never interrupted (its own store) ends with the same trials and winner
    fresh = [a if a != str(store) else str(store.parent / "uninterrupted") for a in args]
    assert umt_tune.main([*fresh, "--address", "auto"]) == 0
    resumed = _trial_lines(out)
    assert len(resumed) == 3 and _trial_lines(capsys.readouterr().out) == resumed


def _trial_lines(out: str) -> list[str]:
    """The sweep's trial lines without trial ids (status, val score, values), and the final
    table's line of the best configuration."""
    lines = re.findall(r"^  \w+\s+(finished|stopped|diverged|error)\s+(val .*)$", out, re.M)
    return sorted(" ".join(x) for x in lines) + re.findall(r"^umt\s+(?!sweep).*$", out, re.M)


def test_any_strategy_sweeps_through_tune_py(ray_session: str, store: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from sweeps import tune

    code = tune.main(["--strategy", "modality_dropout", *COMMON, "--address", "auto",
                      "--storage", str(store), "--num-samples", "2"])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "modality_dropout sweep, 2 trial(s)" in out and re.search(r"modality_dropout\s+\d", out)


def test_a_trial_of_two_seeds_scores_their_mean(ray_session: str, store: Path) -> None:
    """--seeds-per-trial 2: every trial trains its configuration on seeds 0 and 1, one after
    the other in its own process; epochs count on across seeds and the trial's score is the
    mean of the two runs' validation scores (random search, no scheduler)."""
    ref = DataRef("synthetic_both", {"n": 120, "dim": 4})
    base = TrainConfig(strategy="fusion_concat", epochs=2, embed_dim=4, hidden_dim=8)
    space = SearchSpace.from_dict("fusion_concat", {"lr": "choice:0.01,0.003"})
    ctx = SweepContext(ref, ref.load().spec, base, space, Storage.open(store / "seeds"),
                       JobResources(cpus_per_worker=1, gpus_per_worker=0),
                       more=(base.replace(seed=1),))
    outcomes = run_sweep(ctx, SweepConfig(space, num_samples=2, searcher="random",
                                          scheduler="none", seeds_per_trial=2))
    assert [o.status for o in outcomes] == ["finished", "finished"]
    for o in outcomes:
        assert [r.name.rsplit("-s", 1)[-1] for r in o.records] == ["0", "1"]
        scores = [selection_score(r.metrics["val"], "fused") for r in o.records]
        assert o.val_score == pytest.approx(sum(scores) / 2)
        assert o.last[BEST_KEY] == pytest.approx(o.val_score) and o.last["epoch"] == 4


def test_any_tune_searcher_and_scheduler_give_back_the_result_grid(ray_session: str,
                                                                    store: Path) -> None:
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    from orchestrator.sweep import sweep_grid

    ref = DataRef("synthetic_both", {"n": 120, "dim": 4})
    base = TrainConfig(strategy="fusion_concat", epochs=2, embed_dim=4, hidden_dim=8)
    space = SearchSpace.from_dict("fusion_concat", {"lr": "choice:0.02,0.005"})
    ctx = SweepContext(ref, ref.load().spec, base, space, Storage.open(store / "grid"),
                       JobResources(cpus_per_worker=1, gpus_per_worker=0))
    grid = sweep_grid(ctx, SweepConfig(space, num_samples=3), BasicVariantGenerator(
        random_state=1), FIFOScheduler())
    assert isinstance(grid, tune.ResultGrid) and len(grid) == 3 and not grid.errors
    assert all(r.metrics["epoch"] == 2 and 0 <= r.metrics[BEST_KEY] <= 1 for r in grid)
    best = grid.get_best_result()
    assert best.metrics[BEST_KEY] == max(r.metrics[BEST_KEY] for r in grid)


def test_asha_judges_short_trials_at_its_rungs(ray_session: str, store: Path) -> None:
    """Trials far shorter than one report interval (5 s) still report at ASHA's rungs (epochs
    2 and 6 of 8: grace 2, reduction factor 3), so ASHA can stop them there instead of only
    ever seeing their end."""
    from orchestrator.sweep import sweep_grid

    ref = DataRef("synthetic_both", {"n": 120, "dim": 4})
    base = TrainConfig(strategy="fusion_concat", epochs=8, embed_dim=4, hidden_dim=8)
    space = SearchSpace.from_dict("fusion_concat", {"lr": "choice:0.03,0.0001,0.001"})
    ctx = SweepContext(ref, ref.load().spec, base, space, Storage.open(store / "rungs"),
                       JobResources(cpus_per_worker=1, gpus_per_worker=0))
    grid = sweep_grid(ctx, SweepConfig(space, num_samples=3, searcher="random", grace_period=2))
    assert len(grid) == 3 and not grid.errors
    assert grid[0].config == {"lr": base.lr}  # the untuned configuration goes first
    for result in grid:
        epochs = result.metrics_dataframe["epoch"].tolist()
        assert epochs[-1] in (2, 6, 8) and {2, 6, 8} & set(range(1, epochs[-1] + 1)) <= set(
            epochs), epochs


def test_a_budgeted_sweep_trains_no_more_than_its_budget(ray_session: str, store: Path) -> None:
    """Budget 2.5 default runs of 8 epochs = 20 epochs, a 12-trial cap: the budget ends the
    sweep, within its 20 epochs, and the untuned configuration (first) runs to its end. (How
    many trials fit depends on what ASHA promotes and when slots free up: the unit tests in
    test_sweep_budget.py pin the accounting.)"""
    from orchestrator.sweep import sweep_grid

    ref = DataRef("synthetic_both", {"n": 120, "dim": 4})
    base = TrainConfig(strategy="fusion_concat", epochs=8, embed_dim=4, hidden_dim=8)
    space = SearchSpace.from_dict("fusion_concat",
                                  {"lr": "choice:0.03,0.00001,0.0001,0.00003,0.001"})
    ctx = SweepContext(ref, ref.load().spec, base, space, Storage.open(store / "budget"),
                       JobResources(cpus_per_worker=1, gpus_per_worker=0))
    grid = sweep_grid(ctx, SweepConfig(space, num_samples=12, searcher="random",
                                       grace_period=2, budget=2.5))
    epochs = [int(r.metrics["epoch"]) for r in grid]
    assert not grid.errors and sum(epochs) <= 20 and 2 <= len(grid) < 12, epochs
    untuned = [r for r in grid if r.config == {"lr": base.lr}]
    assert untuned and untuned[0].metrics["epoch"] == 8
