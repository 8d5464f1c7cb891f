"""Multi-objective regularized evolution: the algorithm core, independent of NNI.

:class:`ParetoEvolutionCore` proposes candidates with :meth:`~ParetoEvolutionCore.ask` and
receives their metrics with :meth:`~ParetoEvolutionCore.tell`; an NNI 3.0 ``Strategy`` or an
nnictl ``Tuner`` wraps it.  The algorithm is regularized evolution (Real et al., 2019) with an
NSGA-II tournament, and its state (random state included) is JSON data, so a resumed search
proposes exactly what an uninterrupted one would.  The rules are in docs/strategies.md.
"""
from __future__ import annotations

import copy
import json
import math
import numbers
import random
from collections import deque
from dataclasses import dataclass
from typing import (Any, Deque, Dict, Generic, Hashable, Iterable, List, Mapping, Optional, Protocol, Sequence,
                    Tuple, TypeVar, Union, runtime_checkable)

import numpy as np

from .pareto import Objective, ObjectiveSpec, as_objectives, pareto_front, rank_and_crowding, to_min_matrix

__all__ = [
    "SearchSpaceAdapter",
    "Trial",
    "SearchExhausted",
    "ParetoEvolutionCore",
]

C = TypeVar("C")

STATE_VERSION = 1


@runtime_checkable
class SearchSpaceAdapter(Protocol[C]):
    """What the evolution needs from a search space.

    Required:

    * ``random_sample(rng) -> candidate``: a uniformly random architecture;
    * ``mutate(candidate, rng) -> candidate``: a new candidate differing by one change (one
      op or one input edge); it receives a copy and may modify it;
    * ``key(candidate) -> hashable``: identity used to skip duplicates; must depend only on
      the candidate's content (not ``id()`` or salted ``hash()``), so it is stable across
      processes.

    Optional (looked up with ``getattr``):

    * ``cheap_metrics(candidate) -> dict``: metrics known before training (e.g. ``params``,
      ``flops``); merged under the trained metrics and used for the ``max_params`` budget;
    * ``encode(candidate) -> JSON value`` / ``decode(value) -> candidate``: used by
      ``state_dict``; default identity, which requires candidates to be JSON-compatible and
      unchanged by a JSON round trip (a dict of str/int/float choices, as NNI samples are).

    Every random choice must use the ``rng`` argument, never a global generator.
    """

    def random_sample(self, rng: random.Random) -> C: ...

    def mutate(self, candidate: C, rng: random.Random) -> C: ...

    def key(self, candidate: C) -> Hashable: ...


class SearchExhausted(RuntimeError):
    """No new candidate within the attempt limit: the space is (nearly) exhausted or the
    ``max_params`` budget rejects almost everything."""


@dataclass
class Trial(Generic[C]):
    """One told result. ``metrics`` is what the trainer reported (``None`` when failed),
    ``cheap`` what the space computed before training; ``origin`` is "random", "mutation" or
    "external" (told without being asked), ``parent`` the history index mutated from."""

    index: int
    candidate: C
    metrics: Optional[Dict[str, Any]]
    cheap: Optional[Dict[str, Any]]
    status: str
    origin: str
    parent: Optional[int] = None
    reason: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def record(self) -> Dict[str, Any]:
        """Trained metrics with the cheap metrics over them: the values objectives are read
        from. What the search counted itself before training (e.g. ``params`` of the target
        network) wins over a trial's own report of the same name."""
        return {**(self.metrics or {}), **(self.cheap or {})}


@dataclass
class _Pending(Generic[C]):
    candidate: C
    cheap: Optional[Dict[str, Any]]
    origin: str
    parent: Optional[int]


