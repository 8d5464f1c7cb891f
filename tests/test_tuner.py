"""ParetoTuner driven like NNI's dispatcher does, with synthetic trial results; the trial
command on one genotype."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nni
from osep_nas.genotypes import random_genotype
from search_spaces.hpo import genotype_to_params, params_to_genotype, to_nni_search_space
from strategies.pareto import to_min_matrix
from strategies.tuner import ParetoTuner, space_ops

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _fake_accuracy(params):
    """A deterministic 'accuracy' that grows with the number of conv ops."""
    g = params_to_genotype(params)
    convs = sum(op.startswith(("osep", "sosep")) for op, _ in g.normal + g.reduce)
    return 50.0 + 3.0 * convs + 0.1 * sum(j for _, j in g.normal)


def _drive(tuner, n, start=0, fail=()):
    """Ask, 'train' and tell n trials; parameter ids from start. Returns the params given."""
    given = []
    for pid in range(start, start + n):
        params = tuner.generate_parameters(pid)
        given.append(params)
        if pid in fail:
            tuner.trial_end(pid, False)
            continue
        g = params_to_genotype(params)
        cheap = tuner.space.cheap_metrics(g)
        tuner.receive_trial_result(pid, params, {"default": _fake_accuracy(params), "params": cheap["params"],
                                                 "flops": cheap["flops"]})
        tuner.trial_end(pid, True)
    return given


def test_space_ops():
    ops, n = space_ops(to_nni_search_space("osep", 3))
    assert n == 3 and "osep_3x3" in ops and "none" in ops
    bad = to_nni_search_space("osep", 2)
    bad["normal/op_2_0"]["_value"] = ["skip_connect", "osep_3x3"]
    with pytest.raises(ValueError, match="same ops"):
        space_ops(bad)
    bad = to_nni_search_space("osep", 2)
    bad["normal/input_3_0"]["_value"] = [0, 1]
    with pytest.raises(ValueError, match="inputs"):
        space_ops(bad)


def test_tuner_evolution_budget_front_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("NNI_CHECKPOINT_DIRECTORY", str(tmp_path))
    space = to_nni_search_space("osep", 4)
    probe = ParetoTuner()
    probe.update_search_space(space)
    sizes = [probe.space.cheap_metrics(random_genotype(probe.space.ops, 4, seed=s))["params"] for s in range(20)]
    budget = float(np.median(sizes))

    tuner = ParetoTuner(strategy="evolution", population_size=4, sample_size=2, seed=3, max_params=budget)
    tuner.update_search_space(space)
    given = _drive(tuner, 10, fail={2})
    core = tuner.core
    assert len(core.history) == 10 and sum(t.ok for t in core.history) == 9
    assert core.n_rejected > 0
    for params in given:  # never proposed over budget, always in the space, never 'none'
        g = params_to_genotype(params)
        assert tuner.space.cheap_metrics(g)["params"] <= budget
        assert set(params) == set(space)
        assert all(op != "none" for op, _ in g.normal + g.reduce)
    assert len({json.dumps(p, sort_keys=True) for p in given}) == 10
    assert any(t.origin == "mutation" for t in core.history)
    front = tuner.front()
    pts = to_min_matrix(front, tuner.objectives)
    assert all(not (np.all(pts[j] <= pts[i]) and np.any(pts[j] < pts[i]))
               for i in range(len(pts)) for j in range(len(pts)))

    # a proposal in flight, then the dispatcher restarts (nnictl resume): state from the checkpoint
    in_flight = tuner.generate_parameters(10)
    tuner.save_checkpoint()
    resumed = ParetoTuner(strategy="evolution", population_size=4, sample_size=2, seed=3, max_params=budget)
    resumed.load_checkpoint()
    resumed.update_search_space(space)  # the dispatcher sends the space again: state kept
    assert len(resumed.core.history) == 10
    assert resumed.generate_parameters(11) == in_flight  # re-proposed first
    # the uninterrupted tuner and the resumed one continue identically
    _drive(tuner, 3, start=11)
    tuner.receive_trial_result(10, in_flight, {"default": 1.0})
    _drive(resumed, 3, start=12)
    assert [t.candidate for t in resumed.core.history[10:]] == [t.candidate for t in tuner.core.history[10:13]]


@pytest.mark.parametrize("strategy", ["nsga2", "motpe"])
def test_tuner_drives_every_strategy_and_resumes_exactly(strategy, tmp_path, monkeypatch):
    """classArg strategy: the core of osep-nas search's search.strategy (one factory), with the
    same checkpoint/resume as the evolution."""
    from strategies.cores import CoreSettings

    monkeypatch.setenv("NNI_CHECKPOINT_DIRECTORY", str(tmp_path))
    space = to_nni_search_space("osep", 3)
    args = dict(strategy=strategy, population_size=4, sample_size=2, seed=5)
    tuner = ParetoTuner(**args)
    tuner.update_search_space(space)
    reference = CoreSettings.of(strategy, 4, 2, 5).make(tuner.space, tuner.objectives)
    assert type(tuner.core) is type(reference)
    given = _drive(tuner, 6, fail={1})
    assert len(tuner.core.history) == 6 and sum(t.ok for t in tuner.core.history) == 5
    assert len({json.dumps(p, sort_keys=True) for p in given}) == 6
    in_flight = tuner.generate_parameters(6)
    resumed = ParetoTuner(**args)
    resumed.load_checkpoint()
    resumed.update_search_space(space)
    assert resumed.generate_parameters(7) == in_flight
    tuner.receive_trial_result(6, in_flight, {"default": 1.0})
    resumed.receive_trial_result(7, in_flight, {"default": 1.0})
    assert _drive(resumed, 3, start=8) == _drive(tuner, 3, start=8)
    with pytest.raises(ValueError, match="strategy"):
        ParetoTuner(strategy="cmaes")


def test_tuner_metric_forms_and_errors():
    tuner = ParetoTuner(population_size=2, sample_size=1, seed=0)
    with pytest.raises(RuntimeError):
        tuner.generate_parameters(0)
    tuner.update_search_space(to_nni_search_space("osep", 2))
    p0 = tuner.generate_parameters(0)
    tuner.receive_trial_result(0, p0, 75.0)  # a float is the accuracy; params from the tuner's proxy
    p1 = tuner.generate_parameters(1)
    tuner.receive_trial_result(1, p1, {"params": 3})  # no default: failed, not fatal
    h = tuner.core.history
    assert h[0].ok and h[0].record["accuracy"] == 75.0 and h[0].record["params"] > 0
    assert not h[1].ok and "default" in h[1].reason
    tuner.import_data([{"parameter": genotype_to_params(random_genotype(tuner.space.ops, 2, seed=9)),
                        "value": {"default": 80.0}}])
    assert tuner.core.history[-1].origin == "external"
    with pytest.raises(ValueError):
        tuner.update_search_space(to_nni_search_space("darts", 2))
    for bad in ({"population_size": 2, "sample_size": 3}, {"max_params": -5}, {"seed": "x"},
                {"objectives": ["accuracy:up"]}):
        with pytest.raises(ValueError):
            ParetoTuner(**bad)


def test_tuner_exhaustion_raises_no_more_trial():
    space = to_nni_search_space(["skip_connect", "max_pool_3x3"], 1)
    tuner = ParetoTuner(population_size=50, sample_size=1, seed=0, exclude_none=True, max_attempts=50)
    tuner.update_search_space(space)
    # 2 ops x 2 inputs per edge, 2 edges (unordered) per cell, 2 cells: 10 x 10 = 100 genotypes
    got = tuner.generate_multiple_parameters(list(range(200)))  # stops at the first NoMoreTrialError
    assert 0 < len(got) <= 100
    with pytest.raises(nni.NoMoreTrialError):
        for pid in range(200, 400):
            got.append(tuner.generate_parameters(pid))
    assert len(got) <= 100 and len({json.dumps(p, sort_keys=True) for p in got}) == len(got)


def test_trial_command_replays_params(tmp_path, capsys):
    params = genotype_to_params(random_genotype(["skip_connect", "max_pool_3x3", "osep_3x3"], 4, seed=1))
    (tmp_path / "p.json").write_text(json.dumps(params))
    out = subprocess.run([sys.executable, "-m", "strategies.cli_trial", "--params", str(tmp_path / "p.json"),
                          "--set", "proxy.steps=5"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(metrics) >= {"default", "params", "flops"} and 0 <= metrics["default"] <= 100
    # the tuner's default proxy is the trial's default proxy
    tuner = ParetoTuner()
    tuner.update_search_space(to_nni_search_space("osep", 4))
    assert tuner.space.cheap_metrics(params_to_genotype(params))["params"] == metrics["params"]
    from osep_nas.cli import main as cli_main

    capsys.readouterr()
    assert cli_main(["trial"]) == 2  # outside nnictl without --params: one line, exit 2
    assert cli_main(["trial", "--params", '{"normal/op_2_0": "osep_3x3"}']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("osep-nas trial: error:") for line in err)
