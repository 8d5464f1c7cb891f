"""Multi-objective (accuracy, #Params) search strategies over osep cell spaces.

The public classes are attributes of this package, imported on first use so that
``import strategies`` stays light (nnictl's tuner process must connect within seconds):

* ``ParetoEvolution`` (:mod:`strategies.nni_strategy`): NNI 3.0 multi-trial strategy;
* ``ParetoTuner`` (:mod:`strategies.tuner`): the same algorithm as an nnictl tuner;
* ``ParamsPenalizedDarts`` (:mod:`strategies.oneshot`): DARTS with an expected-#Params penalty.
"""
from __future__ import annotations

from osep_nas.lazy import lazy_getattr

_LAZY = {
    "ParetoEvolution": "strategies.nni_strategy",
    "ParetoTuner": "strategies.tuner",
    "ParamsPenalizedDarts": "strategies.oneshot",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
