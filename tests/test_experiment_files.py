"""Experiment files (``--config``), the shipped ``configs/``, the ``--encoder`` / ``--head`` /
``--device`` flags, ``-q`` / ``-v`` logging and the console scripts."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest
import torch

from orchestrator import ray_utils
from sweeps import common, umt_tune, unimodal_ensembles
from trainers.__main__ import main as train_main
from trainers.__main__ import parse_args
from trainers.config import ConfigError, TrainConfig
from trainers.experiment import load_experiment, train_options
from trainers.logs import setup_logging

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
SMALL = ["--dataset", "synthetic_both", "--dataset-arg", "n=60", "--dataset-arg", "dim=4"]


@pytest.fixture(autouse=True)
def _default_logging():
    yield
    setup_logging(0)  # tests below change the level; leave INFO for the next one


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return str(path)


def one_line_error(capsys: pytest.CaptureFixture[str], code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_every_shipped_config_parses() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"avdigits", "reid_synth", "cremad", "ave", "rgbnt201", "rgbnt100",
            "msvr310"} <= names
    for path in CONFIGS:
        exp = load_experiment(path)
        assert exp["dataset"] == path.stem, path


def test_avdigits_config_runs_with_smoke_size_overrides(tmp_path, capsys) -> None:
    code = train_main(["--config", str(ROOT / "configs" / "avdigits.yaml"), "--epochs", "1",
                       "--strategies", "fusion_avg", "--store", str(tmp_path), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "avdigits: test accuracy" in out and "fusion_avg" in out
    assert "[run] fusion_avg seed 0: trained in" in err
    assert "  [epoch] unimodal:audio seed 0: 1/1 loss " in err  # the per-epoch progress line
    assert "not used by this command: num_samples, space, searcher, scheduler" in err


def test_flags_override_the_file(tmp_path) -> None:
    path = write(tmp_path, "dataset: synthetic_both\ndataset_args: {n: 60}\nepochs: 3\n"
                           "lr: 0.01\nseeds: [4, 5]\nencoders: {m1: mlp, m2: mlp}\n"
                           "head: mlp\nembed_dim: 16\n")
    args = parse_args(["--config", path, "--epochs", "1", "--encoder", "m2=gru",
                       "--dataset-arg", "n=90"])
    assert (args.dataset, args.epochs, args.lr, args.seeds) == ("synthetic_both", 1, 0.01, [4, 5])
    assert args.dataset_arg == ["n=60", "n=90"]  # the later one wins
    opts = train_options(args)
    assert opts == {"embed_dim": 16, "encoders": {"m1": "mlp", "m2": "gru"}, "head": "mlp"}
    cfg = TrainConfig(**opts)
    assert cfg.encoders == {"m1": "mlp", "m2": "gru"} and cfg.head == "mlp"


@pytest.mark.parametrize(("text", "needle"), [
    ("epoch: 3\n", "key 'epoch': unknown key; did you mean 'epochs'? valid keys: dataset,"),
    ("zzz: 3\n", "key 'zzz': unknown key; valid keys: dataset, dataset_args,"),
    ("epochs: 0\n", "key 'epochs': epochs must be a positive int but got 0"),
    ("head: big\n", "key 'head': head must be one of ['linear', 'mlp'] but got 'big'"),
    ("device: gpu\n", "key 'device': device must be one of auto, cpu, cuda, mps or cuda:N"),
    ("encoders: {m1: no_such_net}\n", "unknown encoder 'no_such_net'"),
    ("searcher: grid\n", "key 'searcher': searcher must be one of ['tpe', 'random', 'cmaes']"),
    ("scheduler: hyperband\n", "scheduler must be one of ['asha', 'none']"),
    ("seeds: 3\n", "key 'seeds': seeds must be a non-empty list but got 3"),
    ("seeds: [-1]\n", "seed cannot be negative but got -1"),
    ("dataset: nope\n", "key 'dataset': unknown dataset 'nope'"),
    ("dataset: synthetic_both\ndataset_args: {size: 3}\n",
     "dataset 'synthetic_both' has no argument 'size'"),
    ("params: {umt: {lamda: 1}}\n", "unknown umt param 'lamda'"),
    ("params: {nope: {}}\n", "unknown strategy 'nope'"),
    ("space: {umt: {lr: 0.1}}\n", "must be a KEY: 'DIST' string"),
    ("num_samples: 0\n", "num_samples must be an integer >= 1 but got 0"),
    ("pretrained: {m1: 3}\n", "pretrained['m1'] must be the path of a local weights file"),
    ("- a\n- b\n", "must be a mapping of keys"),
    ("epochs: [\n", "not valid YAML (line 2)"),
])
def test_bad_file_is_one_line_naming_file_and_key(tmp_path, capsys, text, needle) -> None:
    path = write(tmp_path, text)
    err = one_line_error(capsys, train_main([*SMALL, "--config", path]))
    assert needle in err and path in err, err


def test_pretrained_goes_with_the_encoders_of_file_or_flags(tmp_path) -> None:
    path = write(tmp_path, "encoders: {m1: resnet18}\npretrained: {m1: w.pth, m2: w.pth}\n")
    assert load_experiment(path)["pretrained"] == {"m1": "w.pth", "m2": "w.pth"}
    args = parse_args([*SMALL, "--config", path, "--encoder", "m2=resnet18"])
    cfg = TrainConfig(**train_options(args))
    assert cfg.pretrained == {"m1": "w.pth", "m2": "w.pth"}
    with pytest.raises(ConfigError, match=r"pretrained\['m2'\] = 'w.pth' needs a timm encoder"):
        TrainConfig(**train_options(parse_args([*SMALL, "--config", path])))


def test_missing_file_and_sweep_file_errors(tmp_path, capsys) -> None:
    err = one_line_error(capsys, train_main(["--config", str(tmp_path / "none.yaml")]))
    assert "cannot read it" in err
    path = write(tmp_path, "space: {umt: {lr: 'uniform:0.01:0.001'}}\n")
    err = one_line_error(capsys, umt_tune.main([*SMALL, "--config", path, "--storage",
                                                str(tmp_path / "s")]))
    assert f"{path}: space:" in err and "inverted" in err


@pytest.mark.parametrize(("flags", "needle"), [
    (["--device", "gpu"], "--device must be one of auto, cpu, cuda, mps or cuda:N"),
    (["--device", "cuda:x"], "cuda:N (e.g. cuda:0)"),
    (["--encoder", "resnet18"], "--encoder 'resnet18' is not MODALITY=NAME"),
    (["--encoder", "m1=no_such_net"], "unknown encoder 'no_such_net'"),
    (["--head", "big"], "head must be one of ['linear', 'mlp'] but got 'big'"),
])
def test_bad_flags_are_one_line(capsys, flags, needle) -> None:
    assert needle in one_line_error(capsys, train_main([*SMALL, *flags]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_one_line(capsys) -> None:
    for device in ("cuda", "cuda:1"):
        err = one_line_error(capsys, train_main([*SMALL, "--device", device]))
        assert f"device '{device}' was asked for but no CUDA device is available" in err


def test_sweep_setup_takes_the_file(tmp_path) -> None:
    path = write(tmp_path, "dataset: synthetic_both\ndataset_args: {n: 60, dim: 4}\n"
                           "epochs: 3\nlr: 0.01\nembed_dim: 16\nnum_samples: 5\nseeds: [2]\n"
                           "encoders: {m1: mlp}\nparams: {umt: {lambda_distill: 10}}\n"
                           "space: {umt: {lambda_distill: 'choice:0,10'}}\nscheduler: asha\n")
    argv = ["--config", path, "--storage", str(tmp_path / "s"), "--head", "mlp"]
    s = common.setup(umt_tune.SCRIPT, common.parse_with_config(common.parser(umt_tune.SCRIPT),
                                                               argv))
    assert (s.base.epochs, s.base.lr, s.base.embed_dim, s.base.head) == (3, 0.01, 16, "mlp")
    assert s.base.encoders == {"m1": "mlp"} and s.seeds == (2,)
    assert s.sweep.num_samples == 5 and s.params == {"umt": {"lambda_distill": 10}}
    assert {p.key: p.values for p in s.sweep.space}["lambda_distill"] == (0, 10)
    smoke = common.setup(umt_tune.SCRIPT, common.parse_with_config(
        common.parser(umt_tune.SCRIPT), [*argv, "--smoke-test", "--num-samples", "3"]))
    assert smoke.base.epochs == umt_tune.SCRIPT.smoke.epochs  # the file's budget gives way
    assert smoke.sweep.num_samples == 3 and smoke.base.lr == 0.01  # flags and the rest stay


def test_searcher_and_scheduler_reach_the_sweep_config(tmp_path, capsys) -> None:
    argv = [*SMALL, "--storage", str(tmp_path), "--searcher", "random", "--scheduler", "none"]
    args = common.parse_with_config(common.parser(umt_tune.SCRIPT), argv)
    assert common.search_hooks(args) == {"searcher": "random", "scheduler": "none"}
    sweep = common.setup(umt_tune.SCRIPT, args).sweep
    assert sweep is not None and (sweep.searcher, sweep.scheduler) == ("random", "none")
    path = write(tmp_path, "searcher: tpe\nscheduler: asha\n")
    args = common.parse_with_config(common.parser(umt_tune.SCRIPT), [*SMALL, "--config", path])
    assert set(common.search_hooks(args).values()) <= {"tpe", "asha"}
    ens = common.parse_with_config(common.parser(unimodal_ensembles.SCRIPT),
                                   [*SMALL, "--config", path])
    assert not hasattr(ens, "searcher")
    assert "not used by this command: searcher, scheduler" in capsys.readouterr().err


def test_quiet_and_verbose(tmp_path, capsys) -> None:
    argv = [*SMALL, "--strategies", "fusion_avg", "--epochs", "1", "--store", str(tmp_path)]
    assert train_main([*argv, "-q"]) == 0
    out, err = capsys.readouterr()
    assert "[run]" not in err and "[epoch]" not in err and "synthetic_both: test" in out
    assert ray_utils._quiet() == {"logging_level": 30, "log_to_driver": False}
    assert train_main([*argv, "-v"]) == 0
    assert "[run] fusion_avg seed 0: reused" in capsys.readouterr().err
    assert ray_utils._quiet() == {"logging_level": 20, "log_to_driver": True}


def test_console_scripts_point_at_main_functions(capsys) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"fusion-train", "fusion-tune", "fusion-ensembles", "fusion-report"} <= set(scripts)
    for name, target in scripts.items():
        module, _, func = target.partition(":")
        entry = getattr(importlib.import_module(module), func)
        try:
            code = entry(["--help"])  # sweeps/tune.py prints its docstring without --strategy
        except SystemExit as exit_:
            code = exit_.code
        assert code == 0 and "--" in capsys.readouterr().out, name
