"""A sweep's compute budget: no trial trains an epoch the budget cannot pay for.

The budget counts training epochs, in units of one default run (the untuned configuration, one
seed): ``budget = 3`` allows three times that run's epochs over the whole sweep, every trial and
every seed included. Each running trial books the epochs up to the next point where ASHA judges
it (its next rung, or its end past the last rung):

- a trial starts only when the epochs spent by the ended trials, the bookings of the running
  ones, its own first booking and a reserve fit in the budget (:class:`BudgetLimiter`, around
  the searcher); the reserve, one trial's way from its first rung to its end, is left to
  promotions, so that new trials never crowd out the promising one (measured: without it, the
  budget stopped the trials that would have won at their second rung);
- a trial ASHA promotes at a rung books its next stretch; when the budget cannot pay for it,
  the trial stops there, said in one log line (:class:`SweepASHA`, the scheduler);
- the untuned configuration's trial (the incumbent every other trial is chosen against) books
  its whole schedule when it starts, and ASHA never stops it;
- a trial that ends (finished, stopped or failed) keeps only the epochs it trained.

So ASHA's early stops buy more trials, ``num_samples`` stays an upper bound, and the sweep never
trains more than its budget. Without ASHA (another scheduler, or none) a trial books its whole
schedule when it starts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

LOG = logging.getLogger("orchestrator.sweep")


class Accounts:
    """Epochs spent by ended trials and booked by running ones (one object, shared by the
    searcher and the scheduler; Tune pickles both together, so they stay one)."""

    def __init__(self, budget_epochs: float, max_t: int, rungs: tuple[int, ...] = (),
                 incumbent: Mapping[str, Any] | None = None) -> None:
        self.budget_epochs = budget_epochs
        self.incumbent = dict(incumbent) if incumbent else None  # booked whole: never stopped
        self.incumbent_id: str | None = None
        self.max_t = max_t  # the most epochs one trial may take
        self.rungs = rungs  # where ASHA judges trials; () books whole trials
        self.spent: dict[str, int] = {}
        self.booked: dict[str, int] = {}

    def next_stop(self, epoch: int) -> int:
        return next((r for r in self.rungs if r > epoch), self.max_t)

    def committed(self) -> int:
        return sum(self.spent.values()) + sum(self.booked.values())

    def reserve(self) -> int:
        """Epochs new trials leave free so that a promising trial can always be promoted from
        its first rung to its end: new trials must not crowd out the one worth finishing."""
        return self.max_t - self.next_stop(0)

    def start(self, trial_id: str) -> bool:
        first = self.next_stop(0)
        if self.committed() + first + self.reserve() > self.budget_epochs:
            return False
        self.booked[trial_id] = first
        return True

    def started(self, trial_id: str, config: Mapping[str, Any]) -> None:
        """The untuned configuration's trial books its whole schedule at once (it fits: it is
        the first trial, and a budget always pays for one whole trial)."""
        if self.incumbent is None or self.incumbent_id is not None \
                or not same_point(config, self.incumbent):
            return
        if self.committed() - self.booked[trial_id] + self.max_t <= self.budget_epochs:
            self.booked[trial_id] = self.max_t
            self.incumbent_id = trial_id

    def extend(self, trial_id: str, epoch: int) -> bool:
        """Book the trial's next stretch after ``epoch``; False when the budget cannot pay."""
        booked = self.booked.get(trial_id)
        if booked is None or epoch < booked:
            return True
        nxt = self.next_stop(epoch)
        if self.committed() - booked + nxt > self.budget_epochs:
            return False
        self.booked[trial_id] = nxt
        return True

    def end(self, trial_id: str, epoch: int) -> None:
        if trial_id in self.booked:
            self.booked.pop(trial_id)
            self.spent[trial_id] = epoch

    def state(self) -> dict[str, Any]:
        return {"spent": dict(self.spent), "booked": dict(self.booked),
                "incumbent_id": self.incumbent_id}

    def load(self, state: dict[str, Any]) -> None:
        """In place: the scheduler holds this very object."""
        self.spent, self.booked = dict(state["spent"]), dict(state["booked"])
        self.incumbent_id = state["incumbent_id"]