def _plain(value: Any) -> Any:
    """numpy scalars and containers -> plain Python, so metrics stay JSON-compatible."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class TrialLog(Generic[C]):
    """What every ask/tell core keeps and shows: ``history`` (told trials, in order) under
    ``objectives``, the pending proposals, the successful trials, their minimisation matrix and
    the Pareto front (shared by ParetoEvolutionCore and strategies.optuna_core.OptunaCore)."""

    history: List[Trial[C]]
    objectives: List[Objective]
    space: Any
    _pending: Dict[Hashable, "_Pending[C]"]

    @property
    def pending(self) -> List[C]:
        """Candidates asked but not yet told, in asking order (re-dispatch these after a resume)."""
        return [p.candidate for p in self._pending.values()]

    def proposal(self, candidate: C) -> Dict[str, Any]:
        """``origin`` (how it was proposed) and ``parent`` (None or a history index) of a pending candidate."""
        pending = self._pending[self.space.key(candidate)]
        return {"origin": pending.origin, "parent": pending.parent}

    def successful(self) -> List[Trial[C]]:
        """All successful trials, in telling order."""
        return [t for t in self.history if t.ok]

    def points(self, trials: Optional[Sequence[Trial[C]]] = None) -> np.ndarray:
        """Minimisation matrix of ``trials`` (default: all successful), one column per objective."""
        trials = self.successful() if trials is None else trials
        return to_min_matrix([t.record for t in trials], self.objectives).reshape(len(trials), len(self.objectives))

    def front(self) -> List[Trial[C]]:
        """Pareto front over all successful results so far (ties kept), in telling order."""
        ok = self.successful()
        return [ok[i] for i in pareto_front([t.record for t in ok], self.objectives)]

    def front_indices(self) -> List[int]:
        """History indices of :meth:`front`."""
        return [t.index for t in self.front()]

    def _check_saved_config(self, saved: Any) -> None:
        """ValueError unless a saved state's configuration is this core's (``self._config()``),
        compared through JSON so tuples/lists and int/float spellings do not matter."""
        theirs = json.loads(json.dumps(saved))
        ours = json.loads(json.dumps(self._config()))  # type: ignore[attr-defined]
        if theirs != ours:
            diff = {k: (theirs.get(k) if isinstance(theirs, dict) else None, v) for k, v in ours.items()
                    if not isinstance(theirs, dict) or theirs.get(k) != v}
            raise ValueError(f"state was saved with a different configuration (saved, current): {diff}")

    def _new_trial(self, pending: "_Pending[C]", metrics: Optional[Mapping[str, Any]], reason: Optional[str]
                   ) -> Trial[C]:
        """The next history entry for a told result: ok when every objective is a finite number
        (a result with a non-finite objective is recorded as failed); ValueError when the
        metrics lack an objective."""
        if metrics is not None and not isinstance(metrics, Mapping):
            raise ValueError(f"metrics must be a mapping or None, got {type(metrics).__name__}")
        trial = Trial(index=len(self.history), candidate=pending.candidate, metrics=None, cheap=pending.cheap,
                      status="failed", origin=pending.origin, parent=pending.parent, reason=reason)
        if metrics is not None:
            trial.metrics = _plain(dict(metrics))
            missing = [o.name for o in self.objectives if o.name not in trial.record]
            if missing:
                raise ValueError(f"metrics lack objective(s) {missing}: got {sorted(trial.record)}")
            try:
                finite = all(math.isfinite(float(trial.record[o.name])) for o in self.objectives)
            except (TypeError, ValueError):
                finite = False
            if finite:
                trial.status = "ok"
            elif trial.reason is None:
                trial.reason = "non-finite objective value"
        return trial


class ParetoEvolutionCore(TrialLog[C]):
    """Ask/tell multi-objective regularized evolution (see docs/strategies.md).

    ``objectives``: e.g. ``[Objective("accuracy", "max"), Objective("params", "min")]`` or
    ``["accuracy:max", "params:min"]``. ``max_params``: upper bound on
    ``cheap_metrics(candidate)[params_key]``; needs a space with ``cheap_metrics``.
    ``max_attempts``: how many duplicate/over-budget draws one ``ask`` tolerates per mode
    (mutation, then random) before raising :class:`SearchExhausted`.
    """

    def __init__(
        self,
        space: SearchSpaceAdapter[C],
        objectives: Union[Iterable[ObjectiveSpec], Mapping[str, str]],
        population_size: int = 100,
        sample_size: int = 25,
        seed: Optional[int] = None,
        max_params: Optional[float] = None,
        params_key: str = "params",
        max_attempts: int = 200,
    ) -> None:
        for name in ("random_sample", "mutate", "key"):
            if not callable(getattr(space, name, None)):
                raise ValueError(f"space has no callable {name}(); see SearchSpaceAdapter")
        if int(population_size) != population_size or population_size < 1:
            raise ValueError(f"population_size must be a positive integer, got {population_size!r}")
        if int(sample_size) != sample_size or not 1 <= sample_size <= population_size:
            raise ValueError(f"sample_size must be an integer in [1, population_size={population_size}], "
                             f"got {sample_size!r}")
        if max_params is not None:
            if not (isinstance(max_params, numbers.Real) and math.isfinite(max_params) and max_params > 0):
                raise ValueError(f"max_params must be a positive number, got {max_params!r}")
            max_params = float(max_params)
            if not callable(getattr(space, "cheap_metrics", None)):
                raise ValueError("max_params needs a space with cheap_metrics(candidate) -> dict")
        if int(max_attempts) != max_attempts or max_attempts < 1:
            raise ValueError(f"max_attempts must be a positive integer, got {max_attempts!r}")
        if seed is None:
            seed = random.SystemRandom().randrange(2 ** 32)
        if int(seed) != seed:
            raise ValueError(f"seed must be an integer, got {seed!r}")

        self.space = space
        self.objectives: List[Objective] = as_objectives(objectives)
        self.population_size = int(population_size)
        self.sample_size = int(sample_size)
        self.seed = int(seed)
        self.max_params = max_params
        self.params_key = params_key
        self.max_attempts = int(max_attempts)

        self.rng = random.Random(self.seed)
        self.history: List[Trial[C]] = []
        self._population: Deque[int] = deque()
        self._pending: Dict[Hashable, _Pending[C]] = {}
        self._told: Dict[Hashable, int] = {}
        self._rejected: Dict[Hashable, C] = {}
        self.n_asked = 0
        self.n_rejected = 0
        self.n_duplicates = 0

    # ------------------------------------------------------------------ views
    @property
    def population(self) -> List[Trial[C]]:
        """Current population, oldest first."""
        return [self.history[i] for i in self._population]

    # ------------------------------------------------------------------ ask / tell
    def ask(self) -> C:
        """Propose a new candidate (never one already asked, told or rejected)."""
        if len(self._population) >= self.population_size:
            found = self._draw(mutation=True)
            if found is None:
                found = self._draw(mutation=False)
        else:
            found = self._draw(mutation=False)
        if found is None:
            raise SearchExhausted(
                f"no new candidate in {self.max_attempts} attempts per mode "
                f"({self.n_duplicates} duplicates, {self.n_rejected} rejected over budget so far)")
        key, pending = found
        self._pending[key] = pending
        self.n_asked += 1
        return pending.candidate

    def tell(self, candidate: C, metrics: Optional[Mapping[str, Any]], reason: Optional[str] = None
             ) -> Optional[Trial[C]]:
        """Record the result of ``candidate``; ``metrics=None`` records a failure (kept in
        history, never a parent). A result whose objective values are not finite is recorded
        as failed too. A candidate already told is ignored and ``None`` returned, so replaying
        results after a resume never counts one twice. A candidate never asked is accepted as
        "external" (e.g. a known cell to seed the population)."""
        key = self.space.key(candidate)
        if key in self._told:
            return None
        pending = self._pending.get(key)
        if pending is None:
            pending = _Pending(candidate, self._cheap(candidate), "external", None)
        trial = self._new_trial(pending, metrics, reason)
        self._pending.pop(key, None)
        self.history.append(trial)
        self._told[key] = trial.index
        if trial.ok:
            self._population.append(trial.index)
            while len(self._population) > self.population_size:
                self._population.popleft()
        return trial

    # ------------------------------------------------------------------ internals
    def _cheap(self, candidate: C) -> Optional[Dict[str, Any]]:
        fn = getattr(self.space, "cheap_metrics", None)
        return _plain(dict(fn(candidate))) if callable(fn) else None

    def _seen(self, key: Hashable) -> bool:
        return key in self._told or key in self._pending or key in self._rejected

    def _tournament_keys(self) -> List[Tuple[int, float]]:
        """(rank, -crowding) of each population member, in population order."""
        ranks, crowd = rank_and_crowding(self.points(self.population))
        return [(int(r), -float(c)) for r, c in zip(ranks, crowd)]

    def _draw(self, mutation: bool) -> Optional[Tuple[Hashable, _Pending[C]]]:
        """Up to ``max_attempts`` draws of a new, within-budget candidate."""
        sort_keys = self._tournament_keys() if mutation else None
        members = list(self._population)
        for _ in range(self.max_attempts):
            parent: Optional[int] = None
            if mutation:
                assert sort_keys is not None
                drawn = self.rng.sample(range(len(members)), min(self.sample_size, len(members)))
                winner = min(drawn, key=lambda pos: sort_keys[pos])  # min() keeps the first of ties
                parent = members[winner]
                candidate = self.space.mutate(copy.deepcopy(self.history[parent].candidate), self.rng)
            else:
                candidate = self.space.random_sample(self.rng)
            key = self.space.key(candidate)
            if self._seen(key):
                self.n_duplicates += 1
                continue
            cheap = self._cheap(candidate)
            if self.max_params is not None:
                if cheap is None or self.params_key not in cheap:
                    raise ValueError(f"cheap_metrics() gave no {self.params_key!r} for the max_params budget")
                if float(cheap[self.params_key]) > self.max_params:
                    self._rejected[key] = candidate
                    self.n_rejected += 1
                    continue
            return key, _Pending(candidate, cheap, "mutation" if mutation else "random", parent)
        return None

    # ------------------------------------------------------------------ persistence
    def _encode(self, candidate: C) -> Any:
        fn = getattr(self.space, "encode", None)
        return _plain(fn(candidate)) if callable(fn) else _plain(candidate)

    def _decode(self, value: Any) -> C:
        fn = getattr(self.space, "decode", None)
        return fn(value) if callable(fn) else value

    def _config(self) -> Dict[str, Any]:
        return {
            "objectives": [[o.name, o.direction] for o in self.objectives],
            "population_size": self.population_size,
            "sample_size": self.sample_size,
            "seed": self.seed,
            "max_params": self.max_params,
            "params_key": self.params_key,
            "max_attempts": self.max_attempts,
        }

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to resume, as JSON-compatible data (``json.dumps`` works on it)."""
        version, internal, gauss = self.rng.getstate()
        state = {
            "version": STATE_VERSION,
            "config": self._config(),
            "rng": [version, list(internal), gauss],
            "history": [
                {"index": t.index, "candidate": self._encode(t.candidate), "metrics": t.metrics, "cheap": t.cheap,
                 "status": t.status, "origin": t.origin, "parent": t.parent, "reason": t.reason}
                for t in self.history
            ],
            "population": list(self._population),
            "pending": [
                {"candidate": self._encode(p.candidate), "cheap": p.cheap, "origin": p.origin, "parent": p.parent}
                for p in self._pending.values()
            ],
            "rejected": [self._encode(c) for c in self._rejected.values()],
            "counters": {"n_asked": self.n_asked, "n_rejected": self.n_rejected, "n_duplicates": self.n_duplicates},
        }
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (possibly after a JSON round trip). The configuration
        (objectives, sizes, seed, budget) must match this instance's, otherwise ValueError."""
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise ValueError(f"not an evolution state of version {STATE_VERSION}")
        self._check_saved_config(state.get("config"))
        version, internal, gauss = state["rng"]
        rng = random.Random()
        rng.setstate((version, tuple(internal), gauss))

        history: List[Trial[C]] = []
        told: Dict[Hashable, int] = {}
        for i, h in enumerate(state["history"]):
            if h["index"] != i:
                raise ValueError(f"history entry {i} has index {h['index']}")
            cand = self._decode(h["candidate"])
            history.append(Trial(index=i, candidate=cand, metrics=h["metrics"], cheap=h["cheap"], status=h["status"],
                                 origin=h["origin"], parent=h["parent"], reason=h.get("reason")))
            told[self.space.key(cand)] = i
        population = deque(int(i) for i in state["population"])
        if any(not (0 <= i < len(history)) or not history[i].ok for i in population):
            raise ValueError("population refers to missing or failed history entries")
        pending: Dict[Hashable, _Pending[C]] = {}
        for p in state["pending"]:
            cand = self._decode(p["candidate"])
            pending[self.space.key(cand)] = _Pending(cand, p["cheap"], p["origin"], p["parent"])
        rejected: Dict[Hashable, C] = {}
        for r in state["rejected"]:
            cand = self._decode(r)
            rejected[self.space.key(cand)] = cand

        self.rng = rng
        self.history = history
        self._told = told
        self._population = population
        self._pending = pending
        self._rejected = rejected
        counters = state["counters"]
        self.n_asked = int(counters["n_asked"])
        self.n_rejected = int(counters["n_rejected"])
        self.n_duplicates = int(counters["n_duplicates"])
