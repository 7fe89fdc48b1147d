"""``python -m orchestrator <command>``: diagnostics and reports over finished runs.

- ``report [ROOT] [--out DIR] [--dataset NAME]``: ``ROOT/reports/report.md`` + PNGs from the
  Parquet parts in ``ROOT/results`` (``ROOT`` may also be a results folder itself);
- ``diagnose --dataset NAME [--storage ROOT]``: probes, MIR/DMC, robustness and the selection
  trick for the finished runs in ``ROOT/runs``, written as rows into ``ROOT/results``;
- ``recommend --dataset NAME [--storage ROOT] [--seed S] [--epochs N]``: train (or reuse) the
  unimodal runs, run the selection trick and print UMT or UME with both numbers.

``ROOT`` is the storage root of every command (:mod:`trainers.layout`; default
``$FUSION_STORAGE`` or ``./fusion-results``). Runs are trained locally with
``trainers.runs.train_or_reuse``; the Ray jobs name runs with the same function and use the same
layout, so runs trained by either are reused, not retrained. ``--store`` / ``--results`` name a
run store or a results folder directly.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import torch

from trainers.__main__ import (
    add_dataset_options,
    add_storage_option,
    dataset_from_args,
    storage_layout,
)
from trainers.config import ConfigError, TrainConfig
from trainers.data import DataError
from trainers.diagnostics import NoiseConfig, ProbeConfig, ProbeError
from trainers.layout import DEFAULT_ROOT, STORAGE_ENV, Layout
from trainers.logs import add_verbosity_options, setup_logging
from trainers.storage import StorageError

USER_ERRORS = (ConfigError, DataError, ProbeError, FileNotFoundError, KeyError, ValueError,
               StorageError)


def cmd_report(args: argparse.Namespace) -> int:
    from orchestrator.report import build_report, report_input

    results, out = report_input(args.storage, args.out)
    where = build_report(results, out, args.dataset)
    print(f"wrote {where}/report.md and its plots")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from orchestrator.diagnostics_rows import diagnose_store

    data = dataset_from_args(args, Layout.open(args.storage).root)  # cache at ROOT/data-cache
    noise = NoiseConfig(levels=tuple(args.noise_levels), seed=args.seed)
    store, results = _locations(args)
    written = diagnose_store(data, store, results, ProbeConfig(max_iter=args.probe_iters),
                             noise, redo=args.redo)
    print(f"wrote {len(written)} run(s) of rows to {results}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from orchestrator.diagnostics_rows import StoredRun, selection_rows
    from orchestrator.results import write_results
    from trainers.compare import unimodal_configs
    from trainers.diagnostics import selection_trick
    from trainers.runs import train_or_reuse

    data = dataset_from_args(args, Layout.open(args.storage).root)  # cache at ROOT/data-cache
    base = TrainConfig(epochs=args.epochs, seed=args.seed, num_threads=args.threads)
    group, (store, results) = {}, _locations(args)
    for m, cfg in unimodal_configs(data, base).items():
        rec = train_or_reuse(data, cfg, store)
        print(f"unimodal {m}: {'reused' if rec.reused else 'trained'} {rec.location}")
        group[m] = StoredRun(rec, cfg)
    sel = selection_trick(data, {m: r.record.checkpoint for m, r in group.items()})
    print(f"\n{data.spec.name}, seed {args.seed}:\n{sel.describe()}")
    if args.results or args.storage:
        write_results(selection_rows(group, data.spec, sel), results)
    return 0


def _locations(args: argparse.Namespace) -> tuple[str, str]:
    """(run store, results folder): ``--store`` / ``--results`` when given, else the layout's."""
    _, runs = storage_layout(args.storage, args.store)
    results = args.results or Layout.open(args.storage).results.location
    return runs.location, results


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    add_verbosity_options(p)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m orchestrator", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="write report.md and plots from Parquet results")
    r.add_argument("storage", nargs="?", default=None,
                   help="storage root (its results/ is read), or a folder of Parquet parts "
                        f"(default: ${STORAGE_ENV} or {DEFAULT_ROOT})")
    r.add_argument("--out", help="output folder or URI (default: ROOT/reports)")
    r.add_argument("--dataset", help="the dataset to report when the results hold several")
    d = sub.add_parser("diagnose", help="probes, MIR/DMC, robustness for a store's runs")
    add_dataset_options(d, required=True)
    add_storage_option(d)
    d.add_argument("--store", help="folder of finished runs (default: ROOT/runs)")
    d.add_argument("--results", help="results folder to write rows to (default: ROOT/results)")
    d.add_argument("--noise-levels", type=float, nargs="+", default=list(NoiseConfig().levels))
    d.add_argument("--probe-iters", type=int, default=ProbeConfig().max_iter)
    d.add_argument("--seed", type=int, default=0, help="seed of the test-time noise")
    d.add_argument("--redo", action="store_true", help="recompute runs already diagnosed")
    c = sub.add_parser("recommend", help="selection trick: UMT or UME for a dataset")
    add_dataset_options(c, required=True)
    add_storage_option(c)
    c.add_argument("--store", help="folder of finished runs (default: ROOT/runs)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--epochs", type=int, default=10)
    c.add_argument("--results", help="also write the two numbers as result rows here (with "
                                     "--storage: ROOT/results)")
    for s in (r, d, c):
        _common(s)
    return p


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "report": cmd_report, "diagnose": cmd_diagnose, "recommend": cmd_recommend,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.verbosity)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as err:
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2


def report(argv: Sequence[str] | None = None) -> int:
    """The ``fusion-report`` console script: ``python -m orchestrator report ...``."""
    return main(["report", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
