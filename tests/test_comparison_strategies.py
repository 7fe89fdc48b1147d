"""Core formulas of the comparison set (OGM-GE, PMR, G-Blending, modality dropout, MMPareto,
MLA), each checked against a hand computation on a tiny batch, plus their bad-input errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_cfg
from trainers.api import build
from trainers.config import ConfigError
from trainers.loop import batches
from trainers.strategies.gblending import blend_weights
from trainers.strategies.mla import entropy_weights, project_update
from trainers.strategies.mmpareto import pareto_combine, pareto_weight
from trainers.strategies.modality_dropout import keep_mask
from trainers.strategies.ogm_ge import modulation
from trainers.strategies.pmr import prototype_logits, rebalance_weights
from trainers.strategies.shares import modality_shares


def make(data, name, **params):
    return build(data.spec, tiny_cfg(name, params=params))


def batch_of(data, n=32):
    return next(batches(None, data["train"], n, epoch_seed=0, train=True))


def grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def phase_of(strategy):
    return strategy.phases()[0]


# --- OGM-GE ------------------------------------------------------------------------------------


def test_ogm_coefficient_by_hand():
    k = modulation(torch.tensor([3.0, 1.5]), alpha=0.8)  # rho = (2, 1)
    assert k.tolist() == pytest.approx([1 - math.tanh(1.6), 1.0])
    assert modulation(torch.tensor([1.0, 4.0]), alpha=0.8).tolist() == \
        pytest.approx([1.0, 1 - math.tanh(3.2)], abs=1e-7)


def test_modality_shares_split_the_fused_linear_head(tiny):
    s = make(tiny, "ogm_ge")
    out = s.model(batch_of(tiny)["x"])
    shares = modality_shares(s.model, out["embeddings"])
    w, b = s.model.head.classifier.weight, s.model.head.classifier.bias
    z1 = out["embeddings"]["m1"]
    torch.testing.assert_close(shares["m1"], z1 @ w[:, :8].t() + b / 2)
    torch.testing.assert_close(shares["m1"] + shares["m2"], out["logits"])


def ogm_step(strategy, batch, epoch=0):
    strategy.on_epoch_start(phase_of(strategy), epoch, None)
    strategy.zero_grad(set_to_none=True)
    out = strategy.forward_loss(batch, phase_of(strategy))
    out["loss"].backward()
    before = grads(strategy)
    strategy.after_backward(phase_of(strategy))
    return out, before, grads(strategy)


def test_ogm_scales_only_the_dominant_encoders_gradient(tiny):
    s = make(tiny, "ogm_ge", ge=False, alpha=0.8)
    batch = batch_of(tiny)
    with torch.no_grad():
        z = s.model.embed(batch["x"])
        w, b = s.model.head.classifier.weight, s.model.head.classifier.bias
        scores = [(z[m] @ w[:, i * 8:(i + 1) * 8].t() + b / 2).softmax(-1)
                  .gather(1, batch["y"][:, None]).sum() for i, m in enumerate(("m1", "m2"))]
    rho = [float(sc / min(scores)) for sc in scores]
    expect = [1 - math.tanh(0.8 * r) if r > 1 else 1.0 for r in rho]
    assert sorted(expect)[1] == 1.0 and sorted(expect)[0] < 1  # one dominant modality
    out, before, after = ogm_step(s, batch)
    for i, m in enumerate(("m1", "m2")):
        assert float(out[f"k_{m}"]) == pytest.approx(expect[i], rel=1e-5)
        for name, g in before.items():
            if name.startswith(f"model.encoders.{m}."):
                torch.testing.assert_close(after[name], expect[i] * g)
    for name, g in before.items():  # the head is never modulated
        if name.startswith("model.head."):
            assert torch.equal(after[name], g)


def test_ogm_leaves_gradients_alone_outside_its_window(tiny):
    s = make(tiny, "ogm_ge", start=2, end=3)
    _, before, after = ogm_step(s, batch_of(tiny), epoch=4)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_ge_noise_has_the_gradients_own_std(tiny):
    s = make(tiny, "ogm_ge", ge=True)
    torch.manual_seed(0)
    out, before, after = ogm_step(s, batch_of(tiny))
    for m in ("m1", "m2"):
        k = float(out[f"k_{m}"])
        for name, g in before.items():
            if not name.startswith(f"model.encoders.{m}."):
                continue
            if g.dim() == 1:  # biases: scaled, no noise
                torch.testing.assert_close(after[name], k * g)
            elif g.numel() >= 64:
                noise = after[name] - k * g
                assert float(noise.std()) == pytest.approx(float(g.std()), rel=0.35)


# --- PMR ---------------------------------------------------------------------------------------


def test_prototype_logits_are_minus_euclidean_distances():
    z = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    protos = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    torch.testing.assert_close(prototype_logits(z, protos),
                               torch.tensor([[0.0, -3.0], [-5.0, -4.0]]))


def test_pmr_weights_by_hand():
    ce_w, ent_w = rebalance_weights(torch.tensor([2.0, 1.0]), alpha=1.5, mu=0.1, entropy_on=True)
    assert ce_w.tolist() == pytest.approx([0.0, 1.5 * 2.0])  # the slower one, times rho = 2
    assert ent_w.tolist() == pytest.approx([0.1, 0.0])  # entropy term on the dominant one
    ce_w, ent_w = rebalance_weights(torch.tensor([1.0, 1.0]), 1.5, 0.1, True)
    assert ce_w.tolist() == [0.0, 0.0] and ent_w.tolist() == [0.0, 0.0]
    assert rebalance_weights(torch.tensor([2.0, 1.0]), 1.5, 0.1, False)[1].tolist() == [0, 0]


def class_mean_embeddings(s, ds, m):
    with torch.no_grad():
        s.eval()
        z = s.model.encoders[m](ds.tensors[m])
    return torch.stack([z[ds.labels == c].mean(0) for c in range(ds.spec.num_classes)])


def test_pmr_prototypes_are_class_means_blended_with_momentum(tiny):
    s = make(tiny, "pmr", momentum=0.2)
    train, phase = tiny["train"], phase_of(s)
    s.on_epoch_start(phase, 0, train)
    means = class_mean_embeddings(s, train, "m2")
    torch.testing.assert_close(s.prototypes[1], means)
    with torch.no_grad():
        s.prototypes.fill_(1.0)
    s.on_epoch_start(phase, 1, train)
    torch.testing.assert_close(s.prototypes[1], 0.8 * means + 0.2)


def test_pmr_loss_by_hand(tiny):
    s = make(tiny, "pmr", alpha=0.7, mu=0.3)
    s.on_epoch_start(phase_of(s), 0, tiny["train"])
    s.train()
    batch = batch_of(tiny)
    out = s.forward_loss(batch, phase_of(s))
    with torch.no_grad():
        y = batch["y"]
        z = {m: s.model.encoders[m](batch["x"][m]) for m in ("m1", "m2")}
        fused = F.cross_entropy(s.model.head(torch.cat([z["m1"], z["m2"]], 1))[1], y)
        logits = [-torch.cdist(z[m], s.prototypes[i]) for i, m in enumerate(("m1", "m2"))]
        scores = [float(lg.softmax(-1).gather(1, y[:, None]).sum()) for lg in logits]
        strong = 0 if scores[0] > scores[1] else 1
        weak = 1 - strong
        p = logits[strong].softmax(-1)
        ent = float(-(p * p.log()).sum(-1).mean())
        expect = (float(fused) + 0.7 * scores[strong] / scores[weak]
                  * float(F.cross_entropy(logits[weak], y)) - 0.3 * ent)
    assert float(out["loss"].detach()) == pytest.approx(expect, rel=1e-5)


# --- G-Blending --------------------------------------------------------------------------------


def test_blend_weights_by_hand():
    w = blend_weights(torch.tensor([0.2, -0.1, 0.0]), torch.tensor([0.1, 0.2, 0.5]))
    assert w.tolist() == pytest.approx([20 / 22.5, 2.5 / 22.5, 0.0])  # |G| / dO^2, normalised
    assert blend_weights(torch.zeros(3), torch.ones(3)).tolist() == pytest.approx([1 / 3] * 3)


def rows(ds):
    return {tuple(r) for r in ds.tensors["m1"].tolist()}


def test_gblending_holds_out_part_of_train_only(tiny):
    s = make(tiny, "gblending", holdout=0.2)
    fit = s.fit_split(tiny["train"])
    assert (len(s.holdout), len(fit)) == (18, 72)
    assert rows(s.holdout) | rows(fit) == rows(tiny["train"])
    assert not rows(s.holdout) & rows(fit)
    assert rows(make(tiny, "gblending", holdout=0.2).fit_split(tiny["train"])) == rows(fit)


def test_gblending_reestimates_weights_every_period(tiny):
    s = make(tiny, "gblending", period=2, holdout=0.2)
    fit, phase = s.fit_split(tiny["train"]), phase_of(s)
    s.on_epoch_start(phase, 0, fit)
    first = torch.stack([s.head_losses(fit), s.head_losses(s.holdout)])
    torch.testing.assert_close(s.weights, torch.full((3,), 1 / 3))
    with torch.no_grad():
        for p in s.parameters():  # as if it had trained: every head's losses move
            p.mul_(1.2).add_(0.05)
    s.on_epoch_start(phase, 1, fit)  # not a re-estimation epoch
    torch.testing.assert_close(s.weights, torch.full((3,), 1 / 3))
    s.on_epoch_start(phase, 2, fit)
    now = torch.stack([s.head_losses(fit), s.head_losses(s.holdout)])
    gain = first[1] - now[1]
    d_over = (now[1] - now[0]) - (first[1] - first[0])
    raw = gain.abs() / d_over ** 2
    torch.testing.assert_close(s.weights, raw / raw.sum())
    batch = batch_of(tiny)
    out = s.forward_loss(batch, phase)
    logits = s.head_logits(batch["x"])
    expect = sum(w * F.cross_entropy(lg, batch["y"])
                 for w, lg in zip(s.weights, logits, strict=True))
    torch.testing.assert_close(out["loss"], expect)


def test_gblending_refuses_a_train_split_too_small_to_hold_out(tiny):
    with pytest.raises(ConfigError, match="holdout=0.02 holds out 1, fewer than the 3 classes"):
        make(tiny, "gblending", holdout=0.02).fit_split(tiny["train"])


# --- modality dropout --------------------------------------------------------------------------


def test_keep_mask_drops_with_probability_p_and_never_everything():
    torch.manual_seed(0)
    keep = keep_mask(20000, 2, 0.5, torch.device("cpu"))
    assert bool(keep.any(1).all())
    # an entry is dropped with p, minus the rescued half of the rows that lost both: 0.5 - 0.125
    assert float((~keep).float().mean()) == pytest.approx(0.375, abs=0.01)
    assert bool(keep_mask(50, 3, 0.0, torch.device("cpu")).all())
    assert keep_mask(500, 3, 0.9999, torch.device("cpu")).sum(1).tolist() == [1] * 500


def test_modality_dropout_zeroes_the_dropped_embeddings(tiny):
    s = make(tiny, "modality_dropout", p=0.6)
    batch = batch_of(tiny)
    torch.manual_seed(3)
    out = s.forward_loss(batch, phase_of(s))
    torch.manual_seed(3)
    keep = keep_mask(32, 2, 0.6, torch.device("cpu")).float()
    z = s.model.embed(batch["x"])
    fused = torch.cat([z["m1"] * keep[:, :1], z["m2"] * keep[:, 1:]], 1)
    torch.testing.assert_close(out["logits"], s.model.head(fused)[1])
    assert 0 < float((keep == 0).float().mean()) < 0.6


def test_modality_dropout_with_p_0_is_fusion_concat(tiny):
    batch = batch_of(tiny)
    a = make(tiny, "modality_dropout", p=0.0).forward_loss(batch, None)["loss"]
    b = make(tiny, "fusion_concat").forward_loss(batch, None)["loss"]
    torch.testing.assert_close(a, b)


# --- MMPareto ----------------------------------------------------------------------------------


def test_mgda_weight_and_rescaling_by_hand():
    g_mm, g_u = [torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])]  # conflict: cos < 0
    assert float(pareto_weight(g_mm, g_u)) == pytest.approx(0.6)  # (g_u-g_mm).g_u/|g_mm-g_u|^2
    # 2 (0.6 g_mm + 0.4 g_u) = (0.4, 0.8); |g_mm + g_u| = 1 > 0.894: rescaled to norm 1, x 1.5
    (g,) = pareto_combine(g_mm, g_u, gamma=1.5)
    assert g.tolist() == pytest.approx([1.5 * 0.4 / math.sqrt(0.8), 1.5 * 0.8 / math.sqrt(0.8)])
    g_u = [torch.tensor([1.0, 1.0])]  # no conflict: equal weights, no rescaling needed
    assert float(pareto_weight(g_mm, g_u)) == 0.5
    assert pareto_combine(g_mm, g_u, gamma=1.5)[0].tolist() == pytest.approx([3.0, 1.5])


def test_mmpareto_replaces_encoder_gradients_by_the_pareto_combination(tiny):
    s = make(tiny, "mmpareto")
    batch = batch_of(tiny)
    out = s.model(batch["x"])
    y = batch["y"]
    mm = F.cross_entropy(out["logits"], y)
    params = s.encoder_params("m1")
    g_mm = torch.autograd.grad(mm, params, retain_graph=True)
    g_u = torch.autograd.grad(F.cross_entropy(s.heads["m1"](out["embeddings"]["m1"])[1], y),
                              params)
    expect = pareto_combine(list(g_mm), list(g_u), 1.5)
    s.zero_grad(set_to_none=True)
    s.forward_loss(batch, phase_of(s))["loss"].backward()
    head_before = grads(s.heads)
    s.after_backward(phase_of(s))
    for p, e in zip(params, expect, strict=True):
        torch.testing.assert_close(p.grad, e)
    assert all(torch.equal(g, grads(s.heads)[n]) for n, g in head_before.items())


# --- MLA ---------------------------------------------------------------------------------------


def test_projector_update_by_hand():
    p = project_update(torch.eye(2), torch.tensor([1.0, 0.0]), a=0.1)
    d = 1 - 1 / 1.1  # I - k k^T / (a + r.k) with k = r = e1
    norm = math.sqrt(d * d + 1)
    torch.testing.assert_close(p, torch.tensor([[d / norm, 0.0], [0.0, 1 / norm]]))


def test_entropy_fusion_weights_by_hand():
    flat, sure = torch.tensor([[0.0, 0.0]]), torch.tensor([[10.0, 0.0]])
    h_flat = math.log(2)
    q = 1 / (1 + math.exp(-10))
    h_sure = -(q * math.log(q) + (1 - q) * math.log(1 - q))
    w = entropy_weights([flat, sure])
    expect_sure = math.exp(-h_sure) / (math.exp(-h_sure) + math.exp(-h_flat))
    assert w[:, 0].tolist() == pytest.approx([1 - expect_sure, expect_sure])


def test_mla_alternates_modalities_and_projects_the_head_gradient(tiny):
    s = make(tiny, "mla")
    fit = s.fit_split(tiny["train"])
    phase = phase_of(s)
    s.on_epoch_start(phase, 0, fit)
    batch = batch_of(tiny)
    for step, m in enumerate(("m1", "m2", "m1")):
        s.zero_grad(set_to_none=True)
        before = s.projector.clone()
        s.forward_loss(batch, phase)["loss"].backward()
        reached = {n.split(".")[0] for n in grads(s.encoders)}
        assert reached == {m}
        raw = s.head.classifier.weight.grad.clone()
        r = s.encoders[m](batch["x"][m]).detach().mean(0)
        proj = project_update(before, r, 0.1 ** (1 + step / 3))  # 90 samples / 32 = 3 steps
        s.after_backward(phase)
        torch.testing.assert_close(s.projector, proj)
        torch.testing.assert_close(s.head.classifier.weight.grad, raw @ proj.t())


def test_mla_prediction_is_the_entropy_weighted_sum(tiny):
    s = make(tiny, "mla").eval()
    x = batch_of(tiny)["x"]
    with torch.no_grad():
        pred = s.predict(x)
    w = entropy_weights([pred["m1"], pred["m2"]])
    fused = w[0][:, None] * pred["m1"] + w[1][:, None] * pred["m2"]
    torch.testing.assert_close(pred["fused"], fused)


# --- bad input ---------------------------------------------------------------------------------

BAD = [
    ("ogm_ge", {"alpha": -0.1}, "ogm_ge alpha cannot be negative but got -0.1"),
    ("ogm_ge", {"alpha": float("nan")}, "ogm_ge alpha must be a finite number but got nan"),
    ("ogm_ge", {"start": 5, "end": 2}, "ogm_ge epoch window end 2 is before start 5"),
    ("ogm_ge", {"alpah": 0.5}, "unknown ogm_ge param 'alpah'; valid params: alpha"),
    ("pmr", {"alpha": -1}, "pmr alpha cannot be negative but got -1"),
    ("pmr", {"start": 3, "end": 1}, "pmr epoch window end 1 is before start 3"),
    ("pmr", {"momentum": 1.0}, r"pmr momentum must be in \[0, 1\) but got 1.0"),
    ("pmr", {"beta": 1}, "unknown pmr param 'beta'"),
    ("modality_dropout", {"p": 1.0}, r"modality_dropout p must be in \[0, 1\) but got 1.0"),
    ("modality_dropout", {"p": -0.2}, "modality_dropout p cannot be negative but got -0.2"),
    ("modality_dropout", {"p": float("inf")}, "p must be a finite number but got inf"),
    ("modality_dropout", {"rate": 0.1}, "unknown modality_dropout param 'rate'"),
    ("gblending", {"period": 0}, "gblending period must be an integer >= 1 but got 0"),
    ("gblending", {"holdout": 0}, "gblending holdout must be positive"),
    ("gblending", {"holdout": 1.0}, r"gblending holdout must be in \[0, 1\)"),
    ("mmpareto", {"gamma": 0}, "mmpareto gamma must be positive but got 0"),
    ("mla", {"alpha": 1}, "unknown mla param 'alpha'; valid params: none"),
]


@pytest.mark.parametrize(("name", "params", "message"), BAD,
                         ids=[f"{n}-{next(iter(p))}" for n, p, _ in BAD])
def test_bad_settings_are_one_line_errors(name, params, message):
    with pytest.raises(ConfigError, match=message) as err:
        tiny_cfg(name, params=params)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["gblending", "ogm_ge", "pmr", "mmpareto", "mla"])
def test_classification_only_methods_refuse_reid(name, tiny_reid):
    with pytest.raises(ConfigError, match=f"{name} does not support reid .*strategies for reid: "):
        build(tiny_reid.spec, tiny_cfg(name))


def test_mla_needs_a_linear_head(tiny):
    with pytest.raises(ConfigError, match="use head='linear'"):
        build(tiny.spec, tiny_cfg("mla", head="mlp"))
