"""Pareto utilities for multi-objective search: a thin, typed layer over moocore.

Convention: every function that takes ``points`` works on an ``(n_points, n_objectives)``
array in which **every objective is minimised**. Records with mixed directions (maximise
accuracy, minimise #params) are turned into such a matrix by :func:`to_min_matrix`, which
negates the "max" columns. Exact non-dominated sorting and hypervolume come from moocore;
crowding distance (which moocore does not provide) and the knee are defined here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, List, Mapping, Sequence, Tuple, Union

import moocore
import numpy as np

__all__ = [
    "Objective",
    "ObjectiveSpec",
    "as_objectives",
    "to_min_matrix",
    "non_dominated_sort",
    "pareto_ranks",
    "pareto_front",
    "crowding_distance",
    "rank_and_crowding",
    "hypervolume",
    "knee_point",
]

_DIRECTIONS = ("max", "min")


@dataclass(frozen=True)
class Objective:
    """One objective of the search: a metric ``name`` and whether to ``"max"``imise or ``"min"``imise it."""

    name: str
    direction: str = "min"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"objective name must be a non-empty string, got {self.name!r}")
        if self.direction not in _DIRECTIONS:
            raise ValueError(
                f"unknown direction {self.direction!r} for objective {self.name!r}; expected 'max' or 'min'")

    @property
    def sign(self) -> float:
        """Factor turning the metric into a value to minimise: +1 for "min", -1 for "max"."""
        return -1.0 if self.direction == "max" else 1.0

    @classmethod
    def parse(cls, text: str) -> "Objective":
        """Parse ``"name:max"`` / ``"name:min"`` (a bare ``"name"`` means "min"), e.g. from a command line."""
        name, sep, direction = text.strip().partition(":")
        return cls(name.strip(), direction.strip() if sep else "min")


ObjectiveSpec = Union[Objective, str, Tuple[str, str]]


def as_objectives(spec: Union[Iterable[ObjectiveSpec], Mapping[str, str]]) -> List[Objective]:
    """Normalise objectives given as Objective objects, ``"name:dir"`` strings, ``(name, dir)``
    pairs or a ``{name: dir}`` mapping; at least one, names unique."""
    if isinstance(spec, Mapping):
        items: List[Any] = [(k, v) for k, v in spec.items()]
    elif isinstance(spec, (str, Objective)):
        items = [spec]
    else:
        items = list(spec)
    out: List[Objective] = []
    for item in items:
        if isinstance(item, Objective):
            out.append(item)
        elif isinstance(item, str):
            out.append(Objective.parse(item))
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            out.append(Objective(item[0], item[1]))
        else:
            raise ValueError(f"cannot interpret {item!r} as an objective")
    if not out:
        raise ValueError("at least one objective is required")
    names = [o.name for o in out]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate objective names: {names}")
    return out


def to_min_matrix(records: Sequence[Mapping[str, Any]], objectives: Union[Iterable[ObjectiveSpec], Mapping[str, str]]
                  ) -> np.ndarray:
    """Stack ``records`` (dicts of metrics) into an ``(n, m)`` float matrix to minimise,
    one column per objective, "max" columns negated. Missing or non-finite values raise."""
    objs = as_objectives(objectives)
    out = np.empty((len(records), len(objs)), dtype=float)
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise ValueError(f"record {i} is not a mapping: {rec!r}")
        for j, obj in enumerate(objs):
            if obj.name not in rec:
                raise ValueError(f"record {i} has no metric {obj.name!r} (has {sorted(rec)})")
            try:
                value = float(rec[obj.name])
            except (TypeError, ValueError):
                raise ValueError(f"record {i}: metric {obj.name!r} is not a number: {rec[obj.name]!r}") from None
            if not math.isfinite(value):
                raise ValueError(f"record {i}: metric {obj.name!r} is not finite: {value}")
            out[i, j] = obj.sign * value
    return out


def _as_points(points: Any, n_objectives: int | None = None) -> np.ndarray:
    """Validate ``points`` as a finite ``(n, m)`` float array (``n`` may be 0)."""
    arr = np.asarray(points, dtype=float)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, n_objectives or 0)
    if arr.ndim != 2:
        raise ValueError(f"points must be a 2-D array (n_points, n_objectives), got shape {arr.shape}")
    if arr.shape[0] and arr.shape[1] == 0:
        raise ValueError("points must have at least one objective column")
    if n_objectives is not None and arr.shape[1] != n_objectives:
        raise ValueError(f"points have {arr.shape[1]} objectives, expected {n_objectives}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("points contain NaN or infinite values")
    return arr


def pareto_ranks(points: Any) -> np.ndarray:
    """Pareto rank of each point (0 = non-dominated; equal points share a rank), via moocore."""
    arr = _as_points(points)
    if arr.shape[0] == 0:
        return np.zeros(0, dtype=int)
    return np.asarray(moocore.pareto_rank(arr), dtype=int)


def non_dominated_sort(points: Any) -> List[List[int]]:
    """Partition point indices into fronts, front 0 (non-dominated) first, indices ascending
    inside each front. Duplicated points land in the same front."""
    ranks = pareto_ranks(points)
    if ranks.size == 0:
        return []
    return [np.flatnonzero(ranks == r).tolist() for r in np.unique(ranks)]


def pareto_front(records: Sequence[Mapping[str, Any]], objectives: Union[Iterable[ObjectiveSpec], Mapping[str, str]]
                 ) -> List[int]:
    """Indices (ascending) of the records not dominated by any other; ties all kept."""
    if len(records) == 0:
        return []
    arr = to_min_matrix(records, objectives)
    mask = moocore.is_nondominated(arr, keep_weakly=True)
    return np.flatnonzero(mask).tolist()


def crowding_distance(points: Any) -> np.ndarray:
    """NSGA-II crowding distance of each point of one set (normally one front).

    For each objective the points are sorted (stably, so ties follow index order); the first
    and last get ``inf``, every other point adds ``(next - previous) / (max - min)``. An
    objective in which all points are equal adds nothing (no boundary either), so a set of
    several identical points gets all zeros; a single point gets ``inf``. Larger means more
    isolated, i.e. preferred for diversity.
    """
    arr = _as_points(points)
    n, m = arr.shape
    dist = np.zeros(n, dtype=float)
    if n == 1:
        dist[0] = math.inf
    if n <= 1:
        return dist
    for j in range(m):
        col = arr[:, j]
        span = float(col.max() - col.min())
        if span <= 0.0:
            continue
        order = np.argsort(col, kind="stable")
        dist[order[0]] = math.inf
        dist[order[-1]] = math.inf
        if n > 2:
            gaps = (col[order[2:]] - col[order[:-2]]) / span
            dist[order[1:-1]] += gaps
    return dist


def rank_and_crowding(points: Any) -> Tuple[np.ndarray, np.ndarray]:
    """NSGA-II sort keys: Pareto rank of every point and its crowding distance within its
    own front. Prefer lower rank, then larger crowding distance."""
    arr = _as_points(points)
    ranks = pareto_ranks(arr)
    crowd = np.zeros(arr.shape[0], dtype=float)
    for r in np.unique(ranks):
        members = np.flatnonzero(ranks == r)
        crowd[members] = crowding_distance(arr[members])
    return ranks, crowd


def hypervolume(points: Any, reference: Any) -> float:
    """Exact hypervolume (moocore) dominated by ``points`` and bounded by ``reference``,
    all objectives minimised. Points not strictly better than the reference in every
    objective add nothing and are ignored; an empty set has hypervolume 0."""
    ref = np.asarray(reference, dtype=float)
    if ref.ndim != 1 or ref.size == 0:
        raise ValueError(f"reference must be a 1-D vector with one value per objective, got shape {ref.shape}")
    if not np.all(np.isfinite(ref)):
        raise ValueError("reference contains NaN or infinite values")
    arr = _as_points(points, n_objectives=ref.size)
    inside = arr[np.all(arr < ref, axis=1)]
    if inside.shape[0] == 0:
        return 0.0
    return float(moocore.hypervolume(inside, ref=ref))


def knee_point(points: Any) -> int:
    """Index (into ``points``) of the knee of the non-dominated front.

    Definition: objectives are normalised to [0, 1] by the range of the non-dominated front
    (an objective constant on the front normalises to 0). The knee is the front member with
    the largest signed distance, on the side of the ideal point, to the hyperplane through
    the unit points ``e_j`` -- equivalently the smallest sum of normalised objectives. In 2-D
    that hyperplane is exactly the line joining the two extreme points of the front, so this is
    the classic "farthest from the chord" knee. Ties go to the lowest index; a dominated
    point is never returned.
    """
    arr = _as_points(points)
    if arr.shape[0] == 0:
        raise ValueError("knee_point needs at least one point")
    front = np.flatnonzero(moocore.is_nondominated(arr, keep_weakly=True))
    sub = arr[front]
    lo, hi = sub.min(axis=0), sub.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    norm = (sub - lo) / span
    return int(front[int(np.argmin(norm.sum(axis=1)))])
