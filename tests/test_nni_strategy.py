"""ParetoEvolution as an NNI 3.0 strategy: NasExperiment with the in-process (sequential)
engine, a FunctionalEvaluator that trains one SGD step on digits and reports a dict metric."""
import json
import random

import numpy as np
import pytest
import torch

from osep_nas import count_params
from osep_nas.networks import NetworkCIFAR
from osep_nas.genotypes import arch_to_genotype, parse_genotype
from search_spaces.darts_space import OSepDartsNet, OSepDartsSpace
from strategies.nni_strategy import ModelSpaceGenotypes, ParetoEvolution, metric_record
from strategies.pareto import to_min_matrix

import nni
from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.experiment import NasExperiment, NasExperimentConfig
from nni.nas.space import SimplifiedModelSpace
from tests.nni_trials import TRAINED, one_sgd_step


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def digits(digits_8px):
    x, y = digits_8px
    return x[:96], y[:96]


SMALL_TARGET = {"model": "cifar10", "init_channels": 8, "layers": 5}


def _space():
    return OSepDartsSpace(init_channels=8, layers=3, num_nodes=4, input_size=8)


def _train_one_step(model, x, y):
    """One SGD step on 32 digits, accuracy (%) on the next 32, reported as a dict metric."""
    acc, loss = one_sgd_step(model, x, y)
    nni.report_final_result({"default": acc, "train_loss": loss})


def test_metric_record():
    assert metric_record(0.5) == {"accuracy": 0.5}
    assert metric_record({"default": 91.0, "params": 10}) == {"accuracy": 91.0, "params": 10}
    assert metric_record({"default": 1.0, "accuracy": 2.0}) == {"accuracy": 2.0}
    for bad in ({"params": 1}, {"default": "x"}, "0.5", None, True):
        with pytest.raises(ValueError):
            metric_record(bad)


def test_adapter_counts_the_frozen_model():
    space = _space()
    adapter = ModelSpaceGenotypes(SimplifiedModelSpace.from_model(space, None))
    assert "none" not in adapter.ops and adapter.num_nodes == 4
    g = adapter.random_sample(random.Random(0))
    cheap = adapter.cheap_metrics(g)
    # the objective is the target network's #Params (default: DARTS' 36-channel 20-cell CIFAR-10
    # network); the frozen model NNI trains is only the proxy
    assert cheap["params"] == count_params(NetworkCIFAR(36, 10, 20, False, g))
    assert cheap["proxy_params"] == count_params(space.freeze(adapter.arch(g)))
    assert adapter.input_size == (3, 8, 8) and cheap["flops"] > cheap["proxy_flops"] > 0
    with pytest.raises(ValueError, match="DARTS cell"):
        from nni.nas.nn.pytorch import LayerChoice, ModelSpace

        class Other(ModelSpace):
            def __init__(self):
                super().__init__()
                self.a = LayerChoice([torch.nn.Identity(), torch.nn.ReLU()], label="a")

        ModelSpaceGenotypes(SimplifiedModelSpace.from_model(Other(), None))


