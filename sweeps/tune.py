"""Tune any registered strategy with Ray Tune + Optuna TPE + ASHA over the space it declares.

``--strategy NAME`` picks the strategy; its search space is the ``SEARCH_SPACE`` declared next
to its defaults in ``trainers/strategies/<name>.py`` (``--space KEY=DIST`` overrides an entry),
so a newly added method gets a sweep for free. Runs it depends on (UMT teachers, ReconBoost warm
starts) are trained once per seed, all modalities at once, or reused from the run store. Trials
are selected on the validation split; the best configuration is then trained for every seed
and scored on test once. Results: Parquet under <storage>/results, and a mean ± std table.

Examples:
  python sweeps/tune.py --strategy ogm_ge                 # local Ray, embedded data
  python sweeps/tune.py --strategy pmr --smoke-test       # about a minute
  python sweeps/tune.py --strategy mmpareto --address auto --num-samples 32 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from sweeps.common import Budget, Script, Setup, tune_and_report
from sweeps.common import main as run_script
from trainers.config import ConfigError
from trainers.strategies import list_strategies, strategy_class

FULL = Budget(epochs=10, num_samples=12, seeds=(0,))  # a cap: the budget ends sweeps first
# ReconBoost's final runs use two seeds. Each trial trains ONE seed: with the budget of 3
# default runs (sweeps.common.Budget.compute), two seeds per trial leave room for the untuned
# trial alone (2 x 48 of 144 epochs). Noise in one seed's validation score is met instead by
# SweepConfig.min_gain (measured with benchmarks/sweep_pays.py; docs/ray.md).
FULL_BY_STRATEGY = {"reconboost": replace(FULL, seeds=(0, 1))}
SMOKE = Budget(epochs=2, num_samples=2, seeds=(0,), model={"embed_dim": 16, "hidden_dim": 32})
# Strategy params a sweep always sets (ReconBoost warm-starts from the unimodal runs, as the
# released settings do) and smaller spaces for --smoke-test where the full one is long.
EXTRA = {"reconboost": {"warm_start": True}}
SMOKE_SPACES = {"reconboost": {"lambda_boost": "uniform:0:1", "alpha": "uniform:0:1",
                               "epochs_per_stage": "int:1:2", "rectify_epochs": "int:0:1",
                               "stages": "int:1:2"}}


def script_for(strategy: str, doc: str = __doc__) -> Script:
    """The sweep of ``strategy`` over its declared space; one-line error when it declares none."""
    try:
        space = dict(strategy_class(strategy).SEARCH_SPACE)
    except KeyError:
        raise ConfigError(f"--strategy {strategy!r} is not registered; valid strategies: "
                          f"{', '.join(list_strategies())}") from None
    if not space:
        raise ConfigError(f"strategy {strategy!r} declares no SEARCH_SPACE, so there is nothing "
                          "to tune; pass --space KEY=DIST entries or pick a tunable strategy")
    return Script(doc=doc, strategy=strategy, full=FULL_BY_STRATEGY.get(strategy, FULL),
                  smoke=SMOKE, space=space,
                  smoke_space=SMOKE_SPACES.get(strategy, space), extra=EXTRA.get(strategy, {}))


def body_for(script: Script):  # noqa: ANN201 - the script body
    def body(s: Setup) -> str:
        return tune_and_report(s, script.extra)
    return body


def main(argv: list[str] | None = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--strategy")
    known, rest = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    if not known.strategy:
        if "-h" in rest or "--help" in rest:
            print(__doc__)
            return 0
        print(f"error: --strategy NAME is required; one of {', '.join(list_strategies())}",
              file=sys.stderr)
        return 2
    try:
        script = script_for(known.strategy)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return run_script(replace(script, doc=__doc__), body_for(script), rest)


if __name__ == "__main__":
    raise SystemExit(main())
