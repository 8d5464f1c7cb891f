"""The op registry's shapes, and the one FLOPs counter against independent counters."""
import warnings

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from osep_nas import OSepConv2d, count_flops, count_params
from osep_nas.ops import OPS, OSEP_PRIMITIVES, DARTS_PRIMITIVES


def reference_macs(module: nn.Module, input_size) -> int:
    """Multiply-adds by torch's own FlopCounterMode (which counts 2 FLOPs per multiply-add)."""
    module.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(torch.zeros((1,) + tuple(input_size)))
    return counter.get_total_flops() // 2


def fvcore_macs(module: nn.Module, input_size) -> int:
    """Multiply-adds of convolutions and linear layers by fvcore (its 'flop' is a multiply-add)."""
    fvcore_nn = pytest.importorskip("fvcore.nn")
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = fvcore_nn.FlopCountAnalysis(module, torch.zeros((1,) + tuple(input_size)))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        per_op = analysis.by_operator()
    return int(per_op.get("conv", 0) + per_op.get("linear", 0) + per_op.get("addmm", 0))


# -- the op registry -------------------------------------------------------------------
ALL_OPS = sorted(OPS)


def test_registry_holds_darts_and_osep_primitives():
    for name in DARTS_PRIMITIVES + OSEP_PRIMITIVES:
        assert name in OPS


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", ALL_OPS)
def test_every_op_builds_and_keeps_darts_shapes(name, stride):
    torch.manual_seed(0)
    op = OPS[name](16, stride, True)
    x = torch.randn(2, 16, 8, 8)
    op.train()
    y = op(x)
    assert y.shape == (2, 16, 8 // stride, 8 // stride), name
    if any(p.requires_grad for p in op.parameters()):
        y.sum().backward()


@pytest.mark.parametrize("name", [n for n in ALL_OPS if "osep" in n])
@pytest.mark.parametrize("rounding", ["divisor", "paper"])
def test_osep_ops_take_plan_keywords(name, rounding):
    op = OPS[name](16, 2, True, rounding=rounding, gamma=2.0)
    convs = [m for m in op.modules() if isinstance(m, OSepConv2d)]
    assert convs and all(c.plan.rounding == rounding and c.plan.gamma == 2.0 for c in convs)
    assert op(torch.randn(2, 16, 8, 8)).shape == (2, 16, 4, 4)


def test_plain_ops_accept_and_ignore_plan_keywords_but_catch_typos():
    assert OPS["sep_conv_3x3"](16, 1, True, rounding="paper", gamma=4.0) is not None
    with pytest.raises(ValueError, match="roundng"):
        OPS["sep_conv_3x3"](16, 1, True, roundng="paper")


# -- FLOPs: our counter against torch's FlopCounterMode and fvcore -----------------------
CROSS_CHECK_MODULES = {
    "conv3x3": lambda: nn.Conv2d(24, 48, 3, padding=1, bias=False),
    "conv3x3_s2_bias": lambda: nn.Conv2d(24, 48, 3, stride=2, padding=1, bias=True),
    "dsep": lambda: nn.Sequential(nn.Conv2d(24, 24, 3, padding=1, groups=24, bias=False),
                                  nn.Conv2d(24, 48, 1, bias=False)),
    "dsep_s2": lambda: nn.Sequential(nn.Conv2d(24, 24, 3, stride=2, padding=1, groups=24, bias=False),
                                     nn.Conv2d(24, 48, 1, bias=False)),
    "osep_divisor": lambda: OSepConv2d(24, 48, 3),
    "osep_paper": lambda: OSepConv2d(58, 58, 3, rounding="paper"),
    "osep_s2": lambda: OSepConv2d(32, 64, 3, stride=2),
    "osep_5x5_dil2": lambda: OSepConv2d(32, 32, 5, dilation=2),
    "sosep": lambda: OSepConv2d(32, 32, 3, spatial=True),
    "osep_n3": lambda: OSepConv2d(32, 32, 3, n_convs=3),
    "linear": lambda: nn.Sequential(nn.Flatten(), nn.Linear(24 * 16 * 16, 10)),
}


@pytest.mark.parametrize("name", sorted(CROSS_CHECK_MODULES))
def test_count_flops_matches_flop_counter_mode(name):
    module = CROSS_CHECK_MODULES[name]()
    size = (module.in_channels if isinstance(module, OSepConv2d) else 24, 16, 16)
    assert count_flops(module, size) == reference_macs(module, size) > 0


@pytest.mark.parametrize("name", ["conv3x3", "dsep", "osep_divisor", "osep_paper"])
def test_count_flops_matches_fvcore(name):
    module = CROSS_CHECK_MODULES[name]()
    size = (module.in_channels if isinstance(module, OSepConv2d) else 24, 16, 16)
    assert count_flops(module, size) == fvcore_macs(module, size)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", ALL_OPS)
def test_every_op_counts_like_flop_counter_mode(name, stride):
    op = OPS[name](16, stride, True)
    assert count_flops(op, (16, 8, 8)) == reference_macs(op, (16, 8, 8))


@pytest.mark.parametrize("name", ["osep_3x3", "osep_5x5", "sosep_3x3", "osep_dil_3x3"])
def test_osep_op_params_are_the_plans(name):
    op = OPS[name](16, 1, True, rounding="paper")
    convs = [m for m in op.modules() if isinstance(m, OSepConv2d)]
    weights = sum(c.plan.params for c in convs)
    bn = sum(p.numel() for m in op.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    assert count_params(op) == weights + bn
