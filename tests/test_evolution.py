"""strategies.evolution: the NNI-independent multi-objective regularized evolution core.

The synthetic problem is LOTZ (leading ones, trailing zeros) on bit strings: maximise the
number of leading ones and the number of trailing zeros. The two conflict; the Pareto
front is exactly the strings 1^i 0^(n-i), whose hypervolume is known in closed form.
"""
import json
import random
from typing import Dict, List, Tuple

import pytest

from strategies.evolution import ParetoEvolutionCore, SearchExhausted, SearchSpaceAdapter
from strategies.pareto import hypervolume, pareto_front, to_min_matrix

Bits = Tuple[int, ...]
OBJ = ["lo:max", "tz:max"]


class BitSpace:
    """Bit strings; mutation flips one bit. Tuples, so encode/decode make them JSON lists."""

    def __init__(self, n: int, with_cheap: bool = False):
        self.n = n
        self.with_cheap = with_cheap
        self.cheap_calls = 0

    def random_sample(self, rng: random.Random) -> Bits:
        return tuple(rng.randrange(2) for _ in range(self.n))

    def mutate(self, c: Bits, rng: random.Random) -> Bits:
        i = rng.randrange(self.n)
        return c[:i] + (1 - c[i],) + c[i + 1:]

    def key(self, c: Bits) -> Bits:
        return c

    def encode(self, c: Bits) -> List[int]:
        return list(c)

    def decode(self, v: List[int]) -> Bits:
        return tuple(v)

    def __getattr__(self, name):
        if name == "cheap_metrics" and self.__dict__.get("with_cheap"):
            return self._cheap
        raise AttributeError(name)

    def _cheap(self, c: Bits) -> Dict[str, int]:
        self.cheap_calls += 1
        return {"params": sum(c)}


def lotz(c: Bits) -> Dict[str, int]:
    n = len(c)
    lo = next((i for i, b in enumerate(c) if b == 0), n)
    tz = next((i for i, b in enumerate(reversed(c)) if b == 1), n)
    return {"lo": lo, "tz": tz}


def lotz_hv(records) -> float:
    # minimisation of (-lo, -tz) with reference (1, 1): every record counts
    return hypervolume(to_min_matrix(records, OBJ), [1.0, 1.0])


def run(core: ParetoEvolutionCore, n_evals: int, fail=lambda c: False) -> List[Bits]:
    asked = []
    for _ in range(n_evals):
        c = core.ask()
        asked.append(c)
        core.tell(c, None if fail(c) else lotz(c))
    return asked


def test_space_satisfies_protocol():
    assert isinstance(BitSpace(4), SearchSpaceAdapter)


# --------------------------------------------------------------------------- search quality


def test_lotz_hypervolume_beats_random_search():
    n, pop, gens = 16, 20, 10
    optimum = lotz_hv([{"lo": i, "tz": n - i} for i in range(n + 1)])
    # staircase of unit-wide slabs of heights 1..n, plus the last slab [0, 1] of height n + 1
    assert optimum == (n + 1) * (n + 2) / 2 == 153.0
    evo, rnd = [], []
    for seed in range(5):
        core = ParetoEvolutionCore(BitSpace(n), OBJ, population_size=pop, sample_size=5, seed=seed)
        run(core, pop * gens)
        assert len(core.history) == pop * gens
        evo.append(lotz_hv([t.record for t in core.successful()]))
        rng, space = random.Random(seed), BitSpace(n)
        rnd.append(lotz_hv([lotz(space.random_sample(rng)) for _ in range(pop * gens)]))
    # measured: evolution 94..127, random 37..56 (of 153) -> demand a wide margin on every seed
    assert all(e > r for e, r in zip(evo, rnd)), (evo, rnd)
    assert sum(evo) / len(evo) > 1.5 * sum(rnd) / len(rnd), (evo, rnd)
    assert max(evo) <= optimum


def test_front_matches_pareto_front_of_history():
    core = ParetoEvolutionCore(BitSpace(10), OBJ, population_size=8, sample_size=3, seed=1)
    run(core, 60)
    ok = core.successful()
    expected = [ok[i].index for i in pareto_front([t.record for t in ok], OBJ)]
    assert core.front_indices() == expected
    # brute-force check: no successful result dominates a front member
    for t in core.front():
        assert not any(o.record["lo"] >= t.record["lo"] and o.record["tz"] >= t.record["tz"]
                       and o.record != t.record for o in ok)


