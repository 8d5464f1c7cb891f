"""Optuna's multi-objective samplers behind the evolution core's ask/tell interface.

:class:`OptunaCore` drives an in-memory ``optuna`` study with ``NSGAIISampler`` ("nsga2") or
a multivariate ``TPESampler`` ("motpe") and offers what :func:`strategies.search.run_search`
uses on :class:`~strategies.evolution.ParetoEvolutionCore`, so ``search.strategy: nsga2 |
motpe`` runs the same trial loop.  Resume is exact: every study event is recorded and
replayed into a freshly seeded study.  Parameters, refusals and resume: docs/strategies.md.
"""
from __future__ import annotations

import json
import math
import numbers
import random
import warnings
from typing import Any, Dict, Hashable, Iterable, List, Mapping, Optional, Tuple, Union

from osep_nas.genotypes import Genotype

from .evolution import SearchExhausted, Trial, TrialLog, _Pending, _plain
from search_spaces.genotype_space import CELLS, GenotypeSpace
from .pareto import Objective, ObjectiveSpec, as_objectives

__all__ = ["OptunaCore", "SAMPLERS", "genotype_distributions", "genotype_to_params", "params_to_genotype"]

STATE_VERSION = 1
SAMPLERS = ("nsga2", "motpe")


def _optuna() -> Any:
    """Import optuna with its logging and experimental warnings silenced."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.logging.disable_default_handler()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


# ----------------------------------------------------------------------------- genotype <-> params

def _labels(space: GenotypeSpace) -> List[Tuple[str, int, int]]:
    """(cell, state index i, edge k) of every edge, in genotype order."""
    return [(cell, node + 2, k) for cell in CELLS for node in range(space.num_nodes) for k in (0, 1)]


def genotype_distributions(space: GenotypeSpace) -> Dict[str, Any]:
    """One ``CategoricalDistribution`` per edge op and per edge input (see docs/strategies.md)."""
    optuna = _optuna()
    dists: Dict[str, Any] = {}
    for cell, i, k in _labels(space):
        dists[f"{cell}/op_{i}_{k}"] = optuna.distributions.CategoricalDistribution(list(space.ops))
        n_inputs = i - 1 if (space.distinct_inputs and k == 1) else i
        dists[f"{cell}/input_{i}_{k}"] = optuna.distributions.CategoricalDistribution(list(range(n_inputs)))
    return dists


def params_to_genotype(space: GenotypeSpace, params: Mapping[str, Any]) -> Genotype:
    """The genotype of an Optuna parameter dict; ValueError on a missing or bad value."""
    cells: Dict[str, List[Tuple[str, int]]] = {c: [] for c in CELLS}
    try:
        for cell, i, k in _labels(space):
            op = params[f"{cell}/op_{i}_{k}"]
            j = int(params[f"{cell}/input_{i}_{k}"])
            if op not in space.ops:
                raise ValueError(f"{cell}/op_{i}_{k}: {op!r} is not an op of the space")
            if space.distinct_inputs and k == 1:
                first = cells[cell][-1][1]
                if not 0 <= j < i - 1:
                    raise ValueError(f"{cell}/input_{i}_{k}: {j} out of range 0..{i - 2}")
                j = j if j < first else j + 1
            elif not 0 <= j < i:
                raise ValueError(f"{cell}/input_{i}_{k}: {j} out of range 0..{i - 1}")
            cells[cell].append((str(op), j))
    except KeyError as exc:
        raise ValueError(f"parameters lack {exc.args[0]!r}") from None
    concat = list(range(2, space.num_nodes + 2))
    return Genotype(cells["normal"], concat, cells["reduce"], list(concat))


def genotype_to_params(space: GenotypeSpace, genotype: Genotype) -> Dict[str, Any]:
    """The Optuna parameter dict of a genotype of ``space`` (ValueError if not in the space)."""
    if not space.contains(genotype):
        raise ValueError(f"genotype is not in the space: {genotype!r}"[:300])
    params: Dict[str, Any] = {}
    for cell in CELLS:
        edges = list(getattr(genotype, cell))
        for pos, (op, j) in enumerate(edges):
            i, k = pos // 2 + 2, pos % 2
            if space.distinct_inputs and k == 1:
                first = int(edges[pos - 1][1])
                j = j if j < first else j - 1
            params[f"{cell}/op_{i}_{k}"] = str(op)
            params[f"{cell}/input_{i}_{k}"] = int(j)
    return params


# ----------------------------------------------------------------------------- the core

class OptunaCore(TrialLog[Genotype]):
    """Ask/tell over an Optuna multi-objective study (see docs/strategies.md).

    ``sampler``: "nsga2" (``NSGAIISampler(population_size=..., seed=...)``) or "motpe"
    (``TPESampler(multivariate=True, seed=...)``). ``objectives``: e.g.
    ``["accuracy:max", "params:min"]``, their directions become the study's. ``max_params``,
    ``params_key`` and ``max_attempts`` mean what they mean for
    :class:`~strategies.evolution.ParetoEvolutionCore`."""

    def __init__(self, space: GenotypeSpace, objectives: Union[Iterable[ObjectiveSpec], Mapping[str, str]],
                 sampler: str = "nsga2", population_size: int = 50, seed: Optional[int] = None,
                 max_params: Optional[float] = None, params_key: str = "params", max_attempts: int = 200) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        for name in ("key", "cheap_metrics", "contains"):
            if not callable(getattr(space, name, None)):
                raise ValueError(f"space has no callable {name}(); OptunaCore needs a GenotypeSpace")
        if isinstance(population_size, bool) or int(population_size) != population_size or population_size < 2:
            raise ValueError(f"population_size must be an integer >= 2 for Optuna's samplers, got {population_size!r}")
        if max_params is not None:
            if not (isinstance(max_params, numbers.Real) and math.isfinite(max_params) and max_params > 0):
                raise ValueError(f"max_params must be a positive number, got {max_params!r}")
            max_params = float(max_params)
        if isinstance(max_attempts, bool) or int(max_attempts) != max_attempts or max_attempts < 1:
            raise ValueError(f"max_attempts must be a positive integer, got {max_attempts!r}")
        if seed is None:
            seed = random.SystemRandom().randrange(2 ** 32)
        if isinstance(seed, bool) or int(seed) != seed:
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.space = space
        self.objectives: List[Objective] = as_objectives(objectives)
        self.sampler_name = sampler
        self.population_size = int(population_size)
        self.seed = int(seed)
        self.max_params = max_params
        self.params_key = params_key
        self.max_attempts = int(max_attempts)
        self._distributions = genotype_distributions(space)
        self._reset()

    def _reset(self) -> None:
        optuna = _optuna()
        if self.sampler_name == "nsga2":
            sampler = optuna.samplers.NSGAIISampler(population_size=self.population_size, seed=self.seed)
        else:
            sampler = optuna.samplers.TPESampler(multivariate=True, seed=self.seed)
        directions = ["maximize" if o.direction == "max" else "minimize" for o in self.objectives]
        self.study = optuna.create_study(directions=directions, sampler=sampler)
        self._events: List[List[Any]] = []   # ["ask", params] | ["enqueue", params] | ["tell", number, values|None]
        self._number: Dict[Hashable, int] = {}  # pending key -> study trial number
        self.history: List[Trial[Genotype]] = []
        self._pending: Dict[Hashable, _Pending[Genotype]] = {}
        self._told: Dict[Hashable, int] = {}
        self._rejected: Dict[Hashable, Genotype] = {}
        self.n_asked = 0
        self.n_rejected = 0
        self.n_duplicates = 0

    # ------------------------------------------------------------------ study events (recorded for replay)
    def _study_ask(self) -> Any:
        trial = self.study.ask(self._distributions)
        self._events.append(["ask", dict(trial.params)])
        return trial

    def _study_enqueue(self, params: Dict[str, Any]) -> None:
        self.study.enqueue_trial(params, skip_if_exists=False)
        self._events.append(["enqueue", dict(params)])

    def _study_tell(self, number: int, values: Optional[List[float]]) -> None:
        optuna = _optuna()
        if values is None:
            self.study.tell(number, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(number, values=values)
        self._events.append(["tell", int(number), values])

    # ------------------------------------------------------------------ ask / tell
    def ask(self) -> Genotype:
        """A new candidate from the sampler: never one already asked, told or refused, never
        one over ``max_params``."""
        for _ in range(self.max_attempts):
            trial = self._study_ask()
            candidate = params_to_genotype(self.space, trial.params)
            key = self.space.key(candidate)
            if key in self._told or key in self._pending or key in self._rejected:
                self.n_duplicates += 1
                self._study_tell(trial.number, None)
                continue
            cheap = _plain(dict(self.space.cheap_metrics(candidate)))
            if self.max_params is not None:
                if self.params_key not in cheap:
                    raise ValueError(f"cheap_metrics() gave no {self.params_key!r} for the max_params budget")
                if float(cheap[self.params_key]) > self.max_params:
                    self._rejected[key] = candidate
                    self.n_rejected += 1
                    self._study_tell(trial.number, None)
                    continue
            self._pending[key] = _Pending(candidate, cheap, self.sampler_name, None)
            self._number[key] = trial.number
            self.n_asked += 1
            return candidate
        raise SearchExhausted(f"no new candidate in {self.max_attempts} attempts ({self.n_duplicates} duplicates, "
                              f"{self.n_rejected} rejected over budget so far)")

    def tell(self, candidate: Genotype, metrics: Optional[Mapping[str, Any]], reason: Optional[str] = None
             ) -> Optional[Trial[Genotype]]:
        """Record the result of ``candidate`` (``metrics=None``: failed); a candidate already
        told is ignored (None returned); one never asked is added to the study as "external"."""
        key = self.space.key(candidate)
        if key in self._told:
            return None
        if metrics is not None and not isinstance(metrics, Mapping):
            raise ValueError(f"metrics must be a mapping or None, got {type(metrics).__name__}")
        pending = self._pending.get(key)
        if pending is None:
            params = genotype_to_params(self.space, candidate)
            pending = _Pending(candidate, _plain(dict(self.space.cheap_metrics(candidate))), "external", None)
            self._study_enqueue(params)
            number = self._study_ask().number
        else:
            number = self._number[key]
        trial = self._new_trial(pending, metrics, reason)
        values = [float(trial.record[o.name]) for o in self.objectives] if trial.ok else None
        self._study_tell(number, values)
        self._pending.pop(key, None)
        self._number.pop(key, None)
        self.history.append(trial)
        self._told[key] = trial.index
        return trial

    # ------------------------------------------------------------------ persistence
    def _config(self) -> Dict[str, Any]:
        from importlib.metadata import version

        return {"sampler": self.sampler_name, "objectives": [[o.name, o.direction] for o in self.objectives],
                "population_size": self.population_size, "seed": self.seed, "max_params": self.max_params,
                "params_key": self.params_key, "max_attempts": self.max_attempts,
                "optuna": version("optuna"), "num_nodes": self.space.num_nodes, "ops": list(self.space.ops),
                "distinct_inputs": self.space.distinct_inputs}

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to resume, JSON-compatible: the configuration, the study's event log,
        history, pending proposals, refused candidates and counters."""
        enc = self.space.encode
        return {
            "version": STATE_VERSION, "kind": "optuna", "config": self._config(),
            "events": json.loads(json.dumps(self._events)),
            "history": [{"index": t.index, "candidate": enc(t.candidate), "metrics": t.metrics, "cheap": t.cheap,
                         "status": t.status, "origin": t.origin, "reason": t.reason} for t in self.history],
            "pending": [{"candidate": enc(p.candidate), "cheap": p.cheap, "origin": p.origin,
                         "number": self._number[k]} for k, p in self._pending.items()],
            "rejected": [enc(c) for c in self._rejected.values()],
            "counters": {"n_asked": self.n_asked, "n_rejected": self.n_rejected, "n_duplicates": self.n_duplicates},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` into this core (same configuration, else ValueError) by
        replaying the study's events into a freshly seeded study."""
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION or state.get("kind") != "optuna":
            raise ValueError(f"not an Optuna core state of version {STATE_VERSION}")
        self._check_saved_config(state.get("config"))
        self._reset()
        try:
            for n, event in enumerate(state["events"]):
                kind = event[0]
                if kind == "ask":
                    got = self._study_ask().params
                    if json.loads(json.dumps(got)) != event[1]:
                        raise ValueError(f"replaying the study diverged at event {n} (the sampler proposed other "
                                         f"parameters than the saved run did)")
                elif kind == "enqueue":
                    self._study_enqueue(dict(event[1]))
                elif kind == "tell":
                    values = None if event[2] is None else [float(v) for v in event[2]]
                    self._study_tell(int(event[1]), values)
                else:
                    raise ValueError(f"unknown study event {str(kind)[:20]!r}")
            dec = self.space.decode
            for i, h in enumerate(state["history"]):
                if h["index"] != i:
                    raise ValueError(f"history entry {i} has index {h['index']}")
                cand = dec(h["candidate"])
                self.history.append(Trial(index=i, candidate=cand, metrics=h["metrics"], cheap=h["cheap"],
                                          status=h["status"], origin=h["origin"], parent=None,
                                          reason=h.get("reason")))
                self._told[self.space.key(cand)] = i
            for p in state["pending"]:
                cand = dec(p["candidate"])
                key = self.space.key(cand)
                self._pending[key] = _Pending(cand, p["cheap"], p["origin"], None)
                self._number[key] = int(p["number"])
            for r in state["rejected"]:
                cand = dec(r)
                self._rejected[self.space.key(cand)] = cand
            counters = state["counters"]
            self.n_asked = int(counters["n_asked"])
            self.n_rejected = int(counters["n_rejected"])
            self.n_duplicates = int(counters["n_duplicates"])
        except ValueError:
            self._reset()
            raise
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            self._reset()
            raise ValueError(f"malformed Optuna core state ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:160]})") from None
