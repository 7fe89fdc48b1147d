"""Tune ReconBoost (modality-alternating boosting) with Ray Tune + Optuna TPE + ASHA.

The unimodal runs that warm-start ReconBoost's learners are trained once per seed (all
modalities at once, one Ray Train job each) or reused from the run store. The sweep searches
lambda, alpha, epochs per stage (E1), rectification epochs (E2), the learning rate and the number
of stages on the validation split; ASHA judges trials by epochs. The best configuration is then
trained for every seed and scored on test once. Results: Parquet under <storage>/results, and a
mean ± std table.

Examples:
  python sweeps/reconboost_tune.py               # local Ray, embedded data, ~5 min on 2 cores
  python sweeps/reconboost_tune.py --smoke-test  # about a minute
  python sweeps/reconboost_tune.py --address auto --num-samples 32 --seeds 0 1 2
"""

from __future__ import annotations

from sweeps.common import Budget, Script, Setup, tune_and_report
from sweeps.common import main as run_script

SCRIPT = Script(
    doc=__doc__,
    strategy="reconboost",
    full=Budget(epochs=10, num_samples=8, seeds=(0,)),
    smoke=Budget(epochs=2, num_samples=2, seeds=(0,), model={"embed_dim": 16, "hidden_dim": 32}),
    space={"lambda_boost": "uniform:0:1", "alpha": "uniform:0:1", "epochs_per_stage": "int:1:3",
           "rectify_epochs": "int:0:2", "lr": "loguniform:1e-3:0.1", "stages": "int:2:4"},
    smoke_space={"lambda_boost": "uniform:0:1", "alpha": "uniform:0:1",
                 "epochs_per_stage": "int:1:2", "rectify_epochs": "int:0:1", "stages": "int:1:2"},
    extra={"warm_start": True},
)


def body(s: Setup) -> str:
    return tune_and_report(s, SCRIPT.extra)


def main(argv: list[str] | None = None) -> int:
    return run_script(SCRIPT, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
