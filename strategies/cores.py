"""``search.strategy`` -> an ask/tell core: the one factory the in-process search, the NNI
strategy and the nnictl tuner all use, so a strategy name means the same algorithm everywhere.

``evolution``: :class:`~strategies.evolution.ParetoEvolutionCore`; ``random``: the same core
with a population it never fills (uniform samples for ever); ``nsga2`` / ``motpe``:
:class:`~strategies.optuna_core.OptunaCore` (Optuna is imported only for these).
"""
from __future__ import annotations

from typing import Any, Optional

from .evolution import ParetoEvolutionCore, TrialLog
from .search_config import STRATEGIES

__all__ = ["make_core", "RANDOM_POPULATION"]

#: population size that makes the evolution sample at random for ever: the "random" strategy
RANDOM_POPULATION = 10 ** 9


def make_core(strategy: str, space: Any, objectives: Any, *, population_size: int, sample_size: int,
              seed: Optional[int], max_params: Optional[float], max_attempts: int = 500) -> TrialLog:
    """The core of ``strategy`` over ``space`` (a GenotypeSpace); #Params are read from the
    ``params`` key of the space's cheap metrics (the target network's count)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if strategy in ("nsga2", "motpe"):
        from .optuna_core import OptunaCore

        return OptunaCore(space, objectives, sampler=strategy, population_size=population_size, seed=seed,
                          max_params=max_params, params_key="params", max_attempts=max_attempts)
    random_only = strategy == "random"
    return ParetoEvolutionCore(space, objectives,
                               population_size=RANDOM_POPULATION if random_only else population_size,
                               sample_size=1 if random_only else sample_size, seed=seed,
                               max_params=max_params, params_key="params", max_attempts=max_attempts)
