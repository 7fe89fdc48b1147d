"""Experiment files: ``--config experiment.yaml`` for ``python -m trainers`` and every sweep.

The file is read ONCE, at the edge: every key is checked here with the validators the frozen
configs use (``TrainConfig``, the strategies' ``Params``, the dataset factories' signatures),
and an unknown key or a bad value is one :class:`ConfigError` line naming the file, the key and
the fix. The values then become the command line's defaults, so a flag given on the command
line overrides the file (``--dataset-arg`` / ``--encoder`` entries add to the file's mapping,
a later entry winning). Keys (all optional)::

    dataset: cremad                 # a registered dataset
    dataset_args: {root: /data/CREMA-D, num_frames: 1}
    encoders: {audio: resnet18, visual: resnet18}   # per modality: ours or any timm name
    pretrained: {visual: weights/resnet18.pth}      # local weights files (nothing downloaded)
    head: linear                    # any other TrainConfig field: epochs, lr, batch_size,
    device: auto                    # optimizer, momentum, weight_decay, embed_dim, ...
    seeds: [0, 1, 2]
    strategies: [unimodal, ume, reconboost]         # python -m trainers
    params: {reconboost: {lambda_boost: 0.25}}      # per-strategy params
    num_samples: 16                 # sweeps: trials, search space per strategy, searcher
    space: {umt: {lambda_distill: "choice:0,1,10,20,50,100"}}
    searcher: tpe                   # tpe | random | cmaes
    scheduler: asha                 # asha | none
    budget: 3                       # sweeps: compute budget in default runs (0: none)

A command uses the keys that apply to it and says in one log line which it did not use.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from trainers.config import ConfigError, TrainConfig, at_least, check_device, choice, non_negative
from trainers.logs import add_verbosity_options, setup_logging

LOG = logging.getLogger(__name__)

SEARCHERS = ("tpe", "random", "cmaes")
SCHEDULERS = ("asha", "none")
TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig) if f.name not in ("strategy", "params",
                                                                         "seed"))
RUN_KEYS = ("dataset", "dataset_args", "seeds", "strategies", "params", "num_samples", "space",
            "searcher", "scheduler", "budget")
KEYS = RUN_KEYS + TRAIN_KEYS
# the budget of a full run: --smoke-test replaces it with its own tiny one
BUDGET_KEYS = ("epochs", "num_samples", "seeds", "embed_dim", "hidden_dim", "space")
# file key -> command-line dest, where they differ
DESTS = {"dataset_args": "dataset_arg", "encoders": "encoder", "num_threads": "threads",
         "params": "strategy_params", "space": "space_file"}


def load_experiment(path: str | Path) -> dict[str, Any]:
    """The file's validated values; raises a one-line :class:`ConfigError`."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"--config {str(path)!r}: cannot read it ({err.strerror or err}); "
                          "pass the path of an experiment YAML file, e.g. configs/avdigits.yaml"
                          ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: "
                          f"{getattr(err, 'problem', None) or err}") from None
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: must be a mapping of keys (dataset:, epochs: ...) but is "
                          f"a {type(data).__name__}")
    for key, value in data.items():
        try:
            check_key(key, value)
        except (ConfigError, KeyError, ValueError) as err:
            msg = err.args[0] if err.args else err
            raise ConfigError(f"{path}: key {key!r}: {msg}") from None
    try:
        TrainConfig(**{k: data[k] for k in TRAIN_KEYS if k in data and k != "pretrained"})
        if "dataset" in data:
            _check_dataset_args(data["dataset"], data.get("dataset_args", {}))
    except (ConfigError, ValueError) as err:
        raise ConfigError(f"{path}: {err.args[0] if err.args else err}") from None
    return dict(data)


def check_key(key: Any, value: Any) -> None:
    """One key of an experiment file; raises ConfigError (or KeyError) saying what is valid."""
    if key not in KEYS:
        near = difflib.get_close_matches(str(key), KEYS, n=1)
        raise ConfigError(f"unknown key; {f'did you mean {near[0]!r}? ' if near else ''}"
                          f"valid keys: {', '.join(KEYS)}")
    if key == "pretrained":  # which encoder it fits: checked with --encoder, when runs are set up
        _check_mapping(key, value)
    elif key in TRAIN_KEYS:
        TrainConfig(**{key: value})
    elif key == "dataset":
        from trainers.data import DATASETS, list_datasets

        list_datasets()  # registers the built-in datasets
        DATASETS.get(value)
    elif key == "seeds":
        _list(key, value, "e.g. seeds: [0, 1, 2]")
        for seed in value:
            non_negative("seed", seed, int)
    elif key == "strategies":
        from trainers.strategies import strategy_class

        for name in _list(key, value, "e.g. strategies: [unimodal, ume]"):
            strategy_class(name)
    elif key == "num_samples":
        at_least(key, value, 1, "a sweep needs at least one trial")
    elif key == "budget":
        non_negative(key, value, float)
    elif key in ("searcher", "scheduler"):
        choice(key, value, SEARCHERS if key == "searcher" else SCHEDULERS)
    else:  # dataset_args, params, space: mappings
        _check_mapping(key, value)