class BudgetLimiter(Searcher):
    """Wraps a Tune ``Searcher``: it proposes trials, this decides whether one may start now,
    later (``None``: a running trial may still free epochs) or never (``FINISHED``)."""

    def __init__(self, searcher: Searcher, accounts: Accounts) -> None:
        self.searcher = searcher
        self.accounts = accounts
        self.last_epoch: dict[str, int] = {}
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | None:
        acc = self.accounts
        if not acc.start(trial_id):
            if acc.booked:
                return None  # a running trial may still stop early and free its booking
            LOG.info(f"[sweep] the budget ({acc.budget_epochs:g} epochs) ends the sweep after "
                     f"{len(acc.spent)} trial(s), {sum(acc.spent.values())} epochs spent")
            return Searcher.FINISHED
        suggestion = self.searcher.suggest(trial_id)
        if suggestion in (None, Searcher.FINISHED):
            acc.booked.pop(trial_id, None)
        else:
            acc.started(trial_id, suggestion)
        return suggestion

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.last_epoch[trial_id] = max(self.last_epoch.get(trial_id, 0), epoch_of(result))
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        last = max(self.last_epoch.pop(trial_id, 0), epoch_of(result or {}))
        self.accounts.end(trial_id, last)
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def add_evaluated_point(self, *args: Any, **kwargs: Any) -> None:
        self.searcher.add_evaluated_point(*args, **kwargs)

    def on_pause(self, trial_id: str) -> None:
        self.searcher.on_pause(trial_id)

    def on_unpause(self, trial_id: str) -> None:
        self.searcher.on_unpause(trial_id)

    def get_state(self) -> dict:
        """The accounts (Tune saves the wrapped searcher on its own), so that a sweep restored
        with ``--resume`` goes on counting where it stopped."""
        return {"accounts": self.accounts.state(), "last_epoch": dict(self.last_epoch)}

    def set_state(self, state: dict) -> None:
        self.accounts.load(state["accounts"])
        self.last_epoch = dict(state["last_epoch"])


def same_point(config: Mapping[str, Any] | None, point: Mapping[str, Any]) -> bool:
    """``config`` holds ``point``'s values (floats compared to 1e-12, as they travel through
    Optuna and Tune)."""
    if config is None:
        return False
    for key, value in point.items():
        got = config.get(key)
        if isinstance(value, float) and isinstance(got, int | float):
            if not math.isclose(got, value, rel_tol=1e-12, abs_tol=1e-12):
                return False
        elif got != value:
            return False
    return True


class SweepASHA(ASHAScheduler):
    """ASHA as the sweep runs it: the untuned configuration (``incumbent``, the first trial with
    its values) is never stopped, since every other trial is chosen against its final score;
    with ``accounts``, a trial goes past a rung only when the budget pays for the stretch."""

    def __init__(self, accounts: Accounts | None = None,
                 incumbent: Mapping[str, Any] | None = None, **asha: Any) -> None:
        super().__init__(**asha)
        self.accounts = accounts
        self.incumbent = dict(incumbent) if incumbent else None
        self.incumbent_id: str | None = None

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        if self.incumbent is not None and self.incumbent_id is None \
                and same_point(getattr(trial, "config", None), self.incumbent):
            self.incumbent_id = trial.trial_id

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)  # records the score
        epoch = epoch_of(result)
        acc = self.accounts
        if action == TrialScheduler.STOP and epoch < self._max_t \
                and trial.trial_id == self.incumbent_id:
            action = TrialScheduler.CONTINUE  # the incumbent is never judged
        if action == TrialScheduler.CONTINUE and acc is not None and epoch < acc.max_t \
                and not acc.extend(trial.trial_id, epoch):
            LOG.info(f"[sweep] trial {trial.trial_id} stops at epoch {epoch}: the budget cannot "
                     f"pay for its epochs up to {acc.next_stop(epoch)}")
            return TrialScheduler.STOP
        return action


def epoch_of(result: dict) -> int:
    try:
        return int(result.get("epoch") or 0)
    except (TypeError, ValueError):
        return 0
