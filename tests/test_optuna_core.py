"""strategies.optuna_core: Optuna's NSGA-II / MOTPE behind the evolution core's ask/tell
interface (issue 16), its exact resume, the nsga2 search strategy, and the hypervolume helper
of benchmarks/search_quality.py."""
from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path
from typing import Any, Dict, List

import pytest

from osep_nas.genotypes import Genotype
from strategies.evolution import SearchExhausted
from search_spaces.genotype_space import GenotypeSpace
from strategies.optuna_core import OptunaCore, genotype_distributions, genotype_to_params, params_to_genotype
from strategies.search import run_search

REPO = Path(__file__).resolve().parents[1]
OBJ = ["accuracy:max", "params:min"]
OPS3 = "osep_3x3,max_pool_3x3,skip_connect"


class CheapSpace(GenotypeSpace):
    """The genotype space with an instant, made-up ``params`` (so core tests do not count networks)."""

    COST = {"osep_3x3": 300, "max_pool_3x3": 0, "skip_connect": 20}

    def cheap_metrics(self, candidate: Genotype) -> Dict[str, int]:
        return {"params": 1000 + sum(self.COST[op] * (1 + i) for cell in ("normal", "reduce")
                                     for op, i in getattr(candidate, cell))}


def fake_accuracy(g: Genotype) -> float:
    """A deterministic 'accuracy' of a genotype."""
    return 50.0 + sum((3 if op == "osep_3x3" else 1) * (i + 1) for op, i in g.normal) / 2.0


def drive(core: OptunaCore, n: int) -> List[Genotype]:
    out = []
    for _ in range(n):
        g = core.ask()
        core.tell(g, {"accuracy": fake_accuracy(g)})
        out.append(g)
    return out


@pytest.mark.parametrize("distinct", [False, True])
def test_genotype_params_round_trip_and_labels(distinct):
    space = GenotypeSpace("osep", num_nodes=4, distinct_inputs=distinct)
    dists = genotype_distributions(space)
    assert len(dists) == 2 * 2 * 4 * 2  # (op, input) x 2 cells x 4 nodes x 2 edges
    assert list(dists["normal/input_2_0"].choices) == [0, 1]
    assert list(dists["reduce/input_5_0"].choices) == [0, 1, 2, 3, 4]
    assert list(dists["normal/input_5_1"].choices) == ([0, 1, 2, 3] if distinct else [0, 1, 2, 3, 4])
    assert list(dists["normal/op_3_1"].choices) == space.ops
    rng = random.Random(0)
    for _ in range(200):
        g = space.random_sample(rng)
        params = genotype_to_params(space, g)
        assert params["normal/op_2_0"] == g.normal[0][0] and params["reduce/op_5_1"] == g.reduce[7][0]
        assert params["normal/input_2_0"] == g.normal[0][1]
        for label, value in params.items():
            assert value in dists[label].choices
        assert params_to_genotype(space, params) == g
    with pytest.raises(ValueError, match="lack"):
        params_to_genotype(space, {})
    bad = dict(params, **{"normal/input_2_0": 2})
    with pytest.raises(ValueError, match="out of range"):
        params_to_genotype(space, bad)


@pytest.mark.parametrize("sampler", ["nsga2", "motpe"])
def test_ask_never_repeats_and_respects_max_params(sampler):
    space = CheapSpace(OPS3, num_nodes=2)
    limit = 2500
    core = OptunaCore(space, OBJ, sampler=sampler, population_size=6, seed=5, max_params=limit, max_attempts=300)
    keys = set()
    for _ in range(40):
        g = core.ask()
        assert space.key(g) not in keys
        keys.add(space.key(g))
        assert space.cheap_metrics(g)["params"] <= limit
        assert core.proposal(g) == {"origin": sampler, "parent": None}
        t = core.tell(g, {"accuracy": fake_accuracy(g)})
        assert t.index == len(core.history) - 1 and t.ok and t.record["params"] <= limit
        assert core.tell(g, {"accuracy": 1.0}) is None  # told twice: ignored
    assert core.n_asked == 40 and core.n_rejected > 0
    # every refused or repeated proposal is a FAIL trial of the study, every told one COMPLETE
    states = [t.state.name for t in core.study.trials]
    assert states.count("COMPLETE") == 40 and states.count("FAIL") == core.n_rejected + core.n_duplicates
    front = core.front()
    assert front and all(t.ok for t in front)


