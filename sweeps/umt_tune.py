"""Tune UMT (uni-modal teachers distilled into a fused model) with Ray Tune + Optuna TPE + ASHA.

The unimodal teachers are trained once per seed (all modalities at once, one Ray Train job each)
or reused from the run store, then shared by every trial. The sweep searches lambda_distill and
the learning rate on the validation split; the best configuration is then trained for every seed
and scored on test once. Results: Parquet under <storage>/results, and a mean ± std table.

Examples:
  python sweeps/umt_tune.py                      # local Ray, embedded data, ~5 min on 2 cores
  python sweeps/umt_tune.py --smoke-test         # about a minute
  python sweeps/umt_tune.py --address auto --storage /mnt/shared/results --num-samples 32
"""

from __future__ import annotations

from sweeps.common import Budget, Script, Setup, tune_and_report
from sweeps.common import main as run_script

SCRIPT = Script(
    doc=__doc__,
    strategy="umt",
    full=Budget(epochs=10, num_samples=8, seeds=(0,)),
    smoke=Budget(epochs=2, num_samples=2, seeds=(0,), model={"embed_dim": 16, "hidden_dim": 32}),
    # A loss weight spans orders of magnitude (the paper's grid: 0, 1, 10, 20, 50, 100), so it
    # is searched on a log scale; lambda_distill = 0 is fusion_concat, which runs anyway.
    space={"lambda_distill": "loguniform:0.1:100", "lr": "loguniform:3e-4:3e-3"},
    smoke_space={"lambda_distill": "loguniform:0.1:100", "lr": "loguniform:3e-4:3e-3"},
)


def body(s: Setup) -> str:
    return tune_and_report(s, SCRIPT.extra)


def main(argv: list[str] | None = None) -> int:
    return run_script(SCRIPT, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
