"""ReconBoost: the boosting weight, gradient flow per phase, and stage selection on val."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_cfg
from trainers.api import build
from trainers.config import ConfigError
from trainers.data.contract import DatasetSpec, ModalitySpec, iterate_batches
from trainers.loop import fit


def rb(tiny, **params):
    base = {"stages": 2, "epochs_per_stage": 1, "rectify_epochs": 1}
    return build(tiny.spec, tiny_cfg("reconboost", params={**base, **params}))


def phase(strategy, name):
    return next(p for p in strategy.phases() if p.name == name)


def batch(tiny):
    return next(iterate_batches(tiny["train"], 16))


def test_boosting_weight_by_hand_on_a_3_class_toy_batch():
    spec = DatasetSpec("toy", "classification",
                       (ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (2,))), 3)
    s = build(spec, tiny_cfg("reconboost", embed_dim=2, params={"lambda_boost": 0.5}))
    with torch.no_grad():  # identity encoder for b, head = identity on 2 dims + zero 3rd class
        s.encoders["b"] = torch.nn.Identity()
        s.head.classifier.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        s.head.classifier.bias.zero_()
        s.beta.fill_(2.0)
    s.in_ensemble[:] = True
    x = {"a": torch.zeros(2, 2), "b": torch.tensor([[1.0, 0.0], [0.0, 0.0]])}
    y = torch.tensor([0, 2])
    w = s.boosting_weight(x, y, "a")
    # q = softmax(beta * s_b): sample 0 logits (2, 0, 0) -> q_0 = e^2 / (e^2 + 2);
    # sample 1 logits (0, 0, 0) -> q_2 = 1/3.  w = 1 - 0.5 * q_y:
    # e^2 = 7.389 -> q_0 = 0.7870 -> w_0 = 0.6065; w_1 = 1 - 0.1667 = 0.8333.
    e2 = torch.exp(torch.tensor(2.0))
    expected = torch.tensor([1 - 0.5 * float(e2 / (e2 + 2)), 1 - 0.5 / 3])
    assert torch.allclose(w, expected, atol=1e-6)
    assert torch.allclose(w, torch.tensor([0.6065, 0.8333]), atol=1e-4)


def test_stage_zero_has_no_other_learner_so_weight_is_one(tiny):
    s = rb(tiny)
    boost = phase(s, "stage0:boost:m1")
    s.on_phase_start(boost)
    b = batch(tiny)
    assert torch.equal(s.boosting_weight(b["x"], b["y"], "m1"), torch.ones(len(b["y"])))


def test_boost_loss_equals_weighted_ce_plus_consolidation_by_hand(tiny):
    s = rb(tiny, alpha=0.7, lambda_boost=0.3)
    for p in s.phases()[:2]:
        s.on_phase_start(p)
    boost = phase(s, "stage1:boost:m2")
    s.on_phase_start(boost)
    b = batch(tiny)
    out = s.boost_loss(b, boost)
    with torch.no_grad():
        s1 = s.head(s.encoders["m1"](b["x"]["m1"]))[1]
        s2 = s.head(s.encoders["m2"](b["x"]["m2"]))[1]
        q_y = (s.beta * s1).softmax(-1).gather(1, b["y"][:, None]).squeeze(1)
        ce = F.cross_entropy(s2, b["y"], reduction="none")
        boost_term = ((1 - 0.3 * q_y) * ce).mean()
        mc = ((s2.softmax(-1) - s1.softmax(-1)) ** 2).mean()
    assert torch.allclose(out["loss"], boost_term + 0.7 * mc, atol=1e-6)


def grads_after(s, ph, tiny):
    s.on_phase_start(ph)
    s.set_train_mode(ph)
    s.zero_grad(set_to_none=True)
    out = s.forward_loss(batch(tiny), ph)
    out["loss"].backward()
    return out


def has_grad(module_or_param):
    params = [module_or_param] if isinstance(module_or_param, torch.nn.Parameter) else list(
        module_or_param.parameters())
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_other_modalities_logits_carry_no_gradient(tiny):
    s = rb(tiny)
    for p in s.phases()[:2]:
        s.on_phase_start(p)
    grads_after(s, phase(s, "stage1:boost:m2"), tiny)
    assert has_grad(s.encoders["m2"]) and has_grad(s.head)
    assert not has_grad(s.encoders["m1"])
    assert s.beta.grad is None


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_memory_consolidation_gradient_reaches_learner_only_when_alpha_positive(tiny, alpha):
    s = rb(tiny, alpha=alpha, lambda_boost=0.0)
    for p in s.phases()[:2]:
        s.on_phase_start(p)
    boost = phase(s, "stage1:boost:m2")
    s.on_phase_start(boost)
    s.zero_grad(set_to_none=True)
    b = batch(tiny)
    logits = s.learner_logits(b["x"], "m2")
    with torch.no_grad():
        target = s.learner_logits(b["x"], "m1").softmax(-1)
    # isolate the consolidation term: loss minus the (lambda=0) CE part
    out = s.boost_loss(b, boost)
    mc_only = out["loss"] - F.cross_entropy(logits, b["y"])
    mc_only.backward()
    grad = sum(p.grad.abs().sum() for p in s.encoders["m2"].parameters() if p.grad is not None)
    if alpha > 0:
        assert grad > 0
        assert torch.allclose(out["consolidation"],
                              F.mse_loss(logits.softmax(-1), target).detach())
    else:
        assert grad == 0
    assert not has_grad(s.encoders["m1"])


def test_rectification_updates_every_learner_and_beta(tiny):
    s = rb(tiny)
    for p in s.phases()[:3]:
        s.on_phase_start(p)
    grads_after(s, phase(s, "stage1:rectify"), tiny)
    assert has_grad(s.encoders["m1"]) and has_grad(s.encoders["m2"])
    assert has_grad(s.head) and has_grad(s.beta)


def test_best_stage_is_chosen_on_validation_never_on_test(tiny):
    s = rb(tiny, stages=4)
    test_calls = []
    original = tiny["test"].__class__.batch

    def spy(self, idx):
        if self.split == "test":
            test_calls.append(1)
        return original(self, idx)

    tiny["test"].__class__.batch = spy
    try:
        result = fit(s, tiny)
    finally:
        tiny["test"].__class__.batch = original
    assert not test_calls
    scored = [r for r in result.history if r.score is not None]
    assert [r.phase for r in scored] == [f"stage{t}:rectify" for t in range(4)]
    best = max(scored, key=lambda r: r.score)
    assert result.best.epoch == best.epoch and result.best.score == best.score
    from trainers.loop import evaluate

    assert evaluate(s, tiny["val"])["fused"]["accuracy"] == pytest.approx(best.score)


@pytest.mark.parametrize("params, match", [
    ({"epochs_per_stage": 0}, "epochs_per_stage must be an integer >= 1"),
    ({"lambda_boost": -1.0}, r"lambda_boost must be in \[0, 1\] but got -1.0"),
    ({"alpha": -0.1}, "alpha cannot be negative"),
    ({"fusion": "max"}, r"fusion must be one of \['na', 'lw'\] but got 'max'"),
    ({"variant": "code"}, r"variant must be one of \['paper', 'released'\]"),
    ({"lamda": 0.2}, "unknown reconboost param 'lamda'"),
    ({"order": ["m1", "m1"]}, "must list each modality once"),
])
def test_bad_params_fail_at_construction(tiny, params, match):
    with pytest.raises(ConfigError, match=match):
        rb(tiny, **params)
