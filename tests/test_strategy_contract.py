"""The contract every registered strategy passes (the Optuna sampler-contract idea).

A new strategy is picked up automatically from the registry; if it needs params, add them to
``params_for`` below; a strategy is run on every task it declares.
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import tiny_cfg
from trainers.api import build
from trainers.checkpoint import load_checkpoint, save_checkpoint
from trainers.loop import batches, fit, to_device
from trainers.strategies import list_strategies, strategy_class

CASES = [(n, t) for n in list_strategies() for t in strategy_class(n).tasks]


def params_for(name: str, ckpts: dict[str, str], first: str) -> dict:
    return {
        "unimodal": {"modality": first},
        "umt": {"teachers": ckpts, "lambda_distill": 1.0},
        "reconboost": {"stages": 3, "epochs_per_stage": 1, "rectify_epochs": 1},
        "unicat": {"members": {first: ckpts[first]}},  # one reused member, the others trained
        "gblending": {"period": 1, "holdout": 0.2},
    }.get(name, {})


@pytest.fixture(params=CASES, ids=[f"{n}-{t}" for n, t in CASES])
def case(request):
    name, task = request.param
    data = request.getfixturevalue("tiny" if task == "classification" else "tiny_reid")
    ckpts = request.getfixturevalue("unimodal_ckpts" if task == "classification"
                                    else "reid_ckpts")
    return name, data, ckpts


@pytest.fixture
def strategy(case):
    name, data, ckpts = case
    cfg = tiny_cfg(name, params=params_for(name, ckpts, data.spec.modality_names[0]))
    return build(data.spec, cfg)


@pytest.fixture
def data(case):
    return case[1]


def first_batch(data):
    return next(batches(None, data["train"], 32, epoch_seed=0, train=True))


def test_every_strategy_is_tested():
    names = {n for n, _ in CASES}
    assert {"unimodal", "fusion_concat", "fusion_avg", "ume", "umt", "reconboost",
            "unicat", "gblending", "ogm_ge", "pmr", "modality_dropout", "mmpareto",
            "mla"} <= names
    assert {t for _, t in CASES} == {"classification", "reid"}


def steps(strategy, phase, batch, train):
    """Run the loop's per-batch calls (hooks included) once per modality: a strategy may
    alternate modalities step by step (MLA). Yields each step's output."""
    strategy.on_phase_start(phase)
    strategy.on_epoch_start(phase, 0, train)
    strategy.set_train_mode(phase)
    for _ in strategy.spec.modality_names:
        strategy.zero_grad(set_to_none=True)
        out = strategy.forward_loss(batch, phase)
        out["loss"].backward()
        strategy.after_backward(phase)
        yield out


def test_each_phase_has_a_finite_loss_and_grads_reach_exactly_its_params(strategy, data):
    phases = strategy.phases()
    assert phases, "a strategy that trains must declare at least one phase"
    batch = first_batch(data)
    train = strategy.fit_split(data["train"])
    for phase in phases:
        allowed = {id(p) for p in phase.params}
        reached = set()
        for out in steps(strategy, phase, batch, train):
            assert "loss" in out and "logits" in out
            assert math.isfinite(float(out["loss"].detach()))
            for name, p in strategy.named_parameters():
                if p.grad is not None and bool(p.grad.abs().sum() > 0):
                    reached.add(id(p))
                if id(p) not in allowed:
                    assert p.grad is None, f"{phase.name}: {name} must not get a gradient"
        for name, p in strategy.named_parameters():
            if id(p) in allowed:
                assert id(p) in reached, f"{phase.name}: {name} may be updated but got no gradient"


def test_save_load_round_trip_gives_identical_predictions(strategy, data, tmp_path):
    fit(strategy, data)
    path = save_checkpoint(strategy, tmp_path / "m.pt")
    again = load_checkpoint(path, data.spec)
    x = first_batch(data)["x"]
    strategy.eval()
    with torch.no_grad():
        a, b = strategy.predict(x), again.predict(x)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_same_metrics(strategy, data):
    from trainers.api import evaluate_splits, train

    runs = [evaluate_splits(*[train(data, strategy.cfg)[0], data]) for _ in range(2)]
    assert runs[0] == runs[1]


def test_forward_loss_and_predict_run_on_the_meta_device(strategy, data):
    """Every tensor a strategy makes follows the model's device: on PyTorch's ``meta`` device
    (tensors without data) a tensor created on the default device (CPU) fails the step, as it
    would on CUDA or MPS."""
    meta = torch.device("meta")
    train = strategy.fit_split(data["train"])
    strategy.to(meta)
    batch = to_device(first_batch(data), meta)
    for phase in strategy.phases():
        for out in steps(strategy, phase, batch, train):
            assert out["loss"].device == meta, phase.name
    strategy.eval()
    with torch.no_grad():
        pred = strategy.predict(batch["x"])
    assert pred and all(v.device == meta for v in pred.values())
