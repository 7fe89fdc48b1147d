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