def _list(key: str, value: Any, example: str) -> Sequence[Any]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key} must be a non-empty list but got {value!r}; {example}")
    return value


def _check_mapping(key: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a mapping but got {value!r}; e.g. "
                          + {"dataset_args": "dataset_args: {root: /data/x}",
                             "params": "params: {umt: {lambda_distill: 50}}",
                             "space": "space: {umt: {lr: 'loguniform:1e-4:1e-2'}}",
                             "pretrained": "pretrained: {rgb: weights/resnet50.pth}"}[key])
    if key == "pretrained":
        bad = [m for m, f in value.items() if not isinstance(f, str) or not f]
        if bad:
            raise ConfigError(f"pretrained[{bad[0]!r}] must be the path of a local weights "
                              f"file but got {value[bad[0]]!r}")
    if key in ("dataset_args", "pretrained"):
        return
    from trainers.strategies import strategy_class

    for strategy, entries in value.items():
        cls = strategy_class(strategy)
        if not isinstance(entries, Mapping):
            raise ConfigError(f"{key}[{strategy!r}] must be a mapping but got {entries!r}")
        if key == "params":  # warm_start: true = from the unimodal runs (sweeps, compare)
            cls.make_params({k: v for k, v in entries.items()
                             if not (k == "warm_start" and v is True)})
        else:
            bad = [k for k, v in entries.items() if not isinstance(v, str)]
            if bad:
                raise ConfigError(f"space[{strategy!r}][{bad[0]!r}] must be a KEY: 'DIST' string "
                                  "such as 'loguniform:1e-4:1e-2' or 'choice:0,1,10' but got "
                                  f"{entries[bad[0]]!r}")


def _check_dataset_args(name: str, args: Mapping[str, Any]) -> None:
    from trainers.data import DATASETS, check_arguments

    check_arguments(name, DATASETS.get(name), dict(args), complete=False)


# --- the command line -------------------------------------------------------------------------


def add_experiment_options(p: argparse.ArgumentParser, file_keys: Sequence[str] = ()) -> None:
    """``--config``, ``--encoder``, ``--head``, ``--device`` and ``-q`` / ``-v``; ``file_keys``:
    the keys without a flag that the command uses (``params``, ``space``)."""
    p.set_defaults(file_keys=tuple(DESTS.get(k, k) for k in file_keys))
    p.add_argument("--config", metavar="YAML", default=None,
                   help="experiment file (see configs/); command-line flags override it")
    p.add_argument("--encoder", action="append", default=[], metavar="MODALITY=NAME",
                   help="encoder of one modality: cnn, mlp, gru, lstm or any timm model name "
                        "(random init; local weights via the file's pretrained:), repeatable")
    p.add_argument("--head", default=None, help="classifier head: linear (default) or mlp")
    p.add_argument("--device", default=None, metavar="auto|cpu|cuda|cuda:N|mps",
                   help="where runs train (default auto)")
    add_verbosity_options(p)


def parse_with_config(p: argparse.ArgumentParser,
                      argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; the ``--config`` file's values are the defaults the flags override.

    Logging is set up from ``-q`` / ``-v`` on the way. With ``--smoke-test`` the file's budget
    keys give way to the script's tiny budget. Raises :class:`ConfigError`.
    """
    p.set_defaults(train_options={}, strategy_params={}, space_file={})
    args = p.parse_args(argv)
    setup_logging(args.verbosity)
    if args.config:
        exp = load_experiment(args.config)
        if getattr(args, "smoke_test", False):
            exp = {k: v for k, v in exp.items() if k not in BUDGET_KEYS}
        dests = {a.dest for a in p._actions} | set(p.get_default("file_keys") or ())
        p.set_defaults(**_defaults(exp, dests, args.config))
        args = p.parse_args(argv)
    return args


def _defaults(exp: Mapping[str, Any], dests: set[str], path: str) -> dict[str, Any]:
    out: dict[str, Any] = {"train_options": {}, "strategy_params": {}, "space_file": {}}
    unused = []
    for key, value in exp.items():
        dest = DESTS.get(key, key)
        if key == "dataset_args":
            value = [f"{k}={json.dumps(v)}" for k, v in value.items()]
        elif key == "encoders":
            value = [f"{m}={name}" for m, name in value.items()]
        if dest in dests:
            out[dest] = value
        elif key in TRAIN_KEYS:
            out["train_options"][key] = value
        else:
            unused.append(key)
    if unused:
        LOG.info("%s: not used by this command: %s", path, ", ".join(unused))
    return out


def train_options(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields from the file and ``--encoder`` / ``--head`` / ``--device``."""
    out = dict(args.train_options)
    encoders = {}
    for item in args.encoder:
        modality, sep, name = item.partition("=")
        if not sep or not modality.strip() or not name.strip():
            raise ConfigError(f"--encoder {item!r} is not MODALITY=NAME; e.g. --encoder "
                              "image=resnet18 (any timm model name, or cnn, mlp, gru, lstm)")
        encoders[modality.strip()] = name.strip()
    if encoders:
        out["encoders"] = encoders
    for key in ("head", "device"):
        if getattr(args, key) is not None:
            out[key] = getattr(args, key)
    if "device" in out:
        check_device("--device", out["device"])
    return out
