"""Native CPU kernel for narrow grouped convolutions (few input channels per group).

An osep plan's first convolution is a grouped KxK convolution with 2..8 input channels per
group, which oneDNN runs far below its depth-wise speed (benchmarks/RESULTS.md).
``narrow_conv.cpp`` is a direct convolution for that case, built once per machine with
PyTorch's C++ extension loader.  Where it covers a call, :mod:`osep_nas.kernels.autotune`
picks the faster of it and oneDNN for that shape on this CPU (timed once, cached on disk);
where it cannot be built or does not apply, :func:`grouped_conv2d` uses ``F.conv2d`` (same
function, tested to 1e-5).  :func:`fused_osep` runs a whole two-step osep layer (grouped KxK,
shuffle, grouped 1x1) in one pass per image, so its intermediate never goes to memory.
``OSEP_NAS_NATIVE=0`` turns the kernel off, ``=1`` makes a failed build an error,
``OSEP_NAS_AUTOTUNE=0`` replaces the timing by a fixed rule (docs/config.md).
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import threading
import warnings
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from osep_nas.kernels import autotune
from osep_nas.kernels.autotune import MAX_IN_PER_GROUP  # noqa: F401  (the fixed rule, re-exported)
from osep_nas.shuffle import channel_shuffle

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("narrow_conv.cpp")
#: the kernel covers grouped convolutions with at most this many input channels per group
#: (whether it runs them is the autotuner's choice, or the fixed rule MAX_IN_PER_GROUP)
NATIVE_MAX_IN_PER_GROUP = 8
_DTYPES = (torch.float32, torch.float64)
_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)
try:  # private, but the one way to see an active FlopCounterMode / FakeTensorMode
    from torch.utils._python_dispatch import _get_current_dispatch_mode as _current_dispatch_mode
except ImportError:  # pragma: no cover - older torch
    def _current_dispatch_mode():
        return None


def tracing_or_counting() -> bool:
    """True under TorchScript, ``torch.jit.trace``/ONNX export, ``torch.compile`` or a
    Python dispatch mode (FlopCounterMode, FakeTensorMode...): tools that understand
    PyTorch's own operators, so the fast paths step aside and ``F.conv2d`` runs."""
    if torch.jit.is_scripting() or torch.jit.is_tracing() or _is_compiling():
        return True
    return _current_dispatch_mode() is not None


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


_lock = threading.Lock()
_module = None
_failed: Optional[str] = None


def _mode() -> str:
    return os.environ.get("OSEP_NAS_NATIVE", "auto").strip().lower()


@functools.lru_cache(maxsize=1)
def _cpu() -> str:
    """The CPU's architecture, model name and feature flags."""
    cpu = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [line for line in f if line.startswith(("model name", "flags"))]
        cpu += next((line for line in lines if line.startswith("model name")), "")
        cpu += next((line for line in lines if line.startswith("flags")), "")
    except OSError:
        pass
    return cpu


def native_arch() -> str:
    """The ``-march`` the kernel is built for: ``OSEP_NAS_NATIVE_ARCH`` (e.g. ``x86-64-v3``,
    AVX2 + FMA, for nodes of mixed CPUs), else ``native``; letters, digits, ``-_.`` only."""
    arch = os.environ.get("OSEP_NAS_NATIVE_ARCH", "").strip() or "native"
    if not arch.replace("-", "").replace("_", "").replace(".", "").isalnum() or len(arch) > 40:
        raise ValueError(f"OSEP_NAS_NATIVE_ARCH: {arch[:40]!r} is not a -march name (e.g. native, x86-64-v3)")
    return arch


