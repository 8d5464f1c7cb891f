"""The fused native osep layer (grouped KxK, shuffle, grouped 1x1 in one pass) computes the two steps.

``kernels.fused_osep`` against ``F.conv2d`` + channel shuffle + 1x1 ``F.conv2d``: forward and
the three gradients, float32 and float64, on small planes (the 1x1 step on compact copies)
and a 32x32 one (on the wide planes); then ``OSepConv2d`` with the autotuner's choice forced
each way, the nested tuning of "separate" (its steps are tuned inside, under one file lock),
and the fixed rule without tuning.
"""
from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F

from osep_nas import OSepConv2d, kernels
from osep_nas.ops import OSepBlock
from osep_nas.kernels import autotune
from osep_nas.shuffle import channel_shuffle

needs_kernel = pytest.mark.skipif(not kernels.available(), reason="native kernel did not build here (no g++/ninja?)")

GEOMETRIES = [  # (kernel, padding, dilation, height, width)
    (3, 1, 1, 7, 9), (5, 2, 1, 9, 7), (3, 2, 2, 8, 8), (3, 0, 1, 9, 11), (3, 1, 1, 32, 32),
]
# (inputs per group, outputs per group, groups, 1x1 groups, 1x1 outputs)
SHAPES = [(2, 2, 3, 2, 6), (1, 2, 4, 4, 8), (3, 3, 4, 3, 12), (4, 4, 2, 4, 4), (2, 4, 3, 2, 10)]


def _check(got, want, tol):
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= tol * max(want.abs().max().item(), 1.0)


