"""osep_plan and OSepConv2d: hand counts, Algorithm 1, and connectivity proven on the module."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from osep_nas import OSepConv2d, count_flops, count_params, osep_plan
from osep_nas.plan import POLICIES, internal_kernels, real_groups, shuffle_permutation


# -- hand counts -------------------------------------------------------------------
def test_64_64_3_hand_count():
    plan = osep_plan(64, 64, 3)
    # t = sqrt(64*64*64*9*1) = 1536 -> N*t = 3072
    assert plan.ideal_params == pytest.approx(3072)
    assert plan.groups == (32, 2)
    assert plan.params == 64 * (64 // 32) * 9 + 64 * (64 // 2) * 1 == 3200
    assert plan.params <= 1.10 * 3072
    assert plan.params < 64 * 9 + 64 * 64  # depth separable: 4672


def test_58_divisor_and_paper_rounding():
    # 58 = 2 * 29: the divisor plan (29, 2) holds 58*2*9 + 58*29 = 1044 + 1682 weights
    plan = osep_plan(58, 58, 3)
    assert plan.groups == (29, 2) and plan.params == 2726
    # Algorithm 1: g = ceil(22.8), ceil(2.54) = (23, 3), so 3 inputs per group in conv 1;
    # 58 -> 60 channels fill 20 groups (groups 21-23 would see only zero padding: not built)
    paper = osep_plan(58, 58, 3, rounding="paper")
    assert paper.algorithm_groups == (23, 3) and paper.groups == (20, 3)
    assert [(c.in_channels, c.out_channels) for c in paper.convs] == [(60, 60), (60, 60)]
    assert paper.params == 60 * 3 * 9 + 60 * 20 == 2820
    assert paper.input_padding == 2 and paper.output_padding == 2
    assert paper.is_fully_connected()
    # the divisor plan is 3.3% smaller than the paper's rounding at this width
    assert 1 - plan.params / paper.params == pytest.approx(0.0333, abs=1e-3)


def test_paper_rounding_widens_internal_channels_when_ceil_breaks_connectivity():
    # 6 -> 65: Algorithm 1's groups (3, 3) give 2 inputs per conv-1 group and 3 groups,
    # but 6 internal channels in 3 conv-2 groups are 2 per group < 3: widened to 9
    plan = osep_plan(6, 65, 3, rounding="paper")
    assert plan.is_fully_connected()
    assert plan.channels[1] == 9 and plan.groups == (3, 3)


@pytest.mark.parametrize("n_convs", [2, 3])
@pytest.mark.parametrize("policy", ["normal", "linear", "bottleneck", "inverted"])
def test_paper_rounding_always_fully_connected_for_gamma_one(n_convs, policy):
    misses = [(a, o, k, sp) for a in range(1, 41, 3) for o in range(1, 41, 4) for k in (3, 5)
              for sp in (False, True)
              if not osep_plan(a, o, k, n_convs=n_convs, channel_policy=policy, spatial=sp,
                               rounding="paper").is_fully_connected()]
    assert misses == []


def test_real_valued_optimum_n2():
    # Theorem 1 for N=2, gamma=1: g1 = sqrt(C1 C2 K1 / (C3 K2)), g2 = C2 / g1
    g = real_groups([100, 100, 100], [9, 1], 1.0)
    assert g[0] == pytest.approx(math.sqrt(100 * 9)) and g[1] == pytest.approx(100 / math.sqrt(900))
    # masked re-solve: for a tiny C the ideal g1 exceeds min(C1, C2) and is fixed there
    g = real_groups([4, 4, 4], [49, 1], 1.0)
    assert g[0] == 4 and g[1] == pytest.approx(1.0)


def test_internal_kernels_and_auto_n():
    assert internal_kernels((3, 3), 2, False) == [(3, 3), (1, 1)]
    assert internal_kernels((5, 5), 2, True) == [(5, 1), (1, 5)]
    assert internal_kernels((3, 3), 4, False) == [(1, 1), (3, 3), (1, 1), (1, 1)]
    plan = osep_plan(64, 64, 3, n_convs="auto")
    assert plan.n_convs == round(math.log(64 * 9)) == 6
    # receptive field condition: sum K_l - (N - 1) = K
    for spatial in (False, True):
        for n in (2, 3, 4, 5):
            ks = osep_plan(32, 48, 5, n_convs=n, spatial=spatial).kernels
            assert sum(k[0] for k in ks) - (n - 1) == 5 and sum(k[1] for k in ks) - (n - 1) == 5


def test_policies_internal_channels():
    assert osep_plan(32, 64, 3, channel_policy="normal").channels[1] == 32
    assert osep_plan(32, 64, 3, channel_policy="linear").channels[1] == 48
    assert osep_plan(32, 64, 3, channel_policy="bottleneck").channels[1] == 16
    assert osep_plan(32, 64, 3, channel_policy="inverted").channels[1] == 128


def test_gamma_monotone_and_channel_condition():
    previous = 0
    for gamma in (1 / 16, 1 / 4, 1, 2, 4, 16):
        plan = osep_plan(58, 58, 3, gamma=gamma)
        n = [c.in_channels / c.groups for c in plan.convs]
        assert math.prod(n) >= gamma * 58 - 1e-9  # channel condition
        assert plan.params >= previous
        previous = plan.params
    assert osep_plan(58, 58, 3, gamma=0.25).params < osep_plan(58, 58, 3).params


def test_shuffle_permutation_matches_module_shuffle():
    from osep_nas.conv import channel_shuffle

    x = torch.arange(12.0).view(1, 12, 1, 1)
    perm = shuffle_permutation(12, 3)
    assert torch.equal(channel_shuffle(x, 3).flatten(), x.flatten()[torch.as_tensor(perm)])
    assert perm.tolist() == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(in_channels=0, out_channels=8, kernel_size=3), "in_channels"),
        (dict(in_channels=8, out_channels=-1, kernel_size=3), "out_channels"),
        (dict(in_channels=8, out_channels=8, kernel_size=0), "kernel_size"),
        (dict(in_channels=8, out_channels=8, kernel_size=3, gamma=0), "gamma"),
        (dict(in_channels=8, out_channels=8, kernel_size=3, gamma=float("nan")), "gamma"),
        (dict(in_channels=8, out_channels=8, kernel_size=3, n_convs=1), "n_convs"),
        (dict(in_channels=8, out_channels=8, kernel_size=3, n_convs="many"), "n_convs"),
        (dict(in_channels=8, out_channels=8, kernel_size=3, channel_policy="wide"), "channel_policy"),
        (dict(in_channels=8, out_channels=8, kernel_size=3, rounding="floor"), "rounding"),
        (dict(in_channels=8, out_channels=8, kernel_size=3, dilation=0), "dilation"),
        (dict(in_channels=2.5, out_channels=8, kernel_size=3), "in_channels"),
        (dict(in_channels=8, out_channels=8, kernel_size=3, kernels=[3, 3]), "kernels"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        osep_plan(**kwargs)


def test_even_kernel_needs_explicit_padding():
    with pytest.raises(ValueError, match="padding"):
        OSepConv2d(8, 8, 4)
    m = OSepConv2d(8, 8, 4, padding=0)
    assert m(torch.randn(1, 8, 9, 9)).shape == (1, 8, 6, 6)


# -- connectivity proven on the module ------------------------------------------------
def measured_connectivity(module: OSepConv2d):
    """Impulse responses of the (linear, positive-weight) module.

    Returns (channel connectivity C_out x C_in, per-pair window coverage): input
    channel i gets a unit impulse at the centre of a window-sized image; with all
    weights positive no path can cancel, so an output is non-zero exactly where it
    depends on that input pixel (the impulse response is a column of the Jacobian).
    """
    plan = module.plan
    kh, kw = plan.kernel_size
    dh, dw = plan.dilation
    wh, ww = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    with torch.no_grad():
        for conv in module.convs:
            conv.weight.uniform_(0.1, 1.0)
    c_in = plan.in_channels
    want = torch.zeros(wh, ww, dtype=torch.bool)
    want[::dh, ::dw] = True  # the KxK (dilated) window
    conn = torch.zeros(plan.out_channels, c_in, dtype=torch.bool)
    full_window = True
    for start in range(0, c_in, 64):
        idx = torch.arange(start, min(c_in, start + 64))
        x = torch.zeros(len(idx), c_in, wh, ww)
        x[torch.arange(len(idx)), idx, wh // 2, ww // 2] = 1.0
        with torch.no_grad():
            y = module(x)  # (impulses, C_out, wh, ww)
        nz = y > 0
        touched = nz.any(dim=(2, 3))
        conn[:, idx] = touched.T
        # where connected, the response must cover exactly the whole window
        exact = (nz == want.flip(0, 1)).all(dim=(2, 3))
        if not bool(exact[touched].all()):
            full_window = False
    return conn, full_window


def _random_configs(count: int, seed: int = 0):
    rng = random.Random(seed)
    configs = [dict(in_channels=58, out_channels=58, kernel_size=3, n_convs=2, gamma=1.0,
                    channel_policy="normal", spatial=False, dilation=1)]
    while len(configs) < count:
        k = rng.choice([1, 3, 5, 7])
        configs.append(dict(
            in_channels=int(round(math.exp(rng.uniform(math.log(3), math.log(512))))),
            out_channels=int(round(math.exp(rng.uniform(math.log(3), math.log(512))))),
            kernel_size=k,
            n_convs=rng.choice([2, 2, 3, 4, "auto"]),
            gamma=float(rng.choice([1, 2, 4])),
            channel_policy=rng.choice(POLICIES),
            spatial=rng.random() < 0.3 and k > 1,
            dilation=rng.choice([1, 1, 2]) if k > 1 else 1,
        ))
    return configs


@pytest.mark.parametrize("block", range(4))
def test_volumetric_receptive_field_200_configs(block):
    """200 random plans (always including 58->58 3x3): every output channel sees every
    input channel over the whole window, and plan.params is what the module holds."""
    configs = _random_configs(200)[block * 50:(block + 1) * 50]
    for cfg in configs:
        module = OSepConv2d(**cfg)
        plan = module.plan
        assert plan.params == count_params(module) == sum(p.numel() for p in module.parameters()), cfg
        conn, full_window = measured_connectivity(module)
        assert bool(conn.all()), f"not fully connected: {cfg} groups={plan.groups}"
        assert full_window, f"window not covered: {cfg}"
        assert np.array_equal(conn.numpy(), plan.connectivity()), cfg


def test_gradients_58_every_output_sees_every_input():
    """The 58 -> 58 3x3 plan by autograd: d y_o(centre) / d x has full support for all o."""
    torch.manual_seed(0)
    m = OSepConv2d(58, 58, 3)
    with torch.no_grad():
        for conv in m.convs:
            conv.weight.uniform_(0.1, 1.0)
    x = torch.randn(1, 58, 5, 5, requires_grad=True)
    y = m(x)
    for o in range(58):
        (g,) = torch.autograd.grad(y[0, o, 2, 2], x, retain_graph=True)
        support = g[0].abs() > 0
        assert support[:, 1:4, 1:4].all(), o  # every input channel, every 3x3 position
        assert not support[:, 0, :].any() and not support[:, :, 4].any()


@pytest.mark.parametrize("gamma", [1 / 16, 1 / 4])
def test_gamma_below_one_partial_connectivity_matches_plan(gamma):
    m = OSepConv2d(64, 64, 3, gamma=gamma)
    conn, _ = measured_connectivity(m)
    assert np.array_equal(conn.numpy(), m.plan.connectivity())
    assert not conn.all()


def test_paper_rounding_module_connectivity_and_params():
    m = OSepConv2d(58, 58, 3, rounding="paper")
    assert count_params(m) == m.plan.params == 2820
    conn, full_window = measured_connectivity(m)
    assert conn.all() and full_window


# -- module behaviour ---------------------------------------------------------------
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("spatial", [False, True])
def test_same_padding_and_stride_shapes(stride, spatial):
    m = OSepConv2d(24, 40, 5, stride=stride, spatial=spatial, dilation=2)
    assert m(torch.randn(2, 24, 16, 16)).shape == (2, 40, 16 // stride, 16 // stride)


def test_bias_and_flops_count():
    m = OSepConv2d(64, 64, 3, bias=True)
    assert count_params(m) == 3200 + 64
    # multiply-adds: every weight is used once per output pixel at stride 1
    assert count_flops(m, (64, 32, 32)) == 3200 * 32 * 32 == m.plan.flops(32, 32)
    m2 = OSepConv2d(64, 64, 3, stride=2)
    assert count_flops(m2, (64, 32, 32)) == 3200 * 16 * 16 == m2.plan.flops(32, 32, stride=2)


def test_extra_repr_shows_plan():
    text = repr(OSepConv2d(64, 64, 3))
    assert "groups=(32, 2)" in text and "params=3200" in text
