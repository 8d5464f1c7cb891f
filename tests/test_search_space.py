"""The osep DARTS cell space: NNI 3.0 model space, fixed networks, NNI profilers, hub ops,
and the nnictl HPO format with the ``osep-nas space`` command."""
import json

import pytest
import torch

import search_spaces
from osep_nas import count_flops, count_params
from osep_nas.genotypes import DARTS_V2, O_DARTS, arch_to_genotype, genotype_to_arch, random_genotype
from osep_nas.ops import DARTS_PRIMITIVES, OSEP_PRIMITIVES, OSepBlock
from search_spaces.darts_space import OSepDartsNet, OSepDartsSpace, reduction_indices
from search_spaces.hpo import check_search_space, genotype_to_params, params_to_genotype, to_nni_search_space
from search_spaces.presets import PRESETS
from search_spaces.profilers import (arch_probs, expected_params, flops_profiler, paper_flops_profiler,
                                     params_profiler)

from nni.nas.nn.pytorch import InputChoice, LayerChoice
from nni.nas.space import model_context


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def space():
    return OSepDartsSpace(init_channels=8, layers=4, num_nodes=4, input_size=8)


@pytest.fixture(scope="module")
def profilers(space):
    return params_profiler(space), paper_flops_profiler(space)


def _no_nni_modules(net):
    return not any(isinstance(m, (LayerChoice, InputChoice)) for m in net.modules())


# -- the model space -------------------------------------------------------------------------------
def test_presets():
    assert PRESETS["osep"] == OSEP_PRIMITIVES and PRESETS["darts"] == DARTS_PRIMITIVES
    assert PRESETS["darts+osep"][:8] == DARTS_PRIMITIVES and len(PRESETS["darts+osep"]) == 14
    assert reduction_indices(8) == [2, 5] and reduction_indices(3) == [1, 2]


def test_labels_match_genotype_arch_and_hpo_keys(space):
    labels = space.simplify()
    arch = genotype_to_arch(random_genotype(OSEP_PRIMITIVES, 4, seed=0))
    assert set(labels) == set(arch) == set(to_nni_search_space("osep", 4))
    assert labels["normal/op_2_0"].values == OSEP_PRIMITIVES
    assert labels["reduce/input_5_1"].values == [0, 1, 2, 3, 4]
    assert labels["reduce/input_5_1"].n_chosen == 1


