"""The paper's #Params / FLOPs figures, reproduced (Tables 3, 5 and 6).

Each network is counted once per module (fixtures); the tolerances are the
project's targets.  Where our reconstruction of an unstated choice matters, the
test says which evidence backs it (see ``osep_nas/networks/resnet.py``).
"""
import pytest

from osep_nas import count_flops, count_params
from osep_nas.models import create_model
from osep_nas.networks import resnet_cifar
from osep_nas.reference import PAPER_FIGURES, paper_figure

DEPTHS = (20, 32, 56, 110)
CIFAR = (3, 32, 32)
IMAGENET = (3, 224, 224)


def measure(model, size):
    return count_params(model) / 1e6, count_flops(model, size) / 1e9


@pytest.fixture(scope="module")
def resnets():
    """(prefix, depth, variant) -> (#Params M, FLOPs G) of the paper's ResNet rows."""
    out = {}
    for d in DEPTHS:
        out["", d, "default"] = measure(create_model(f"resnet{d}"), CIFAR)
        out["d_", d, "default"] = measure(create_model(f"d_resnet{d}"), CIFAR)
        out["o_", d, "default"] = measure(create_model(f"o_resnet{d}"), CIFAR)
        out["o_", d, "paper"] = measure(create_model(f"o_resnet{d}", rounding="paper", shortcut="B"), CIFAR)
        out["o_", d, "paper-A"] = measure(create_model(f"o_resnet{d}", rounding="paper"), CIFAR)
        out["o_", d, "B"] = measure(create_model(f"o_resnet{d}", shortcut="B"), CIFAR)
    return out


def ratio(ours, name):
    fig = paper_figure(name)
    return ours[0] / fig.params_m, ours[1] / fig.flops_g


#: (model prefix, depths, relative tolerance on #Params and on FLOPs) against Table 6
TABLE6_TOLERANCES = [
    ("", DEPTHS, 0.005),          # the conventional ResNets: within half a percent
    ("d_", DEPTHS, 0.10),         # d-ResNets: within 10 %
    ("d_", (32, 56, 110), 0.001),  # conventional stem (FLOPs), BN after the depth-wise conv (#Params): 0.1 %
]


@pytest.mark.parametrize("prefix,depth,tol", [(p, d, t) for p, depths, t in TABLE6_TOLERANCES for d in depths])
def test_resnet_and_d_resnet_table6_within_tolerance(resnets, prefix, depth, tol):
    p, f = ratio(resnets[prefix, depth, "default"], f"{prefix}resnet{depth}")
    assert abs(p - 1) < tol and abs(f - 1) < tol


@pytest.mark.parametrize("depth", DEPTHS)
def test_o_resnet_default_rounding_at_most_the_papers(resnets, depth):
    p, f = ratio(resnets["o_", depth, "default"], f"o_resnet{depth}")
    assert p <= 1.0 and f <= 1.0
    assert p > 0.8 and f > 0.85


@pytest.mark.parametrize("depth", DEPTHS)
def test_o_resnet_paper_rounding_reproduces_table6(resnets, depth):
    """Algorithm 1's rounding with the paper's projection shortcuts: Table 6's o-ResNet rows
    (the issue's bound is 10 %).

    FLOPs equal the paper's to the printed digits (0.04070 / 0.06726 / 0.12574 / 0.24763 G),
    #Params are within 0.4 % (0.221 / 0.367 / 0.682 / 1.337 M).
    """
    p, f = ratio(resnets["o_", depth, "paper"], f"o_resnet{depth}")
    assert abs(f - 1) < 0.0005 and abs(p - 1) < 0.004


@pytest.mark.parametrize("name, size", [("o_darts_cifar", CIFAR), ("o_darts_imagenet", IMAGENET)])
def test_o_darts_paper_rounding_reproduces_tables_3_and_5(name, size):
    """The same rounding gives o-DARTS's #Params and FLOPs within 0.5 % (3.25 M / 0.572 G, 4.50 M / 0.554 G)."""
    p, f = ratio(measure(create_model(name, rounding="paper"), size), name)
    assert abs(p - 1) < 0.005 and abs(f - 1) < 0.005


