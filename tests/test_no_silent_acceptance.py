"""Nothing accepted and ignored: every bad setting is a one-line ConfigError when the config is
built (or, for what needs the dataset, when the strategy is built), naming the field, the value
and the fix."""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_cfg
from trainers.api import build
from trainers.checkpoint import save_checkpoint
from trainers.compare import dependent_config
from trainers.config import ConfigError, TrainConfig
from trainers.data.contract import DatasetSpec, ModalitySpec
from trainers.strategies import STRATEGIES, strategy_class

IMG = DatasetSpec("img", "classification", (ModalitySpec("rgb", "image", (3, 16, 16)),), 2)
NUMERIC_FIELDS = [f.name for f in fields(TrainConfig) if f.type in ("int", "float")]


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name", NUMERIC_FIELDS)
def test_nan_and_inf_are_rejected_for_every_numeric_setting(name: str, bad: float) -> None:
    assert len(NUMERIC_FIELDS) >= 10  # embed_dim ... lambda_id
    with pytest.raises(ConfigError, match=rf"^{name} must be (an integer|a finite number) .*but "
                                          rf"got -?{bad}") as err:
        TrainConfig(**{name: bad})
    one_line(err)


def strategy_numbers() -> list[tuple[str, str]]:
    """(strategy, param) for every numeric param of every registered strategy."""
    out = []
    for name in STRATEGIES.names():
        for f in fields(strategy_class(name).Params):
            if isinstance(f.default, int | float) and not isinstance(f.default, bool):
                out.append((name, f.name))
    return out


BASE_PARAMS = {"unimodal": {"modality": "m1"}}


@pytest.mark.parametrize(("strategy", "param"), strategy_numbers())
def test_nan_is_rejected_for_every_numeric_strategy_param(strategy: str, param: str) -> None:
    params = {**BASE_PARAMS.get(strategy, {}), param: math.nan}
    with pytest.raises(ConfigError, match=rf"{param} must be (an integer|a finite number) .*but "
                                          "got nan") as err:
        TrainConfig(strategy=strategy, params=params)
    one_line(err)


def test_nan_lambda_distill_fails_before_the_teachers_check_and_nan_ume_weight() -> None:
    with pytest.raises(ConfigError, match="umt lambda_distill must be a finite number"):
        TrainConfig(strategy="umt", params={"lambda_distill": math.nan})
    with pytest.raises(ConfigError, match="ume weight of 'm1' must be a finite number"):
        TrainConfig(strategy="ume", params={"weights": {"m1": math.inf}})


@pytest.mark.parametrize("value", [1.5, -0.1])
def test_lambda_boost_outside_0_1_is_rejected(value: float) -> None:
    with pytest.raises(ConfigError, match=rf"lambda_boost must be in \[0, 1\] but got {value} "
                                          r"\(lambda > 1 makes the boosting weight"):
        TrainConfig(strategy="reconboost", params={"lambda_boost": value})
    TrainConfig(strategy="reconboost", params={"lambda_boost": 1.0})  # the edge is fine


def test_unknown_encoder_fails_at_config_construction_not_in_training() -> None:
    with pytest.raises(ConfigError, match=r"encoders\['m1'\]: unknown encoder 'resnet999'; "
                                          "valid encoders: auto, cnn, gru, lstm, mlp or any "
                                          "timm model") as err:
        TrainConfig(encoders={"m1": "resnet999"})
    one_line(err)
    assert TrainConfig(encoders={"m1": "test_resnet"}).encoders == {"m1": "test_resnet"}


def test_pretrained_needs_a_timm_encoder() -> None:
    with pytest.raises(ConfigError, match=r"pretrained\['rgb'\] = 'w.pth' needs a timm encoder "
                                          r"but encoders\['rgb'\] is 'auto'"):
        TrainConfig(pretrained={"rgb": "w.pth"})


