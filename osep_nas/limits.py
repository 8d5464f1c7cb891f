"""Resource limits: estimate what training a model costs, and say when it is over budget.

Two helpers for loops that must not crash on a candidate that is too big (a search that
proposes an architecture, a command given absurd sizes):

* :func:`estimate_memory` - bytes needed to TRAIN ``model`` with SGD: parameters,
  gradients, optimizer state and the activations kept for the backward pass;
* :func:`check_budget` - ``None`` when #Params, FLOPs and memory are within the limits
  given, else one line saying which limit is exceeded (log it and skip the candidate).

The memory figure is an ESTIMATE, not a measurement.  Activations are measured by one
forward pass of a batch of ONE image with hooks on every leaf module (the sum of their
output sizes plus the input), in eval mode under ``torch.no_grad()``, then scaled
linearly by the batch size.  Not included: autograd's transient buffers during the
backward pass, cuDNN/cuBLAS workspaces, allocator fragmentation, the CUDA context
(several hundred MB per process) and the data set itself.  In-place ops are counted as
if they allocated.  Treat the figure as the order of magnitude of the peak, and leave
headroom (e.g. compare it with 80 % of the device memory).
"""
from __future__ import annotations

import math
import numbers
import os
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["parameter_bytes", "buffer_bytes", "activation_bytes", "memory_breakdown", "estimate_memory",
           "check_budget", "available_memory", "format_bytes"]


def _tensor_bytes(t: torch.Tensor) -> int:
    return int(t.numel()) * int(t.element_size())


def parameter_bytes(model: nn.Module, trainable_only: bool = False) -> int:
    """Bytes of the model's parameters (shared parameters counted once)."""
    return sum(_tensor_bytes(p) for p in model.parameters() if p.requires_grad or not trainable_only)


def buffer_bytes(model: nn.Module) -> int:
    """Bytes of the model's buffers (BatchNorm running statistics and the like)."""
    return sum(_tensor_bytes(b) for b in model.buffers())


def _input_shape(input_size: Sequence[int]) -> Tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_size)
    except (TypeError, ValueError):
        raise ValueError(f"input_size must be a sequence of positive integers, got {input_size!r:.80}") from None
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_size must be a sequence of positive integers (no batch dimension), got {shape}")
    return shape


def _outputs_bytes(out: object) -> int:
    if isinstance(out, torch.Tensor):
        return _tensor_bytes(out)
    if isinstance(out, (list, tuple)):
        return sum(_outputs_bytes(o) for o in out)
    if isinstance(out, dict):
        return sum(_outputs_bytes(o) for o in out.values())
    return 0


def activation_bytes(model: nn.Module, input_size: Sequence[int], batch_size: int = 1) -> int:
    """Estimated activation bytes kept for the backward pass at ``batch_size``.

    One forward pass of a batch of 1 (``input_size`` without the batch dimension, e.g.
    ``(3, 32, 32)``) in eval mode, summing the outputs of every leaf module and the input,
    multiplied by ``batch_size``.  The model's mode is restored afterwards."""
    shape = _input_shape(input_size)
    _check_batch(batch_size)
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    x = torch.zeros((1, *shape), device=device, dtype=dtype)
    total = [_tensor_bytes(x)]

    def hook(_module: nn.Module, _inp: object, out: object) -> None:
        total[0] += _outputs_bytes(out)

    handles = [m.register_forward_hook(hook) for m in model.modules() if not any(True for _ in m.children())]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return int(total[0]) * int(batch_size)


def _check_batch(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def memory_breakdown(model: nn.Module, input_size: Sequence[int], batch_size: int,
                     optimizer_slots: int = 1) -> Dict[str, int]:
    """The parts of :func:`estimate_memory`, in bytes: ``params`` (parameters and buffers),
    ``grads`` (one per trainable parameter), ``optimizer`` (``optimizer_slots`` buffers per
    trainable parameter: 1 for SGD with momentum, the trainer's optimizer; 0 for plain SGD;
    2 for Adam), ``activations`` and ``total``."""
    if isinstance(optimizer_slots, bool) or not isinstance(optimizer_slots, numbers.Integral) or optimizer_slots < 0:
        raise ValueError(f"optimizer_slots must be an integer >= 0, got {optimizer_slots!r}")
    _check_batch(batch_size)
    trainable = parameter_bytes(model, trainable_only=True)
    parts = {
        "params": parameter_bytes(model) + buffer_bytes(model),
        "grads": trainable,
        "optimizer": trainable * int(optimizer_slots),
        "activations": activation_bytes(model, input_size, batch_size),
    }
    parts["total"] = sum(parts.values())
    return parts


def estimate_memory(model: nn.Module, input_size: Sequence[int], batch_size: int, optimizer_slots: int = 1) -> int:
    """Estimated bytes to train ``model`` on batches of ``batch_size`` images of
    ``input_size`` (C, H, W): parameters + gradients + optimizer state + activations.
    An estimate (see the module docstring for what it leaves out)."""
    return memory_breakdown(model, input_size, batch_size, optimizer_slots)["total"]


def _limit(name: str, value: Optional[float]) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _fmt(name: str, value: float) -> str:
    return format_bytes(value) if name == "memory" else f"{value:,.0f}"


def check_budget(params: Optional[float] = None, flops: Optional[float] = None, memory: Optional[float] = None,
                 max_params: Optional[float] = None, max_flops: Optional[float] = None,
                 max_memory: Optional[float] = None) -> Optional[str]:
    """``None`` when every given limit holds, else one line naming each exceeded limit,
    e.g. ``"params 1,234,567 > max_params 1,000,000"``.

    A limit of ``None`` is not checked.  ValueError (a programming or usage error, not
    an over-budget candidate) when a limit is not a positive finite number, or a limit
    is set but its value is missing, negative or not finite."""
    reasons = []
    for name, value, limit in (("params", params, max_params), ("flops", flops, max_flops),
                               ("memory", memory, max_memory)):
        lim = _limit(f"max_{name}", limit)
        if lim is None:
            continue
        if value is None:
            raise ValueError(f"max_{name} is set but no {name} value was given")
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if value > lim:
            reasons.append(f"{name} {_fmt(name, value)} > max_{name} {_fmt(name, lim)}")
    return "; ".join(reasons) if reasons else None


def available_memory() -> Optional[int]:
    """Bytes of RAM available to new allocations (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover
