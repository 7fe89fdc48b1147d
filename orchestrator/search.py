"""How a sweep searches: the Optuna sampler that proposes trials (starting from the untuned
configuration) and the ASHA scheduler that stops them early, with the epochs at which trials
must report so that ASHA can judge them (docs/ray.md, point 11).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from orchestrator.budget import Accounts, BudgetLimiter, SweepASHA
from trainers.api import build
from trainers.checkpoint import resolving
from trainers.config import ConfigError, TrainConfig
from trainers.strategies.base import Phase

if TYPE_CHECKING:
    from orchestrator.sweep import SweepConfig, SweepContext

LOG = logging.getLogger("orchestrator.sweep")


def phases_of(ctx: SweepContext, cfg: TrainConfig) -> list[Phase]:
    with resolving(ctx.storage):  # teachers / warm starts are runs of this store
        return build(ctx.spec, cfg).phases()


def schedule(ctx: SweepContext) -> tuple[int, int]:
    """(epochs of the longest possible trial, epochs before its first validation score), with
    every key at its largest value: ASHA's ``max_t`` and the least sensible grace period."""
    phases = phases_of(ctx, ctx.space.apply(ctx.base, ctx.space.corner()))
    first = next((i for i, p in enumerate(phases) if p.evaluate != "never"), len(phases) - 1)
    scored = phases[first]  # scored after its first epoch, or only at its end
    before = sum(p.epochs for p in phases[:first])
    seeds = 1 + len(ctx.more)  # a trial's seeds run one after the other
    return (seeds * sum(p.epochs for p in phases),
            before + (1 if scored.evaluate == "epoch" else scored.epochs))


def budget_accounts(ctx: SweepContext, cfg: SweepConfig, max_t: int,
                    rungs: tuple[int, ...] = (),
                    incumbent: Mapping[str, Any] | None = None) -> Accounts:
    """The accounts of ``cfg.budget`` default runs (:mod:`orchestrator.budget`), trials taking
    up to ``max_t`` epochs; one-line error when the budget cannot pay for one whole trial."""
    default = sum(p.epochs for p in phases_of(ctx, ctx.base))
    budget = cfg.budget * default
    if max_t > budget:
        raise ConfigError(f"--budget {cfg.budget:g} (default runs of {default} epochs) cannot "
                          f"pay for one trial, which may take {max_t} epochs ({1 + len(ctx.more)} "
                          f"seed(s) of the space's longest schedule); use --budget "
                          f"{math.ceil(100 * max_t / default) / 100:g} or more, --budget 0 for "
                          "no budget, or fewer --seeds-per-trial")
    return Accounts(budget, max_t, rungs, incumbent)


def limited(inner: Any, accounts: Accounts | None) -> Any:
    """``inner`` (a Tune ``Searcher``) under the sweep's budget, or as it is without one."""
    if accounts is None:
        return inner
    if not isinstance(inner, Searcher):
        raise ConfigError(f"a sweep budget needs a Tune Searcher to limit but got "
                          f"{type(inner).__name__}; pass budget=0 with this search algorithm")
    return BudgetLimiter(inner, accounts)


def startup_trials(num_samples: int) -> int:
    """Random trials before TPE starts modelling: a third of the budget, 2 to 10. Optuna's
    default of 10 would make every sweep of up to 10 trials a plain random search."""
    return min(10, max(2, num_samples // 3))


def start_points(ctx: SweepContext, cfg: SweepConfig) -> list[dict[str, Any]]:
    """The trials to run first: the untuned configuration (``default_first``), so that the
    sweep's best is the untuned one unless another configuration beats it on validation.
    Nothing when a key's untuned value lies outside the space (said in one line)."""
    if not cfg.default_first:
        return []
    point = ctx.space.point_of(ctx.base)
    if point is None:
        LOG.info(f"[sweep] the untuned {ctx.space.strategy} configuration lies outside the "
                 "search space; no trial starts from it")
        return []
    return [point]


def searcher(cfg: SweepConfig, start: Sequence[Mapping[str, Any]] = ()) -> OptunaSearch:
    """The Optuna sampler that ``cfg.searcher`` names, seeded with ``cfg.seed``; ``start``
    are the configurations it tries first."""
    if cfg.searcher == "random":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(seed=cfg.seed)
    elif cfg.searcher == "cmaes":
        sampler = optuna.samplers.CmaEsSampler(seed=cfg.seed,
                                               n_startup_trials=startup_trials(cfg.num_samples))
    else:
        sampler = optuna.samplers.TPESampler(seed=cfg.seed,
                                             n_startup_trials=startup_trials(cfg.num_samples))
    return OptunaSearch(sampler=sampler, points_to_evaluate=[dict(p) for p in start] or None)


def asha_plan(ctx: SweepContext, cfg: SweepConfig) -> tuple[int, int, int]:
    """ASHA's (max_t, grace period, reduction factor) for this sweep."""
    max_t, first_score = schedule(ctx)
    return max_t, cfg.grace_period or max(first_score, max_t // 8), cfg.reduction_factor


def asha_rungs(max_t: int, grace: int, factor: int) -> tuple[int, ...]:
    """The epochs at which ASHA (one bracket) judges a trial: grace * factor**k below max_t,
    as Ray's ``ASHAScheduler`` places its rungs."""
    count = int(math.log(max_t / grace) / math.log(factor) + 1) if max_t >= grace else 0
    return tuple(grace * factor ** k for k in range(count))


def scheduler_plan(ctx: SweepContext, cfg: SweepConfig, given: Any = None,
                   incumbent: Mapping[str, Any] | None = None
                   ) -> tuple[Any, tuple[int, ...] | None, Accounts | None]:
    """(the scheduler Tune runs, the trial epochs that must reach Tune whatever the report
    interval, the budget's accounts or None), from one look at the strategy's schedule: ASHA
    over epochs and its rungs (``cfg.scheduler == "asha"``), which never stops the
    ``incumbent`` (the untuned configuration's values) and keeps to the budget when there is
    one; no scheduler and no extra epochs (``none``); a scheduler ``given`` by the caller, which
    hears every epoch (None). Without ASHA a budgeted trial books its whole schedule."""
    if given is None and cfg.scheduler == "asha":
        max_t, grace, factor = asha_plan(ctx, cfg)
        rungs = asha_rungs(max_t, grace, factor)
        accounts = budget_accounts(ctx, cfg, max_t, rungs, incumbent) if cfg.budget else None
        return (SweepASHA(accounts, incumbent, time_attr="epoch", max_t=max_t,
                          grace_period=grace, reduction_factor=factor), rungs, accounts)
    accounts = budget_accounts(ctx, cfg, schedule(ctx)[0]) if cfg.budget else None
    return (given, None, accounts) if given is not None else (None, (), accounts)
