"""``search.strategy`` -> an ask/tell core: the one factory (with one set of defaults and
checks) that the in-process search, the NNI strategy and the nnictl tuner all use, so a
strategy name and its settings mean the same algorithm everywhere.

``evolution``: :class:`~strategies.evolution.ParetoEvolutionCore`; ``random``: the same core
with a population it never fills (uniform samples for ever); ``nsga2`` / ``motpe``:
:class:`~strategies.optuna_core.OptunaCore` (Optuna is imported only for these).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Optional

from .evolution import ParetoEvolutionCore, TrialLog
from .search_config import STRATEGIES, SearchSection

__all__ = ["CoreSettings", "RANDOM_POPULATION"]

#: population size that makes the evolution sample at random for ever: the "random" strategy
RANDOM_POPULATION = 10 ** 9


@dataclass(frozen=True)
class CoreSettings:
    """A strategy and its settings; unset ones take ``osep-nas search``'s defaults
    (:class:`~strategies.search_config.SearchSection`). ValueError on a bad value."""
    strategy: str
    population_size: int
    sample_size: int
    seed: Optional[int]
    max_params: Optional[float]

    @classmethod
    def of(cls, strategy: Optional[str] = None, population_size: Optional[int] = None,
           sample_size: Optional[int] = None, seed: Optional[int] = None,
           max_params: Optional[float] = None) -> "CoreSettings":
        d = SearchSection()
        strategy = d.strategy if strategy is None else strategy
        population_size = d.population_size if population_size is None else population_size
        sample_size = d.sample_size if sample_size is None else sample_size
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        if isinstance(population_size, bool) or not isinstance(population_size, int) or population_size < 1:
            raise ValueError(f"population_size must be a positive integer, got {population_size!r}")
        if isinstance(sample_size, bool) or not isinstance(sample_size, int) or not 1 <= sample_size <= population_size:
            raise ValueError(f"sample_size must be an integer in [1, population_size={population_size}], "
                             f"got {sample_size!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if max_params is not None and not (isinstance(max_params, numbers.Real) and not isinstance(max_params, bool)
                                           and math.isfinite(max_params) and max_params > 0):
            raise ValueError(f"max_params must be a positive number, got {max_params!r}")
        return cls(strategy, population_size, sample_size, seed, max_params)

    def make(self, space: Any, objectives: Any, max_attempts: int = 500) -> TrialLog:
        """The core over ``space`` (a GenotypeSpace); #Params are read from the ``params`` key of
        the space's cheap metrics (the target network's count)."""
        if self.strategy in ("nsga2", "motpe"):
            from .optuna_core import OptunaCore

            return OptunaCore(space, objectives, sampler=self.strategy, population_size=self.population_size,
                              seed=self.seed, max_params=self.max_params, params_key="params",
                              max_attempts=max_attempts)
        random_only = self.strategy == "random"
        return ParetoEvolutionCore(space, objectives,
                                   population_size=RANDOM_POPULATION if random_only else self.population_size,
                                   sample_size=1 if random_only else self.sample_size, seed=self.seed,
                                   max_params=self.max_params, params_key="params", max_attempts=max_attempts)
