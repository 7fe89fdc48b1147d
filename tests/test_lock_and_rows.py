"""Two writers, one store: a sweep refuses to run while another live process holds it, stale
locks are taken over, and a failed trial never replaces a finished run's rows."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.aggregate import sweep_rows
from orchestrator.lock import ExperimentLocked, experiment_lock
from orchestrator.sweep import TrialOutcome
from orchestrator.train_fn import DataRef, make_job
from tests.conftest import tiny_cfg
from trainers.runs import train_or_reuse
from trainers.storage import Storage


def test_a_live_holder_blocks_a_second_sweep_and_a_dead_one_is_taken_over(tmp_path: Path
                                                                           ) -> None:
    store = Storage.open(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"host": socket.gethostname(), "pid": other.pid, "since": 0}
        store.write_text(json.dumps(lock), "exp.lock")
        with pytest.raises(ExperimentLocked, match=f"pid {other.pid}") as err:
            with experiment_lock(store, "exp"):
                pass
        assert "\n" not in str(err.value) and "delete" in str(err.value)
        assert json.loads(store.read_text("exp.lock"))["pid"] == other.pid  # left untouched
    finally:
        other.kill()
        other.wait()
    with experiment_lock(store, "exp"):  # the holder is gone: stale, taken over
        assert json.loads(store.read_text("exp.lock"))["pid"] != other.pid
    assert not store.is_file("exp.lock")  # released


def test_a_failed_trial_never_replaces_a_finished_runs_rows(tiny, tmp_path: Path) -> None:  # noqa: ANN001
    cfg = tiny_cfg("fusion_concat", epochs=1)
    finished = train_or_reuse(tiny, cfg, tmp_path)
    ref = DataRef("synthetic_unimodal", {"n": 150, "dim": 8, "num_classes": 3, "noise": 0.5})
    job = make_job(ref, tiny.spec, cfg, tmp_path)
    assert job.name == finished.name
    failed = TrialOutcome("t1", {}, job, "error", None, {}, "worker died")
    rows = sweep_rows([failed], tiny.spec)[job.name]
    values = [r["value"] for r in rows if r["split"] == "val" and r["metric"] == "accuracy"
              and r["modality"] == "fused"]
    assert values == [finished.metrics["val"]["fused"]["accuracy"]]  # not NaN
