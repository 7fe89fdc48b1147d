"""The command line shared by the sweep scripts: parsed and validated once, here, at the edge.

Everything a user can get wrong (dataset, storage, search space, ``--num-samples``, address) is
checked before Ray starts and reported as one ``error: ...`` line (exit code 2). Ray is started
(or joined with ``--address``) for the script's body only and shut down afterwards, also on
error or Ctrl-C. The body returns the summary table, which is printed last.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from orchestrator.aggregate import (
    final_runs,
    runs_rows,
    strategy_bases,
    sweep_rows,
    unimodal_rows,
    write_and_summarise,
)
from orchestrator.jobs import JobsFailed, StorageError, default_storage, prepare_storage
from orchestrator.jobs import train_unimodal as train_unimodal_jobs
from orchestrator.ray_utils import ClusterUnreachable, check_address, ray_session
from orchestrator.space import SearchSpace, SpaceError
from orchestrator.sweep import (
    SweepConfig,
    SweepContext,
    best_trial,
    describe,
    run_sweep,
)
from orchestrator.train_fn import DataRef, JobResources
from trainers.__main__ import add_dataset_options
from trainers.config import ConfigError, TrainConfig
from trainers.data import DataBundle, DataError, parse_dataset_args, with_cache_default
from trainers.runs import RunRecord
from trainers.storage import Storage

USER_ERRORS = (ConfigError, DataError, StorageError, ClusterUnreachable, JobsFailed)


@dataclass(frozen=True)
class Budget:
    """How much a script trains by default (the full run, or ``--smoke-test``)."""

    epochs: int
    num_samples: int
    seeds: tuple[int, ...]
    model: Mapping[str, int] = field(default_factory=dict)  # embed_dim, hidden_dim...


@dataclass(frozen=True)
class Script:
    """One sweep script: its strategy and search spaces, budgets and body."""

    doc: str
    strategy: str  # the strategy it tunes, or "" for no sweep
    full: Budget
    smoke: Budget
    space: Mapping[str, str] = field(default_factory=dict)
    smoke_space: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, object] = field(default_factory=dict)  # strategy params, e.g. warm start


@dataclass(frozen=True)
class Setup:
    """The validated arguments of one invocation."""

    data_ref: DataRef
    data: DataBundle
    base: TrainConfig
    seeds: tuple[int, ...]
    storage: Storage
    resources: JobResources
    address: str | None
    resume: bool
    sweep: SweepConfig | None


def parser(script: Script) -> argparse.ArgumentParser:
    head, _, rest = script.doc.partition("\n\n")
    p = argparse.ArgumentParser(description=head, epilog=rest,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (host:port, ray://host:port or auto); default: "
                        "start a local Ray (dashboard on 127.0.0.1) and stop it at the end")
    add_dataset_options(p)
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help=f"seeds of the final runs (mean ± std); default {list(script.full.seeds)}"
                        + (", the sweep itself uses the first" if script.strategy else ""))
    p.add_argument("--storage", default=default_storage(),
                   help="run store and results: a folder, an NFS/EFS mount or a URI such as "
                        "s3://bucket/prefix, shared by all nodes (default: $FUSION_STORAGE or "
                        "./results)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs per run (default {script.full.epochs})")
    p.add_argument("--cpus-per-job", type=float, default=1.0,
                   help="CPUs of each training worker (default 1)")
    p.add_argument("--gpus-per-job", default="auto", metavar="auto|N",
                   help="GPUs of each training worker; auto (default): 1 when the cluster has "
                        "GPUs or its autoscaler can add GPU nodes, else 0")
    p.add_argument("--workers-per-job", type=int, default=1, metavar="N",
                   help="Train workers per job (N > 1: data-parallel DDP, one GPU each when "
                        "GPUs are used; default 1)")
    p.add_argument("--smoke-test", action="store_true",
                   help="tiny models, epochs and trials: finishes in about a minute")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run of the same arguments (finished runs are "
                        "always reused; interrupted Train runs go on from their checkpoints)")
    if script.strategy:
        p.add_argument("--num-samples", type=int, default=None,
                       help=f"trials (default {script.full.num_samples})")
        p.add_argument("--space", action="append", default=[], metavar="KEY=DIST",
                       help="override one search-space entry, e.g. lr=loguniform:1e-4:1e-2 or "
                            "lambda_distill=choice:0,1,10 (repeatable); default: "
                            + " ".join(f"{k}={v}" for k, v in script.space.items()))
    return p


def _space(script: Script, args: argparse.Namespace) -> SearchSpace:
    space = dict(script.smoke_space if args.smoke_test else script.space)
    for item in args.space:
        key, sep, dist = item.partition("=")
        if not sep:
            raise SpaceError(f"--space {item!r} is not KEY=DIST; e.g. --space lr=uniform:0.001:0.1")
        space[key.strip()] = dist.strip()
    return SearchSpace.from_dict(script.strategy, space)


def setup(script: Script, args: argparse.Namespace) -> Setup:
    """Validate everything before Ray starts; raises one of :data:`USER_ERRORS`."""
    budget = script.smoke if args.smoke_test else script.full
    if args.address:
        check_address(args.address)
    data_ref = DataRef(args.dataset, parse_dataset_args(args.dataset_arg))
    epochs = budget.epochs if args.epochs is None else args.epochs  # 0 is an error, not "unset"
    base = TrainConfig(epochs=epochs, **budget.model)
    seeds = tuple(args.seeds if args.seeds is not None else budget.seeds)
    for seed in seeds:
        base.replace(seed=seed)  # validates
    sweep = None
    if script.strategy:
        samples = args.num_samples if args.num_samples is not None else budget.num_samples
        sweep = SweepConfig(_space(script, args), num_samples=samples, seed=seeds[0])
    resources = JobResources(cpus_per_worker=args.cpus_per_job,
                             gpus_per_worker=parse_gpus(args.gpus_per_job),
                             workers=args.workers_per_job)
    storage = prepare_storage(args.storage)
    data_ref = DataRef(data_ref.name, with_cache_default(data_ref.name, data_ref.kwargs, storage))
    return Setup(data_ref, data_ref.load(), base, seeds, storage,
                 resources, args.address, args.resume, sweep)


def parse_gpus(text: str) -> float | None:
    """``auto`` -> None (decided once Ray is up), else a number of GPUs >= 0."""
    if str(text).strip().lower() == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--gpus-per-job must be auto or a number >= 0 but got {text!r}; "
                          "e.g. --gpus-per-job 1") from None


def train_unimodal(s: Setup) -> dict[int, dict[str, RunRecord]]:
    return train_unimodal_jobs(s.data_ref, s.data, s.base, s.seeds, s.storage, s.resources)


def tune_and_report(s: Setup, extra: Mapping[str, object]) -> str:
    """Teachers / warm starts first, then the sweep, then the best config per seed on test."""
    assert s.sweep is not None
    space, spec = s.sweep.space, s.data.spec
    unimodal = train_unimodal(s)
    bases = strategy_bases(space.strategy, s.base, unimodal, extra)
    ctx = SweepContext(s.data_ref, spec, bases[s.seeds[0]], space, s.storage, s.resources)
    outcomes = run_sweep(ctx, s.sweep, s.resume)
    print(f"\n{space.strategy} sweep, {len(outcomes)} trial(s) (val = best validation score):")
    print(describe(outcomes), flush=True)
    rows = {**unimodal_rows(unimodal, s.base, s.data), **sweep_rows(outcomes, spec)}
    best = best_trial(outcomes)
    if best is None:
        print(f"no {space.strategy} trial finished: nothing to evaluate on test")
    else:
        configs = {seed: space.apply(cfg, best.values) for seed, cfg in bases.items()}
        finals = final_runs(ctx, configs, s.data)
        rows.update(runs_rows(finals, configs, spec, {best.job.name: best.trial_id}))
    return write_and_summarise(rows, s.storage)


def main(script: Script, body: Callable[[Setup], str], argv: list[str] | None = None) -> int:
    """Parse, validate, run ``body`` inside a Ray session and print its table."""
    args = parser(script).parse_args(argv)
    t0 = time.perf_counter()
    try:
        s = setup(script, args)
        with ray_session(s.address):
            table = body(s)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"interrupted: {err or 'run again with the same arguments and --resume'}",
              file=sys.stderr)
        return 130
    print(f"\n{table}\n({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0
