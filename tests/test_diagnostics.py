"""Diagnostics: linear probes, MIR/DMC, the selection trick, test-time robustness."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import tiny_cfg
from trainers import evaluate, train
from trainers.checkpoint import load_checkpoint, save_checkpoint
from trainers.config import ConfigError, TrainConfig
from trainers.data import create_dataset
from trainers.data.contract import DataBundle, DatasetSpec, ModalitySpec, TensorDataset
from trainers.diagnostics import (
    NoiseConfig,
    ProbeConfig,
    ProbeError,
    fit_linear,
    laziness_table,
    modality_competition,
    probe,
    robustness,
    selection_trick,
)
from trainers.diagnostics.robustness import Condition, train_std
from trainers.diagnostics.selection import recommend
from trainers.metrics import accuracy
from trainers.reid.evaluate import evaluate_reid
from trainers.runs import train_or_reuse
from trainers.strategies.base import Strategy

torch.set_num_threads(1)


class HandMade(Strategy):
    """A 'trained model' whose encoders are given: enough for probes."""

    def __init__(self, spec: DatasetSpec, encoders: dict[str, nn.Module]) -> None:
        super().__init__(spec, TrainConfig(strategy="fusion_concat"))
        self.encs = nn.ModuleDict(encoders)

    def encoder(self, m: str) -> nn.Module:
        return self.encs[self.check_modality(m)]


def separable_data(n: int = 300, seed: int = 0) -> DataBundle:
    """Modality ``signal``: label one-hot + small noise (linearly separable); ``noise``:
    independent of the label."""
    g = torch.Generator().manual_seed(seed)
    modalities = (ModalitySpec("signal", "vector", (4,)), ModalitySpec("noise", "vector", (4,)))
    spec = DatasetSpec("handmade", "classification", modalities, num_classes=2)
    y = torch.randint(0, 2, (n,), generator=g)
    signal = torch.zeros(n, 4)
    signal[:, 0] = 2.0 * y - 1
    signal += 0.1 * torch.randn(n, 4, generator=g)
    noise = torch.randn(n, 4, generator=g)
    parts = {"train": slice(0, n // 2), "val": slice(n // 2, 3 * n // 4),
             "test": slice(3 * n // 4, n)}
    return DataBundle(spec, {s: TensorDataset(spec, s, {"signal": signal[i], "noise": noise[i]},
                                              y[i]) for s, i in parts.items()})


def frozen_linear(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(4, 6).requires_grad_(False)


# --- probes ---------------------------------------------------------------------------------


def test_probe_on_separable_features_is_perfect_and_on_label_free_features_is_chance():
    data = separable_data()
    model = HandMade(data.spec, {"signal": frozen_linear(0), "noise": frozen_linear(1)})
    good = probe(model, data, "signal")
    assert good.metric == "accuracy"
    assert good.scores == {"train": 1.0, "val": 1.0, "test": 1.0}
    bad = probe(model, data, "noise")
    assert 0.3 <= bad.scores["test"] <= 0.7  # 2 classes, 75 test samples: chance is 0.5
    assert probe(model, data, "noise").scores == bad.scores  # deterministic fit


def test_fit_linear_is_deterministic_and_handles_constant_features():
    x = torch.cat([torch.randn(40, 3), torch.ones(40, 1)], dim=1)
    y = (x[:, 0] > 0).long()
    a, b = fit_linear(x, y, 2), fit_linear(x, y, 2)
    assert torch.equal(a(x), b(x))
    assert accuracy(a(x).argmax(-1), y) == 1.0


def test_probe_of_a_modality_the_model_lacks_names_it_and_the_models_modalities(tiny):
    model, _ = train(tiny, tiny_cfg("unimodal", params={"modality": "m1"}, epochs=1))
    with pytest.raises(ProbeError, match=r"'m2'.*modalities \['m1'\]"):
        probe(model, tiny, "m2")
    fused, _ = train(tiny, tiny_cfg(epochs=1))
    with pytest.raises(ProbeError, match=r"'depth'.*modalities \['m1', 'm2'\]"):
        probe(fused, tiny, "depth")
    with pytest.raises(ProbeError, match="trained on dataset 'synthetic_unimodal'"):
        probe(fused, separable_data(), "m1")


def test_probe_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="max_iter must be an integer >= 1 but got 0"):
        ProbeConfig(max_iter=0)
    with pytest.raises(ConfigError, match="weight_decay cannot be negative but got -1"):
        ProbeConfig(weight_decay=-1)
    with pytest.raises(ConfigError, match="weight_decay must be a finite number >= 0 but got nan"):
        ProbeConfig(weight_decay=float("nan"))


def test_reid_probe_is_the_map_of_the_embedding_alone():
    data = create_dataset("reid_synth", num_ids=20, val_ids=4, test_ids=6, images_per_id=4,
                          num_cameras=2, image_size=(8, 8))
    model = HandMade(data.spec, {m: nn.Flatten() for m in data.spec.modality_names})
    res = probe(model, data, "rgb")
    assert res.metric == "map" and set(res.scores) == {"train", "query"}
    q, g = data["query"], data["gallery"]
    want = evaluate_reid(q.tensors["rgb"].flatten(1), g.tensors["rgb"].flatten(1), q.labels,
                         g.labels, q.camids, g.camids).mAP
    assert res.scores["query"] == pytest.approx(want, abs=1e-6)


def test_laziness_table_gap_and_missing_reference():
    rows = laziness_table({"fusion_concat": {"a": 0.5, "v": 0.2}}, {"a": 0.55, "v": 0.5})
    assert [(r.modality, round(r.gap, 2)) for r in rows] == [("a", 0.05), ("v", 0.3)]
    with pytest.raises(ProbeError, match="no unimodal run for modality 'v'"):
        laziness_table({"umt": {"v": 0.3}}, {"a": 0.5})


# --- MIR / DMC ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("uni", "mm", "mir_uni", "mir_mm", "dmc"), [
    ({"audio": 56.67, "visual": 50.14}, {"audio": 54.86, "visual": 26.81}, 1.13, 2.05, 1.81),
    ({"audio": 56.67, "visual": 50.14}, {"audio": 58.47, "visual": 45.69}, 1.13, 1.28, 1.13),
    ({"audio": 56.67, "visual": 50.14}, {"audio": 60.23, "visual": 73.01}, 1.13, 0.82, 0.73),
    ({"audio": 59.37, "visual": 30.46}, {"audio": 55.47, "visual": 23.96}, 1.95, 2.32, 1.19),
])
def test_mir_and_dmc_match_reconboost_table_11(uni, mm, mir_uni, mir_mm, dmc):
    comp = modality_competition(uni, mm)
    assert comp.order[0] == "audio"  # strong = better in the unimodal runs, kept for mm
    assert (round(comp.mir_uni, 2), round(comp.mir_mm, 2), round(comp.dmc, 2)) == \
        (mir_uni, mir_mm, dmc)


@pytest.mark.parametrize(("uni", "mm", "dmc"), [
    ((54.81, 57.87, 75.94), (54.25, 54.37, 74.05), 0.99),  # MOSI
    ((58.20, 63.02, 70.45), (54.27, 59.74, 68.71), 1.03),  # CH-SIMS
    ((52.29, 50.35, 66.41), (49.02, 49.02, 66.13), 1.01),  # MOSEI (1.015 from rounded inputs)
])
def test_dmc_of_three_modalities_is_the_geometric_mean_over_pairs(uni, mm, dmc):
    names = ("audio", "visual", "text")
    comp = modality_competition(dict(zip(names, uni, strict=True)),
                                dict(zip(names, mm, strict=True)))
    assert comp.dmc == pytest.approx(dmc, abs=0.006)
    pairs = [(a, b) for i, a in enumerate(comp.order) for b in comp.order[i + 1:]]
    u, m = dict(zip(names, uni, strict=True)), dict(zip(names, mm, strict=True))
    by_pair = [(m[a] / m[b]) / (u[a] / u[b]) for a, b in pairs]
    assert comp.dmc == pytest.approx(math.prod(by_pair) ** (1 / 3))


def test_mir_errors():
    with pytest.raises(ValueError, match="same modalities"):
        modality_competition({"a": 0.5, "b": 0.4}, {"a": 0.5})
    with pytest.raises(ValueError, match="score of modality 'b' must be positive"):
        modality_competition({"a": 0.5, "b": 0.4}, {"a": 0.5, "b": 0.0})
    with pytest.raises(ValueError, match="at least 2 modalities"):
        modality_competition({"a": 0.5}, {"a": 0.5})


# --- selection trick -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[DataBundle, dict[str, Path]]:
    """Well-trained unimodal runs on clean data (both modalities alone reach ~100%)."""
    data = create_dataset("synthetic_unimodal", n=150, dim=8, num_classes=3, noise=0.1)
    store = tmp_path_factory.mktemp("sel")
    return data, {m: train_or_reuse(data, tiny_cfg("unimodal", params={"modality": m},
                                                   epochs=20, lr=1e-2), store).checkpoint
                  for m in data.spec.modality_names}


def recompute(data: DataBundle, ckpts: dict[str, Path]) -> tuple[float, float]:
    """Both numbers of the trick by hand: member models, raw tensors, no UME class."""
    members = {m: load_checkpoint(p, data.spec) for m, p in ckpts.items()}
    tr, va = data["train"], data["val"]
    with torch.no_grad():
        feats = {s: torch.cat([members[m].encoder(m)(ds.tensors[m]) for m in members], 1)
                 for s, ds in (("train", tr), ("val", va))}
        probs = torch.stack([members[m].predict(va.tensors)["fused"].softmax(-1)
                             for m in members]).mean(0)
    head = fit_linear(feats["train"], tr.labels, data.spec.num_classes)
    return (accuracy(head(feats["val"]).argmax(-1), va.labels),
            accuracy(probs.argmax(-1), va.labels))


def test_selection_trick_numbers_match_a_recomputation_and_a_tie_keeps_ume(clean_runs):
    data, ckpts = clean_runs
    sel = selection_trick(data, ckpts)
    linear, ume = recompute(data, ckpts)
    assert sel.linear_val_accuracy == linear
    assert sel.ume_val_accuracy == pytest.approx(ume, abs=1e-6)
    assert sel.recommendation == recommend(linear, ume)
    assert recommend(0.9, 0.9) == "ume" and recommend(0.91, 0.9) == "umt"
    assert "recommendation: " + sel.recommendation.upper() in sel.describe()


def test_selection_trick_recommends_umt_when_averaging_hurts(clean_runs, tmp_path):
    """m2's encoder is intact but its head is confidently wrong (classes shifted by one): the
    average of probabilities suffers, a fresh linear layer on the embeddings does not."""
    data, ckpts = clean_runs
    bad = load_checkpoint(ckpts["m2"], data.spec)
    head = [mod for mod in bad.model.head.modules() if isinstance(mod, nn.Linear)][-1]
    with torch.no_grad():
        head.weight.copy_(5 * head.weight.roll(1, 0))
        head.bias.copy_(5 * head.bias.roll(1, 0))
    broken = {"m1": ckpts["m1"], "m2": save_checkpoint(bad, tmp_path / "m2.pt")}
    sel = selection_trick(data, broken)
    linear, ume = recompute(data, broken)
    assert (sel.linear_val_accuracy, sel.recommendation) == (linear, "umt")
    assert sel.ume_val_accuracy == pytest.approx(ume, abs=1e-6)
    assert sel.linear_val_accuracy > sel.ume_val_accuracy + 0.2


def test_selection_trick_needs_every_modality(clean_runs):
    data, ckpts = clean_runs
    with pytest.raises(ConfigError, match="missing 'm2'"):
        selection_trick(data, {"m1": ckpts["m1"]})


# --- robustness ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fused_model(clean_runs) -> tuple[DataBundle, Strategy]:
    data, _ = clean_runs
    model, _ = train(data, tiny_cfg(epochs=5, lr=1e-2))
    return data, model


def test_noise_zero_is_plain_test_accuracy_and_missing_is_zeros(fused_model):
    data, model = fused_model
    res = robustness(model, data, NoiseConfig(levels=(0.0, 0.5, 50.0)))
    plain = evaluate(model, data["test"], model.cfg.batch_size)["fused"]["accuracy"]
    for target in ("m1", "m2", "all"):
        assert res[Condition("noise", target, 0.0)] == plain
    test = data["test"]
    for m in ("m1", "m2"):
        zeroed = {k: torch.zeros_like(v) if k == m else v for k, v in test.tensors.items()}
        ds = TensorDataset(data.spec, "test", zeroed, test.labels)
        want = evaluate(model, ds, model.cfg.batch_size)["fused"]["accuracy"]
        assert res[Condition("missing", m)] == want
    assert res[Condition("noise", "all", 50.0)] < plain  # the noise is really applied
    again = robustness(model, data, NoiseConfig(levels=(0.5,), missing=False))
    assert again[Condition("noise", "m1", 0.5)] == res[Condition("noise", "m1", 0.5)]


def test_noise_is_in_units_of_the_train_std(clean_runs):
    data, _ = clean_runs
    stds = train_std(data, ["m1"], batch_size=7)
    assert stds["m1"] == pytest.approx(float(data["train"].tensors["m1"].std(unbiased=False)),
                                       rel=1e-5)


def test_robustness_errors(fused_model):
    data, model = fused_model
    with pytest.raises(ConfigError, match="targets names modality 'depth'"):
        robustness(model, data, NoiseConfig(targets=("depth",)))
    with pytest.raises(ConfigError, match="levels entry cannot be negative but got -1"):
        NoiseConfig(levels=(0, -1))
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=f"levels entry must be a finite number .*{bad}"):
            NoiseConfig(levels=(0, bad))
