"""Strategies registered by name: ``create_strategy(spec, cfg)``, ``list_strategies()``."""

from __future__ import annotations

from trainers.strategies.base import (
    STRATEGIES,
    OptimSpec,
    Phase,
    Strategy,
    register_strategy,
    strategy_class,
)


def _import_builtin() -> None:
    from trainers.strategies import (  # noqa: F401
        fusion,
        gblending,
        mla,
        mmpareto,
        modality_dropout,
        ogm_ge,
        pmr,
        reconboost,
        ume,
        umt,
        unicat,
        unimodal,
    )


_import_builtin()


def list_strategies() -> list[str]:
    return STRATEGIES.names()


def create_strategy(spec, cfg):  # noqa: ANN001, ANN201 - typed in trainers.api
    """Build the strategy ``cfg.strategy`` for dataset ``spec``."""
    return strategy_class(cfg.strategy)(spec, cfg)


__all__ = ["STRATEGIES", "OptimSpec", "Phase", "Strategy", "create_strategy", "list_strategies",
           "register_strategy", "strategy_class"]