# --------------------------------------------------------------------------- mechanics


def test_random_initial_population_then_one_change_mutations():
    pop = 6
    core = ParetoEvolutionCore(BitSpace(12), OBJ, population_size=pop, sample_size=3, seed=3)
    run(core, 40)
    origins = [t.origin for t in core.history]
    assert origins[:pop] == ["random"] * pop and set(origins[pop:]) == {"mutation"}
    for t in core.history[pop:]:
        parent = core.history[t.parent]
        assert parent.ok and parent.index < t.index
        assert sum(a != b for a, b in zip(parent.candidate, t.candidate)) == 1
    # aging: the population is the last `pop` successful results, oldest first
    assert [t.index for t in core.population] == list(range(40 - pop, 40))
    assert len({t.candidate for t in core.history}) == 40  # no duplicates proposed


def test_tournament_prefers_rank_then_crowding():
    # population of 5 told "external" results; sample_size = population_size, so the
    # tournament sees everyone: rank 0 = {A, B, C}; among them A and C are boundaries (inf
    # crowding), B is interior; A is drawn before C or C before A at random -> parent in {A, C}.
    space = BitSpace(6)
    core = ParetoEvolutionCore(space, OBJ, population_size=5, sample_size=5, seed=0)
    A, B, C, D, E = [(1, 1, 1, 0, 0, 0), (1, 0, 1, 0, 1, 0), (0, 0, 0, 0, 0, 1), (1, 1, 0, 1, 1, 1),
                     (0, 1, 1, 1, 1, 1)]
    metrics = {A: {"lo": 5, "tz": 0}, B: {"lo": 3, "tz": 3}, C: {"lo": 0, "tz": 5},
               D: {"lo": 2, "tz": 2}, E: {"lo": 1, "tz": 1}}
    for c in (D, A, E, B, C):
        assert core.tell(c, metrics[c]).origin == "external"
    parents = set()
    for _ in range(8):
        # told as failed, so the population (and hence the tournament) stays the same
        child = core.tell(core.ask(), None)
        assert child.origin == "mutation"
        parents.add(core.history[child.parent].candidate)
    assert parents == {A, C}


def test_failed_results_are_recorded_but_never_parents():
    fails = lambda c: c[0] == 0 and c[-1] == 1  # noqa: E731
    core = ParetoEvolutionCore(BitSpace(10), OBJ, population_size=8, sample_size=4, seed=5)
    run(core, 80, fail=fails)
    failed = [t for t in core.history if not t.ok]
    assert failed and all(t.metrics is None and fails(t.candidate) for t in failed)
    failed_idx = {t.index for t in failed}
    assert not failed_idx & {t.index for t in core.population}
    assert not failed_idx & set(core.front_indices())
    assert all(t.parent not in failed_idx for t in core.history if t.origin == "mutation")
    assert len(core.successful()) == 80 - len(failed)


def test_non_finite_metrics_count_as_failed_and_missing_metric_raises():
    core = ParetoEvolutionCore(BitSpace(6), OBJ, population_size=4, sample_size=2, seed=0)
    a, b = core.ask(), core.ask()
    t = core.tell(a, {"lo": float("nan"), "tz": 1})
    assert not t.ok and t.reason == "non-finite objective value"
    with pytest.raises(ValueError):
        core.tell(b, {"lo": 1})
    with pytest.raises(ValueError):
        core.tell(b, [1, 2])
    assert core.pending == [b] and len(core.history) == 1  # nothing recorded, b still pending
    assert core.tell(b, {"lo": 1, "tz": 2}).ok


def test_duplicates_skipped_until_space_exhausted():
    core = ParetoEvolutionCore(BitSpace(3), OBJ, population_size=4, sample_size=2, seed=0, max_attempts=300)
    asked = run(core, 8)
    assert sorted(asked) == sorted((a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1))
    assert core.n_duplicates > 0
    with pytest.raises(SearchExhausted):
        core.ask()


def test_max_params_rejects_without_telling():
    space = BitSpace(16, with_cheap=True)
    core = ParetoEvolutionCore(space, OBJ, population_size=10, sample_size=3, seed=2, max_params=5)
    asked = run(core, 60)
    assert all(sum(c) <= 5 for c in asked)
    assert core.n_rejected > 0
    assert [t.candidate for t in core.history] == asked  # only asked candidates were told
    assert all(t.cheap == {"params": sum(t.candidate)} and t.record["params"] == sum(t.candidate)
               for t in core.history)
    rejected = set(core._rejected)
    assert len(rejected) == core.n_rejected and all(sum(c) > 5 for c in rejected)
    assert not rejected & set(asked)