@pytest.mark.parametrize("key", ["encoders", "pretrained"])
def test_a_backbone_key_that_is_not_a_modality_is_an_error(tiny, key: str) -> None:
    cfg = tiny_cfg(encoders={"audoi": "test_resnet"},
                   pretrained={"audoi": "w.pth"} if key == "pretrained" else {})
    with pytest.raises(ConfigError, match="encoders names 'audoi', which is not a modality of "
                                          "dataset 'synthetic_unimodal'; its modalities: m1, m2"):
        build(tiny.spec, cfg)


def weights_cfg(path: Path) -> TrainConfig:
    return tiny_cfg("unimodal", params={"modality": "rgb"}, encoders={"rgb": "test_resnet"},
                    pretrained={"rgb": str(path)})


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.pth"
    with pytest.raises(ConfigError, match=f"pretrained weights file '{path}' does not exist"):
        build(IMG, weights_cfg(path))


def test_corrupt_weights_file_is_named(tmp_path: Path) -> None:
    for path in (tmp_path / "w.pth", tmp_path / "w.safetensors"):
        path.write_bytes(b"\x00not a weights file" * 10)
        with pytest.raises(ConfigError, match=f"pretrained weights file '{path}' cannot be "
                                              "read") as err:
            build(IMG, weights_cfg(path))
        one_line(err)


def test_weights_that_do_not_fit_the_backbone_name_the_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "mlp.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)  # an unrelated model's weights
    with pytest.raises(ConfigError, match=r"does not fit timm model 'test_resnet': \d+ of its "
                                          r"\d+ keys are missing \(conv1.0.weight"):
        build(IMG, weights_cfg(path))


def test_weights_load_into_a_different_channel_count_as_timm_adapts(tmp_path: Path) -> None:
    import timm

    path = tmp_path / "rgb.pth"
    reference = timm.create_model("test_resnet", pretrained=False, in_chans=3)
    torch.save(reference.state_dict(), path)
    spec = DatasetSpec("gray", "classification", (ModalitySpec("rgb", "image", (1, 16, 16)),), 2)
    backbone = build(spec, weights_cfg(path)).encoder("rgb")[0]
    ref = reference.state_dict()["conv1.0.weight"]
    assert torch.allclose(backbone.conv1[0].weight, ref.sum(1, keepdim=True))
    assert torch.equal(backbone.conv1[1].weight, reference.state_dict()["conv1.1.weight"])


SEQ = DatasetSpec("seq", "classification", (ModalitySpec("a", "sequence", (5, 3)),
                                             ModalitySpec("b", "vector", (3,))), 2)


def save_unimodal(spec: DatasetSpec, tmp_path: Path, m: str, **kw: object) -> str:
    model = build(spec, tiny_cfg("unimodal", params={"modality": m}, **kw))
    return str(save_checkpoint(model, tmp_path / f"{m}-{len(kw)}.pt"))


@pytest.mark.parametrize(("kw", "what"), [({"embed_dim": 4}, "embed_dim 4"),
                                          ({"encoders": {"a": "lstm"}}, "encoder 'lstm'"),
                                          ({"hidden_dim": 4}, "hidden_dim 4")])
def test_umt_teacher_with_another_backbone_is_rejected(tmp_path, kw, what) -> None:
    teachers = {"a": save_unimodal(SEQ, tmp_path, "a", **kw),
                "b": save_unimodal(SEQ, tmp_path, "b")}
    with pytest.raises(ConfigError, match=f"umt teacher .* of 'a' has {what} but the student "
                                          "has") as err:
        build(SEQ, tiny_cfg("umt", params={"teachers": teachers}))
    one_line(err)


def test_umt_teacher_auto_and_its_named_default_are_the_same_backbone(tmp_path) -> None:
    teachers = {"a": save_unimodal(SEQ, tmp_path, "a", encoders={"a": "gru"}),
                "b": save_unimodal(SEQ, tmp_path, "b")}
    build(SEQ, tiny_cfg("umt", params={"teachers": teachers}))


