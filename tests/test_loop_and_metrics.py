"""Metrics equal hand-computed values; the loop is deterministic, resumable and fails on NaN."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_cfg
from trainers.api import build, evaluate_splits, train
from trainers.loop import TrainingDiverged, fit
from trainers.metrics import accuracy, macro_f1
from trainers.runs import run_name, train_or_reuse


def test_accuracy_and_macro_f1_by_hand():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])
    assert accuracy(pred, y) == pytest.approx(4 / 6)
    # class 0: tp=1 fp=1 fn=1 -> f1 = 2/4; class 1: tp=2 fp=1 fn=0 -> 4/5; class 2: tp=1 fp=0
    # fn=1 -> 2/3. macro = (0.5 + 0.8 + 0.6667) / 3 = 0.65556
    assert macro_f1(pred, y, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_macro_f1_leaves_out_absent_classes():
    y = torch.tensor([0, 1])
    assert macro_f1(torch.tensor([0, 1]), y, num_classes=5) == 1.0


class Collect:
    def __init__(self, stop_after=None):
        self.states, self.stop_after = [], stop_after

    def on_epoch_end(self, report, state):
        self.states.append(state())
        if self.stop_after and report.epoch == self.stop_after:
            raise KeyboardInterrupt  # a crash after the checkpoint was taken


@pytest.mark.parametrize("strategy, params", [
    ("fusion_concat", {}),
    ("reconboost", {"stages": 3, "epochs_per_stage": 2, "rectify_epochs": 1}),
])
def test_resume_from_a_mid_run_state_gives_the_same_model(tiny, strategy, params):
    length = {} if strategy == "reconboost" else {"epochs": 4}  # reconboost: its stages
    cfg = tiny_cfg(strategy, params=params, **length)
    full_model, full = train(tiny, cfg)
    crash = Collect(stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        train(tiny, cfg, callbacks=[crash])
    resumed_model, resumed = train(tiny, cfg, resume=crash.states[-1])
    assert [r.train for r in resumed.history] == [r.train for r in full.history]
    assert resumed.best.epoch == full.best.epoch
    assert evaluate_splits(resumed_model, tiny) == evaluate_splits(full_model, tiny)


def test_state_is_loadable_with_weights_only(tiny, tmp_path):
    c = Collect()
    train(tiny, tiny_cfg(epochs=1), callbacks=[c])
    torch.save(c.states[-1], tmp_path / "s.pt")
    back = torch.load(tmp_path / "s.pt", weights_only=True)
    assert back["epoch"] == 1


def test_nan_loss_is_a_training_failure(tiny):
    s = build(tiny.spec, tiny_cfg(lr=1e30, optimizer="sgd", momentum=0.0, epochs=3))
    with pytest.raises(TrainingDiverged, match="loss became"):
        fit(s, tiny)


def test_best_epoch_is_restored(tiny):
    s, result = train(tiny, tiny_cfg(epochs=5))
    scores = [r.score for r in result.history]
    assert result.best.score == max(scores)
    assert evaluate_splits(s, tiny, ("val",))["val"]["fused"]["accuracy"] == max(scores)


def test_run_store_reuses_a_finished_run(tiny, tmp_path):
    cfg = tiny_cfg(epochs=1)
    first = train_or_reuse(tiny, cfg, tmp_path)
    second = train_or_reuse(tiny, cfg, tmp_path)
    assert not first.reused and second.reused and second.metrics == first.metrics
    assert run_name(tiny.spec, cfg) == first.name
    assert run_name(tiny.spec, cfg.replace(device="cpu")) == first.name  # not identity
    assert run_name(tiny.spec, cfg.replace(seed=1)) != first.name


def test_progress_line_names_the_run_and_its_val_score(tmp_path):
    from trainers.compare import progress_line
    from trainers.runs import RunRecord

    rec = RunRecord("r", tmp_path, {"val": {"fused": {"accuracy": 0.81234}}}, 10, 8.12, False)
    cfg = tiny_cfg("unimodal", params={"modality": "m1"}, seed=2)
    assert progress_line(rec, cfg) == ("[run] unimodal:m1 seed 2: trained in 8.1 s (10 epochs),"
                                       " val accuracy 81.23%")
    reused = RunRecord("r", tmp_path, {"val": {"fused": {"map": 0.5}}}, 3, 1.0, True)
    line = progress_line(reused, tiny_cfg("unicat"))
    assert line == "[run] unicat seed 0: reused, val map 50.00%"
