"""The contract every registered strategy passes (the Optuna sampler-contract idea).

A new strategy is picked up automatically from the registry; if it needs params, add them to
``PARAMS`` below.
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import tiny_cfg
from trainers.api import build
from trainers.checkpoint import load_checkpoint, save_checkpoint
from trainers.data.contract import iterate_batches
from trainers.loop import fit
from trainers.strategies import list_strategies


def params_for(name: str, ckpts: dict[str, str]) -> dict:
    return {
        "unimodal": {"modality": "m1"},
        "umt": {"teachers": ckpts, "lambda_distill": 1.0},
        "reconboost": {"stages": 3, "epochs_per_stage": 1, "rectify_epochs": 1},
    }.get(name, {})


@pytest.fixture(params=list_strategies())
def strategy(request, tiny, unimodal_ckpts):
    cfg = tiny_cfg(request.param, params=params_for(request.param, unimodal_ckpts))
    return build(tiny.spec, cfg)


def first_batch(data):
    return next(iterate_batches(data["train"], 32))


def test_every_strategy_is_tested():
    assert {"unimodal", "fusion_concat", "fusion_avg", "ume", "umt", "reconboost"} <= set(
        list_strategies())


def test_each_phase_has_a_finite_loss_and_grads_reach_exactly_its_params(strategy, tiny):
    phases = strategy.phases()
    assert phases, "a strategy that trains must declare at least one phase"
    batch = first_batch(tiny)
    for phase in phases:
        strategy.on_phase_start(phase)
        strategy.set_train_mode(phase)
        strategy.zero_grad(set_to_none=True)
        out = strategy.forward_loss(batch, phase)
        assert "loss" in out and "logits" in out
        assert math.isfinite(float(out["loss"].detach()))
        out["loss"].backward()
        allowed = {id(p) for p in phase.params}
        for name, p in strategy.named_parameters():
            got = p.grad is not None and bool(p.grad.abs().sum() > 0)
            if id(p) in allowed:
                assert got, f"{phase.name}: {name} may be updated but got no gradient"
            else:
                assert p.grad is None, f"{phase.name}: {name} must not get a gradient"


def test_save_load_round_trip_gives_identical_predictions(strategy, tiny, tmp_path):
    fit(strategy, tiny)
    path = save_checkpoint(strategy, tmp_path / "m.pt")
    again = load_checkpoint(path, tiny.spec)
    x = first_batch(tiny)["x"]
    strategy.eval()
    with torch.no_grad():
        a, b = strategy.predict(x), again.predict(x)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_same_metrics(strategy, tiny):
    from trainers.api import evaluate_splits, train

    runs = [evaluate_splits(*[train(tiny, strategy.cfg)[0], tiny]) for _ in range(2)]
    assert runs[0] == runs[1]
