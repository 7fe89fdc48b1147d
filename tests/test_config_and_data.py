"""Bad input fails at construction with one clear line naming the field and the fix."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_cfg
from trainers.api import build
from trainers.config import ConfigError, TrainConfig
from trainers.data import create_dataset
from trainers.data.contract import (
    DataBundle,
    DataError,
    DatasetSpec,
    FileDataset,
    ModalitySpec,
    TensorDataset,
)

SPEC = DatasetSpec("toy", "classification",
                   (ModalitySpec("audio", "image", (1, 4, 4)),
                    ModalitySpec("text", "vector", (3,))), num_classes=2)


def tensors(n=4):
    return {"audio": torch.zeros(n, 1, 4, 4), "text": torch.zeros(n, 3)}


def test_unknown_strategy_lists_valid_ones():
    with pytest.raises(ConfigError, match="unknown strategy 'fusion'; valid strategies: "
                                          "fusion_avg, fusion_concat, gblending, mla, "
                                          "mmpareto, modality_dropout, ogm_ge, pmr, reconboost, "
                                          "ume, umt"):
        TrainConfig(strategy="fusion")


def test_unknown_config_key_lists_valid_ones():
    with pytest.raises(ConfigError, match="unknown config key 'learning_rate'; valid keys: "
                                          "strategy, params"):
        TrainConfig.from_dict({"learning_rate": 0.1})


@pytest.mark.parametrize("kw, match", [
    ({"lr": -0.1}, "lr must be a positive float but got -0.1"),
    ({"epochs": 0}, "epochs must be a positive int but got 0"),
    ({"optimizer": "rmsprop"}, r"optimizer must be one of \['sgd', 'adam', 'adamw'\]"),
    ({"weight_decay": -1}, "weight_decay cannot be negative but got -1"),
    ({"head": "deep"}, "head must be one of"),
    ({"strategy": "umt", "params": {"lambda_distill": -1}},
     "umt lambda_distill cannot be negative but got -1"),
    ({"strategy": "unimodal"}, "unimodal param modality is required"),
    ({"strategy": "fusion_concat", "params": {"alpha": 1}},
     "unknown fusion_concat param 'alpha'; valid params: none"),
])
def test_bad_config_values(kw, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kw)


def test_unknown_encoder_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"encoders\['m1'\]: unknown encoder 'resnet999'; valid "
                                          "encoders: auto, cnn, gru, lstm, mlp or any timm model"):
        tiny_cfg(encoders={"m1": "resnet999"})


def test_unknown_modality_for_unimodal(tiny):
    with pytest.raises(ConfigError, match=r"unknown modality 'rgb'; dataset 'synthetic_unimodal' "
                                          r"has \['m1', 'm2'\]"):
        build(tiny.spec, tiny_cfg("unimodal", params={"modality": "rgb"}))


def test_missing_modality_is_named():
    t = tensors()
    del t["text"]
    with pytest.raises(DataError, match="split 'train': modality 'text' is missing"):
        TensorDataset(SPEC, "train", t, [0, 1, 0, 1])


def test_misshaped_modality_is_named():
    t = tensors()
    t["audio"] = torch.zeros(4, 1, 4, 5)
    with pytest.raises(DataError, match=r"modality 'audio' has shape \(4, 1, 4, 5\), expected "
                                        r"\(4, 1, 4, 4\)"):
        TensorDataset(SPEC, "train", t, [0, 1, 0, 1])


def test_label_out_of_range_names_the_sample():
    with pytest.raises(DataError, match=r"sample 2: label 5 is outside \[0, 2\)"):
        TensorDataset(SPEC, "train", tensors(), [0, 1, 5, 1])


def test_empty_split_is_an_error():
    with pytest.raises(DataError, match="split 'val' is empty"):
        TensorDataset(SPEC, "val", tensors(0), [])


def test_nan_input_names_the_sample():
    t = tensors()
    t["text"][3, 1] = float("nan")
    with pytest.raises(DataError, match="sample 3: modality 'text' contains NaN"):
        TensorDataset(SPEC, "test", t, [0, 1, 0, 1])


def test_file_dataset_validates_each_sample_at_construction():
    def loader(i):
        x = {"audio": torch.zeros(1, 4, 4), "text": torch.zeros(3)}
        if i == 2:
            x["text"] = torch.zeros(4)
        return x

    with pytest.raises(DataError, match=r"sample 2: modality 'text' has shape \(4,\), "
                                        r"expected \(3,\)"):
        FileDataset(SPEC, "train", loader, [0, 1, 0, 1])


def test_bundle_needs_every_split():
    ds = TensorDataset(SPEC, "train", tensors(), [0, 1, 0, 1])
    with pytest.raises(DataError, match="is missing split 'val'"):
        DataBundle(SPEC, {"train": ds})


@pytest.mark.parametrize("kw, match", [
    ({"kind": "video"}, "kind of 'x' must be one of"),
    ({"shape": (3, 4)}, r"shape of 'x' \(image\) must have 3 positive dims but got \(3, 4\)"),
])
def test_modality_spec_errors(kw, match):
    with pytest.raises(DataError, match=match):
        ModalitySpec(**{"name": "x", "kind": "image", "shape": (1, 2, 2), **kw})


def test_unknown_dataset_lists_valid_ones():
    with pytest.raises(KeyError, match="unknown dataset 'mnist'; valid datasets: .*synthetic_both"):
        create_dataset("mnist")


def test_fusion_avg_and_timm_and_rnn_encoders_build_and_run():
    spec = DatasetSpec("mixed", "classification",
                       (ModalitySpec("img", "image", (2, 16, 16)),
                        ModalitySpec("seq", "sequence", (5, 3))), 3)
    x = {"img": torch.randn(4, 2, 16, 16), "seq": torch.randn(4, 5, 3)}
    for enc in ({"img": "test_resnet", "seq": "gru"}, {"img": "cnn", "seq": "lstm"}):
        s = build(spec, tiny_cfg("fusion_avg", encoders=enc)).eval()
        assert s.predict(x)["fused"].shape == (4, 3)


def test_cnn_encoder_refuses_a_vector_modality(tiny):
    with pytest.raises(ValueError, match="encoder 'cnn' needs a image modality but 'm1' is a "
                                         "vector"):
        build(tiny.spec, tiny_cfg(encoders={"m1": "cnn"}))


def test_timm_encoder_loads_a_local_weights_file(tmp_path):
    import timm

    reference = timm.create_model("test_resnet", pretrained=False, in_chans=3)
    path = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), path)
    spec = DatasetSpec("img", "classification", (ModalitySpec("rgb", "image", (3, 16, 16)),), 2)
    s = build(spec, tiny_cfg("unimodal", params={"modality": "rgb"},
                             encoders={"rgb": "test_resnet"}, pretrained={"rgb": str(path)}))
    backbone = s.encoder("rgb")[0]
    ref = reference.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in backbone.state_dict().items() if k in ref)
    assert torch.equal(backbone.conv1[0].weight, ref["conv1.0.weight"])


def test_dataset_arguments_from_the_command_line_are_json_or_strings():
    from trainers.data import parse_dataset_args

    got = parse_dataset_args(["root=/data/RGBNT201", "image_size=[256,128]", "n=90",
                              "normalize=false", "name= x "])
    assert got == {"root": "/data/RGBNT201", "image_size": [256, 128], "n": 90,
                   "normalize": False, "name": " x "}
    with pytest.raises(DataError, match="--dataset-arg '=3' is not KEY=VALUE"):
        parse_dataset_args(["=3"])


def test_dataset_factory_arguments_are_checked_by_name():
    with pytest.raises(DataError, match="dataset 'synthetic_both' has no argument 'size'; its "
                                        "arguments: mode, n, "):
        create_dataset("synthetic_both", size=3)
    with pytest.raises(DataError, match="dataset 'cremad' needs the argument 'root'"):
        create_dataset("cremad")
    assert len(create_dataset("synthetic_both", n=90, dim=4)["train"]) > 0


def test_main_job_command_line_passes_dataset_arguments(capsys, tmp_path):
    from trainers.__main__ import main

    assert main(["--dataset", "synthetic_both", "--dataset-arg", "bogus=1"]) == 2
    assert "has no argument 'bogus'" in capsys.readouterr().err
    assert main(["--dataset", "synthetic_both", "--dataset-arg", "n=60", "--dataset-arg", "dim=4",
                 "--strategies", "fusion_avg", "--epochs", "1", "--store", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "[run] fusion_avg seed 0: trained in" in err and "synthetic_both: test accuracy" in out
    runs = sorted(p.name.split("-")[1] for p in tmp_path.iterdir())
    assert runs == ["fusion_avg", "unimodal", "unimodal"]  # unimodal runs first, for reuse


def test_finiteness_check_scans_floats_and_trusts_integers():
    """NaN / inf are caught in float samples; uint8 images (which cannot hold them) are not
    scanned, which was a sixth of the per-sample cost of decoding a JPEG batch."""
    import torch

    from trainers.data.contract import all_finite

    assert all_finite(torch.full((3, 4, 4), 255, dtype=torch.uint8))
    assert all_finite(torch.ones(2, 2)) and all_finite(torch.zeros(0))
    assert not all_finite(torch.tensor([0.0, float("nan")]))
    assert not all_finite(torch.tensor([float("-inf")], dtype=torch.float64))
