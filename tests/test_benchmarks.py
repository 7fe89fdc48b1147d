"""The pure helpers of the benchmarks, on hand-computed values (no Ray, no training)."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import summary_block, verdict
from benchmarks.concurrency import arm_order, ceiling, speedup
from benchmarks.overhead import epoch_verdict, fit_line, loop_epoch_s
from benchmarks.sweep_efficiency import (
    ArmResult,
    epochs_to_reach,
    missed_facts,
    running_max,
    trial_history,
)


def test_epochs_to_reach_counts_whole_trials_before_the_one_that_reaches():
    histories = [[0.5, 0.6], [0.55], [0.6, 0.7, 0.8], [0.9]]
    assert epochs_to_reach(histories, 0.7) == 2 + 1 + 2  # trial 3 reaches it at its 2nd epoch
    assert epochs_to_reach(histories, 0.5) == 1
    assert epochs_to_reach(histories, 0.85) == 2 + 1 + 3 + 1
    assert epochs_to_reach(histories, 0.95) is None
    assert epochs_to_reach([], 0.1) is None


def test_running_max_is_val_best_and_skips_unscored_epochs():
    assert running_max([0.2, 0.5, 0.4, 0.6]) == [0.2, 0.5, 0.5, 0.6]
    assert running_max([None, 0.3, None]) == [-math.inf, 0.3, 0.3]


def test_arm_result_epochs_and_best():
    arm = ArmResult([0.0, 10.0, 100.0], [[0.5, 0.7], [0.8], [0.6, 0.6, 0.6]])
    assert arm.epochs == 6
    assert arm.best() == (0.8, 10.0)


def test_fit_line_separates_fixed_cost_from_per_epoch_cost():
    fixed, per_epoch = fit_line([(2, 12.0), (20, 30.0), (2, 14.0), (20, 32.0)])
    assert fixed == pytest.approx(11.0)
    assert per_epoch == pytest.approx(1.0)
    with pytest.raises(ValueError, match="two epoch counts"):
        fit_line([(5, 1.0), (5, 2.0)])


def test_loop_epoch_s_leaves_out_the_first_epoch():
    assert loop_epoch_s([3.0, 3.5, 4.0, 4.5]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="3 epochs"):
        loop_epoch_s([1.0, 2.0])


def test_verdicts():
    assert verdict(1.05, 1.05) == "met"
    assert verdict(1.06, 1.05) == "MISSED"
    assert epoch_verdict(0.5, 0.5) == "met"
    assert epoch_verdict(-0.1, 0.5).startswith("not measurable")


def test_concurrency_helpers():
    assert speedup(30.0, 20.0) == pytest.approx(1.5)
    assert arm_order(0) == ["sequential", "concurrent"]
    assert arm_order(1) == ["concurrent", "sequential"]
    assert ceiling([9.0, 4.5]) == pytest.approx(1.5)  # the longer job bounds the overlap
    assert ceiling([6.0, 6.0]) == pytest.approx(2.0)


def test_summary_block_aligns_rows():
    text = summary_block("title", [("a", "1"), ("long name", "2")], ["note"])
    lines = text.splitlines()
    assert lines[1] == "title"
    assert lines[2] == "  a         : 1"
    assert lines[3] == "  long name : 2"
    assert lines[4] == "  note"
    assert lines[0] == lines[-1] == "-" * 78


def test_missed_facts_count_asha_stops():
    grid = ArmResult([0.0, 1.0], [[0.5, 0.6, 0.7, 0.8], [0.6, 0.7, 0.8, 0.9]])
    sweep = ArmResult([50.0, 2.0, 70.0], [[0.5], [0.6, 0.7, 0.8, 0.85], [0.5, 0.6]])
    facts = dict(missed_facts(grid, sweep, epochs=4, n_val=200))
    assert facts["  facts: lambdas tried"] == "2, 50, 70 (grid best at 1)"
    assert facts["  facts: ASHA"] == "stopped 2 of 3 trials before 4 epochs, 2 by epoch 2"
    assert facts["  facts: bar"] == "0.5 pt = 1.0 of 200 val samples"


def test_trial_history_fills_epochs_without_a_tune_result(tmp_path):
    path = tmp_path / "result.json"
    lines = [{"epoch": 1, "val_best": 0.5}, {"epoch": 3, "val_best": 0.7}]
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    assert trial_history(path) == [0.5, 0.5, 0.7]
    assert trial_history(path, trained=5) == [0.5, 0.5, 0.7, 0.7, 0.7]
    assert trial_history(tmp_path / "missing.json") == []


def test_gpu_check_says_no_cuda_and_exits_0_without_a_gpu() -> None:
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():
        return  # on a GPU machine the check itself is what runs
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("no CUDA device")


def test_sweep_pays_paired_interval_and_verdicts() -> None:
    from benchmarks.sweep_pays import Arm, paired, rows

    mean, low, high = paired([1.0, 2.0, 3.0])  # sd 1, t(0.975, 2) = 4.3027
    assert mean == 2.0 and low == pytest.approx(2 - 4.3027 / 3 ** 0.5, abs=1e-3)
    assert high == pytest.approx(2 + 4.3027 / 3 ** 0.5, abs=1e-3)
    arm = Arm("umt", [80.0, 81.0, 82.0], [81.5, 82.0, 83.5], {"lambda_distill": 10},
              sweep_epochs=90, sweep_wall_s=120.0, default_epochs=30.0, default_wall_s=60.0,
              trials=8, stopped=5, val_gain=1.2, min_gain=1.5, default_val=[85.0, 86.0, 87.0])
    text = dict(rows(arm))
    assert text["umt: tuned - default"].startswith("+1.33 pt") and "met" in text[
        "umt: tuned - default"]
    assert text["umt: sweep compute"].startswith("3.0x a default run in epochs (90 / 30")
    assert "2.0x in wall time" in text["umt: sweep compute"]
    assert "8 trials (5 stopped by ASHA); chose lambda_distill=10" in text["umt: sweep"]
    assert text["umt: selection"] == ("best trial +1.20 pt over the untuned one on validation "
                                      "(--min-gain 1.5: kept the untuned)")
    assert "86.00 ± 1.00" in text["umt: noise"]