def test_a_space_with_nothing_left_raises_search_exhausted():
    space = CheapSpace("max_pool_3x3,skip_connect", num_nodes=1)
    core = OptunaCore(space, OBJ, sampler="nsga2", population_size=4, seed=0, max_params=1050, max_attempts=60)
    seen = set()
    with pytest.raises(SearchExhausted):
        for _ in range(200):
            g = core.ask()
            assert space.key(g) not in seen and space.cheap_metrics(g)["params"] <= 1050
            seen.add(space.key(g))
            core.tell(g, {"accuracy": 50.0})
    assert 1 <= len(seen) < 200


@pytest.mark.parametrize("sampler", ["nsga2", "motpe"])
def test_state_dict_resume_gives_the_same_next_proposals(sampler):
    space = CheapSpace(OPS3, num_nodes=2)

    def fresh():
        return OptunaCore(space, OBJ, sampler=sampler, population_size=4, seed=11, max_params=5000)

    a = fresh()
    drive(a, 14)
    a.tell(a.ask(), None, reason="boom")  # a failure
    pending = [a.ask(), a.ask()]  # asked, not told: a round in flight
    state = json.loads(json.dumps(a.state_dict()))
    b = fresh()
    b.load_state_dict(state)
    assert b.pending == pending and b.n_asked == a.n_asked and b.n_rejected == a.n_rejected
    assert [t.candidate for t in b.history] == [t.candidate for t in a.history]
    assert b.history[14].status == "failed" and b.history[14].reason == "boom"
    assert b.tell(a.history[3].candidate, {"accuracy": 0.0}) is None
    for core in (a, b):
        for g in pending:
            core.tell(g, {"accuracy": fake_accuracy(g)})
    assert drive(a, 6) == drive(b, 6)
    assert [t.record for t in a.history] == [t.record for t in b.history]

    other = OptunaCore(space, OBJ, sampler=sampler, population_size=4, seed=12, max_params=5000)
    with pytest.raises(ValueError, match="different configuration"):
        other.load_state_dict(state)
    forged = json.loads(json.dumps(state))
    first_ask = next(e for e in forged["events"] if e[0] == "ask")
    first_ask[1]["normal/op_2_0"] = "forged"
    with pytest.raises(ValueError, match="diverged"):
        fresh().load_state_dict(forged)


def test_bad_arguments_are_one_line_value_errors():
    space = CheapSpace(OPS3, num_nodes=2)
    for kwargs, match in [({"sampler": "cmaes"}, "sampler"), ({"population_size": 1}, "population_size"),
                          ({"max_params": -1}, "max_params"), ({"max_attempts": 0}, "max_attempts"),
                          ({"seed": 1.5}, "seed")]:
        with pytest.raises(ValueError, match=match) as err:
            OptunaCore(space, OBJ, **kwargs)
        assert "\n" not in str(err.value)
    core = OptunaCore(space, OBJ, seed=0)
    with pytest.raises(ValueError, match="Optuna core state"):
        core.load_state_dict({"version": 1, "kind": "evolution"})
    with pytest.raises(ValueError, match="metrics"):
        core.tell(core.ask(), [1, 2])


# --------------------------------------------------------------------------- the search strategy

TINY: Dict[str, Any] = {
    "search": {"strategy": "nsga2", "trials": 6, "population_size": 3, "seed": 3, "round_size": 2, "workers": 1},
    "space": {"op_candidates": OPS3, "num_nodes": 2},
    "proxy": {"init_channels": 2, "layers": 3, "steps": 3}, "data": {"batch_size": 16},
    "target": {"model": "cifar10", "init_channels": 8, "layers": 5},
    "output": {"plots": False},
}


