"""``sweeps/tune.py``: any registered strategy's declared space; bad input in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeps import reconboost_tune, tune, umt_tune
from trainers.strategies import list_strategies, strategy_class


def test_every_tunable_strategy_gets_its_declared_space() -> None:
    for name in list_strategies():
        if strategy_class(name).SEARCH_SPACE:
            assert tune.script_for(name).space == dict(strategy_class(name).SEARCH_SPACE)
    assert umt_tune.SCRIPT.space == dict(strategy_class("umt").SEARCH_SPACE)
    assert reconboost_tune.SCRIPT.extra == {"warm_start": True}


@pytest.mark.parametrize(("argv", "needle"), [
    ([], "--strategy NAME is required"),
    (["--strategy", "nope"], "--strategy 'nope' is not registered"),
    (["--strategy", "fusion_concat"], "declares no SEARCH_SPACE"),
    (["--strategy", "ogm_ge", "--space", "alpah=uniform:0:1"], "unknown key 'alpah'"),
])
def test_bad_input_is_one_line(argv: list[str], needle: str, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    code = tune.main([*argv, "--storage", str(tmp_path), "--dataset", "synthetic_both"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
