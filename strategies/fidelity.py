"""Multi-fidelity trials: asynchronous successive halving (ASHA) in deterministic rounds.

Every new candidate trains at rung 0 (``proxy.steps`` SGD steps). Rung ``r`` trains
``steps * eta**r`` steps from scratch. After each round, a candidate is promoted from rung
``r`` to ``r + 1`` when it is among the best ``floor(n_r / eta)`` of the ``n_r`` results of
rung ``r`` so far, ranked by Pareto rank over the search's objectives (then crowding
distance, then the earlier candidate): the ASHA rule (Li et al., 2020) with the
multi-objective ranking of NSGA-II. A candidate's final record is its highest rung.

Promotions are decided only between rounds, from finished results, so the sequence of jobs
is the same whatever the number of workers or the order in which jobs finish.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from .pareto import Objective, as_objectives, rank_and_crowding, to_min_matrix

__all__ = ["rung_steps", "promotions", "final_records"]

Record = Mapping[str, Any]


def rung_steps(base_steps: int, rungs: int, eta: int) -> List[int]:
    """SGD steps of each rung: ``base_steps * eta**r``."""
    return [int(base_steps) * int(eta) ** r for r in range(int(rungs))]


def _ok(rec: Record, objectives: Sequence[Objective]) -> bool:
    if rec.get("status") != "ok":
        return False
    try:
        return all(np.isfinite(float(rec[o.name])) for o in objectives)
    except (KeyError, TypeError, ValueError):
        return False


def promotions(records: Sequence[Record], objectives: Any, rungs: int, eta: int) -> List[Tuple[int, int]]:
    """``(trial, rung)`` jobs to run next under the ASHA rule, highest rung first, then by
    rank. ``records`` are finished jobs (``trial``, ``rung``, ``status`` and the objectives);
    a job already run or failed at ``rung + 1`` is never proposed again."""
    objectives = as_objectives(objectives)
    started = {(int(r["trial"]), int(r["rung"])) for r in records}
    out: List[Tuple[int, int]] = []
    for rung in range(rungs - 2, -1, -1):
        at = sorted((r for r in records if int(r["rung"]) == rung and _ok(r, objectives)),
                    key=lambda r: int(r["trial"]))
        k = len(at) // eta
        if k == 0:
            continue
        ranks, crowd = rank_and_crowding(to_min_matrix(at, objectives).reshape(len(at), len(objectives)))
        order = sorted(range(len(at)), key=lambda i: (int(ranks[i]), -float(crowd[i]), int(at[i]["trial"])))
        for i in order[:k]:
            trial = int(at[i]["trial"])
            if (trial, rung + 1) not in started:
                out.append((trial, rung + 1))
    return out


def final_records(records: Sequence[Record]) -> List[Dict[str, Any]]:
    """One record per trial: its highest rung that finished ok (else its last job), in trial order."""
    best: Dict[int, Dict[str, Any]] = {}
    for rec in records:
        t = int(rec["trial"])
        cur = best.get(t)
        ok = rec.get("status") == "ok"
        if cur is None or (ok and (cur.get("status") != "ok" or int(rec["rung"]) > int(cur["rung"]))):
            best[t] = dict(rec)
    return [best[t] for t in sorted(best)]
