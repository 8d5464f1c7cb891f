"""Every choice of the per-shape autotuner computes the reference function; its cache is shared and robust.

Both candidates ("native" kernel, "onednn" grouped convolution) are forced in turn and
checked against ``F.conv2d`` (+ channel shuffle), forward and both gradients, for 1..8
inputs per group; then the choice, its cache file, the fixed rule and the random state.
"""
from __future__ import annotations

import itertools
import json
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from osep_nas import OSepConv2d, kernels
from osep_nas.conv import TunedConv2d
from osep_nas.kernels import autotune
from osep_nas.shuffle import channel_shuffle

needs_kernel = pytest.mark.skipif(not kernels.available(), reason="native kernel did not build here (no g++/ninja?)")

GEOMETRIES = [  # (kernel, padding, dilation, height, width)
    ((3, 3), (1, 1), (1, 1), 7, 9), ((5, 5), (2, 2), (1, 1), 9, 7), ((3, 3), (2, 2), (2, 2), 7, 7),
    ((3, 3), (0, 1), (1, 1), 9, 11), ((5, 5), (1, 3), (1, 2), 11, 9),
]
# (n_in, n_out, groups)
SHAPES = [(1, 1, 5), (1, 2, 3), (2, 2, 3), (3, 3, 2), (4, 4, 2), (4, 2, 3), (6, 6, 2), (8, 8, 2), (8, 4, 3)]


def _check(got, want, tol):
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= tol * max(want.abs().max().item(), 1.0)


@needs_kernel
@pytest.mark.parametrize("impl", autotune.CANDIDATES)
@pytest.mark.parametrize("n_in,n_out,groups", SHAPES)
def test_every_candidate_computes_the_reference(impl, n_in, n_out, groups):
    gen = torch.Generator().manual_seed(n_in * 10 + n_out)
    for (kernel, padding, dilation, h, w), dtype, shuffle in itertools.product(
            GEOMETRIES, (torch.float32, torch.float64), (False, True)):
        tol = 1e-5 if dtype == torch.float32 else 1e-10
        x = torch.randn(2, groups * n_in, h, w, generator=gen, dtype=dtype, requires_grad=True)
        wt = torch.randn(groups * n_out, n_in, *kernel, generator=gen, dtype=dtype, requires_grad=True)
        assert kernels.covers(x, wt, (1, 1), padding, dilation, groups)
        y = kernels.grouped_conv2d(x, wt, None, 1, padding, dilation, groups, shuffle_out=shuffle, impl=impl)
        assert ("Narrow" in type(y.grad_fn).__name__) == (impl == "native")
        ref = F.conv2d(x, wt, None, 1, padding, dilation, groups)
        ref = channel_shuffle(ref, groups) if shuffle else ref
        _check(y, ref, tol)
        g = torch.randn(ref.shape, generator=gen, dtype=dtype)
        for u, v in zip(torch.autograd.grad(y, (x, wt), g), torch.autograd.grad(ref, (x, wt), g)):
            _check(u, v, tol)