def trivial_trainer(genotype, ctx):
    return {"accuracy": fake_accuracy(genotype) + ctx.rung, "train_loss": 0.0, "train_s": 0.0}


def records(res) -> List[Dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "train_s"} for r in res.records]


def test_a_tiny_nsga2_search_is_reproducible_and_resumes_exactly(tmp_path):
    kw = dict(progress=False, print_report=False, report=False, trainer=trivial_trainer)
    first = run_search(TINY, tmp_path / "a", **kw)
    assert [r["trial"] for r in first.final] == list(range(6))
    assert {r["origin"] for r in first.records} == {"nsga2", "promotion"}  # successive halving promoted
    assert len({r["genotype"] for r in first.final}) == 6
    state = json.loads((tmp_path / "a" / "state.json").read_text())
    assert state["evolution"]["kind"] == "optuna" and state["evolution"]["config"]["sampler"] == "nsga2"
    stopped = run_search(TINY, tmp_path / "c", stop_after=3, **kw)
    assert stopped.stop_reason == "stopped"
    resumed = run_search(TINY, tmp_path / "c", resume=True, **kw)
    # a second run from scratch, killed after 3 jobs and resumed, repeats the first exactly
    assert resumed.resumed_from == 3 and records(resumed) == records(first)


# --------------------------------------------------------------------------- the benchmark's hypervolume helper

def _bench():
    spec = importlib.util.spec_from_file_location("search_quality", REPO / "benchmarks" / "search_quality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_hypervolume_equals_a_hand_computation():
    sq = _bench()
    assert sq.REFERENCE == (1.0, 1.0)
    # P_LO 0, P_HI 100: (acc 80, params 20) -> (0.2, 0.2); (acc 60, params 10) -> (0.4, 0.1)
    front = [{"status": "ok", "accuracy": 80.0, "params": 20}, {"status": "ok", "accuracy": 60.0, "params": 10}]
    # union of [0.2,1]x[0.2,1] (0.64) and [0.4,1]x[0.1,1] (0.54) minus their overlap [0.4,1]x[0.2,1] (0.48)
    assert sq.hv_of(front, 0, 100) == pytest.approx(0.70, abs=1e-12)
    extra = front + [{"status": "ok", "accuracy": 50.0, "params": 30},  # dominated
                     {"status": "failed", "accuracy": None, "params": 1}]  # failed: ignored
    assert sq.hv_of(extra, 0, 100) == pytest.approx(0.70, abs=1e-12)
    assert sq.hv_of([], 0, 100) == 0.0
    jobs = [{"job": 0, "trial": 0, "rung": 0, "status": "ok", "accuracy": 60.0, "params": 10},
            {"job": 1, "trial": 1, "rung": 0, "status": "ok", "accuracy": 80.0, "params": 20},
            {"job": 2, "trial": 0, "rung": 1, "status": "ok", "accuracy": 90.0, "params": 10}]
    # after trial 1: 0.9 x 0.6 = 0.54; at the end trial 0's rung 1 (0.1, 0.1) dominates: 0.9 x 0.9 = 0.81
    assert sq.hv_curve(jobs, 2, 0, 100) == pytest.approx([0.54, 0.81], abs=1e-12)


def test_benchmark_surrogate_is_deterministic_and_in_range():
    sq = _bench()
    space = GenotypeSpace("osep", num_nodes=4)
    s1, s2 = sq.Surrogate(space.ops, 4, 1_000_000, 4_000_000), sq.Surrogate(space.ops, 4, 1_000_000, 4_000_000)
    rng = random.Random(2)
    values = []
    for _ in range(50):
        g = space.random_sample(rng)
        assert s1(g, 2_000_000) == s2(g, 2_000_000)
        assert s1(g, 3_000_000) > s1(g, 2_000_000)  # more #Params, higher surrogate accuracy
        values.append(s1(g, 2_000_000))
    assert all(0.0 < v < 100.0 for v in values) and len(set(values)) > 40
