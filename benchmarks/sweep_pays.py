"""Did the sweep pay? The default sweep's best configuration vs the untuned default, on seeds the
sweep never saw.

Run from the repository root: ``python -m benchmarks.sweep_pays`` (``--help`` for options).

For each strategy (default: UMT and ReconBoost) on the embedded AV-Digits data, in one fresh
store on a local Ray (2 CPUs):

(a) the strategy's default configuration (its defaults, the sweep script's full budget and, for
    ReconBoost, the warm start the script uses) trained on the held-out seeds (10, 11, 12);
(b) the default sweep script's sweep (its search space, trials, searcher, scheduler and
    ``--seeds-per-trial``) on its own seed(s) (0, or 0 and 1), then its best configuration trained
    on the same held-out seeds.

It prints both test means ± std (selection metric of the fused output), the paired difference
(tuned - default, seed by seed) with its 95% t-interval, and the sweep's compute in units of
one default run: epochs (every trial's epochs, ASHA-stopped ones included) and wall time (the
sweep's wall, trials running concurrently, against one default run's training time). The
unimodal runs (UMT's teachers, ReconBoost's warm starts) are shared by both arms and not
counted. Target: tuned >= default + 1 pt for <= 3x the compute of one default run.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

import benchmarks as bench

HELD_OUT = (10, 11, 12)
GAIN_TARGET_PT = 1.0
COMPUTE_TARGET = 3.0


@dataclass(frozen=True)
class Arm:
    strategy: str
    default: list[float]  # test score per held-out seed, percent
    tuned: list[float]
    best: dict[str, object]  # the sweep's best values
    sweep_epochs: int
    sweep_wall_s: float
    default_epochs: float  # one default run, mean over seeds
    default_wall_s: float
    trials: int
    stopped: int
    val_gain: float | None  # best trial's validation score - the untuned trial's, points
    min_gain: float
    default_val: list[float]  # the untuned configuration's validation score per held-out seed


def paired(diffs: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high) of the 95% t-interval of paired differences (n >= 2)."""
    from scipy import stats

    n = len(diffs)
    mean = statistics.fmean(diffs)
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return mean, mean - half, mean + half


def run_strategy(strategy: str, args: argparse.Namespace) -> Arm:
    from orchestrator.aggregate import final_runs, strategy_bases
    from orchestrator.choice import chosen, describe, epochs_trained
    from orchestrator.sweep import SweepContext, run_sweep
    from sweeps.common import parser, setup, train_unimodal
    from sweeps.tune import script_for
    from trainers.experiment import parse_with_config
    from trainers.loop import selection_score

    script = script_for(strategy)
    sweep_seeds = seeds_of(strategy, args)
    with bench.scratch(f"pays-{strategy}") as store:
        argv = ["--dataset", bench.DATASET, "--storage", str(store), "--seeds",
                *map(str, sweep_seeds), "--seeds-per-trial", str(len(sweep_seeds)),
                *(["--min-gain", str(args.min_gain)] if args.min_gain is not None else [])]
        s = setup(script, parse_with_config(
            parser(script), [*argv, *(["--smoke-test"] if args.quick else [])]))
        s = replace(s, seeds=(*s.seeds, *args.held_out))  # unimodal runs for every seed
        assert s.sweep is not None
        bases = strategy_bases(strategy, s.base, train_unimodal(s), script.extra)
        trial = [bases[seed] for seed in sweep_seeds]
        ctx = SweepContext(s.data_ref, s.data.spec, trial[0], s.sweep.space, s.storage,
                           s.resources, more=tuple(trial[1:]))
        held = {seed: bases[seed] for seed in args.held_out}
        default = final_runs(ctx, held, s.data)
        outcomes, wall = bench.timed(lambda: run_sweep(ctx, s.sweep))
        print(f"\n{strategy} sweep, {len(outcomes)} trials (val = validation score):\n"
              f"{describe(outcomes)}", flush=True)
        best = chosen(ctx, s.sweep, outcomes)
        if best is None:
            raise SystemExit(f"no {strategy} trial finished; nothing to compare")
        tuned = final_runs(ctx, {k: s.sweep.space.apply(c, best.values) for k, c in held.items()},
                           s.data)

        def score(records: dict, split: str = "test") -> list[float]:
            return [100 * selection_score(records[k].metrics[split], "fused") for k in held]

        return Arm(strategy, score(default), score(tuned), best.values,
                   epochs_trained(outcomes), wall,
                   statistics.fmean(len(r.history()) for r in default.values()),
                   statistics.fmean(r.wall_time_s for r in default.values()), len(outcomes),
                   sum(o.status == "stopped" for o in outcomes), val_gain(ctx, outcomes),
                   s.sweep.min_gain, score(default, "val"))