@needs_kernel
@pytest.mark.parametrize("impl", autotune.CANDIDATES)
@pytest.mark.parametrize("stride", [(2, 2), (1, 2), (2, 1)])
def test_a_strided_call_computes_the_reference_either_way(impl, stride):
    """Stride 2: the kernel's stride-1 output at every second row/column, or oneDNN's strided
    convolution; forward and both gradients equal F.conv2d (+ shuffle), odd and even sizes."""
    gen = torch.Generator().manual_seed(stride[0] * 10 + stride[1])
    for (n_in, n_out, groups), (kernel, padding, dilation, h, w), shuffle in itertools.product(
            [(2, 2, 3), (1, 1, 4), (4, 2, 2)], GEOMETRIES[:3], (False, True)):
        x = torch.randn(2, groups * n_in, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
        wt = torch.randn(groups * n_out, n_in, *kernel, generator=gen, dtype=torch.float64, requires_grad=True)
        assert kernels.covers(x, wt, stride, padding, dilation, groups)
        y = kernels.grouped_conv2d(x, wt, None, stride, padding, dilation, groups, shuffle_out=shuffle, impl=impl)
        ref = F.conv2d(x, wt, None, stride, padding, dilation, groups)
        ref = channel_shuffle(ref, groups) if shuffle else ref
        assert y.is_contiguous()
        _check(y, ref, 1e-10)
        g = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
        for u, v in zip(torch.autograd.grad(y, (x, wt), g), torch.autograd.grad(ref, (x, wt), g)):
            _check(u, v, 1e-10)
    assert not kernels.covers(x, wt, (3, 3), padding, dilation, groups)  # 9x the work: oneDNN's


def test_forcing_native_on_an_uncovered_call_is_an_error():
    x, w = torch.randn(1, 18, 5, 5), torch.randn(4, 9, 3, 3)  # 9 inputs per group
    assert not kernels.covers(x, w, (1, 1), (1, 1), (1, 1), 2)
    with pytest.raises(ValueError, match="impl"):
        kernels.grouped_conv2d(x, w, None, 1, 1, 1, 2, impl="native")
    assert torch.equal(kernels.grouped_conv2d(x, w, None, 1, 1, 1, 2, impl="onednn"), F.conv2d(x, w, None, 1, 1, 1, 2))


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty cache folder and in-memory table, autotuning on; yields the cache folder."""
    monkeypatch.setenv("OSEP_NAS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("OSEP_NAS_AUTOTUNE", raising=False)
    monkeypatch.setattr(autotune, "_memory", {})
    monkeypatch.setattr(autotune, "_warned", False)
    return tmp_path / "cache"


def _call(n_in=4, grad=True, shuffle=True):
    x = torch.randn(2, 3 * n_in, 8, 8, requires_grad=grad)
    w = torch.randn(3 * n_in, n_in, 3, 3, requires_grad=grad)
    return x, w, kernels.grouped_conv2d(x, w, None, 1, 1, 1, 3, shuffle_out=shuffle)


def _no_timing(*a, **k):
    raise AssertionError("timed although the choice was known")


def _file():
    return autotune.cache_path(kernels._build_name())


@needs_kernel
def test_first_call_tunes_and_writes_the_cache_then_others_read_it(fresh, monkeypatch):
    x, w, y = _call()
    data = json.loads(_file().read_text())
    assert _file().parent == fresh and data["format"] == autotune.FORMAT
    key = autotune.key_of(x, w, (1, 1), (1, 1), (1, 1), 3, 3)
    assert "grad=1" in key and f"threads={torch.get_num_threads()}" in key
    entry = data["choices"][key]
    assert entry["choice"] in autotune.CANDIDATES and set(entry["ms"]) == set(autotune.CANDIDATES)
    assert ("Narrow" in type(y.grad_fn).__name__) == (entry["choice"] == "native")
    monkeypatch.setattr(autotune, "_memory", {})  # a new process: only the file is known
    monkeypatch.setattr(autotune, "_time_candidates", _no_timing)
    _, _, y2 = _call()
    assert ("Narrow" in type(y2.grad_fn).__name__) == (entry["choice"] == "native")
    with torch.no_grad():  # another key (no gradients): not in the file, so it would be timed
        with pytest.raises(AssertionError, match="timed"):
            _call()


@needs_kernel
@pytest.mark.parametrize("choice", autotune.CANDIDATES)
def test_the_recorded_choice_is_the_one_used(fresh, monkeypatch, choice):
    x = torch.randn(2, 12, 8, 8, requires_grad=True)
    w = torch.randn(12, 4, 3, 3, requires_grad=True)
    key = autotune.key_of(x, w, (1, 1), (1, 1), (1, 1), 3, 1)
    fresh.mkdir()
    _file().write_text(json.dumps({"format": autotune.FORMAT, "choices": {key: {"choice": choice}}}))
    monkeypatch.setattr(autotune, "_time_candidates", _no_timing)
    y = kernels.grouped_conv2d(x, w, None, 1, 1, 1, 3)
    assert ("Narrow" in type(y.grad_fn).__name__) == (choice == "native")


@needs_kernel
@pytest.mark.parametrize("content", ["{not json", "[]", '{"format": 1, "choices": {"k": 3}}', "\x00" * 10])
def test_a_corrupt_cache_file_is_retuned(fresh, monkeypatch, content):
    fresh.mkdir()
    _file().write_text(content)
    timed = []
    real = autotune._time_candidates
    monkeypatch.setattr(autotune, "_time_candidates", lambda *a: timed.append(1) or real(*a))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _call()
    assert timed == [1]
    assert len(json.loads(_file().read_text())["choices"]) == 1


@needs_kernel
def test_an_unwritable_cache_folder_warns_once_and_keeps_choices_in_memory(fresh, monkeypatch):
    fresh.parent.mkdir(exist_ok=True)
    fresh.write_text("a file where the folder should be")
    with pytest.warns(RuntimeWarning, match="not writable"):
        _call()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _call(n_in=6)  # another key: tuned, no second warning
        monkeypatch.setattr(autotune, "_time_candidates", _no_timing)
        _call(n_in=6)  # known in memory


@needs_kernel
@pytest.mark.parametrize("value", ["0", "off", "False", "no"])
def test_switched_off_it_never_times_and_follows_the_fixed_rule(fresh, monkeypatch, value):
    monkeypatch.setenv("OSEP_NAS_AUTOTUNE", value)
    monkeypatch.setattr(autotune, "_time_candidates", _no_timing)
    for n_in in (1, 2, 3, 4, 6, 8):
        y = _call(n_in)[2]
        assert ("Narrow" in type(y.grad_fn).__name__) == (n_in <= kernels.MAX_IN_PER_GROUP == 3)
    assert not fresh.exists()


@needs_kernel
def test_tuning_leaves_the_global_random_state_alone(fresh):
    x = torch.randn(2, 8, 9, 9, requires_grad=True)
    w = torch.randn(8, 4, 3, 3, requires_grad=True)
    before = torch.get_rng_state()
    kernels.grouped_conv2d(x, w, None, 1, 1, 1, 2, shuffle_out=True)
    assert _file().exists()  # it was tuned here
    assert torch.equal(torch.get_rng_state(), before)


@needs_kernel
@pytest.mark.parametrize("channels,n_in", [(48, 4), (232, 8)])
def test_osep_module_with_wide_groups_equals_its_reference(fresh, channels, n_in):
    torch.manual_seed(0)
    ref = OSepConv2d(channels, channels, 3, gamma=2.0, impl="reference")
    fast = OSepConv2d(channels, channels, 3, gamma=2.0, impl="fast")
    fast.load_state_dict(ref.state_dict())
    assert fast.convs[0].in_channels // fast.convs[0].groups == n_in and fast._schedule[0] == "native"
    x = torch.randn(2, channels, 7, 7, requires_grad=True)
    a, b = ref(x), fast(x)
    _check(b, a, 1e-5)
    for u, v in zip(torch.autograd.grad(b.square().sum(), [x, *fast.parameters()]),
                    torch.autograd.grad(a.square().sum(), [x, *ref.parameters()])):
        _check(u, v, 1e-5)
    keys = json.loads(_file().read_text())["choices"]
    # one grouped KxK call tuned, and the layer's 1x1 step between matmul and oneDNN
    assert sum("among=" not in k for k in keys) == 1 and sum("among=matmul/onednn" in k for k in keys) == 1


@needs_kernel
@pytest.mark.parametrize("choice", autotune.CANDIDATES)
@pytest.mark.parametrize("stride,dilation", [(1, 1), (1, 2), (2, 1)])
def test_tuned_depthwise_conv_equals_nn_conv2d(fresh, monkeypatch, choice, stride, dilation):
    """DARTS' sep/dil conv, d-ResNet's and MobileNet's depth-wise layers: whichever kernel the
    tuner picks (forced here in turn), the module computes nn.Conv2d with its weights."""
    times = {c: 1.0 if c == choice else 2.0 for c in autotune.CANDIDATES}
    monkeypatch.setattr(autotune, "_time_candidates", lambda *a: times)
    torch.manual_seed(stride * 10 + dilation)
    tuned = TunedConv2d(12, 12, 3, stride=stride, padding=dilation, dilation=dilation, groups=12, bias=False)
    plain = torch.nn.Conv2d(12, 12, 3, stride=stride, padding=dilation, dilation=dilation, groups=12, bias=False)
    plain.load_state_dict(tuned.state_dict())
    x = torch.randn(2, 12, 9, 11, requires_grad=True)
    a, b = plain(x), tuned(x)
    want = "native" if stride == 1 and choice == "native" else "onednn"  # the kernel has no stride
    assert ("Narrow" in type(b.grad_fn).__name__) == (want == "native")
    _check(b, a, 1e-5)
    for u, v in zip(torch.autograd.grad(b.square().sum(), (x, tuned.weight)),
                    torch.autograd.grad(a.square().sum(), (x, plain.weight))):
        _check(u, v, 1e-5)


@pytest.mark.parametrize("choice", autotune.POINTWISE)
@pytest.mark.parametrize("groups", [1, 4])
def test_pointwise_candidates_compute_the_1x1_convolution(fresh, monkeypatch, choice, groups):
    """osep's 1x1 steps: the batched matmul and oneDNN, whichever the tuner picks (forced in
    turn), compute F.conv2d, forward and both gradients."""
    import osep_nas.conv as conv_mod

    times = {c: 1.0 if c == choice else 2.0 for c in autotune.POINTWISE}
    monkeypatch.setattr(autotune, "_time_candidates", lambda *a: times)
    conv = torch.nn.Conv2d(12, 8, 1, groups=groups, bias=False)
    x = torch.randn(2, 12, 9, 11, requires_grad=True)
    assert conv_mod._pointwise_choice(x, conv) == choice
    got = conv_mod._pointwise_as_matmul(x, conv.weight, None, groups) if choice == "matmul" else conv(x)
    want = F.conv2d(x, conv.weight, None, 1, 0, 1, groups)
    _check(got, want, 1e-5)
    for u, v in zip(torch.autograd.grad(got.square().sum(), (x, conv.weight)),
                    torch.autograd.grad(want.square().sum(), (x, conv.weight))):
        _check(u, v, 1e-5)


def test_pointwise_fixed_rule_without_tuning(fresh, monkeypatch):
    import osep_nas.conv as conv_mod

    monkeypatch.setenv("OSEP_NAS_AUTOTUNE", "0")
    monkeypatch.setattr(autotune, "_time_candidates", _no_timing)
    conv = torch.nn.Conv2d(8, 8, 1, bias=False)
    assert conv_mod._pointwise_choice(torch.randn(1, 8, 32, 32), conv) == "matmul"  # 1024 pixels
    assert conv_mod._pointwise_choice(torch.randn(1, 8, 16, 16), conv) == "onednn"


WORKER = r"""
import sys, torch
from osep_nas import kernels
from osep_nas.kernels import autotune
torch.set_num_threads(1)
timed = []
real = autotune._time_candidates
autotune._time_candidates = lambda *a: timed.append(1) or real(*a)
x = torch.randn(2, 12, 16, 16, requires_grad=True)
w = torch.randn(12, 4, 3, 3, requires_grad=True)
y = kernels.grouped_conv2d(x, w, None, 1, 1, 1, 3, shuffle_out=True)
print("native" if "Narrow" in type(y.grad_fn).__name__ else "onednn", len(timed))
"""


@needs_kernel
def test_processes_agree_on_one_choice(fresh):
    env = dict(os.environ, OSEP_NAS_CACHE_DIR=str(fresh), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    procs = [subprocess.Popen([sys.executable, "-c", WORKER], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert len({o[0] for o in outs}) == 1 and sorted(int(o[1]) for o in outs) == [0, 0, 1], outs
    entries = json.loads(_file().read_text())["choices"]
    assert [e["choice"] for e in entries.values()] == [outs[0][0]]


PORTABLE = """
import itertools, sys, torch, torch.nn.functional as F
from osep_nas import kernels
from osep_nas.shuffle import channel_shuffle
assert kernels.load() is not None, kernels._failed
gen = torch.Generator().manual_seed(0)
worst = 0.0
for (n_in, n_out, groups), shuffle in itertools.product([(2, 2, 3), (4, 4, 2), (8, 4, 3), (3, 3, 5)], (False, True)):
    x = torch.randn(2, groups * n_in, 9, 37, generator=gen, requires_grad=True)  # 37: a vector tail at 8 and 16 lanes
    w = torch.randn(groups * n_out, n_in, 3, 3, generator=gen, requires_grad=True)
    y = kernels.grouped_conv2d(x, w, None, 1, 1, 1, groups, shuffle_out=shuffle, impl="native")
    assert "Narrow" in type(y.grad_fn).__name__
    ref = F.conv2d(x, w, None, 1, 1, 1, groups)
    ref = channel_shuffle(ref, groups) if shuffle else ref
    g = torch.randn(ref.shape, generator=gen)
    pairs = [(y, ref)] + list(zip(torch.autograd.grad(y, (x, w), g), torch.autograd.grad(ref, (x, w), g)))
    worst = max([worst] + [((u - v).abs().max() / max(v.abs().max(), 1.0)).item() for u, v in pairs])
