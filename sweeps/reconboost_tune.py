"""Tune ReconBoost (modality-alternating boosting) with Ray Tune + Optuna TPE + ASHA.

The unimodal runs that warm-start ReconBoost's learners are trained once per seed (all
modalities at once, one Ray Train job each) or reused from the run store. The sweep searches
lambda, alpha, epochs per stage (E1), rectification epochs (E2), the learning rate and the number
of stages on the validation split, within a budget of 3 default runs (``--budget``); ASHA judges
trials by epochs. The chosen configuration (the untuned one unless a trial beats it by
``--min-gain`` validation points) is then trained for every seed and scored on test once.
Results: Parquet under <storage>/results, and a mean ± std table.

Examples:
  python sweeps/reconboost_tune.py               # local Ray, embedded data, < 1 min on 2 cores
  python sweeps/reconboost_tune.py --smoke-test  # about a minute
  python sweeps/reconboost_tune.py --address auto --num-samples 32 --seeds 0 1 2
"""

from __future__ import annotations

from sweeps.common import main as run_script
from sweeps.tune import body_for, script_for

SCRIPT = script_for("reconboost", doc=__doc__)  # the space declared next to the strategy's defaults
body = body_for(SCRIPT)


def main(argv: list[str] | None = None) -> int:
    return run_script(SCRIPT, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
