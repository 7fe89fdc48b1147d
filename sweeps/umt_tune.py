"""Tune UMT (uni-modal teachers distilled into a fused model) with Ray Tune + Optuna TPE + ASHA.

The unimodal teachers are trained once per seed (all modalities at once, one Ray Train job each)
or reused from the run store, then shared by every trial. The sweep searches lambda_distill and
the learning rate on the validation split; the best configuration is then trained for every seed
and scored on test once. Results: Parquet under <storage>/results, and a mean ± std table.

Examples:
  python sweeps/umt_tune.py                      # local Ray, embedded data, < 1 min on 2 cores
  python sweeps/umt_tune.py --smoke-test         # about a minute
  python sweeps/umt_tune.py --address auto --storage /mnt/shared/fusion-results --num-samples 32
"""

from __future__ import annotations

from sweeps.common import main as run_script
from sweeps.tune import body_for, script_for

SCRIPT = script_for("umt", doc=__doc__)  # the space declared next to the strategy's defaults
body = body_for(SCRIPT)


def main(argv: list[str] | None = None) -> int:
    return run_script(SCRIPT, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
