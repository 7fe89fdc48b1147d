"""The command line shared by the sweep scripts: parsed and validated once, here, at the edge.

Everything a user can get wrong (dataset, storage, search space, ``--num-samples``, address) is
checked before Ray starts and reported as one ``error: ...`` line (exit code 2). Ray is started
(or joined with ``--address``) for the script's body only and shut down afterwards, also on
error or Ctrl-C. The body returns the summary table, which is printed last.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from orchestrator.aggregate import (
    final_runs,
    runs_rows,
    strategy_bases,
    sweep_rows,
    unimodal_rows,
    write_and_summarise,
)
from orchestrator.choice import chosen, describe, epochs_trained
from orchestrator.jobs import JobsFailed, StorageError, default_storage, prepare_storage
from orchestrator.jobs import train_unimodal as train_unimodal_jobs
from orchestrator.ray_utils import ClusterUnreachable, check_address, ray_session
from orchestrator.space import SearchSpace, SpaceError
from orchestrator.sweep import SweepConfig, SweepContext, run_sweep
from orchestrator.train_fn import DataRef, JobResources
from trainers.__main__ import add_dataset_options
from trainers.config import ConfigError, TrainConfig
from trainers.data import DataBundle, DataError, parse_dataset_args, with_cache_default
from trainers.experiment import (
    SCHEDULERS,
    SEARCHERS,
    add_experiment_options,
    parse_with_config,
    train_options,
)
from trainers.layout import DEFAULT_ROOT, Layout, layout_warnings
from trainers.runs import RunRecord
from trainers.storage import Storage

USER_ERRORS = (ConfigError, DataError, StorageError, ClusterUnreachable, JobsFailed)
LOG = logging.getLogger("sweeps")


@dataclass(frozen=True)
class Budget:
    """How much a script trains by default (the full run, or ``--smoke-test``)."""

    epochs: int
    num_samples: int
    seeds: tuple[int, ...]
    model: Mapping[str, int] = field(default_factory=dict)  # embed_dim, hidden_dim...
    seeds_per_trial: int = 1  # sweeps: the first K of ``seeds`` score every trial
    compute: float = 3.0  # sweeps: the budget in default runs (--budget; 0: num_samples trials)


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
    storage: Storage  # the run store, ``layout.runs``
    resources: JobResources
    address: str | None
    resume: bool
    sweep: SweepConfig | None
    layout: Layout  # the storage root (``--storage``; its ``smoke/`` layout for --smoke-test)
    params: Mapping[str, Mapping[str, object]] = field(default_factory=dict)  # per strategy


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
    p.add_argument("--storage", default=None,
                   help="storage root (runs/, results/, reports/, _ray/): a folder, an NFS/EFS "
                        "mount or a URI such as s3://bucket/prefix, shared by all nodes "
                        f"(default: $FUSION_STORAGE or {DEFAULT_ROOT}; --smoke-test uses its "
                        "smoke/ folder)")
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
                   help="tiny models, epochs and trials: finishes in about a minute; written "
                        "under <storage>/smoke, apart from full runs")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run of the same arguments (finished runs are "
                        "always reused; interrupted Train runs go on from their checkpoints)")
    if script.strategy:
        p.add_argument("--num-samples", type=int, default=None,
                       help=f"trials (default {script.full.num_samples})")
        p.add_argument("--budget", type=float, default=None, metavar="RUNS",
                       help="compute budget of the sweep in default runs (one untuned run's "
                            "epochs, one seed): trials start while it can pay for them, ASHA's "
                            "early stops buy more trials, --num-samples stays the cap; 0: no "
                            f"budget (default {script.full.compute:g})")
        p.add_argument("--min-gain", type=float, default=None, metavar="PT",
                       help="validation points another configuration must gain over the "
                            "untuned one to be chosen (default "
                            f"{SweepConfig.__dataclass_fields__['min_gain'].default:g}; 0: the "
                            "best trial whatever its margin)")
        p.add_argument("--seeds-per-trial", type=int, default=None, metavar="K",
                       help="seeds each trial trains, one after the other; a trial's score is "
                            "the mean of their validation scores (the first K of --seeds; "
                            f"default {script.full.seeds_per_trial})")
        p.add_argument("--space", action="append", default=[], metavar="KEY=DIST",
                       help="override one search-space entry, e.g. lr=loguniform:1e-4:1e-2 or "
                            "lambda_distill=choice:0,1,10 (repeatable); default: "
                            + " ".join(f"{k}={v}" for k, v in script.space.items()))
        p.add_argument("--searcher", choices=SEARCHERS, default=None,
                       help="Optuna sampler of the sweep (default tpe)")
        p.add_argument("--scheduler", choices=SCHEDULERS, default=None,
                       help="trial scheduler: asha stops bad trials early (default), none")
    add_experiment_options(p, file_keys=("params", "space") if script.strategy else ())
    return p


def _space(script: Script, args: argparse.Namespace) -> SearchSpace:
    space = dict(script.smoke_space if args.smoke_test else script.space)
    if script.strategy in args.space_file:  # the --config file's entries, checked on their own
        space.update(args.space_file[script.strategy])
        try:
            SearchSpace.from_dict(script.strategy, space)
        except SpaceError as err:
            raise SpaceError(f"{args.config}: space: {err}") from None
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
    base = TrainConfig(epochs=epochs, **{**budget.model, **train_options(args)})
    seeds = tuple(args.seeds if args.seeds is not None else budget.seeds)
    for seed in seeds:
        base.replace(seed=seed)  # validates
    sweep = None
    if script.strategy:
        samples = args.num_samples if args.num_samples is not None else budget.num_samples
        per_trial = budget.seeds_per_trial if args.seeds_per_trial is None \
            else args.seeds_per_trial
        if args.seeds is not None and args.seeds_per_trial is None:
            per_trial = min(per_trial, len(seeds))  # --seeds 3: one seed per trial, as asked
        sweep = SweepConfig(_space(script, args), num_samples=samples, seed=seeds[0],
                            seeds_per_trial=per_trial, **sweep_knobs(args, budget),
                            **search_hooks(args))
        if len(seeds) < sweep.seeds_per_trial:
            raise ConfigError(f"--seeds-per-trial {sweep.seeds_per_trial} needs as many --seeds "
                              f"but got {list(seeds)}; e.g. --seeds "
                              + " ".join(str(seeds[0] + i) for i in range(sweep.seeds_per_trial)))
    resources = JobResources(cpus_per_worker=args.cpus_per_job,
                             gpus_per_worker=parse_gpus(args.gpus_per_job),
                             workers=args.workers_per_job)
    layout, runs = script_layout(args)
    # every job, seed and trial on this storage shares one preprocessing cache
    data_ref = DataRef(data_ref.name, with_cache_default(data_ref.name, data_ref.kwargs,
                                                         layout.root))
    return Setup(data_ref, data_ref.load(), base, seeds, runs, resources, args.address,
                 args.resume, sweep, layout, args.strategy_params)


def sweep_knobs(args: argparse.Namespace, budget: Budget) -> dict[str, float]:
    """``--budget`` (default: the script's) and ``--min-gain`` when given (SweepConfig checks
    their values)."""
    knobs = {"budget": budget.compute if args.budget is None else args.budget}
    return knobs | ({"min_gain": args.min_gain} if args.min_gain is not None else {})


def search_hooks(args: argparse.Namespace) -> dict[str, str]:
    """``--searcher`` / ``--scheduler`` (or the file's) as SweepConfig keywords (it checks
    their values)."""
    return {k: getattr(args, k) for k in ("searcher", "scheduler") if getattr(args, k)}


def script_layout(args: argparse.Namespace) -> tuple[Layout, Storage]:
    """The layout of ``--storage`` (default :func:`default_storage`), or its ``smoke/`` layout
    for ``--smoke-test``, and its run store, checked writable; warnings about older layouts
    (or a root inside Ray's runtime-env cache) are printed, one line each."""
    main = Layout.open(args.storage or default_storage())
    layout = main.smoke() if args.smoke_test else main
    prepare_storage(main.root.location)  # errors name the root the user gave
    runs = layout.runs
    runs.makedirs()
    for line in layout_warnings(main, is_default=args.storage is None):
        print(line, file=sys.stderr, flush=True)
    return layout, runs


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
    extra = {**extra, **s.params.get(space.strategy, {})}
    bases = strategy_bases(space.strategy, s.base, unimodal, extra)
    trial_seeds = s.seeds[:s.sweep.seeds_per_trial]
    ctx = SweepContext(s.data_ref, spec, bases[trial_seeds[0]], space, s.storage, s.resources,
                       more=tuple(bases[seed] for seed in trial_seeds[1:]))
    outcomes = run_sweep(ctx, s.sweep, s.resume)
    spent = epochs_trained(outcomes)
    budget = f"budget {s.sweep.budget:g} default runs" if s.sweep.budget else "no budget"
    print(f"\n{space.strategy} sweep, {len(outcomes)} trial(s), {spent} epochs trained "
          f"({budget}; val = best validation score):")
    print(describe(outcomes), flush=True)
    rows = {**unimodal_rows(unimodal, s.base, s.data), **sweep_rows(outcomes, spec)}
    best = chosen(ctx, s.sweep, outcomes)
    if best is None:
        LOG.warning("no %s trial finished: nothing to evaluate on test", space.strategy)
    else:
        configs = {seed: space.apply(cfg, best.values) for seed, cfg in bases.items()}
        finals = final_runs(ctx, configs, s.data)
        rows.update(runs_rows(finals, configs, spec, {best.job.name: best.trial_id},
                              best.values))
    return write_and_summarise(rows, s.layout.results)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler ending the job) stops the script like Ctrl-C does: Ray is
    shut down, the state kept, exit 130 with the ``--resume`` line (Python's default would end
    the process on the spot). Only the main thread may install handlers; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(script: Script, body: Callable[[Setup], str], argv: list[str] | None = None) -> int:
    """Parse, validate, run ``body`` inside a Ray session and print its table."""
    t0 = time.perf_counter()
    try:
        args = parse_with_config(parser(script), argv)
        with terminate_as_interrupt():
            s = setup(script, args)
            with ray_session(s.address):
                table = body(s)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"interrupted: {str(err) or 'run again with the same arguments and --resume'}",
              file=sys.stderr)
        return 130
    print(f"\n{table}\n({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0
