"""``python -m trainers``: train and compare strategies locally (plain PyTorch, no Ray).

Example: ``python -m trainers --dataset avdigits --seeds 0 1 2``

As in the sweep scripts, a file-backed dataset (one whose loader takes ``cache_dir``: the reid
benchmarks, ``cremad``, ``ave``) decodes its files once into ``ROOT/data-cache``, shared by every
later run on that storage root (:mod:`trainers.data.cache`); ``--dataset-arg cache_dir=PATH``
puts the cache elsewhere and ``--dataset-arg cache_dir=null`` turns it off.

Exit status: 0 when every run finished, 1 when some run failed (its loss diverged, or a unimodal
run it needs did; the others still run and the table is printed), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import torch

from trainers.compare import (
    DEFAULT_STRATEGIES,
    TABLE_METRICS,
    FailedRun,
    format_table,
    local_runner,
    plan_and_run,
    summary_rows,
)
from trainers.config import ConfigError, TrainConfig
from trainers.data import (
    DataBundle,
    DataError,
    create_dataset,
    list_datasets,
    parse_dataset_args,
    with_cache_default,
)
from trainers.experiment import add_experiment_options, parse_with_config, train_options
from trainers.layout import DEFAULT_ROOT, RUNS, STORAGE_ENV, Layout, layout_warnings
from trainers.seed import resolve_device
from trainers.storage import Storage, StorageError
from trainers.strategies import list_strategies

LOG = logging.getLogger("trainers")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m trainers", description=__doc__.splitlines()[0])
    add_dataset_options(p)
    p.add_argument("--strategies", nargs="+", default=None,
                   help=f"any of {', '.join(list_strategies())} (default: all for the task)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", type=int, default=10,
                   help="epochs per run (not reconboost: stages x (E1 + E2), its own params)")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="learning rate (not reconboost: its own SGD lr, default 0.01)")
    p.add_argument("--batch-size", type=int, default=64)
    add_storage_option(p)
    p.add_argument("--store", default=None, help=argparse.SUPPRESS)  # deprecated: the run store
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    add_experiment_options(p, file_keys=("params",))
    return parse_with_config(p, argv)


def add_storage_option(p: argparse.ArgumentParser) -> None:
    """``--storage ROOT``, the same root (and default) for every command: runs/, results/,
    reports/ and _ray/ under it (:mod:`trainers.layout`)."""
    p.add_argument("--storage", default=None,
                   help="storage root: finished runs are kept (and reused) in its runs/ folder, "
                        "Parquet results in results/, reports in reports/; a folder or a URI "
                        f"such as s3://bucket/prefix (default: ${STORAGE_ENV} or {DEFAULT_ROOT})")


def storage_layout(storage: str | None, store: str | None = None) -> tuple[Layout, Storage]:
    """The layout of ``--storage`` and its run store (``store``, a run store named directly,
    replaces ``ROOT/runs``); older layouts are named on stderr, one line each."""
    layout = Layout.open(storage)
    if store is not None:
        return layout, Storage.open(store)
    for line in layout_warnings(layout, is_default=storage is None):
        print(line, file=sys.stderr, flush=True)
    return layout, layout.runs


def default_dataset() -> str:
    return "avdigits" if "avdigits" in list_datasets() else "synthetic_both"


def add_dataset_options(p: argparse.ArgumentParser, required: bool = False) -> None:
    """``--dataset NAME`` and repeatable ``--dataset-arg KEY=VALUE`` (the factory's keyword
    arguments, e.g. ``root=/data/RGBNT201``), shared by every command line of the project."""
    default = None if required else default_dataset()
    p.add_argument("--dataset", required=required, default=default,
                   help=f"one of {', '.join(list_datasets())}"
                        + (f" (default {default})" if default else ""))
    p.add_argument("--dataset-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="argument of the dataset's factory, repeatable; values are read as JSON "
                        "when they parse, e.g. --dataset-arg root=/data/RGBNT201 "
                        "--dataset-arg image_size=[256,128] (see docs/datasets.md)")


def dataset_from_args(args: argparse.Namespace, storage_root: object = None) -> DataBundle:
    """The dataset of ``--dataset`` / ``--dataset-arg``; with ``storage_root``, the cache
    default of :func:`~trainers.data.with_cache_default` (``<storage root>/data-cache``)."""
    kwargs = parse_dataset_args(args.dataset_arg)
    if storage_root is not None:
        kwargs = with_cache_default(args.dataset, kwargs, storage_root)
    return create_dataset(args.dataset, **kwargs)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        data = dataset_from_args(args, Layout.open(args.storage).root)
        strategies = args.strategies or list(DEFAULT_STRATEGIES[data.spec.task])
        unknown = [s for s in strategies if s not in list_strategies()]
        if unknown:
            raise ConfigError(f"unknown strategy {unknown[0]!r}; valid strategies: "
                              f"{', '.join(list_strategies())}")
        base = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                           num_threads=args.threads, **train_options(args))
        resolve_device(base.device)  # here, not after the first run
        if args.store is not None:
            print(f"warning: --store is deprecated; pass --storage ROOT (runs go to "
                  f"ROOT/{RUNS})", file=sys.stderr)
        runs = storage_layout(args.storage, args.store)[1].check_writable()
    except (ConfigError, DataError, KeyError, RuntimeError, StorageError) as err:
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    runner = local_runner(runs.location, log=LOG.info)
    results = plan_and_run(data, base, strategies, args.seeds, runner, args.strategy_params,
                           log=LOG.info)
    elapsed = time.perf_counter() - t0
    for metric in TABLE_METRICS[data.spec.task]:
        print(f"\n{data.spec.name}: test {metric} (%), mean ± std over seeds {args.seeds}, "
              f"selected on val ({elapsed:.1f} s; runs in {runs}/)")
        rows = summary_rows(results, metric=metric)
        print(format_table(rows, ["fused", *data.spec.modality_names]))
    failed = sum(isinstance(rec, FailedRun) for _, rec in results)
    if failed:
        print(f"error: {failed} of {len(results)} run(s) failed (see the [run] lines above)",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