def test_unicat_member_outside_its_modalities_is_rejected(tiny_reid) -> None:
    cfg = tiny_cfg("unicat", params={"modalities": ["rgb"], "members": {"nir": "x.pt"}})
    m = tiny_reid.spec.modality_names
    assert "nir" in m
    with pytest.raises(ConfigError, match=r"unicat members has 'nir', which is not one of its "
                                          r"modalities \['rgb'\]; add it to modalities"):
        build(tiny_reid.spec, cfg)


def test_ume_member_for_an_unknown_modality_is_rejected(tiny) -> None:
    with pytest.raises(ConfigError, match="unknown modality 'm3'"):
        build(tiny.spec, tiny_cfg("ume", params={"members": {"m3": "x.pt"}}))


@pytest.mark.parametrize(("key", "value"), [("epochs", 3), ("optimizer", "sgd"), ("lr", 0.05),
                                            ("momentum", 0.5), ("weight_decay", 1e-4)])
def test_reconboost_rejects_train_settings_it_does_not_use(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"reconboost does not use TrainConfig.{key} \(got "
                                          rf"{value!r}\): its optimiser is a fresh SGD per phase "
                                          r"set by params lr, momentum and weight_decay") as err:
        TrainConfig(strategy="reconboost", **{key: value})
    one_line(err)


def test_shared_budget_does_not_reach_reconboost_and_its_own_lr_is_used(tiny) -> None:
    base = TrainConfig(epochs=3, lr=0.2, optimizer="sgd", momentum=0.0)
    cfg = dependent_config("reconboost", base, {}, {"lr": 0.05, "stages": 2})
    assert (cfg.epochs, cfg.lr, cfg.optimizer, cfg.momentum) == (10, 1e-3, "adam", 0.9)
    assert dependent_config("fusion_concat", base, {}).lr == 0.2  # others keep the budget
    s = build(tiny.spec, tiny_cfg("reconboost", params={"lr": 0.05, "stages": 2,
                                                        "lr_decay": 0.5}))
    opts = [p.optim for p in s.phases()]
    assert [(o.kind, o.lr, o.momentum, o.weight_decay) for o in opts] == [
        ("sgd", 0.05, 0.9, 5e-4)] * 2 + [("sgd", 0.025, 0.9, 5e-4)] * 2


@pytest.mark.parametrize("key", ["optimizer", "epochs"])
def test_reconboost_search_space_refuses_keys_it_ignores(key: str) -> None:
    from orchestrator.space import SearchSpace, SpaceError

    with pytest.raises(SpaceError, match=f"search space for reconboost: unknown key {key!r}"):
        SearchSpace.from_dict("reconboost", {key: "choice:sgd,adam" if key == "optimizer"
                                             else "int:1:3"})


def test_reconboost_w1_needs_the_released_variant() -> None:
    with pytest.raises(ConfigError, match="reconboost w1 = 2.0 only applies to "
                                          "variant='released'"):
        TrainConfig(strategy="reconboost", params={"w1": 2.0})
    TrainConfig(strategy="reconboost", params={"w1": 2.0, "variant": "released"})


def test_sweep_epochs_zero_is_an_error_not_the_default(capsys) -> None:
    from sweeps import reconboost_tune

    code = reconboost_tune.main(["--epochs", "0", "--smoke-test"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "error: epochs must be a positive int but got 0", err


@pytest.mark.parametrize("shape", ["abc", [3, "4"], [3.0, 4], [0, 2], 5, []])
def test_manifest_shape_must_be_a_list_of_positive_ints(tmp_path: Path, shape: object) -> None:
    from tests.test_loaders_manifest import CLS, classification_tree, write_manifest
    from trainers.data import DataError, create_dataset

    mods = [{**CLS["modalities"][0], "shape": shape}, *CLS["modalities"][1:]]
    write_manifest(tmp_path, classification_tree(tmp_path), decl={**CLS, "modalities": mods})
    with pytest.raises(DataError, match=r"modality 'rgb': 'shape' must be a list of positive "
                                        r"integers, e.g. \[3, 64, 64\], but got") as err:
        create_dataset("manifest", root=tmp_path)
    one_line(err)