@pytest.mark.parametrize("which", ["evolution", "nsga2"])
def test_pareto_evolution_in_process(which, digits, tmp_path):
    x, y = digits
    space = _space()
    # budget: the median #Params of random archs of this space, so about half are refused
    probe = ModelSpaceGenotypes(SimplifiedModelSpace.from_model(space, None), target=SMALL_TARGET)
    rng = random.Random(1)
    sizes = [probe.cheap_metrics(probe.random_sample(rng))["params"] for _ in range(12)]
    budget = float(np.median(sizes))

    TRAINED.clear()
    config = NasExperimentConfig("sequential", "simplified")
    config.experiment_working_directory = str(tmp_path)
    config.max_trial_number = 5
    strategy = ParetoEvolution(population_size=3, sample_size=2, seed=0, max_params=budget, target=SMALL_TARGET,
                               strategy=which)
    exp = NasExperiment(space, FunctionalEvaluator(_train_one_step, x=x, y=y), strategy, config)
    try:
        exp.run()
        top = exp.export_top_models(top_k=10, formatter="dict")
    finally:
        exp.stop()

    core = strategy.core
    assert type(core).__name__ == ("OptunaCore" if which == "nsga2" else "ParetoEvolutionCore")
    assert len(TRAINED) == 5 and len(core.history) == 5
    assert all(t is OSepDartsNet for t, _, _ in TRAINED)
    # over-budget architectures (target #Params) were refused before training, never evaluated
    assert all(probe.cheap_metrics(g)["params"] <= budget for _, _, g in TRAINED)
    assert core.n_rejected > 0
    # proxy_params is the count of the very network that was trained; params the target's
    trained = {repr(g): p for _, p, g in TRAINED}
    records = strategy.records()
    for rec in records:
        assert rec["status"] == "ok", rec
        assert trained[rec["genotype"]] == rec["proxy_params"]
        assert rec["params"] == probe.cheap_metrics(parse_genotype(rec["genotype"]))["params"]
        assert 0.0 <= rec["accuracy"] <= 100.0 and "train_loss" in rec  # the dict metric was read
        assert arch_to_genotype(rec["arch"]) == parse_genotype(rec["genotype"])
    # the front is non-dominated, and export_top_models returns exactly its members
    front = strategy.front()
    assert front
    pts = to_min_matrix(front, strategy.objectives)
    for i in range(len(pts)):
        for j in range(len(pts)):
            assert not (np.all(pts[j] <= pts[i]) and np.any(pts[j] < pts[i]))
    assert sorted(json.dumps(a, sort_keys=True) for a in top) == \
        sorted(json.dumps(r["arch"], sort_keys=True) for r in front)
    assert top[0] == max(front, key=lambda r: (r["accuracy"], -r["params"]))["arch"]
    # state round trip
    state = json.loads(json.dumps(strategy.state_dict()))
    assert len(state["pareto_evolution"]["history"]) == 5
    # the main job's report
    rep = strategy.write_report(tmp_path / "report", plots=False, print_table=False)
    assert (tmp_path / "report" / "pareto.yaml").is_file()
    shown = {r["trial"] for r in rep.front} | {t for r in rep.front for t in r.get("ties", [])}
    assert shown == {r["trial"] for r in front}  # the report lists equal points once, with their ties


def test_bad_arguments():
    with pytest.raises(ValueError):
        ParetoEvolution(population_size=2, sample_size=3)
    with pytest.raises(ValueError):
        ParetoEvolution(max_params=-1)
    with pytest.raises(ValueError):
        ParetoEvolution(objectives=["accuracy:up"])
    with pytest.raises(ValueError, match="strategy"):
        ParetoEvolution(strategy="cmaes")


def test_proxy_evaluator_runs_the_search_protocol_on_validation_only(tmp_path, monkeypatch):
    """ParetoEvolution with the shipped evaluator: the search's trial protocol on the frozen
    model, scored on the validation part; a test split that raises on any use is never read."""
    import osep_nas.data as D
    from strategies.nni_strategy import proxy_evaluator

    class Trap(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            raise AssertionError("the test split was read")

    real = D.load_digits_tensors

    def trapped(*args, **kwargs):
        tx, ty, vx, vy = real(*args, **kwargs)
        return tx, ty, torch.Tensor._make_subclass(Trap, vx), torch.Tensor._make_subclass(Trap, vy)

    monkeypatch.setattr(D, "load_digits_tensors", trapped)
    config = NasExperimentConfig("sequential", "simplified")
    config.experiment_working_directory = str(tmp_path)
    config.max_trial_number = 3
    strategy = ParetoEvolution(population_size=2, sample_size=1, seed=0, target=SMALL_TARGET)
    evaluator = proxy_evaluator({"proxy": {"steps": 3}, "data": {"batch_size": 16}})
    exp = NasExperiment(_space(), evaluator, strategy, config)
    try:
        exp.run()
    finally:
        exp.stop()
    records = strategy.records()
    assert len(records) == 3 and all(r["status"] == "ok" for r in records), records
    # 288 validation digits: every accuracy is a multiple of 100/288
    assert all(abs(r["accuracy"] * 2.88 - round(r["accuracy"] * 2.88)) < 1e-3 for r in records)
