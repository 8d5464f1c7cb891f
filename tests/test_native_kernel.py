"""The native CPU kernel for narrow grouped convolutions computes F.conv2d, forward and backward."""
from __future__ import annotations

import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F

from osep_nas import OSepConv2d, kernels
from osep_nas.conv import channel_shuffle

needs_kernel = pytest.mark.skipif(not kernels.available(), reason="native kernel did not build here (no g++/ninja?)")


def _reference(x, w, b, padding, dilation, groups, shuffle):
    y = F.conv2d(x, w, b, 1, padding, dilation, groups)
    return channel_shuffle(y, groups) if shuffle else y


CASES = [  # (n_in, n_out, groups, kernel, padding, dilation, height, width)
    (n_in, n_out, groups, k, p, d, 7, 9)
    for n_in, n_out, groups in ((1, 2, 3), (2, 1, 4), (2, 2, 5), (2, 3, 2), (3, 3, 2))
    for k, p, d in (((3, 3), (1, 1), (1, 1)), ((5, 5), (2, 2), (1, 1)), ((3, 3), (2, 2), (2, 2)),
                    ((3, 1), (1, 0), (1, 1)), ((1, 3), (0, 1), (1, 1)), ((3, 3), (0, 0), (1, 1)),
                    ((5, 5), (1, 2), (1, 1)), ((3, 3), (1, 2), (1, 2)))
]


@needs_kernel
@pytest.mark.parametrize("n_in,n_out,groups,kernel,padding,dilation,h,w", CASES)
def test_matches_conv2d_forward_and_backward(monkeypatch, n_in, n_out, groups, kernel, padding, dilation, h, w):
    monkeypatch.setenv("OSEP_NAS_AUTOTUNE", "0")  # the fixed rule: the kernel for <= 3 inputs per group
    torch.manual_seed(0)
    for dtype, shuffle, bias in itertools.product((torch.float64, torch.float32), (False, True), (False, True)):
        tol = 1e-10 if dtype == torch.float64 else 1e-5
        x = torch.randn(3, groups * n_in, h, w, dtype=dtype, requires_grad=True)
        wt = torch.randn(groups * n_out, n_in, *kernel, dtype=dtype, requires_grad=True)
        b = torch.randn(groups * n_out, dtype=dtype, requires_grad=True) if bias else None
        assert kernels.covers(x, wt, (1, 1), padding, dilation, groups)
        y = kernels.grouped_conv2d(x, wt, b, 1, padding, dilation, groups, shuffle_out=shuffle)
        assert type(y.grad_fn).__name__ in ("_NarrowConvBackward", "AddBackward0")
        ref = _reference(x, wt, b, padding, dilation, groups, shuffle)
        assert y.shape == ref.shape
        scale = ref.abs().max().item()
        assert (y - ref).abs().max().item() <= tol * scale
        g = torch.randn_like(ref)
        params = [x, wt] + ([b] if bias else [])
        got = torch.autograd.grad(y, params, g)
        want = torch.autograd.grad(ref, params, g)
        for u, v in zip(got, want):
            assert (u - v).abs().max().item() <= tol * max(v.abs().max().item(), 1.0)


@needs_kernel
@pytest.mark.parametrize("wants", ["input", "weight"])
def test_only_the_requested_gradient(wants):
    torch.manual_seed(3)
    x = torch.randn(2, 6, 7, 7, dtype=torch.float64, requires_grad=wants == "input")
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, requires_grad=wants == "weight")
    leaf = x if wants == "input" else w
    g = torch.randn(2, 6, 7, 7, dtype=torch.float64)
    (got,) = torch.autograd.grad(kernels.grouped_conv2d(x, w, None, 1, 1, 1, 3), leaf, g)
    (want,) = torch.autograd.grad(F.conv2d(x, w, None, 1, 1, 1, 3), leaf, g)
    assert torch.allclose(got, want, atol=1e-10, rtol=0)


@needs_kernel
def test_gradcheck_double():
    torch.manual_seed(1)
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: kernels.grouped_conv2d(a, b, None, 1, (1, 1), (1, 1), 2, shuffle_out=True), (x, w))


