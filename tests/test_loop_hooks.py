"""The one loop's hooks: ``fit_split`` once, ``on_epoch_start`` before every epoch with the data
trained on, ``after_backward`` between ``backward()`` and ``step()``; and the default
comparison includes the comparison set."""

from __future__ import annotations

import torch

from tests.conftest import tiny_cfg
from trainers.compare import DEFAULT_STRATEGIES
from trainers.loop import fit
from trainers.strategies import list_strategies, strategy_class
from trainers.strategies.fusion import FusionConcat
from trainers.strategies.gblending import subset


class Recorder(FusionConcat):
    """fusion_concat that records the hook calls and zeroes every gradient after backward."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.calls: list[tuple] = []

    def fit_split(self, train):
        self.calls.append(("fit_split", len(train)))
        return subset(train, torch.arange(60))

    def on_epoch_start(self, phase, epoch, train):
        self.calls.append(("epoch", epoch, len(train)))

    def after_backward(self, phase):
        have = all(p.grad is not None for p in self.parameters())
        self.calls.append(("after_backward", have))
        for p in self.parameters():
            p.grad.zero_()


def test_loop_calls_the_hooks_in_order_and_steps_with_the_hooks_gradients(tiny):
    cfg = tiny_cfg("fusion_concat", optimizer="sgd", momentum=0.0, epochs=2, batch_size=32)
    s = Recorder(tiny.spec, cfg)
    before = {k: v.clone() for k, v in s.state_dict().items() if v.is_floating_point()}
    fit(s, tiny)
    steps = [("after_backward", True)] * 2  # 60 samples in batches of 32
    assert s.calls == [("fit_split", 90), ("epoch", 0, 60), *steps, ("epoch", 1, 60), *steps]
    for k, v in s.state_dict().items():  # zeroed gradients: SGD without momentum moved nothing
        if k in before and "running" not in k:
            assert torch.equal(v, before[k]), k


def test_default_comparison_runs_the_comparison_set():
    new = {"gblending", "ogm_ge", "pmr", "modality_dropout", "mmpareto", "mla"}
    assert new <= set(DEFAULT_STRATEGIES["classification"])
    for task, names in DEFAULT_STRATEGIES.items():
        for n in names:
            assert n in list_strategies() and task in strategy_class(n).tasks