def test_space_forward_and_sample_roundtrip(space):
    assert space(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    for seed in range(5):
        arch = space.random_arch(seed)
        g = space.genotype(arch)
        assert space.arch(g) == arch
        assert genotype_to_arch(g) == arch
        assert space.contains(arch)


def test_freeze_gives_a_plain_network(space):
    arch = space.random_arch(11)
    net = space.freeze(arch)
    assert type(net) is OSepDartsNet and _no_nni_modules(net)
    assert net.genotype == arch_to_genotype(arch)
    with model_context(arch):  # what NNI's multi-trial engines do
        again = OSepDartsSpace(init_channels=8, layers=4, num_nodes=4, input_size=8)
    assert type(again) is OSepDartsNet and count_params(again) == count_params(net)
    direct = OSepDartsNet(net.genotype, init_channels=8, layers=4, input_size=8)
    assert count_params(direct) == count_params(net)
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    # reductions halve the resolution twice: 8 -> 4 -> 2
    feats = []
    hooks = [c.register_forward_hook(lambda m, i, o: feats.append(o.shape[-1])) for c in net.cells]
    net.eval()(torch.randn(1, 3, 8, 8))
    for h in hooks:
        h.remove()
    assert feats == [8, 4, 2, 2]


def test_fixed_network_channels_and_published_genotypes():
    net = OSepDartsNet(O_DARTS, init_channels=16, layers=8, input_size=32)
    assert [c.reduction for c in net.cells] == [False, False, True, False, False, True, False, False]
    assert net.classifier.in_features == 4 * 64
    assert net.stem[0].out_channels == 48
    assert any(isinstance(m, OSepBlock) for m in net.modules())
    d = OSepDartsNet(DARTS_V2, init_channels=16, layers=8)
    assert count_params(net) < count_params(d)  # osep cells are lighter than dsep cells


def test_auxiliary_head_and_drop_path():
    net = OSepDartsNet(O_DARTS, init_channels=8, layers=3, input_size=8, auxiliary=True, drop_path_prob=0.2)
    net.train()
    logits, aux = net(torch.randn(2, 3, 8, 8))
    assert logits.shape == aux.shape == (2, 10)
    assert count_params(net) == count_params(OSepDartsNet(O_DARTS, init_channels=8, layers=3))  # head excluded
    net.eval()
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    net.set_drop_path_prob(0.0)
    assert net.drop_path_prob == 0.0
    with pytest.raises(ValueError):
        net.set_drop_path_prob(1.0)


def test_deprecated_size_keywords_still_work():
    with pytest.warns(DeprecationWarning, match="width= is deprecated; use init_channels="):
        old = OSepDartsSpace(width=8, num_cells=3, input_size=8)
    assert (old.config["init_channels"], old.config["layers"]) == (8, 3)
    with pytest.warns(DeprecationWarning, match="num_cells= is deprecated; use layers="):
        net = OSepDartsNet(O_DARTS, width=8, num_cells=3, input_size=8)
    assert count_params(net) == count_params(OSepDartsNet(O_DARTS, init_channels=8, layers=3, input_size=8))


def test_space_argument_errors(space):
    with pytest.raises(ValueError, match="unknown op preset 'dsep'"):
        OSepDartsSpace("dsep")
    with pytest.raises(ValueError, match="unknown op 'conv_9x9'"):
        OSepDartsSpace(["osep_3x3", "conv_9x9"])
    with pytest.raises(ValueError, match="init_channels must be a positive integer"):
        OSepDartsSpace(init_channels=0)
    with pytest.raises(ValueError, match="unknown op keyword"):
        OSepDartsSpace(gama=2.0)
    darts_arch = genotype_to_arch(DARTS_V2)
    with pytest.raises(ValueError, match="'sep_conv_3x3'.*not among the space's candidates"):
        space.freeze(darts_arch)
    with pytest.raises(ValueError, match="3 normal nodes, the space has 4"):
        space.freeze(genotype_to_arch(random_genotype(OSEP_PRIMITIVES, 3, seed=1)))


def test_presets_build_and_osep_keywords():
    sp = OSepDartsSpace("darts+osep", init_channels=8, layers=3, input_size=8, rounding="paper", gamma=2.0)
    arch = genotype_to_arch(O_DARTS)
    assert count_params(sp.freeze(arch)) == count_params(
        OSepDartsNet(O_DARTS, init_channels=8, layers=3, rounding="paper", gamma=2.0))
    assert sp.freeze(genotype_to_arch(DARTS_V2))(torch.randn(1, 3, 8, 8)).shape == (1, 10)


# -- NNI profilers ------------------------------------------------------------------------------------
def test_num_params_profiler_matches_counter_on_20_archs(space, profilers):
    pp, fp = profilers
    seen_ops = set()
    for seed in range(20):
        arch = space.random_arch(100 + seed)
        net = space.freeze(arch)
        seen_ops.update(v for k, v in arch.items() if "/op_" in k)
        assert pp.profile(arch) == count_params(net), seed
        assert fp.profile(arch) == count_flops(net, (3, 8, 8)), seed
    assert seen_ops == set(OSEP_PRIMITIVES)


def test_reduce_skip_connect_params_depend_on_input(space, profilers):
    pp, _ = profilers
    g = random_genotype(["osep_3x3"], 4, seed=0)
    # reduction node 3 (state 3), edge 0: a skip from a cell input is a FactorizedReduce, from node 0 an identity
    from_input = g._replace(reduce=[("osep_3x3", 0)] * 2 + [("skip_connect", 1), ("osep_3x3", 0)] + g.reduce[4:])
    from_node = g._replace(reduce=[("osep_3x3", 0)] * 2 + [("skip_connect", 2), ("osep_3x3", 0)] + g.reduce[4:])
    a, b = genotype_to_arch(from_input), genotype_to_arch(from_node)
    assert pp.profile(a) - pp.profile(b) == count_params(space.freeze(a)) - count_params(space.freeze(b)) > 0


def test_profilers_other_space_settings():
    sp = OSepDartsSpace("darts+osep", init_channels=6, layers=3, num_nodes=2, input_size=9, auxiliary=True,
                        rounding="paper")
    pp, fp = params_profiler(sp), paper_flops_profiler(sp)
    for seed in range(4):
        arch = sp.random_arch(seed)
        net = sp.freeze(arch)
        assert pp.profile(arch) == count_params(net)
        assert fp.profile(arch) == count_flops(net, (3, 9, 9))
    nni_flops = flops_profiler(sp)  # NNI's default convention also counts BN, ReLU and biases
    assert nni_flops.profile(arch) > fp.profile(arch)


def test_expected_params_penalty(space, profilers):
    from nni.nas.oneshot.pytorch.profiler import ExpectationProfilerPenalty
    from nni.nas.strategy import DARTS

    pp, _ = profilers
    arch = space.random_arch(5)
    exact = pp.profile(arch)
    onehot = {}
    for label, mutable in space.simplify().items():
        chosen = arch[label][0] if isinstance(arch[label], list) else arch[label]
        onehot[label] = {v: float(v == chosen) for v in mutable.values}
    assert expected_params(pp, onehot) == pytest.approx(exact)
    penalty = ExpectationProfilerPenalty(pp, baseline=exact)
    loss, details = penalty(torch.tensor(1.0), onehot)
    assert details["penalty"] == pytest.approx(exact) and float(loss) == pytest.approx(1.0)

    supernet = DARTS().mutate_model(OSepDartsSpace(init_channels=8, layers=4, num_nodes=4, input_size=8))
    probs = arch_probs(supernet)
    assert set(probs) == set(space.simplify())
    value = expected_params(pp, probs)
    assert isinstance(value, torch.Tensor) and value.requires_grad
    lo = min(pp.profile(space.random_arch(s)) for s in range(5))
    assert 0 < value.item() < 3 * lo
    value.backward()
    alphas = [m._arch_alpha for m in supernet.modules() if isinstance(getattr(m, "_arch_alpha", None), torch.Tensor)]
    assert any(float(a.grad.abs().sum()) > 0 for a in alphas if a.grad is not None)


def test_darts_supernet_runs_each_candidate_once_per_node_input(monkeypatch):
    """Under NNI's DARTS the two edges of a node share their candidates: each runs once per
    input (2+3+4+5 = 14 times per 4-node cell, as in NNI's own DARTS cell, not 28), each edge
    keeps its own weights, and the output equals computing every edge on its own."""
    from collections import Counter

    from nni.nas.strategy import DARTS

    from search_spaces.darts_space import SharedCandidate

    torch.manual_seed(0)
    net = DARTS().mutate_model(OSepDartsSpace("darts", init_channels=4, layers=3, num_nodes=4, input_size=8)).eval()
    calls = Counter()
    shared = {m for m in net.modules() if isinstance(m, SharedCandidate)}
    for m in shared:
        m.op.register_forward_hook(lambda mod, i, o: calls.update([id(mod)]))
    x = torch.randn(2, 3, 8, 8)
    out = net(x)
    # 8 ops per stride group: one group per node of the normal cell; in each of the two reduction
    # cells one on node 2 (it reads the cell inputs only, stride 2) and two on nodes 3 to 5
    assert len(shared) == (4 + 2 * (1 + 2 * 3)) * 8
    assert sum(calls.values()) == 3 * 14 * 8
    alphas = arch_probs(net)
    assert alphas["normal/op_2_0"]["sep_conv_3x3"] is not alphas["normal/op_2_1"]["sep_conv_3x3"]

    monkeypatch.setattr(SharedCandidate, "forward", lambda self, x: self.op(x))
    calls.clear()
    assert torch.equal(net(x), out)
    assert sum(calls.values()) == 3 * 28 * 8


# -- NNI hub ------------------------------------------------------------------------------------------
def test_nds_builds_with_osep_ops():
    from nni.nas.hub.pytorch import NDS
    from nni.nas.hub.pytorch import nasnet

    assert {"osep_3x3", "osep_5x5", "osep_dil_3x3", "sosep_5x5"} <= set(nasnet.OPS)
    model = NDS(["osep_3x3", "max_pool_3x3", "skip_connect"], width=8, num_cells=3, dataset="cifar")
    assert any(isinstance(m, OSepBlock) for m in model.modules())
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert nasnet.OPS["osep_3x3"](8, 2, True)(torch.randn(1, 8, 8, 8)).shape == (1, 8, 4, 4)
    assert search_spaces.register_hub_ops() == []  # idempotent: nothing new
    with pytest.raises(ValueError, match="fixed channel count"):
        nasnet.OPS["osep_3x3"](object(), 1, True)


def test_arch_dicts_fit_nni_hub_spaces():
    # the label scheme is NNI's own: the hub's DARTS and NDS spaces freeze our arch dicts
    from nni.nas.hub.pytorch import DARTS as HubDarts
    from nni.nas.hub.pytorch import NDS

    darts = HubDarts.frozen_factory(genotype_to_arch(DARTS_V2))(width=8, num_cells=3, dataset="cifar")
    assert darts(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    ops = ["osep_3x3", "osep_dil_3x3", "max_pool_3x3", "skip_connect"]
    nds = NDS.frozen_factory(genotype_to_arch(O_DARTS))(ops, "all", 4, 8, 3, "cifar")
    assert sum(isinstance(m, OSepBlock) for m in nds.modules()) > 0
    assert nds(torch.randn(1, 3, 32, 32)).shape == (1, 10)


# -- nnictl HPO format ------------------------------------------------------------------------------
def test_hpo_space_layout():
    ss = to_nni_search_space("osep", 4)
    assert len(ss) == 32
    assert ss["normal/op_2_0"] == {"_type": "choice", "_value": OSEP_PRIMITIVES}
    assert ss["reduce/input_5_1"] == {"_type": "choice", "_value": [0, 1, 2, 3, 4]}
    summary = check_search_space(ss)
    assert summary["choices"] == 32 and summary["num_nodes"] == 4
    assert summary["size"] == (10 ** 8 * (2 * 3 * 4 * 5) ** 2) ** 2
    assert len(to_nni_search_space("darts", 2)) == 16


@pytest.mark.parametrize("seed", range(100))
def test_hpo_params_round_trip(seed):
    g = random_genotype(PRESETS["darts+osep"], 4, seed=seed)
    params = genotype_to_params(g)
    assert all(isinstance(v, int) for k, v in params.items() if "/input_" in k)
    assert params_to_genotype(params) == g
    ss = to_nni_search_space("darts+osep", 4)
    assert set(params) == set(ss) and all(params[k] in ss[k]["_value"] for k in ss)


def test_published_genotypes_as_params():
    assert params_to_genotype(genotype_to_params(O_DARTS)) == O_DARTS
    assert params_to_genotype({**genotype_to_params(DARTS_V2), "lr": 0.1}) == DARTS_V2


def _space_file(tmp_path, obj, name="ss.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


BAD_SPACES = [
    ('{"normal/op_2_0": {"_type": "choice", "_value": ["none"]', "malformed JSON"),
    ("[1, 2]", "must be a JSON object"),
    ({}, "is empty"),
    ({**to_nni_search_space(), "normal/op_2_0": {"_type": "uniform", "_value": [0, 1]}},
     "key 'normal/op_2_0' has _type 'uniform'"),
    ({**to_nni_search_space(), "reduce/op_3_1": {"_type": "choice", "_value": ["osep_3x3", "osep_9x9"]}},
     "key 'reduce/op_3_1': unknown op 'osep_9x9'"),
    ({**to_nni_search_space(), "normal/input_3_0": {"_type": "choice", "_value": [0, 3]}},
     "key 'normal/input_3_0': input choice 3 is not an input of node 3"),
    ({**to_nni_search_space(), "normal/input_3_0": {"_type": "choice", "_value": []}},
     "key 'normal/input_3_0': _value must be a non-empty list"),
    ({**to_nni_search_space(), "normal/input_3_0": {"_type": "choice", "_value": [0, 0]}}, "listed a choice twice|twice"),
    ({**to_nni_search_space(), "lr": {"_type": "choice", "_value": [0.1]}}, "key 'lr' is not a cell label"),
    ({**to_nni_search_space(), "normal/op_2_0": ["none"]}, "key 'normal/op_2_0' must be"),
    ({k: v for k, v in to_nni_search_space().items() if k != "reduce/input_4_1"}, "missing key 'reduce/input_4_1'"),
    ({k: v for k, v in to_nni_search_space().items() if not k.startswith("reduce/")}, "no 'reduce/...' choices"),
]


@pytest.mark.parametrize("obj,message", BAD_SPACES, ids=[f"bad{i}" for i in range(len(BAD_SPACES))])
def test_check_search_space_errors(tmp_path, obj, message):
    path = _space_file(tmp_path, obj)
    with pytest.raises(ValueError, match=message):
        check_search_space(path)
    if not isinstance(obj, str):
        with pytest.raises(ValueError, match=message):
            check_search_space(obj)


def test_cli_space_out_and_check(tmp_path, capsys):
    from osep_nas.cli import main

    out = tmp_path / "search_space.json"
    assert main(["space", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == to_nni_search_space("osep", 4)
    assert "32 choices" in capsys.readouterr().out
    assert main(["space", "--check", str(out)]) == 0
    assert "ok, 32 choices" in capsys.readouterr().out
    assert main(["space", "--preset", "darts", "--num-nodes", "3", "--out", str(tmp_path / "d.json")]) == 0
    assert check_search_space(tmp_path / "d.json")["num_nodes"] == 3
    assert "wrote" in capsys.readouterr().out
    assert main(["space", "--ops", "osep_3x3,skip_connect"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out)["normal/op_2_0"]["_value"] == ["osep_3x3", "skip_connect"]
    assert "space size" in printed.err

    bad = _space_file(tmp_path, {**to_nni_search_space(), "normal/op_2_0": {"_type": "choice", "_value": ["bad_op"]}},
                      "bad.json")
    assert main(["space", "--check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "normal/op_2_0" in err and "bad_op" in err
    assert main(["space", "--check", str(tmp_path / "missing.json")]) == 2
    assert main(["space", "--ops", "osep_3x3,nope"]) == 2
    assert main(["space", "--out", str(tmp_path / "no_dir" / "ss.json")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "d.json", "search_space.json"]
