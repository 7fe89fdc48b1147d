"""UMT (distillation from frozen unimodal teachers) and UME (mean of unimodal softmaxes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_cfg
from trainers.api import build, evaluate_splits, train
from trainers.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from trainers.config import ConfigError
from trainers.data.contract import iterate_batches
from trainers.loop import fit


def umt(tiny, ckpts, lam=2.0):
    return build(tiny.spec, tiny_cfg("umt", params={"teachers": ckpts, "lambda_distill": lam}))


def test_teachers_get_no_gradient_and_are_not_in_optimizer_or_checkpoint(tiny, unimodal_ckpts,
                                                                         tmp_path):
    s = umt(tiny, unimodal_ckpts)
    teacher_params = {id(p) for t in s.teachers().values() for p in t.parameters()}
    assert teacher_params and not teacher_params & {id(p) for p in s.parameters()}
    for ph in s.phases():
        assert not teacher_params & {id(p) for p in ph.params}
    before = {k: v.clone() for t in s.teachers().values() for k, v in t.state_dict().items()}
    out = s.forward_loss(next(iterate_batches(tiny["train"], 32)), s.phases()[0])
    out["loss"].backward()
    assert all(p.grad is None for t in s.teachers().values() for p in t.parameters())
    assert all(not t.training for t in s.teachers().values())
    s.train()  # putting the student in train mode leaves teachers in eval
    assert all(not t.training for t in s.teachers().values())
    fit(s, tiny)
    after = {k: v for t in s.teachers().values() for k, v in t.state_dict().items()}
    assert all(torch.equal(before[k], after[k]) for k in before)
    state = read_checkpoint(save_checkpoint(s, tmp_path / "u.pt"))["state"]
    assert not any("teacher" in k for k in state)
    assert set(state) == set(build(tiny.spec, tiny_cfg("fusion_concat")).state_dict())


def test_distillation_term_equals_hand_computed_mse(tiny, unimodal_ckpts):
    s = umt(tiny, unimodal_ckpts, lam=3.0)
    b = next(iterate_batches(tiny["train"], 32))
    out = s.forward_loss(b, s.phases()[0])
    teachers = {m: load_checkpoint(unimodal_ckpts[m], tiny.spec).model.encoders[m]
                for m in unimodal_ckpts}
    with torch.no_grad():
        z = {m: s.model.encoders[m](b["x"][m]) for m in teachers}
        t = {m: teachers[m](b["x"][m]) for m in teachers}
        mse = sum(((z[m] - t[m]) ** 2).mean() for m in teachers)
        ce = F.cross_entropy(s.model.head(torch.cat([z["m1"], z["m2"]], 1))[1], b["y"])
    assert torch.allclose(out["distill"], mse, atol=1e-6)
    assert torch.allclose(out["loss"], ce + 3.0 * mse, atol=1e-5)


def test_lambda_zero_reduces_to_fusion_concat(tiny, unimodal_ckpts):
    a, ra = train(tiny, tiny_cfg("umt", params={"teachers": unimodal_ckpts,
                                                "lambda_distill": 0.0}))
    b, rb = train(tiny, tiny_cfg("fusion_concat"))
    assert [r.train["loss"] for r in ra.history] == [r.train["loss"] for r in rb.history]
    assert evaluate_splits(a, tiny) == evaluate_splits(b, tiny)


def test_umt_without_teachers_is_a_clear_error(tiny):
    with pytest.raises(ConfigError, match="umt needs a teacher for modality 'm1'"):
        build(tiny.spec, tiny_cfg("umt"))


def test_umt_rejects_a_teacher_of_the_wrong_modality(tiny, unimodal_ckpts):
    swapped = {"m1": unimodal_ckpts["m2"], "m2": unimodal_ckpts["m1"]}
    with pytest.raises(ConfigError, match="expected unimodal on 'm1'"):
        umt(tiny, swapped)


def test_ume_prediction_is_the_mean_of_unimodal_softmaxes(tiny, unimodal_ckpts):
    s = build(tiny.spec, tiny_cfg("ume", params={"members": unimodal_ckpts})).eval()
    assert s.phases() == []  # members are finished runs: nothing to train
    x = next(iterate_batches(tiny["test"], 64))["x"]
    with torch.no_grad():
        probs = [load_checkpoint(unimodal_ckpts[m], tiny.spec).predict(x)["fused"].softmax(-1)
                 for m in ("m1", "m2")]
        fused = s.predict(x)["fused"].softmax(-1)
    assert torch.allclose(fused, (probs[0] + probs[1]) / 2, atol=1e-6)


def test_ume_weights_are_normalised(tiny, unimodal_ckpts):
    s = build(tiny.spec, tiny_cfg("ume", params={"members": unimodal_ckpts,
                                                 "weights": {"m1": 3.0, "m2": 1.0}})).eval()
    x = next(iterate_batches(tiny["test"], 8))["x"]
    with torch.no_grad():
        p = {m: s.members[m].predict(x)["fused"].softmax(-1) for m in ("m1", "m2")}
        assert torch.allclose(s.predict(x)["fused"].softmax(-1), 0.75 * p["m1"] + 0.25 * p["m2"],
                              atol=1e-6)


def test_ume_trains_members_one_phase_each_touching_one_member(tiny):
    s = build(tiny.spec, tiny_cfg("ume"))
    phases = s.phases()
    assert [p.name for p in phases] == ["unimodal:m1", "unimodal:m2"]
    assert {id(p) for p in phases[0].params} == {id(p) for p in s.members["m1"].parameters()}


def test_ume_negative_weight_is_rejected(tiny):
    with pytest.raises(ConfigError, match="ume weight of 'm1' cannot be negative but got -1"):
        build(tiny.spec, tiny_cfg("ume", params={"weights": {"m1": -1}}))
