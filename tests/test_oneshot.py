"""ParamsPenalizedDarts: derivation with the skip cap, the differentiable expected-#Params
penalty, and a two-lambda sweep on digits (slow)."""
import pytest
import torch

from osep_nas import count_params
from osep_nas.genotypes import arch_label, parse_genotype
from osep_nas.networks import NetworkCIFAR
from strategies.oneshot import (ExpectedParamsPenalty, ParamsPenalizedDarts, SweepPoint, count_skips,
                                derive_genotype, digits_evaluator, sweep, tiny_space)

OPS = ["none", "max_pool_3x3", "skip_connect", "osep_3x3", "sosep_5x5"]


pytestmark = pytest.mark.usefixtures("one_thread_module")


def _probs(op_of, num_nodes=4):
    """Probabilities favouring op_of(cell, pos) (0.5) with skip_connect second (0.3), input 0."""
    probs = {}
    for cell in ("normal", "reduce"):
        for node in range(num_nodes):
            for k in (0, 1):
                pos = 2 * node + k
                fav = op_of(cell, pos)
                p = {op: 0.05 for op in OPS}
                p["skip_connect"] = 0.3 if fav != "skip_connect" else 0.5 + 0.01 * pos
                p[fav] = max(p[fav], 0.5)
                probs[arch_label(cell, "op", node, k)] = p
                probs[arch_label(cell, "input", node, k)] = {j: (0.9 if j == node + 1 else 0.1 / (node + 1))
                                                           for j in range(node + 2)}
    return probs


def test_derive_caps_skips_by_strength():
    probs = _probs(lambda cell, pos: "skip_connect" if pos < 6 else "osep_3x3")
    raw = derive_genotype(probs, max_skips=None)
    assert count_skips(raw) == 6 and count_skips(raw, "reduce") == 6
    g = derive_genotype(probs, max_skips=2)
    assert count_skips(g) == 2 and count_skips(g, "reduce") == 6  # only the normal cell is capped
    # the strongest skips (highest probability: positions 5 and 4) stay; the others take the
    # best non-skip, non-none op; inputs are unchanged
    assert [pos for pos, (op, _) in enumerate(g.normal) if op == "skip_connect"] == [4, 5]
    assert all(op in ("osep_3x3", "max_pool_3x3", "sosep_5x5") for op, _ in g.normal[:4])
    assert [j for _, j in g.normal] == [j for _, j in raw.normal] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert parse_genotype(repr(g)) == g
    both = derive_genotype(probs, max_skips=1, skip_cells=("normal", "reduce"))
    assert count_skips(both) == 1 and count_skips(both, "reduce") == 1


def test_derive_never_keeps_none():
    probs = _probs(lambda cell, pos: "none")
    g = derive_genotype(probs, max_skips=2)
    assert all(op != "none" for op, _ in g.normal + g.reduce)
    with pytest.raises(ValueError):
        derive_genotype({}, max_skips=2)
    with pytest.raises(ValueError):
        derive_genotype(probs, max_skips=-1)


def test_penalty_is_differentiable_and_prefers_cheap_ops():
    from nni.nas.strategy import DARTS

    from search_spaces.profilers import arch_probs, params_profiler

    space = tiny_space(op_candidates=OPS)
    profiler = params_profiler(space)
    DARTS().mutate_model(space)
    penalty = ExpectedParamsPenalty(profiler, lam=1.0, params_scale=1000.0, probs_fn=lambda: arch_probs(space))
    loss, details = penalty(torch.tensor(0.0), {})
    assert details["expected_params"] > 0 and loss.requires_grad
    loss.backward()
    alpha = next(m._arch_alpha for m in space.modules()
                 if getattr(m, "label", None) == "normal/op_2_0" and hasattr(m, "_arch_alpha"))
    grad = dict(zip(OPS, alpha.grad.tolist()))
    # descending the penalty raises parameter-free ops and lowers the convolutions
    assert grad["osep_3x3"] > 0 and grad["sosep_5x5"] > grad["osep_3x3"]
    assert grad["skip_connect"] < 0 and grad["max_pool_3x3"] < 0