def _build_name() -> str:
    """Extension name keyed by source, torch version, CPU and ``-march``; it also names the
    autotuner's cache file (timings belong to one build on one CPU)."""
    arch = native_arch()
    key = SOURCE.read_text(encoding="utf-8") + torch.__version__ + _cpu() + ("" if arch == "native" else arch)
    return f"osep_narrow_conv_{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def load():
    """The compiled extension, building it on first call; ``None`` where unavailable."""
    global _module, _failed
    if _mode() in ("0", "off", "false", "no"):
        return None
    if _module is not None or _failed is not None:
        return _module
    native_arch()  # a bad OSEP_NAS_NATIVE_ARCH is the user's error, not a failed build
    with _lock:
        if _module is not None or _failed is not None:
            return _module
        try:
            ext_log = logging.getLogger("torch.utils.cpp_extension")
            level = ext_log.level
            ext_log.setLevel(logging.ERROR)  # "No CUDA runtime is found": irrelevant for a CPU kernel
            try:
                from torch.utils.cpp_extension import load as load_extension
            finally:
                ext_log.setLevel(level)

            log.info("building the native osep CPU kernel (once per machine, cached by torch)")
            x86 = platform.machine() in ("x86_64", "AMD64")
            flags = ["-O3", "-fopenmp"] + ([f"-march={native_arch()}"] if x86 else [])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _module = load_extension(name=_build_name(), sources=[str(SOURCE)], extra_cflags=flags,
                                         extra_ldflags=["-fopenmp"], verbose=False)
        except Exception as exc:  # no compiler, no ninja, read-only cache...: fall back
            _failed = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
            if _mode() in ("1", "on", "true", "yes"):
                raise RuntimeError(f"OSEP_NAS_NATIVE=1 but the native osep kernel did not build ({_failed})") from exc
            warnings.warn(f"native osep CPU kernel unavailable, using PyTorch's grouped convolution ({_failed})",
                          RuntimeWarning, stacklevel=2)
    return _module


def available() -> bool:
    """Whether the native kernel is (or can be) loaded here."""
    return load() is not None


def covers(x: torch.Tensor, weight: torch.Tensor, stride: Tuple[int, int], padding: Tuple[int, int],
           dilation: Tuple[int, int], groups: int) -> bool:
    """Whether the kernel handles this call (else use ``F.conv2d``). A stride of 2 runs at
    stride 1 with every second output row/column kept: the same function, 4x the forward
    work, and the autotuner weighs that against oneDNN's strided grouped convolution."""
    kh, kw = weight.shape[-2:]
    return (
        type(x) is torch.Tensor and type(weight) in (torch.Tensor, torch.nn.Parameter)  # no subclasses (NNI shapes)
        and x.device.type == "cpu" and x.dtype in _DTYPES and weight.dtype == x.dtype and x.dim() == 4
        and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))
        and tuple(stride) in ((1, 1), (1, 2), (2, 1), (2, 2)) and groups > 1 and (kh, kw) != (1, 1)
        and 1 <= weight.shape[1] <= NATIVE_MAX_IN_PER_GROUP
        and 0 <= padding[0] <= (kh - 1) * dilation[0] and 0 <= padding[1] <= (kw - 1) * dilation[1]
        and not _cpu_autocast() and not tracing_or_counting()
    )


def _two(v) -> Tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class _NarrowConv(torch.autograd.Function):
    """Autograd wrapper: forward and both gradients from the native kernel."""

    @staticmethod
    def forward(ctx, x, weight, padding, dilation, groups, shuffle):
        ext = load()
        ctx.save_for_backward(x, weight)
        ctx.conf = (list(padding), list(dilation), groups, shuffle)
        return ext.forward(x, weight.contiguous(), *ctx.conf)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        ext = load()
        x, weight = ctx.saved_tensors
        gx, gw = ext.backward(grad_out.contiguous(), x, weight.contiguous(), *ctx.conf, *ctx.needs_input_grad[:2])
        return gx, gw, None, None, None, None


class _FusedOSep(torch.autograd.Function):
    """Autograd wrapper of the fused two-step osep layer: forward and the three gradients."""

    @staticmethod
    def forward(ctx, x, weight, weight1, padding, dilation, groups, groups1, relu_input):
        ext = load()
        ctx.save_for_backward(x, weight, weight1)
        ctx.conf = (list(padding), list(dilation), groups, groups1, relu_input)
        return ext.osep_forward(x, weight.contiguous(), weight1.contiguous(), *ctx.conf)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        ext = load()
        x, weight, weight1 = ctx.saved_tensors
        gx, gw, gw1 = ext.osep_backward(grad_out.contiguous(), x, weight.contiguous(), weight1.contiguous(), *ctx.conf,
                                        *ctx.needs_input_grad[:3])
        return gx, gw, gw1, None, None, None, None, None


class _Subsample(torch.autograd.Function):
    """``x[:, :, ::sh, ::sw]`` as a contiguous tensor; its gradient in one zero fill and one
    strided copy (autograd's two slice backwards cost several times that)."""

    @staticmethod
    def forward(ctx, x, sh, sw):
        ctx.conf = (tuple(x.shape), sh, sw)
        return x[:, :, ::sh, ::sw].contiguous()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        shape, sh, sw = ctx.conf
        grad = grad_out.new_zeros(shape)
        grad[:, :, ::sh, ::sw] = grad_out
        return grad, None, None