@needs_kernel
def test_osep_module_uses_the_kernel_for_its_narrow_convolution(monkeypatch):
    monkeypatch.setenv("OSEP_NAS_AUTOTUNE", "0")  # the fixed rule: the kernel for <= 3 inputs per group
    m = OSepConv2d(58, 58, 3)
    assert m.plan.groups == (29, 2) and m._schedule == ["native", "matmul"]
    x = torch.randn(2, 58, 8, 8, requires_grad=True)
    m(x).sum().backward()
    names = set()
    stack = [m(x).grad_fn]
    while stack:
        fn = stack.pop()
        if fn is not None:
            names.add(type(fn).__name__)
            stack.extend(f for f, _ in fn.next_functions)
    assert "_NarrowConvBackward" in names


@pytest.mark.parametrize("case", ["stride3", "channels_last", "wide_groups", "half", "dense"])
def test_uncovered_calls_fall_back_to_conv2d(case):
    torch.manual_seed(2)
    x = torch.randn(2, 8, 9, 9)
    w = torch.randn(8, 2, 3, 3)
    stride, groups = (1, 1), 4
    if case == "stride3":
        stride = (3, 3)  # stride 2 is covered (test_autotune); 3 would be 9x the work at stride 1
    elif case == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif case == "wide_groups":
        x = torch.randn(2, 18, 9, 9)
        w = torch.randn(8, 9, 3, 3)  # 9 inputs per group: beyond NATIVE_MAX_IN_PER_GROUP = 8
        groups = 2
    elif case == "half":
        x, w = x.bfloat16(), w.bfloat16()
    elif case == "dense":
        w = torch.randn(8, 8, 3, 3)
        groups = 1
    # channels-last is covered, but only a shuffled call takes it to the kernel (test_autotune);
    # an unshuffled one, like this, stays with oneDNN
    assert kernels.covers(x, w, stride, (1, 1), (1, 1), groups) == (case == "channels_last")
    xr = x.clone().requires_grad_()
    y = kernels.grouped_conv2d(xr, w, None, stride, (1, 1), (1, 1), groups)
    assert "Narrow" not in type(y.grad_fn).__name__
    assert torch.equal(y, F.conv2d(x, w, None, stride, 1, 1, groups))


@needs_kernel
def test_flop_counter_and_tracing_see_plain_convolutions():
    from torch.utils.flop_counter import FlopCounterMode

    m = OSepConv2d(58, 58, 3).eval()
    x = torch.randn(1, 58, 32, 32)
    with FlopCounterMode(display=False) as counter:
        m(x)
    assert counter.get_total_flops() // 2 == m.macs(x.shape, x.shape)
    traced = torch.jit.trace(m, x)
    assert "aten::_convolution" in str(traced.graph) and "Narrow" not in str(traced.graph)
    assert torch.allclose(traced(x), m(x), atol=1e-5)


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("OSEP_NAS_NATIVE", "0")
    assert kernels.load() is None and not kernels.available()
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    w = torch.randn(8, 2, 3, 3)
    y = kernels.grouped_conv2d(x, w, None, 1, (1, 1), (1, 1), 4, shuffle_out=True)
    assert "Narrow" not in type(y.grad_fn).__name__
    assert torch.equal(y, channel_shuffle(F.conv2d(x, w, None, 1, 1, 1, 4), 4))


def test_failed_build_warns_once_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setattr(kernels, "_module", None)
    monkeypatch.setattr(kernels, "_failed", None)
    monkeypatch.setattr(kernels, "SOURCE", tmp_path / "missing.cpp")
    monkeypatch.delenv("OSEP_NAS_NATIVE", raising=False)
    with pytest.warns(RuntimeWarning, match="native osep CPU kernel unavailable"):
        assert kernels.load() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        x = torch.randn(1, 4, 5, 5)
        w = torch.randn(4, 2, 3, 3)
        assert torch.equal(kernels.grouped_conv2d(x, w, None, 1, (1, 1), (1, 1), 2), F.conv2d(x, w, None, 1, 1, 1, 2))


def test_forced_build_failure_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setattr(kernels, "_module", None)
    monkeypatch.setattr(kernels, "_failed", None)
    monkeypatch.setattr(kernels, "SOURCE", tmp_path / "missing.cpp")
    monkeypatch.setenv("OSEP_NAS_NATIVE", "1")
    with pytest.raises(RuntimeError, match="OSEP_NAS_NATIVE=1"):
        kernels.load()