for h, w in ((9, 37), (32, 32)):  # the fused layer: its 1x1 step on compact, then on wide planes
    x = torch.randn(2, 12, h, w, generator=gen, requires_grad=True)
    wt = torch.randn(12, 2, 3, 3, generator=gen, requires_grad=True)
    w1 = torch.randn(12, 6, 1, 1, generator=gen, requires_grad=True)
    y = kernels.fused_osep(x, wt, w1, 1, 1, 6, 2)
    ref = F.conv2d(channel_shuffle(F.conv2d(x, wt, None, 1, 1, 1, 6), 6), w1, None, 1, 0, 1, 2)
    g = torch.randn(ref.shape, generator=gen)
    pairs = [(y, ref)] + list(zip(torch.autograd.grad(y, (x, wt, w1), g), torch.autograd.grad(ref, (x, wt, w1), g)))
    worst = max([worst] + [((u - v).abs().max() / max(v.abs().max(), 1.0)).item() for u, v in pairs])
print(worst)
"""


@needs_kernel
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="-march=x86-64-v3 is an x86 target")
def test_the_avx2_build_computes_the_reference(tmp_path):
    """``OSEP_NAS_NATIVE_ARCH=x86-64-v3`` builds the 256-bit path (on an AVX-512 CPU too, where
    the native build takes the 512-bit one): forward and both gradients equal F.conv2d, and the
    fused layer's forward and three gradients its two steps."""
    env = dict(os.environ, OSEP_NAS_NATIVE_ARCH="x86-64-v3", OSEP_NAS_NATIVE="1", OSEP_NAS_CACHE_DIR=str(tmp_path),
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-c", PORTABLE], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.split()[-1]) <= 1e-5


def test_a_bad_arch_name_is_a_value_error(monkeypatch):
    monkeypatch.setenv("OSEP_NAS_NATIVE_ARCH", "native -fplugin=x")
    with pytest.raises(ValueError, match="OSEP_NAS_NATIVE_ARCH"):
        kernels.native_arch()


@needs_kernel
@pytest.mark.parametrize("impl", autotune.CANDIDATES)
@pytest.mark.parametrize("shuffle", [False, True])
def test_a_channels_last_input_gives_the_function_and_format_of_f_conv2d(impl, shuffle):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 12, 9, 7, generator=gen).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(12, 4, 3, 3, generator=gen, requires_grad=True)
    assert kernels.covers(x, w, (1, 1), (1, 1), (1, 1), 3)
    if impl == "native" and not shuffle:  # unshuffled channels-last stays with oneDNN
        with pytest.raises(ValueError, match="impl"):
            kernels.grouped_conv2d(x, w, None, 1, 1, 1, 3, impl=impl)
        return
    y = kernels.grouped_conv2d(x, w, None, 1, 1, 1, 3, shuffle_out=shuffle, impl=impl)
    ref = F.conv2d(x, w, None, 1, 1, 1, 3)
    ref = channel_shuffle(ref, 3) if shuffle else ref
    assert y.is_contiguous(memory_format=torch.channels_last) == ref.is_contiguous(memory_format=torch.channels_last)
    assert y.is_contiguous(memory_format=torch.channels_last) != shuffle
    _check(y, ref, 1e-5)
    g = torch.randn(ref.shape, generator=gen)
    for u, v in zip(torch.autograd.grad(y, (x, w), g), torch.autograd.grad(ref, (x, w), g)):
        _check(u, v, 1e-5)
    nchw = x.detach().contiguous()
    assert autotune.key_of(x, w, (1, 1), (1, 1), (1, 1), 3, 3) == \
        autotune.key_of(nchw, w, (1, 1), (1, 1), (1, 1), 3, 3) + " channels_last"


@needs_kernel
def test_a_channels_last_call_is_timed_on_channels_last_tensors(fresh):
    seen = []

    def run(c, a, w):
        seen.append(a.is_contiguous(memory_format=torch.channels_last) and not a.is_contiguous())
        return kernels._forward(c, a, w, None, (1, 1), (1, 1), (1, 1), 3, 3)

    x = torch.randn(2, 12, 9, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(12, 4, 3, 3, requires_grad=True)
    choice = autotune.choose(x, w, (1, 1), (1, 1), (1, 1), 3, 3, run, kernels._build_name)
    assert choice in autotune.CANDIDATES and len(seen) == 2 * (autotune.REPS + 1) and all(seen)