def test_cheap_metrics_can_supply_an_objective():
    # the trainer reports only "lo"; "params" comes from cheap_metrics before training
    space = BitSpace(8, with_cheap=True)
    core = ParetoEvolutionCore(space, ["lo:max", "params:min"], population_size=4, sample_size=2, seed=0)
    for _ in range(12):
        c = core.ask()
        core.tell(c, {"lo": lotz(c)["lo"]})
    assert all(t.ok for t in core.history)
    front = core.front()
    assert front and all(t.record["params"] == sum(t.candidate) for t in front)


@pytest.mark.parametrize("kwargs", [
    dict(population_size=0), dict(sample_size=0), dict(population_size=4, sample_size=5),
    dict(max_params=10), dict(max_params=-1), dict(objectives=["lo:up"]), dict(max_attempts=0),
])
def test_constructor_errors(kwargs):
    args = dict(space=BitSpace(4), objectives=OBJ, population_size=4, sample_size=2, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError):
        ParetoEvolutionCore(**args)


# --------------------------------------------------------------------------- determinism and resume


def test_same_seed_same_run_different_seed_different_run():
    def proposals(seed):
        return run(ParetoEvolutionCore(BitSpace(12), OBJ, population_size=6, sample_size=3, seed=seed), 30)
    assert proposals(7) == proposals(7)
    assert proposals(7) != proposals(8)


def _drive(core, n_asks, results):
    """Ask n_asks, keep two in flight (tell lags asks by two), return proposals."""
    out = []
    for _ in range(n_asks):
        out.append(core.ask())
        if len(core.pending) > 2:
            c = core.pending[0]
            core.tell(c, results(c))
    return out


def test_state_dict_json_round_trip_gives_identical_proposals():
    fail = lambda c: sum(c) == 4  # noqa: E731
    results = lambda c: None if fail(c) else lotz(c)  # noqa: E731
    make = lambda: ParetoEvolutionCore(BitSpace(12, with_cheap=True), OBJ, population_size=6,  # noqa: E731
                                       sample_size=3, seed=11, max_params=8)
    a = make()
    _drive(a, 25, results)
    assert len(a.pending) == 2
    state = json.loads(json.dumps(a.state_dict()))  # must survive real JSON
    b = make()
    b.load_state_dict(state)
    assert b.state_dict() == a.state_dict()
    assert b.pending == a.pending
    assert _drive(a, 30, results) == _drive(b, 30, results)
    assert a.state_dict() == b.state_dict()


def test_resume_after_kill_neither_loses_nor_double_counts():
    results = lambda c: lotz(c)  # noqa: E731
    make = lambda: ParetoEvolutionCore(BitSpace(12), OBJ, population_size=6, sample_size=3, seed=4)  # noqa: E731

    # uninterrupted reference run
    ref = make()
    _drive(ref, 40, results)

    # same run, "killed" after 20 asks; the checkpoint is the state after the last tell
    run1 = make()
    _drive(run1, 20, results)
    saved = json.dumps(run1.state_dict())
    in_flight = run1.pending
    told_before = len(run1.history)
    del run1

    run2 = make()
    run2.load_state_dict(json.loads(saved))
    assert run2.pending == in_flight and len(run2.history) == told_before
    # a worker whose result was already checkpointed reports again: ignored
    assert run2.tell(run2.history[-1].candidate, results(run2.history[-1].candidate)) is None
    assert len(run2.history) == told_before
    _drive(run2, 20, results)

    assert [t.candidate for t in run2.history] == [t.candidate for t in ref.history]
    assert run2.state_dict() == ref.state_dict()


def test_load_state_dict_rejects_other_configuration():
    a = ParetoEvolutionCore(BitSpace(6), OBJ, population_size=4, sample_size=2, seed=0)
    run(a, 5)
    for other in (dict(seed=1), dict(population_size=5), dict(objectives=["lo:max", "tz:min"])):
        args = dict(space=BitSpace(6), objectives=OBJ, population_size=4, sample_size=2, seed=0)
        args.update(other)
        with pytest.raises(ValueError):
            ParetoEvolutionCore(**args).load_state_dict(a.state_dict())
    with pytest.raises(ValueError):
        ParetoEvolutionCore(BitSpace(6), OBJ, population_size=4, sample_size=2, seed=0).load_state_dict({})
