"""NNI 3.0 end to end on OSepDartsSpace: one-shot strategies through NasExperiment and the
in-process (sequential) multi-trial engine, on scikit-learn's 8x8 digits as RGB tensors."""
import pytest
import torch

from osep_nas import count_params
from osep_nas.genotypes import arch_to_genotype, genotype_to_arch, parse_genotype
from osep_nas.ops import OSEP_PRIMITIVES
from search_spaces.darts_space import OSepDartsNet, OSepDartsSpace
from search_spaces.profilers import params_profiler

import nni
from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.evaluator.pytorch import Classification, DataLoader
from nni.nas.experiment import NasExperiment, NasExperimentConfig
from nni.nas.strategy import DARTS, ENAS, GumbelDARTS, Random, RandomOneShot, RegularizedEvolution
from tests.nni_trials import TRAINED, one_sgd_step


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def digits(digits_8px):
    x, y = digits_8px
    return x[:160], y[:160]


def _space():
    return OSepDartsSpace(init_channels=8, layers=3, num_nodes=4, input_size=8)


def _config(tmp_path, model_format):
    config = NasExperimentConfig("sequential", model_format)
    config.experiment_working_directory = str(tmp_path)
    return config


def _check_arch(space, arch):
    assert set(arch) == set(space.simplify())
    g = arch_to_genotype(arch)
    assert parse_genotype(repr(g)) == g
    assert genotype_to_arch(g) == arch
    assert all(op in OSEP_PRIMITIVES for op, _ in g.normal + g.reduce)
    return g


def _one_shot(strategy, digits, tmp_path, trains_alphas):
    """Run a one-shot strategy to the end and check the exported arch."""
    from torch.utils.data import TensorDataset

    x, y = digits
    train = DataLoader(TensorDataset(x[:96], y[:96]), batch_size=16, shuffle=True)
    val = DataLoader(TensorDataset(x[96:], y[96:]), batch_size=16)
    evaluator = Classification(train_dataloaders=train, val_dataloaders=val, num_classes=10, learning_rate=0.01,
                               max_epochs=1, limit_train_batches=3, limit_val_batches=2, accelerator="cpu",
                               devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                               enable_model_summary=False)
    space = _space()
    profiler = params_profiler(space)  # before the strategy turns the space into a supernet
    exp = NasExperiment(space, evaluator, strategy, _config(tmp_path, "raw"))
    try:
        exp.run()
        arch = exp.export_top_models(formatter="dict")[0]
    finally:
        exp.stop()  # run() leaves the experiment to an atexit stop otherwise
    g = _check_arch(_space(), arch)
    net = space.freeze(arch)  # works on the mutated supernet too
    assert isinstance(net, OSepDartsNet) and net.genotype == g
    assert count_params(net) == profiler.profile(arch)
    assert net(x[:4]).shape == (4, 10)
    if trains_alphas:  # the architecture weights moved away from their ~1e-3 initialisation
        alphas = [p for n, p in space.named_parameters() if "_arch_alpha" in n]
        assert alphas and max(float(a.detach().abs().max()) for a in alphas) > 0.05
    return g


@pytest.mark.filterwarnings("ignore:Direct export from RandomOneShot")
@pytest.mark.parametrize("name", [pytest.param("darts", marks=pytest.mark.slow),
                                  pytest.param("gumbel", marks=pytest.mark.slow), "random"])
def test_one_shot_strategies(name, digits, tmp_path):
    strategy = {"darts": lambda: DARTS(arc_learning_rate=0.05), "gumbel": lambda: GumbelDARTS(arc_learning_rate=0.05),
                "random": RandomOneShot}[name]()
    _one_shot(strategy, digits, tmp_path, trains_alphas=name != "random")


@pytest.mark.slow
def test_enas(digits, tmp_path):
    pytest.importorskip("tianshou", reason="NNI's ENAS strategy needs tianshou")
    _one_shot(ENAS(), digits, tmp_path, trains_alphas=False)


def _train_one_step(model, x, y):
    """Multi-trial evaluator: one SGD step on 32 digits, accuracy (a fraction) on the next 32."""
    acc, _ = one_sgd_step(model, x, y)
    nni.report_final_result(acc / 100.0)


@pytest.mark.parametrize("strategy,model_format", [
    (lambda: RegularizedEvolution(population_size=2, sample_size=1, seed=0), "simplified"),
    (lambda: Random(seed=1), "raw"),
])
def test_multi_trial_in_process(strategy, model_format, digits, tmp_path):
    x, y = digits
    TRAINED.clear()
    space = _space()
    config = _config(tmp_path, model_format)
    config.max_trial_number = 3
    exp = NasExperiment(space, FunctionalEvaluator(_train_one_step, x=x, y=y), strategy(), config)
    try:
        exp.run()
        models = exp.export_top_models(top_k=3)
    finally:
        exp.stop()
    assert len(TRAINED) == 3
    assert all(t is OSepDartsNet for t, _, _ in TRAINED)  # trials get plain fixed networks
    assert len(models) == 3
    metrics = [m.metric for m in models]
    assert all(0.0 <= m <= 1.0 for m in metrics) and metrics == sorted(metrics, reverse=True)
    for m in models:
        g = _check_arch(space, m.sample)
        assert g in [t[2] for t in TRAINED]
