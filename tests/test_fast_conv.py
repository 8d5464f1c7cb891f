"""The fast OSepConv2d forms compute the same function as the reference form (to 1e-5)."""
from __future__ import annotations

import random

import pytest
import torch

import osep_nas.conv as conv_mod
from osep_nas import OSepConv2d, count_params
from osep_nas.plan import POLICIES


def _configs(count: int, seed: int = 1):
    rng = random.Random(seed)
    out = [dict(in_channels=58, out_channels=58, kernel_size=3), dict(in_channels=64, out_channels=64, kernel_size=3),
           dict(in_channels=24, out_channels=24, kernel_size=3, bias=True, stride=2),
           dict(in_channels=58, out_channels=58, kernel_size=3, rounding="paper")]
    while len(out) < count:
        k = rng.choice([1, 3, 5])
        out.append(dict(in_channels=rng.randint(3, 96), out_channels=rng.randint(3, 96), kernel_size=k,
                        n_convs=rng.choice([2, 2, 3, 4]), gamma=rng.choice([0.25, 1.0, 2.0]),
                        channel_policy=rng.choice(POLICIES), spatial=k > 1 and rng.random() < 0.3,
                        dilation=rng.choice([1, 2]) if k > 1 else 1, stride=rng.choice([1, 1, 2]),
                        bias=rng.random() < 0.3))
    return out


@pytest.mark.parametrize("force", [False, True], ids=["default-rules", "every-fast-path"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels-last"])
def test_fast_equals_reference(monkeypatch, force, channels_last):
    if force:  # route every eligible convolution through the fast paths
        monkeypatch.setattr(conv_mod, "_pointwise_choice", lambda x, conv: "matmul")
    torch.manual_seed(0)
    used = set()
    for cfg in _configs(24):
        ref = OSepConv2d(**cfg, impl="reference").double()
        fast = OSepConv2d(**cfg, impl="fast").double()
        fast.load_state_dict(ref.state_dict())
        assert count_params(fast) == count_params(ref) == ref.plan.params + (ref.plan.convs[-1].out_channels if cfg.get("bias") else 0)
        used.update(fast._schedule)
        x = torch.randn(2, cfg["in_channels"], 9, 9, dtype=torch.float64)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        x.requires_grad_()
        a, b = ref(x), fast(x)
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5, rtol=0), cfg
        ga = torch.autograd.grad(a.square().sum(), [x, *ref.parameters()])
        gb = torch.autograd.grad(b.square().sum(), [x, *fast.parameters()])
        for u, v in zip(ga, gb):
            assert torch.allclose(u, v, atol=1e-5, rtol=1e-6), cfg
    assert "native" in used
    if force:
        assert {"conv", "native", "matmul"} <= used


def test_unknown_impl_rejected():
    with pytest.raises(ValueError, match="impl"):
        OSepConv2d(8, 8, 3, impl="cuda-magic")


@pytest.mark.parametrize("cfg", [dict(in_channels=24, out_channels=24, kernel_size=3, stride=2),
                                 dict(in_channels=12, out_channels=20, kernel_size=5, n_convs=3)])
def test_a_channels_last_model_keeps_nchw_activations_nchw(monkeypatch, cfg):
    """model.to(channels_last) makes the weights channels-last; oneDNN would then return a
    channels-last output for an NCHW input and the network would mix formats (slow elementwise
    ops on CPU). The fast form keeps an NCHW input's output NCHW, with the same values."""
    monkeypatch.setattr(conv_mod, "_pointwise_choice", lambda x, conv: "onednn")  # the oneDNN steps
    torch.manual_seed(3)
    ref = OSepConv2d(**cfg, impl="reference")
    fast = OSepConv2d(**cfg, impl="fast").to(memory_format=torch.channels_last)
    fast.load_state_dict(ref.state_dict())
    assert "conv" in fast._schedule or "matmul" in fast._schedule
    assert any(p.stride() != torch.empty(p.shape).stride() for p in fast.parameters())  # channels-last strides
    x = torch.randn(2, cfg["in_channels"], 11, 11, requires_grad=True)
    a, b = ref(x), fast(x)
    assert b.is_contiguous()
    assert torch.allclose(a, b, atol=1e-5, rtol=0)
    for u, v in zip(torch.autograd.grad(a.square().sum(), [x, *ref.parameters()]),
                    torch.autograd.grad(b.square().sum(), [x, *fast.parameters()])):
        assert torch.allclose(u, v, atol=1e-4, rtol=1e-5)
