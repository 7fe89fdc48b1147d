"""The sweep's compute budget (orchestrator/budget.py): no trial trains an epoch it cannot pay
for, ASHA's early stops buy more trials, and the accounts survive a restore."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from orchestrator.budget import Accounts, BudgetLimiter, SweepASHA


class Proposals(Searcher):
    """A searcher that proposes {"x": 0}, {"x": 1}, ... and records what it hears."""

    def __init__(self) -> None:
        super().__init__(metric="val_best", mode="max")
        self.count = 0
        self.completed: list[str] = []

    def suggest(self, trial_id: str) -> dict:
        self.count += 1
        return {"x": self.count - 1}

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        self.completed.append(trial_id)


def budgeted(budget: float, max_t: int = 10, rungs: tuple[int, ...] = (1, 3, 9)
             ) -> tuple[Accounts, BudgetLimiter, SweepASHA, Proposals]:
    acc = Accounts(budget, max_t, rungs)
    inner = Proposals()
    asha = SweepASHA(acc, None, time_attr="epoch", max_t=max_t, grace_period=rungs[0],
                      reduction_factor=3, metric="val_best", mode="max")
    return acc, BudgetLimiter(inner, acc), asha, inner


def report(asha: SweepASHA, limiter: BudgetLimiter, trial_id: str, epoch: int,
           score: float) -> str:
    if trial_id not in asha._trial_info:
        asha.on_trial_add(None, SimpleNamespace(trial_id=trial_id))
    result = {"epoch": epoch, "val_best": score}
    limiter.on_trial_result(trial_id, result)
    return asha.on_trial_result(None, SimpleNamespace(trial_id=trial_id), result)


def test_a_trial_starts_only_when_its_first_stretch_and_the_reserve_fit() -> None:
    """Rungs 1, 3, 9 of 10 epochs: a new trial books 1 epoch and must leave 9 (one trial's way
    from its first rung to its end) to promotions."""
    acc, limiter, _, inner = budgeted(budget=12.5, max_t=10, rungs=(1, 3, 9))
    assert acc.reserve() == 9
    assert limiter.suggest("a") == {"x": 0} and acc.booked == {"a": 1}
    assert limiter.suggest("b") == {"x": 1} and limiter.suggest("c") == {"x": 2}
    assert acc.committed() == 3 and limiter.suggest("d") is None and inner.count == 3
    for name in "abc":
        limiter.on_trial_complete(name, {"epoch": 1})
    assert acc.spent == {"a": 1, "b": 1, "c": 1} and not acc.booked
    assert inner.completed == ["a", "b", "c"]


def test_the_reserve_lets_the_promising_trial_finish_and_the_sweep_ends_within_budget() -> None:
    acc, limiter, asha, inner = budgeted(budget=24, max_t=10, rungs=(1, 3, 9))
    limiter.suggest("a")
    for epoch in (1, 3, 9):  # alone at each rung: ASHA goes on
        assert report(asha, limiter, "a", epoch, 0.5) == TrialScheduler.CONTINUE
    assert acc.booked == {"a": 10}
    started = [t for t in "bcdefg" if limiter.suggest(t) is not None]
    assert started == list("bcdef") and acc.committed() == 15  # 15 + 1 + 9 > 24: g waits
    for epoch in (1, 3, 9):  # b is the best at every rung: the reserve pays its way to the end
        assert report(asha, limiter, "b", epoch, 0.9) == TrialScheduler.CONTINUE
    assert acc.booked["b"] == 10 and acc.committed() == 24
    # c would be promoted by ASHA (best at rung 1), but the budget is spent: it stops there
    assert report(asha, limiter, "c", 1, 0.99) == TrialScheduler.STOP
    for name, epoch in (("a", 10), ("b", 10), ("c", 1), ("d", 1), ("e", 1), ("f", 1)):
        limiter.on_trial_complete(name, {"epoch": epoch})
    assert sum(acc.spent.values()) == 24 and not acc.booked
    assert limiter.suggest("h") == Searcher.FINISHED and inner.count == 6


def test_a_trial_that_ends_early_frees_its_booking_for_another() -> None:
    acc, limiter, asha, _ = budgeted(budget=20, max_t=10, rungs=(2, 6))
    limiter.suggest("a")
    for epoch in (2, 6):
        assert report(asha, limiter, "a", epoch, 0.5) == TrialScheduler.CONTINUE
    assert limiter.suggest("b") is not None and limiter.suggest("c") is None  # 10 + 2 + 2 + 8
    limiter.on_trial_complete("a", {"epoch": 7})  # its schedule was shorter than max_t
    assert acc.spent == {"a": 7} and limiter.suggest("c") is not None  # 7 + 2 + 2 + 8 <= 20


def test_without_rungs_a_trial_books_its_whole_schedule() -> None:
    acc = Accounts(25, 10)
    limiter = BudgetLimiter(Proposals(), acc)
    assert limiter.suggest("a") and limiter.suggest("b") and limiter.suggest("c") is None
    assert acc.booked == {"a": 10, "b": 10}


def test_the_accounts_survive_a_restore_and_stay_shared_with_the_scheduler() -> None:
    """Tune pickles searcher and scheduler together (tuner.pkl) and then loads the searcher's
    saved state into it: the scheduler must see the restored accounts."""
    acc, limiter, asha, _ = budgeted(budget=14)
    limiter.suggest("a")
    report(asha, limiter, "a", 1, 0.5)
    limiter.on_trial_complete("a", {"epoch": 1})
    limiter.suggest("b")
    saved = pickle.loads(pickle.dumps(limiter.get_state()))
    fresh_limiter, fresh_asha = pickle.loads(pickle.dumps(budgeted(budget=14)[1:3]))
    assert fresh_limiter.accounts is fresh_asha.accounts
    fresh_limiter.set_state(saved)
    assert fresh_asha.accounts.spent == {"a": 1} and fresh_asha.accounts.booked == {"b": 1}


@pytest.mark.parametrize("budget, message", [
    (-1.0, "sweep budget must be >= 0 default runs but got -1.0"),
    (float("nan"), "sweep budget must be a finite number"),
    (float("inf"), "sweep budget must be a finite number"),
    ("3", "sweep budget must be a number"),
])
def test_a_bad_budget_is_one_line(budget: object, message: str) -> None:
    from orchestrator.space import SearchSpace
    from orchestrator.sweep import SweepConfig
    from trainers.config import ConfigError

    space = SearchSpace.from_dict("umt", {"lr": "loguniform:1e-4:1e-2"})
    with pytest.raises(ConfigError, match=message) as err:
        SweepConfig(space, budget=budget)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


def test_asha_never_stops_the_untuned_configuration() -> None:
    """The untuned trial is the reference every other trial is chosen against: a better trial
    reaching a rung first would make ASHA stop it, but it goes on (others are still judged)."""
    untuned = {"lr": 0.01, "alpha": 0.5}
    asha = SweepASHA(None, untuned, time_attr="epoch", max_t=10, grace_period=1,
                     reduction_factor=3, metric="val_best", mode="max")
    trials = {name: SimpleNamespace(trial_id=name, config=config) for name, config in (
        ("b", {"lr": 0.02, "alpha": 0.5}), ("a", {"lr": 0.01 + 1e-17, "alpha": 0.5}),
        ("c", {"lr": 0.03, "alpha": 0.1}))}
    for trial in trials.values():
        asha.on_trial_add(None, trial)
    assert asha.incumbent_id == "a"

    def at(name: str, epoch: int, score: float) -> str:
        return asha.on_trial_result(None, trials[name], {"epoch": epoch, "val_best": score})

    assert at("b", 1, 0.9) == TrialScheduler.CONTINUE
    assert at("a", 1, 0.5) == TrialScheduler.CONTINUE  # plain ASHA: STOP (0.5 < 0.9)
    assert at("c", 1, 0.4) == TrialScheduler.STOP


def test_the_incumbent_books_its_whole_schedule_so_the_budget_never_cuts_it() -> None:
    acc = Accounts(24, 10, (1, 3, 9), incumbent={"lr": 0.01})
    limiter = BudgetLimiter(Proposals(), acc)
    limiter.searcher.suggest = lambda trial_id: {"lr": 0.01}  # type: ignore[method-assign]
    limiter.suggest("a")
    limiter.searcher.suggest = lambda trial_id: {"lr": 0.02}  # type: ignore[method-assign]
    limiter.suggest("b")
    assert acc.booked == {"a": 10, "b": 1} and acc.incumbent_id == "a"
    assert acc.extend("a", 9)  # nothing more to book


def outcome(trial_id: str, values: dict, score: float, status: str = "finished"):  # noqa: ANN201
    from orchestrator.sweep import TrialOutcome

    record = SimpleNamespace(metrics={"val": {"fused": {"accuracy": score}}})
    return TrialOutcome(trial_id, values, None, status, record, {})  # type: ignore[arg-type]


@pytest.mark.parametrize("min_gain, expected", [(0.0, "b"), (1.0, "b"), (1.5, "a"), (5.0, "a")])
def test_another_configuration_replaces_the_untuned_one_only_by_min_gain(
        min_gain: float, expected: str) -> None:
    from orchestrator import choice

    outcomes = [outcome("a", {"lr": 0.01}, 0.870), outcome("b", {"lr": 0.02}, 0.882),
                outcome("c", {"lr": 0.03}, 0.95, status="stopped")]
    assert choice.best_trial(outcomes).trial_id == "b"  # no incumbent: the best finished
    assert choice.best_trial(outcomes, {"lr": 0.01}, min_gain).trial_id == expected


def test_a_budget_that_cannot_pay_for_one_trial_is_one_line() -> None:
    from orchestrator.search import scheduler_plan
    from orchestrator.space import SearchSpace
    from orchestrator.sweep import SweepConfig, SweepContext
    from orchestrator.train_fn import DataRef, JobResources
    from trainers.config import ConfigError, TrainConfig
    from trainers.storage import Storage

    ref = DataRef("synthetic_both")
    base = TrainConfig(strategy="fusion_concat", epochs=10)
    space = SearchSpace.from_dict("fusion_concat", {"lr": "choice:0.01,0.1"})
    ctx = SweepContext(ref, ref.load().spec, base, space, Storage.open("/tmp/x"),
                       JobResources(cpus_per_worker=1, gpus_per_worker=0),
                       more=(base.replace(seed=1),))  # two seeds per trial: 20 epochs
    with pytest.raises(ConfigError) as err:
        scheduler_plan(ctx, SweepConfig(space, budget=1.5, seeds_per_trial=2))
    assert str(err.value) == (
        "--budget 1.5 (default runs of 10 epochs) cannot pay for one trial, which may take 20 "
        "epochs (2 seed(s) of the space's longest schedule); use --budget 2 or more, --budget 0 "
        "for no budget, or fewer --seeds-per-trial")
    _, _, accounts = scheduler_plan(ctx, SweepConfig(space, budget=2, seeds_per_trial=2))
    assert accounts is not None and accounts.budget_epochs == 20 and accounts.max_t == 20
    assert scheduler_plan(ctx, SweepConfig(space, seeds_per_trial=2))[2] is None  # no budget