def test_target_expectation_is_exact_for_one_hot_choices_and_differentiable():
    """The one-shot penalty counts the target network (the search's objective): for a one-hot
    choice E[#Params] equals the built 36-channel 20-cell network's count exactly."""
    import random

    from osep_nas import count_params
    from osep_nas.genotypes import genotype_to_arch
    from osep_nas.networks import NetworkCIFAR
    from search_spaces.genotype_space import GenotypeSpace
    from search_spaces.target import TargetParamsExpectation, resolve_target
    from search_spaces.profilers import arch_probs

    space = GenotypeSpace(OPS, num_nodes=4)  # 'none' left out of the genotypes, kept in the supernet
    expect = TargetParamsExpectation(resolve_target("cifar10"), OPS, 4)
    rng = random.Random(0)
    for _ in range(3):
        g = space.random_sample(rng)
        probs = {}
        for label, value in genotype_to_arch(g).items():
            if "/op_" in label:
                probs[label] = {o: float(o == value) for o in space.ops}
            else:
                chosen = value[0] if isinstance(value, list) else value
                probs[label] = {j: float(j == chosen) for j in range(int(label.split("_")[-2]))}
        assert expect(probs) == expect.params_of(g) == count_params(NetworkCIFAR(36, 10, 20, False, g))
    # differentiable through the supernet's probabilities, and it prefers cheap ops
    from nni.nas.strategy import DARTS

    net = tiny_space(op_candidates=OPS)
    DARTS().mutate_model(net)
    penalty = ExpectedParamsPenalty(expect, lam=1.0, params_scale=1e6, probs_fn=lambda: arch_probs(net))
    loss, details = penalty(torch.tensor(0.0), {})
    loss.backward()
    alpha = next(m._arch_alpha for m in net.modules()
                 if getattr(m, "label", None) == "normal/op_2_0" and hasattr(m, "_arch_alpha"))
    grad = dict(zip(OPS, alpha.grad.tolist()))
    assert 1.5e6 < details["expected_params"] < 4e6
    assert grad["osep_3x3"] > 0 and grad["skip_connect"] < 0


def test_bad_arguments():
    for kw in ({"lam": -1.0}, {"lam": float("nan")}, {"max_skips": -1}, {"skip_cells": ("middle",)},
               {"penalty": {}}, {"params_scale": 0.0}):
        with pytest.raises(ValueError):
            ParamsPenalizedDarts(**kw)
    with pytest.raises(ValueError):
        sweep([])


def test_sweep_point_unpacks():
    g = parse_genotype("Genotype(normal=[('skip_connect', 0), ('osep_3x3', 1)], normal_concat=[2], "
                       "reduce=[('max_pool_3x3', 0), ('osep_3x3', 1)], reduce_concat=[2])")
    lam, genotype, params, skips = SweepPoint(0.5, g, 123, 1)
    assert (lam, genotype, params, skips) == (0.5, g, 123, 1)


@pytest.mark.slow
def test_sweep_large_lambda_gives_fewer_params(tmp_path):
    points = sweep([0.0, 10.0], make_space=lambda: tiny_space(op_candidates=OPS),
                   make_evaluator=lambda: digits_evaluator(batches=4, batch_size=16), workdir=tmp_path)
    (lam0, g0, p0, s0), (lam1, g1, p1, s1) = points
    assert (lam0, lam1) == (0.0, 10.0)
    assert p1 < p0, (p0, p1)
    assert points[1].expected_params < points[0].expected_params
    for point in points:
        g = point.genotype
        assert parse_genotype(repr(g)) == g
        assert point.skips == count_skips(g) <= 2 and point.skips_uncapped >= point.skips
        assert all(op != "none" for op, _ in g.normal + g.reduce)
        # both build: on the searched space and as the DARTS CIFAR evaluation network
        net = tiny_space(op_candidates=OPS).freeze(point.arch)
        assert count_params(net) == point.params
        assert net(torch.zeros(2, 3, 8, 8)).shape == (2, 10)
        assert NetworkCIFAR(8, 10, 5, False, g)(torch.zeros(2, 3, 16, 16)).shape == (2, 10)