def val_gain(ctx, outcomes) -> float | None:  # noqa: ANN001 - SweepContext, outcomes
    """How much the best finished trial beat the untuned one on validation (points)."""
    from orchestrator.choice import best_trial, untuned_trial

    top, untuned = best_trial(outcomes), untuned_trial(outcomes, ctx.space.point_of(ctx.base))
    if top is None or untuned is None:
        return None
    return 100 * ((top.val_score or 0.0) - (untuned.val_score or 0.0))


def seeds_of(strategy: str, args: argparse.Namespace) -> list[int]:
    """The seeds every trial of ``strategy``'s sweep trains: ``--sweep-seeds`` or the script's
    defaults (its first ``seeds_per_trial`` seeds)."""
    from sweeps.tune import script_for

    full = script_for(strategy).full
    return args.sweep_seeds or list(full.seeds[:full.seeds_per_trial])


def rows(arm: Arm) -> list[tuple[str, str]]:
    mean, low, high = paired([t - d for t, d in zip(arm.tuned, arm.default, strict=True)])
    epochs = arm.sweep_epochs / arm.default_epochs
    wall = arm.sweep_wall_s / arm.default_wall_s
    gain_met = "met" if mean >= GAIN_TARGET_PT else "MISSED"
    if low <= 0 < mean:
        gain_met += (", but the interval includes 0: not shown to be a gain"
                     if mean >= GAIN_TARGET_PT else "; above the default, within noise")
    cost_met = bench.verdict(epochs, COMPUTE_TARGET)

    def ms(values: list[float]) -> str:
        return (f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f} "
                f"({', '.join(f'{v:.2f}' for v in values)})")

    best = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in sorted(arm.best.items()))
    return [
        (f"{arm.strategy}: default, test", ms(arm.default)),
        (f"{arm.strategy}: tuned, test", ms(arm.tuned)),
        (f"{arm.strategy}: tuned - default", f"{mean:+.2f} pt, 95% CI [{low:+.2f}, {high:+.2f}] "
                                             f"(paired, n={len(arm.tuned)}; target >= "
                                             f"+{GAIN_TARGET_PT:g}: {gain_met})"),
        (f"{arm.strategy}: sweep compute", f"{epochs:.1f}x a default run in epochs "
                                           f"({arm.sweep_epochs} / {arm.default_epochs:.0f}; "
                                           f"target <= {COMPUTE_TARGET:g}x: {cost_met}), "
                                           f"{wall:.1f}x in wall time ({arm.sweep_wall_s:.0f} / "
                                           f"{arm.default_wall_s:.0f} s)"),
        (f"{arm.strategy}: sweep", f"{arm.trials} trials ({arm.stopped} stopped by ASHA); "
                                   f"chose {best}"),
        (f"{arm.strategy}: noise", "the untuned configuration's validation score over the "
                                   f"held-out seeds: {ms(arm.default_val)}"),
        (f"{arm.strategy}: selection", "the untuned trial did not finish" if arm.val_gain is None
         else f"best trial {arm.val_gain:+.2f} pt over the untuned one on validation "
              f"(--min-gain {arm.min_gain:g}: "
              + ("took it)" if arm.val_gain >= arm.min_gain and arm.val_gain > 0
                 else "kept the untuned)")),
    ]


def parse_args() -> argparse.Namespace:
    parser = bench.make_parser(__doc__)
    parser.add_argument("--strategies", nargs="+", default=["umt", "reconboost"])
    parser.add_argument("--sweep-seeds", type=int, nargs="+", default=None,
                        help="seeds of every trial (--seeds-per-trial = their count; default: "
                             "the script's own, 0 for UMT, 0 1 for ReconBoost)")
    parser.add_argument("--min-gain", type=float, default=None,
                        help="the scripts' --min-gain (default: theirs)")
    parser.add_argument("--held-out", type=int, nargs="+", default=list(HELD_OUT),
                        help="seeds of the comparison, never seen by the sweep (default 10 11 12)")
    bench.add_common_args(parser)
    args = parser.parse_args()
    swept = {seed for strategy in args.strategies for seed in seeds_of(strategy, args)}
    if len(args.held_out) < 2 or set(args.held_out) & swept:
        parser.error(f"--held-out needs >= 2 seeds, none of them a sweep seed, but got "
                     f"{args.held_out} and {sorted(swept)}")
    return args


def main() -> None:
    args = parse_args()
    health = bench.apply_health_check(args.health_check_s)
    with bench.local_ray(num_cpus=2):
        arms = [run_strategy(s, args) for s in args.strategies]
    seeds = "; ".join(f"{st} {seeds_of(st, args)}" for st in args.strategies)
    notes = [health, f"sweep seeds (each trial's score: their mean): {seeds}; held-out seeds "
                     f"{args.held_out}"
             + (" (--quick: the scripts' --smoke-test budgets)" if args.quick else ""),
             "load average (1 min) at the end: " + ", ".join(f"{x:.1f}" for x in os.getloadavg())]
    title = "benchmarks.sweep_pays: the default sweep's best vs the untuned default"
    print(bench.summary_block(title, [r for arm in arms for r in rows(arm)], notes))


if __name__ == "__main__":
    main()
