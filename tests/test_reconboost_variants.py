"""ReconBoost: the released-code variant on a toy batch by hand, warm start into the ensemble,
the schedule (round robin over three modalities, a fresh optimiser per phase, lr decay) and
learnable fusion weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_cfg
from trainers.api import build
from trainers.checkpoint import load_member
from trainers.data import create_dataset
from trainers.data.contract import DatasetSpec, ModalitySpec
from trainers.loop import fit
from trainers.strategies.base import OptimSpec

TOY = DatasetSpec("toy", "classification",
                  (ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (2,))), 3)
X = {"a": torch.tensor([[1.0, 0.0], [0.0, 0.0]]), "b": torch.tensor([[0.0, 2.0], [1.0, 1.0]])}
Y = torch.tensor([0, 2])


def toy(variant: str, **params: object):
    """Identity encoders and head rows (1,0), (0,1), (0,0): logits = (x0, x1, 0)."""
    s = build(TOY, tiny_cfg("reconboost", embed_dim=2,
                            params={"variant": variant, "lambda_boost": 0.5, **params}))
    with torch.no_grad():
        s.encoders["a"] = torch.nn.Sequential(torch.nn.Linear(2, 2))
        s.encoders["b"] = torch.nn.Sequential(torch.nn.Linear(2, 2))
        for m in ("a", "b"):
            s.encoders[m][0].weight.copy_(torch.eye(2))
            s.encoders[m][0].bias.zero_()
        s.head.classifier.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        s.head.classifier.bias.zero_()
    return s


def phase(s, name: str):
    return next(p for p in s.phases() if p.name == name)


def start(s, upto: str):
    """Run the phase starts of the schedule up to and including ``upto``."""
    for p in s.phases():
        s.on_phase_start(p)
        if p.name == upto:
            return p
    raise KeyError(upto)


# CE of sample 0 (logits (1, 0, 0), y 0) = log(e + 2) - 1 = 0.55144;
# CE of sample 1 (logits (0, 0, 0), y 2) = log 3 = 1.09861.  Mean 0.82503.
CE0, CE1 = math.log(math.e + 2) - 1, math.log(3)


@pytest.mark.parametrize(("variant", "scale"), [("paper", 1.0), ("released", 0.5 * 5 / 3)])
def test_stage_zero_loss_by_hand(variant: str, scale: float) -> None:
    s = toy(variant)
    out = s.boost_loss({"x": X, "y": Y}, start(s, "stage0:boost:a"))
    # paper: q_y = 0, weight 1; released: q_y = 1 (the empty ensemble's constant), weight
    # (1 - 0.5) times w1 / C = 5 / 3 (their loss is a mean over the 3 classes, times weight1 5).
    assert out["boost_weight"].tolist() == pytest.approx([scale, scale])
    loss = float(out["loss"].detach())
    assert loss == pytest.approx(scale * (CE0 + CE1) / 2, abs=1e-6)
    assert loss == pytest.approx({"paper": 0.82503, "released": 0.68753}[variant],
                                               abs=1e-5)


@pytest.mark.parametrize("variant", ["paper", "released"])
def test_stage_one_loss_and_which_terms_carry_gradient(variant: str) -> None:
    s = toy(variant, alpha=1.0)
    ph = start(s, "stage1:boost:b")
    s.set_train_mode(ph)
    out = s.boost_loss({"x": X, "y": Y}, ph)
    # s_b = (0, 2, 0) and (1, 1, 0); q = softmax(beta s_a) with beta 1: q_0 of sample 0 =
    # e / (e + 2) = 0.57612, q_2 of sample 1 = 1/3.  weight = 1 - 0.5 q_y.
    q = torch.tensor([math.e / (math.e + 2), 1 / 3])
    w = (1 - 0.5 * q) * (5 / 3 if variant == "released" else 1.0)
    s_b = torch.tensor([[0.0, 2.0, 0.0], [1.0, 1.0, 0.0]])
    ce = F.cross_entropy(s_b, Y, reduction="none")
    s_a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    mc = F.mse_loss(s_b.softmax(-1), s_a.softmax(-1))
    assert out["boost_weight"].tolist() == pytest.approx(w.tolist(), abs=1e-6)
    assert float(out["loss"].detach()) == pytest.approx(float((w * ce).mean() + mc), abs=1e-6)
    # the memory term: a regulariser in the paper's reading, a no-op (detached) in their code
    weight = s.encoders["b"][0].weight
    boost_only = (w * F.cross_entropy(s.learner_logits(X, "b"), Y, reduction="none")).mean()
    (g_loss,) = torch.autograd.grad(out["loss"], weight)
    (g_boost,) = torch.autograd.grad(boost_only, weight)
    assert torch.allclose(g_loss, g_boost, atol=1e-7) == (variant == "released")


@pytest.mark.parametrize("variant", ["paper", "released"])
def test_released_keeps_the_other_encoders_in_train_mode(variant: str) -> None:
    s = toy(variant, alpha=1.0)
    s.encoders["a"] = torch.nn.Sequential(torch.nn.BatchNorm1d(2))  # batch statistics visible
    ph = start(s, "stage1:boost:b")
    s.set_train_mode(ph)
    assert s.encoders["b"].training
    assert s.encoders["a"].training == (variant == "released")
    before = s.encoders["a"][0].running_mean.clone()
    s.boost_loss({"x": X, "y": Y}, ph)  # q and the memory target run encoder a
    moved = not torch.equal(before, s.encoders["a"][0].running_mean)
    assert moved == (variant == "released")


@pytest.mark.parametrize("variant", ["paper", "released"])
def test_released_drops_the_last_partial_batch(tiny, variant: str) -> None:
    s = build(tiny.spec, tiny_cfg("reconboost", params={"variant": variant, "stages": 1,
                                                        "epochs_per_stage": 1,
                                                        "rectify_epochs": 1}))
    sizes: list[int] = []
    original = s.forward_loss

    def spy(batch, ph):
        sizes.append(len(batch["y"]))
        return original(batch, ph)

    s.forward_loss = spy
    fit(s, tiny)
    n = len(tiny["train"])  # 90 = 32 + 32 + 26
    assert n % 32 != 0
    full = [32] * (n // 32)
    assert sizes == (full * 2 if variant == "released" else (full + [n % 32]) * 2)


def test_warm_start_puts_the_pretrained_learners_in_the_ensemble(tiny, unimodal_ckpts) -> None:
    s = build(tiny.spec, tiny_cfg("reconboost", params={"warm_start": unimodal_ckpts,
                                                        "stages": 2}))
    uni = {m: load_member(p, tiny.spec, "unimodal", m) for m, p in unimodal_ckpts.items()}
    x = tiny["val"].batch(torch.arange(20))["x"]
    # the weights were loaded: each learner is its unimodal run, classifier included
    for m, u in uni.items():
        enc = s.encoder(m).state_dict()
        assert all(torch.equal(v, enc[k]) for k, v in u.encoder(m).state_dict().items())
    s.eval()
    with torch.no_grad():
        fused = s.predict(x)["fused"]
        expected = sum(u.predict(x)["fused"] for u in uni.values())  # beta = 1
    assert torch.allclose(fused, expected, atol=1e-6)
    # stage 0 already boosts against the other pretrained learner (q_y from m2's own model)
    boost = start(s, "stage0:boost:m1")
    y = tiny["val"].batch(torch.arange(20))["y"]
    with torch.no_grad():
        q_y = uni["m2"].predict(x)["fused"].softmax(-1).gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(s.boosting_weight(x, y, "m1"), 1 - 0.25 * q_y, atol=1e-6)
    # m1 now uses the shared head; m2 keeps its own classifier until its own stage
    assert not bool(s.own_head[0]) and bool(s.own_head[1])
    # stage-0 rectification trains both learners; the own classifiers are never trained
    rect = {id(p) for p in phase(s, "stage0:rectify").params}
    assert all(id(p) in rect for m in ("m1", "m2") for p in s.encoders[m].parameters())
    own = {id(p) for p in s.own_heads.parameters()}
    assert own and not own & {id(p) for p in [*boost.params, *rect]}


def test_without_warm_start_the_ensemble_starts_empty(tiny) -> None:
    s = build(tiny.spec, tiny_cfg("reconboost", params={"stages": 2}))
    assert not s.in_ensemble.any()
    rect = {id(p) for p in phase(s, "stage0:rectify").params}
    assert not any(id(p) in rect for p in s.encoders["m2"].parameters())


@pytest.fixture(scope="module")
def three():
    return create_dataset("synthetic_unimodal", n=90, dim=4, num_classes=3, num_modalities=3)


def test_round_robin_over_three_modalities(three) -> None:
    s = build(three.spec, tiny_cfg("reconboost", params={"stages": 4, "rectify_epochs": 1,
                                                         "epochs_per_stage": 1}))
    names = [p.name for p in s.phases()]
    assert names == ["stage0:boost:m1", "stage0:rectify", "stage1:boost:m2", "stage1:rectify",
                     "stage2:boost:m3", "stage2:rectify", "stage3:boost:m1", "stage3:rectify"]
    expected_members = {0: ["m1"], 1: ["m1", "m2"], 2: ["m1", "m2", "m3"],
                        3: ["m1", "m2", "m3"]}
    for t, members in expected_members.items():
        rect = {id(p) for p in phase(s, f"stage{t}:rectify").params}
        for m in ("m1", "m2", "m3"):
            inside = all(id(p) in rect for p in s.encoders[m].parameters())
            assert inside == (m in members), (t, m)
    assert [s.previous_modality(t) for t in range(4)] == [None, "m1", "m2", "m3"]
    ph = start(s, "stage3:boost:m1")
    assert s.members(exclude="m1") == ["m2", "m3"]  # q at stage 3 comes from m2 and m3
    b = three["train"].batch(torch.arange(16))
    with torch.no_grad():
        others = s.learner_logits(b["x"], "m2") + s.learner_logits(b["x"], "m3")
        q_y = others.softmax(-1).gather(1, b["y"][:, None]).squeeze(1)
    assert torch.allclose(s.boost_loss(b, ph)["boost_weight"], 1 - 0.25 * q_y, atol=1e-6)


def test_each_phase_gets_a_fresh_optimiser_with_the_decayed_lr(tiny, monkeypatch) -> None:
    built: list[tuple[torch.optim.Optimizer, float, int]] = []
    original = OptimSpec.build

    def spy(self, params):
        opt = original(self, params)
        built.append((opt, opt.param_groups[0]["lr"], len(opt.state)))
        return opt

    monkeypatch.setattr(OptimSpec, "build", spy)
    s = build(tiny.spec, tiny_cfg("reconboost", params={"stages": 3, "epochs_per_stage": 1,
                                                        "rectify_epochs": 1, "lr": 0.1,
                                                        "lr_decay": 0.5}))
    fit(s, tiny)
    assert len(built) == 6 == len({id(o) for o, _, _ in built})  # one new optimiser per phase
    assert all(n_state == 0 for _, _, n_state in built)  # no momentum carried over
    assert [lr for _, lr, _ in built] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert all(isinstance(o, torch.optim.SGD) for o, _, _ in built)


def test_learnable_weights_are_used_and_learned(tiny) -> None:
    s = build(tiny.spec, tiny_cfg("reconboost", params={"fusion": "lw", "stages": 2,
                                                        "epochs_per_stage": 1,
                                                        "rectify_epochs": 2, "lr": 0.1}))
    assert s.beta.shape == (2,)
    x = tiny["val"].batch(torch.arange(10))["x"]
    s.in_ensemble[:] = True
    s.eval()
    with torch.no_grad():
        s.beta.copy_(torch.tensor([0.5, 2.0]))
        per = s.predict(x)
        assert torch.allclose(per["fused"], 0.5 * per["m1"] + 2.0 * per["m2"], atol=1e-6)
        s.beta.fill_(1.0)
    s.in_ensemble[:] = False
    fit(s, tiny)
    beta = s.beta.detach()
    assert not torch.allclose(beta, torch.ones(2)), beta  # rectification trains them
    assert abs(float(beta[0] - beta[1])) > 1e-4, beta  # one weight per modality, learned apart