@pytest.mark.parametrize("depth", DEPTHS)
def test_o_resnet_option_a_shortcuts_hold_fewer_than_table6(resnets, depth):
    """With He et al.'s parameter-free shortcuts the o-ResNets are smaller than the paper's rows:
    the 1x1 projections are 15 % of o-ResNet20's #Params (paper rounding, 0.848x the paper's)."""
    p, f = ratio(resnets["o_", depth, "paper-A"], f"o_resnet{depth}")
    assert p < 0.98 and f < 0.99


@pytest.mark.parametrize("depth", DEPTHS)
def test_o_resnet_with_projection_shortcuts_matches_table6(resnets, depth):
    """What the paper's o-ResNet rows contain: 1x1 projection shortcuts (all 8 figures within 1.5 %)."""
    p, f = ratio(resnets["o_", depth, "B"], f"o_resnet{depth}")
    assert abs(p - 1) < 0.015 and abs(f - 1) < 0.015


def test_o_resnet20_params_grow_with_gamma():
    counts = [count_params(resnet_cifar(20, "osep", 3.625, gamma=g)) for g in (1 / 16, 1 / 4, 1, 4, 16)]
    assert counts == sorted(counts)
    assert counts[0] < counts[2] and counts[1] < counts[2]
    dw = count_params(resnet_cifar(20, "dw", 3.625))
    conv = count_params(resnet_cifar(20, "conv", 3.625))
    assert dw < counts[0] and counts[-1] < conv  # Table 2's limits: depth-wise and conventional


@pytest.fixture(scope="module")
def darts_params():
    return {name: count_params(create_model(name)) / 1e6
            for name in ("darts_v2_cifar", "o_darts_cifar", "darts_v2_imagenet", "o_darts_imagenet")}


@pytest.mark.parametrize("name, tol", [("darts_v2_cifar", 0.005), ("darts_v2_imagenet", 0.005),
                                       ("o_darts_cifar", 0.05), ("o_darts_imagenet", 0.05)])
def test_darts_params(darts_params, name, tol):
    assert abs(darts_params[name] / PAPER_FIGURES[name].params_m - 1) < tol


def test_darts_auxiliary_heads_do_not_count():
    with_aux = create_model("darts_v2_cifar", auxiliary=True)
    assert abs(count_params(with_aux) / 1e6 / 3.35 - 1) < 0.005


def test_darts_v2_cifar_flops():
    flops = count_flops(create_model("darts_v2_cifar"), CIFAR) / 1e9
    assert abs(flops / 0.528 - 1) < 0.01


@pytest.mark.slow
def test_o_darts_cifar_flops():
    flops = count_flops(create_model("o_darts_cifar"), CIFAR) / 1e9
    assert abs(flops / 0.572 - 1) < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("name, tol", [("darts_v2_imagenet", 0.01), ("o_darts_imagenet", 0.05)])
def test_darts_imagenet_flops(name, tol):
    flops = count_flops(create_model(name), IMAGENET) / 1e9
    assert abs(flops / PAPER_FIGURES[name].flops_g - 1) < tol


def test_mobilenet_params_and_flops():
    model = create_model("mobilenet")
    p, f = measure(model, IMAGENET)
    assert abs(p / 4.20 - 1) < 0.01
    assert abs(f / 0.575 - 1) < 0.02  # 0.569 G: Howard et al.'s own count; the paper says 0.575


def test_o_mobilenet_matches_params_without_exceeding_flops():
    p, f = measure(create_model("o_mobilenet"), IMAGENET)
    assert abs(p / 3.00 - 1) < 0.05 and f <= 0.564


def test_reference_table_is_labeled_and_complete():
    for d in DEPTHS:
        for prefix in ("", "o_", "d_"):
            fig = paper_figure(f"{prefix}resnet{d}")
            assert fig.source == "Table 6" and fig.params_m > 0 and fig.flops_g > 0
    assert paper_figure("o-ResNet20").width == "3.625"
    assert paper_figure("o_darts_imagenet").params_m == 4.50
    assert paper_figure("resnet1000") is None