def _ran_fused(y) -> bool:
    """Whether the fused kernel is in y's autograd graph (under the bias's add, if any)."""
    seen, todo = set(), [y.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if "Fused" in type(fn).__name__:
            return True
        todo.extend(f for f, _ in fn.next_functions)
    return False


def _two_steps(x, w, w1, padding, dilation, groups, groups1, relu_input=False):
    y = channel_shuffle(F.conv2d(F.relu(x) if relu_input else x, w, None, 1, padding, dilation, groups), groups)
    return F.conv2d(y, w1, None, 1, 0, 1, groups1)


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty autotune cache, tuning on."""
    monkeypatch.setenv("OSEP_NAS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("OSEP_NAS_AUTOTUNE", raising=False)
    monkeypatch.setattr(autotune, "_memory", {})
    return tmp_path / "cache"


@needs_kernel
@pytest.mark.parametrize("n_in,n_out,groups,groups1,c_out", SHAPES)
def test_fused_kernel_computes_the_two_steps(n_in, n_out, groups, groups1, c_out):
    gen = torch.Generator().manual_seed(n_in * 100 + n_out * 10 + groups)
    for (k, pad, dil, h, w), dtype, relu in itertools.product(GEOMETRIES, (torch.float32, torch.float64), (False, True)):
        tol = 1e-5 if dtype == torch.float32 else 1e-10
        x = torch.randn(3, groups * n_in, h, w, generator=gen, dtype=dtype, requires_grad=True)
        wt = torch.randn(groups * n_out, n_in, k, k, generator=gen, dtype=dtype, requires_grad=True)
        w1 = torch.randn(c_out, groups * n_out // groups1, 1, 1, generator=gen, dtype=dtype, requires_grad=True)
        y = kernels.fused_osep(x, wt, w1, pad, dil, groups, groups1, relu_input=relu)
        assert _ran_fused(y)
        ref = _two_steps(x, wt, w1, pad, dil, groups, groups1, relu)
        _check(y, ref, tol)
        g = torch.randn(ref.shape, generator=gen, dtype=dtype)
        for u, v in zip(torch.autograd.grad(y, (x, wt, w1), g), torch.autograd.grad(ref, (x, wt, w1), g)):
            _check(u, v, tol)


@needs_kernel
def test_fused_kernel_gives_only_the_gradients_asked_for():
    x = torch.randn(2, 6, 8, 8)
    wt = torch.randn(6, 2, 3, 3, requires_grad=True)
    w1 = torch.randn(6, 3, 1, 1)
    y = kernels.fused_osep(x, wt, w1, 1, 1, 3, 2)
    (gw,) = torch.autograd.grad(y.square().sum(), (wt,))
    (want,) = torch.autograd.grad(_two_steps(x, wt, w1, 1, 1, 3, 2).square().sum(), (wt,))
    _check(gw, want, 1e-5)


def test_fused_kernel_refuses_what_it_does_not_cover():
    x, w = torch.randn(1, 6, 8, 8), torch.randn(6, 2, 3, 3)
    with pytest.raises(ValueError, match="does not cover"):
        kernels.fused_osep(x, w, torch.randn(6, 4, 1, 1), 1, 1, 3, 2)  # 1x1 inputs do not match
    with pytest.raises(ValueError, match="does not cover"):
        kernels.fused_osep(x, w, torch.randn(6, 3, 3, 3), 1, 1, 3, 2)  # not a 1x1
    assert not kernels.fused_covers(x.double(), w, torch.randn(6, 3, 1, 1), (1, 1), (1, 1), (1, 1), 3, 2)


@needs_kernel
@pytest.mark.parametrize("choice", autotune.FUSED)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("channels", [24, 8])
def test_osep_layer_equals_its_reference_either_way(fresh, monkeypatch, choice, bias, channels):
    """The tuner's choice forced each way (the steps inside "separate" forced to the native
    kernel and the matmul): the layer computes its reference form, forward and gradients. At 8
    channels the plan is a depth-wise 3x3 and a dense 1x1 (one input per group): fused too."""
    preferred = {choice, "native", "matmul"}
    monkeypatch.setattr(autotune, "_time_candidates",
                        lambda run, x, w, grads, candidates, *rest: {c: 1.0 if c in preferred else 2.0
                                                                     for c in candidates})
    torch.manual_seed(1)
    ref = OSepConv2d(channels, channels, 3, bias=bias, impl="reference")
    fast = OSepConv2d(channels, channels, 3, bias=bias, impl="fast")
    fast.load_state_dict(ref.state_dict())
    assert fast._schedule == ["native", "matmul"]
    x = torch.randn(2, channels, 32, 32, requires_grad=True)
    a, b = ref(x), fast(x)
    assert _ran_fused(b) == (choice == "fused")
    _check(b, a, 1e-5)
    for u, v in zip(torch.autograd.grad(b.square().sum(), [x, *fast.parameters()]),
                    torch.autograd.grad(a.square().sum(), [x, *ref.parameters()])):
        _check(u, v, 1e-5)


@needs_kernel
def test_tuning_a_layer_tunes_its_steps_inside_and_records_all(fresh):
    """Timing "separate" runs the steps, whose own choices are tuned then, under the file lock
    the outer tuning holds (re-entrant within the thread: no deadlock); all land in the file."""
    layer = OSepConv2d(24, 24, 3)
    x = torch.randn(2, 24, 16, 16, requires_grad=True)
    layer(x).sum().backward()
    keys = json.loads(autotune.cache_path(kernels._build_name()).read_text())["choices"]
    kinds = sorted(k.split("among=")[1].split()[0] if "among=" in k else "grouped" for k in keys)
    assert kinds == ["fused/separate", "grouped", "matmul/onednn"]
    fused_key = next(k for k in keys if "among=fused" in k)
    assert "w1=24x12x1x1 groups1=2" in fused_key and keys[fused_key]["choice"] in autotune.FUSED


def test_without_tuning_the_layer_runs_its_steps(fresh, monkeypatch):
    monkeypatch.setenv("OSEP_NAS_AUTOTUNE", "0")
    layer = OSepConv2d(24, 24, 3)
    assert layer._schedule == ["native", "matmul"]  # the fused kernel would cover it
    y = layer(torch.randn(2, 24, 8, 8, requires_grad=True))
    assert not _ran_fused(y)


@needs_kernel
@pytest.mark.parametrize("choice", autotune.FUSED)
def test_osep_block_folds_its_relus_and_computes_relu_conv_bn(fresh, monkeypatch, choice):
    """DARTS' osep op (ReLU, OSepConv2d, BN twice) with the ReLUs folded into the osep layers
    equals its modules applied one by one, forward and every gradient, either way the tuner goes."""
    preferred = {choice, "native", "matmul"}
    monkeypatch.setattr(autotune, "_time_candidates",
                        lambda run, x, w, grads, candidates, *rest: {c: 1.0 if c in preferred else 2.0
                                                                     for c in candidates})
    torch.manual_seed(4)
    block = OSepBlock(24, 24, 3, 1, stacks=2).double()
    x = torch.randn(2, 24, 16, 16, dtype=torch.float64, requires_grad=True)
    got = block(x)
    assert _ran_fused(got) == (choice == "fused")
    want = x
    for module in block.op:  # the modules one by one, the ReLU as its own pass
        want = module(want)
    assert torch.allclose(got, want, atol=1e-10, rtol=0)
    params = [x, *block.parameters()]
    for u, v in zip(torch.autograd.grad(got.square().sum(), params), torch.autograd.grad(want.square().sum(), params)):
        assert torch.allclose(u, v, atol=1e-9, rtol=1e-9)
