"""Which configuration a sweep chooses, and its trials in one line each.

The choice is the finished trial with the best validation score, except that the untuned
configuration (the sweep's first trial, which ASHA never stops) is kept unless another trial
beats it by at least ``min_gain`` validation points: on a small validation split one seed's
luck moves a score by about a point, and a configuration chosen on that luck loses to the
untuned one on held-out seeds (measured with benchmarks/sweep_pays.py; docs/ray.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from orchestrator.budget import epoch_of, same_point
from orchestrator.train_fn import BEST_KEY

if TYPE_CHECKING:
    from orchestrator.sweep import SweepConfig, SweepContext, TrialOutcome

LOG = logging.getLogger("orchestrator.sweep")


def best_trial(outcomes: Sequence[TrialOutcome], incumbent: Mapping[str, Any] | None = None,
               min_gain: float = 0.0) -> TrialOutcome | None:
    """The finished trial with the best validation selection score (None if none finished);
    with ``incumbent`` (the untuned configuration's values), another trial replaces the
    untuned one only when its score beats it by at least ``min_gain`` points."""
    done = [o for o in outcomes if o.status == "finished"]
    best = max(done, key=lambda o: o.val_score or 0.0, default=None)
    default = untuned_trial(done, incumbent)
    if best is None or default is None or best is default:
        return best
    gain = 100 * ((best.val_score or 0.0) - (default.val_score or 0.0))
    if gain >= min_gain:
        return best
    LOG.info(f"[sweep] keeping the untuned configuration: the best trial {best.trial_id} beats "
             f"it by {gain:.2f} pt on validation, less than --min-gain {min_gain:g}")
    return default


def untuned_trial(outcomes: Sequence[TrialOutcome],
                  incumbent: Mapping[str, Any] | None) -> TrialOutcome | None:
    """The finished trial of the untuned configuration (``incumbent``'s values), or None."""
    if not incumbent:
        return None
    return next((o for o in outcomes if o.status == "finished"
                 and same_point(o.values, incumbent)), None)


def epochs_trained(outcomes: Sequence[TrialOutcome]) -> int:
    """Every trial's epochs, ASHA-stopped ones included (what the sweep's budget counts)."""
    return sum(epoch_of(o.last) for o in outcomes)


def chosen(ctx: SweepContext, cfg: SweepConfig,
           outcomes: Sequence[TrialOutcome]) -> TrialOutcome | None:
    """The sweep's choice: :func:`best_trial` against the untuned configuration (when the
    sweep started from it) with ``cfg.min_gain``."""
    incumbent = ctx.space.point_of(ctx.base) if cfg.default_first else None
    return best_trial(outcomes, incumbent, cfg.min_gain)


def describe(outcomes: Sequence[TrialOutcome]) -> str:
    """One line per trial: id, status, validation score and sampled values."""
    lines = []
    for o in sorted(outcomes, key=lambda o: o.trial_id):
        score = o.val_score if o.val_score is not None else o.last.get(BEST_KEY)
        shown = f"{100 * score:.2f}" if isinstance(score, float) else "-"
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in sorted(o.values.items()))
        tail = f"  [{o.error}]" if o.error else ""
        lines.append(f"  {o.trial_id:<12} {o.status:<9} val {shown:>6}  {values}{tail}")
    return "\n".join(lines)