IntPair = Union[int, Sequence[int]]


def _forward(how: str, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride, padding,
             dilation, groups: int, shuffle: int) -> torch.Tensor:
    if how == "native":
        # the kernel is NCHW: a channels-last input is copied in; shuffled (the only case it takes
        # channels-last), the output is NCHW, as F.conv2d + channel_shuffle gives it
        y = _NarrowConv.apply(x.contiguous(), weight, padding, dilation, groups, shuffle)
        if stride != (1, 1):  # a stride-s output is the stride-1 output at every s-th row and column
            y = _Subsample.apply(y, stride[0], stride[1])
        if bias is not None:
            b = bias.view(groups, -1).t().reshape(-1) if shuffle > 1 else bias
            y = y + b.view(1, -1, 1, 1)
        return y
    y = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return channel_shuffle(y, groups) if shuffle > 1 else y


def grouped_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                   stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1,
                   shuffle_out: bool = False, impl: Optional[str] = None) -> torch.Tensor:
    """``F.conv2d`` with the same arguments, through the native kernel where it applies.

    ``shuffle_out=True`` returns ``channel_shuffle(F.conv2d(...), groups)``; the native
    kernel writes that order directly (no copy).  Where the kernel covers the call,
    :func:`autotune.choose` picks it or oneDNN; ``impl="native"`` or ``"onednn"`` forces
    one (tests, benchmarks; forcing an uncovered call to "native" is a ValueError).
    """
    stride, padding, dilation = _two(stride), _two(padding), _two(dilation)
    shuffle = groups if shuffle_out else 1
    # channels-last only where the output is shuffled: F.conv2d + shuffle returns NCHW then, so
    # the kernel's one copy (in) is the whole cost; unshuffled, oneDNN keeps channels-last
    native = covers(x, weight, stride, padding, dilation, groups) and (shuffle > 1 or x.is_contiguous()) \
        and load() is not None
    if impl is None:
        how = "onednn"
        if native:
            def run(c, a, w):
                return _forward(c, a, w, None, stride, padding, dilation, groups, shuffle)
            how = autotune.choose(x, weight, stride, padding, dilation, groups, shuffle, run, _build_name)
    elif impl not in autotune.CANDIDATES or (impl == "native" and not native):
        raise ValueError(f"impl must be None or one of {autotune.CANDIDATES} (native only where the kernel "
                         f"covers the call), got {impl!r}")
    else:
        how = impl
    return _forward(how, x, weight, bias, stride, padding, dilation, groups, shuffle)


def fused_covers(x: torch.Tensor, weight: torch.Tensor, weight1: torch.Tensor, stride: Tuple[int, int],
                 padding: Tuple[int, int], dilation: Tuple[int, int], groups: int, groups1: int) -> bool:
    """Whether the fused kernel handles ``conv1x1(shuffle(convKxK(x)))`` for these weights
    (the KxK step as :func:`covers` says, an unstrided 1x1 step after it)."""
    return (tuple(stride) == (1, 1) and covers(x, weight, stride, padding, dilation, groups)
            and type(weight1) in (torch.Tensor, torch.nn.Parameter)
            and weight1.dtype == x.dtype and weight1.dim() == 4 and tuple(weight1.shape[-2:]) == (1, 1)
            and groups1 > 0 and weight1.shape[1] * groups1 == weight.shape[0] and weight1.shape[0] % groups1 == 0
            and load() is not None)


def fused_osep(x: torch.Tensor, weight: torch.Tensor, weight1: torch.Tensor, padding: IntPair, dilation: IntPair,
               groups: int, groups1: int, relu_input: bool = False) -> torch.Tensor:
    """``F.conv2d(channel_shuffle(F.conv2d(x, weight, None, 1, padding, dilation, groups), groups),
    weight1, groups=groups1)`` in one native pass per image (the intermediate never goes to
    memory; the backward recomputes it); only where :func:`fused_covers` holds.
    ``relu_input=True`` computes it of ``F.relu(x)`` with the ReLU folded into the input read
    (and its gradient into the input gradient's write): no ReLU pass, no ReLU output kept."""
    padding, dilation = _two(padding), _two(dilation)
    if not fused_covers(x, weight, weight1, (1, 1), padding, dilation, groups, groups1):
        raise ValueError("fused_osep: the native kernel does not cover this call (see fused_covers)")
    return _FusedOSep.apply(x.contiguous(), weight, weight1, padding, dilation, groups, groups1, bool(relu_input))
