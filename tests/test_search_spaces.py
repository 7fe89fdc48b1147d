"""Every strategy's declared SEARCH_SPACE is a valid sweep space (what ``sweeps/tune.py`` uses)
and covers the method's main knob and the papers' settings."""

from __future__ import annotations

import pytest

from orchestrator.space import SearchSpace
from trainers.strategies import list_strategies, strategy_class

DECLARED = [n for n in list_strategies() if strategy_class(n).SEARCH_SPACE]
MAIN_KNOB = {"ogm_ge": "alpha", "pmr": "alpha", "modality_dropout": "p", "gblending": "period",
             "mmpareto": "gamma", "mla": "lr", "umt": "lambda_distill",
             "reconboost": "lambda_boost"}


@pytest.mark.parametrize("name", DECLARED)
def test_declared_space_is_a_valid_search_space(name):
    space = SearchSpace.from_dict(name, strategy_class(name).SEARCH_SPACE)
    assert {p.key for p in space} == set(strategy_class(name).SEARCH_SPACE)


@pytest.mark.parametrize(("name", "knob"), MAIN_KNOB.items())
def test_main_knob_is_searched(name, knob):
    assert knob in strategy_class(name).SEARCH_SPACE


def params(name):
    return {p.key: p for p in SearchSpace.from_dict(name, strategy_class(name).SEARCH_SPACE)}


def test_umt_space_is_the_papers_grid_including_zero():
    assert set(params("umt")["lambda_distill"].values) == {0, 1, 10, 20, 50, 100}


def test_reconboost_space_reaches_the_paper_defaults():
    p = params("reconboost")
    assert p["epochs_per_stage"].high >= 4 and p["rectify_epochs"].high >= 4
    assert p["rectify_epochs"].low == 0  # E2 = 0 (no rectification) is searched too
    assert p["stages"].high >= 6
    assert (p["lambda_boost"].low, p["lambda_boost"].high) == (0, 1)
    assert (p["alpha"].low, p["alpha"].high) == (0, 1)
    assert "lr" in p


@pytest.mark.parametrize("name", DECLARED)
def test_every_declared_space_contains_the_untuned_configuration(name):
    """The sweep's first trial is the strategy's own default (so a sweep's best is the
    default unless something beats it on validation): every declared space must contain it."""
    from trainers.config import TrainConfig

    space = SearchSpace.from_dict(name, strategy_class(name).SEARCH_SPACE)
    point = space.point_of(TrainConfig(strategy=name))
    assert point is not None and set(point) == set(strategy_class(name).SEARCH_SPACE)
    applied = space.apply(TrainConfig(strategy=name), point)
    cls = strategy_class(name)
    assert cls.make_params(applied.params) == cls.make_params({})
    assert applied.replace(params={}) == TrainConfig(strategy=name)


def test_a_default_outside_the_space_starts_nothing_and_the_optuna_searcher_gets_the_point():
    from orchestrator.search import searcher
    from orchestrator.sweep import SweepConfig
    from trainers.config import TrainConfig

    base = TrainConfig(strategy="umt", lr=0.001, params={"lambda_distill": 20.0})
    space = SearchSpace.from_dict("umt", {"lambda_distill": "choice:0,20", "lr": "uniform:0.1:1"})
    assert space.point_of(base) is None  # lr 0.001 is outside uniform:0.1:1
    inside = SearchSpace.from_dict("umt", {"lambda_distill": "choice:0,20",
                                           "lr": "loguniform:1e-4:1e-2"})
    point = inside.point_of(base)
    assert point == {"lambda_distill": 20, "lr": 0.001} and type(point["lambda_distill"]) is int
    search = searcher(SweepConfig(inside), [point])
    assert search._points_to_evaluate == [point]
    assert SearchSpace.from_dict("reconboost", {"stages": "int:2:6"}).point_of(
        TrainConfig(strategy="reconboost", params={"stages": 4})) == {"stages": 4}
