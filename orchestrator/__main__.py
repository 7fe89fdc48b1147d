"""``python -m orchestrator <command>``: diagnostics and reports over finished runs.

- ``report RESULTS_DIR [--out DIR] [--dataset NAME]``: report.md + PNGs from Parquet results;
- ``diagnose --dataset NAME --store DIR --results DIR``: probes, MIR/DMC, robustness and the
  selection trick for the finished runs of a local store, written as result rows;
- ``recommend --dataset NAME [--store DIR] [--seed S] [--epochs N]``: train (or reuse) the
  unimodal runs, run the selection trick and print UMT or UME with both numbers.

Runs are trained locally with ``trainers.runs.train_or_reuse``. The Ray jobs
(``orchestrator.jobs.train_unimodal``) name runs with the same function and use the same store
layout, so ``--store`` may point at their storage: finished runs are reused, not retrained.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import torch

from trainers.__main__ import add_dataset_options, dataset_from_args
from trainers.config import ConfigError, TrainConfig
from trainers.data import DataError
from trainers.diagnostics import NoiseConfig, ProbeConfig, ProbeError
from trainers.logs import add_verbosity_options, setup_logging

USER_ERRORS = (ConfigError, DataError, ProbeError, FileNotFoundError, KeyError, ValueError)


def cmd_report(args: argparse.Namespace) -> int:
    from orchestrator.report import build_report

    where = build_report(args.results, args.out, args.dataset)
    print(f"wrote {where}/report.md and its plots")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from orchestrator.diagnostics_rows import diagnose_store

    data = dataset_from_args(args)
    noise = NoiseConfig(levels=tuple(args.noise_levels), seed=args.seed)
    written = diagnose_store(data, args.store, args.results, ProbeConfig(max_iter=args.probe_iters),
                             noise, redo=args.redo)
    print(f"wrote {len(written)} run(s) of rows to {args.results}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from orchestrator.diagnostics_rows import StoredRun, selection_rows
    from orchestrator.results import write_results
    from trainers.compare import unimodal_configs
    from trainers.diagnostics import selection_trick
    from trainers.runs import train_or_reuse

    data = dataset_from_args(args)
    base = TrainConfig(epochs=args.epochs, seed=args.seed, num_threads=args.threads)
    group = {}
    for m, cfg in unimodal_configs(data, base).items():
        rec = train_or_reuse(data, cfg, args.store)
        print(f"unimodal {m}: {'reused' if rec.reused else 'trained'} {rec.location}")
        group[m] = StoredRun(rec, cfg)
    sel = selection_trick(data, {m: r.record.checkpoint for m, r in group.items()})
    print(f"\n{data.spec.name}, seed {args.seed}:\n{sel.describe()}")
    if args.results:
        write_results(selection_rows(group, data.spec, sel), args.results)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    add_verbosity_options(p)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m orchestrator", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="write report.md and plots from Parquet results")
    r.add_argument("results", help="results directory (Parquet part files)")
    r.add_argument("--out", help="output folder or URI (default: reports/ beside RESULTS)")
    r.add_argument("--dataset", help="the dataset to report when the results hold several")
    d = sub.add_parser("diagnose", help="probes, MIR/DMC, robustness for a store's runs")
    add_dataset_options(d, required=True)
    d.add_argument("--store", required=True, help="folder of finished runs")
    d.add_argument("--results", required=True, help="results directory to write rows to")
    d.add_argument("--noise-levels", type=float, nargs="+", default=list(NoiseConfig().levels))
    d.add_argument("--probe-iters", type=int, default=ProbeConfig().max_iter)
    d.add_argument("--seed", type=int, default=0, help="seed of the test-time noise")
    d.add_argument("--redo", action="store_true", help="recompute runs already diagnosed")
    c = sub.add_parser("recommend", help="selection trick: UMT or UME for a dataset")
    add_dataset_options(c, required=True)
    c.add_argument("--store", default="runs", help="folder of finished runs (reused)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--epochs", type=int, default=10)
    c.add_argument("--results", help="also write the two numbers as result rows here")
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
