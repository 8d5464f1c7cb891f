"""Per-shape choice between the native narrow-convolution kernel and oneDNN (as cudnn.benchmark).

Which of the two runs a grouped KxK convolution faster depends on the CPU (AVX2 or AVX-512),
the shape, the threads and whether gradients are needed.  The first time a key
(shapes, stride, padding, dilation, groups, shuffle, dtype, grads, threads) is seen, both are
timed on fresh tensors (forward, and backward when the key needs gradients) and the faster
is kept: in memory, and in a JSON file under ``$OSEP_NAS_CACHE_DIR`` (default
``~/.cache/osep_nas``) named by the kernel's build hash (source, torch version, CPU model
and flags).  Processes share that file under an exclusive ``flock``: the first to tune a key
writes it, the others read its choice, so every worker of a search runs the same code.
``OSEP_NAS_AUTOTUNE=0`` times nothing and applies a fixed rule: the native kernel for at
most :data:`MAX_IN_PER_GROUP` inputs per group (docs/config.md).  Both choices compute the
same function (tests/test_autotune.py, 1e-5).  The point-wise (1x1) steps of osep layers are
tuned the same way between a batched matmul and oneDNN (:data:`POINTWISE`), and a whole
two-step osep layer between the fused native kernel and its two steps (:data:`FUSED`; timing
"separate" tunes the steps inside it, so the lock is re-entrant within a thread).
"""
from __future__ import annotations

import json
import os
import statistics
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import torch

from osep_nas.io import atomic_write_json, read_user_text

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: memory and file, no lock
    fcntl = None

#: the fixed rule (OSEP_NAS_AUTOTUNE=0): the native kernel for at most this many inputs per group
MAX_IN_PER_GROUP = 3
CANDIDATES = ("native", "onednn")
#: the candidates of a stride-1 1x1 convolution (osep's point-wise steps): a batched matmul or oneDNN
POINTWISE = ("matmul", "onednn")
#: the candidates of a two-step osep layer: one fused native pass, or its two (tuned) steps
FUSED = ("fused", "separate")
FORMAT = 2  # 2: channels-last keys timed on channels-last tensors (1 timed them on NCHW ones)
REPS = 3
MAX_CACHE_BYTES = 8 << 20

#: run(candidate, x, weight, *extra_weights) -> y: the call being tuned, through one candidate
Run = Callable[..., torch.Tensor]

_memory: Dict[str, str] = {}
_lock = threading.RLock()
_held = threading.local()  # .paths: the cache files whose flock this thread holds (nested tuning)
_warned = False


def enabled() -> bool:
    """Whether choices are timed (``OSEP_NAS_AUTOTUNE``, default on)."""
    return os.environ.get("OSEP_NAS_AUTOTUNE", "1").strip().lower() not in ("0", "off", "false", "no")


def cache_dir() -> Path:
    return Path(os.environ.get("OSEP_NAS_CACHE_DIR") or Path.home() / ".cache" / "osep_nas")


def cache_path(name: str) -> Path:
    """The cache file of extension ``name`` (the kernel's build name: source, torch, CPU)."""
    return cache_dir() / f"autotune-{name}.json"


def _grads(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)


def key_of(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups: int, shuffle: int,
           candidates: Sequence[str] = CANDIDATES, extra: str = "") -> str:
    """The cache key of a call: shapes, geometry, shuffle, dtype, gradients, threads (and the
    candidates, where they are not the grouped convolution's; ``extra``: what else the call
    depends on, e.g. the second weight of a fused layer)."""
    dims = lambda t: "x".join(str(int(v)) for v in t)  # noqa: E731
    among = "" if tuple(candidates) == CANDIDATES else f" among={'/'.join(candidates)}"
    return (f"x={dims(x.shape)} w={dims(weight.shape)} stride={dims(stride)} pad={dims(padding)} "
            f"dil={dims(dilation)} groups={groups} shuffle={int(shuffle > 1)} {str(x.dtype).replace('torch.', '')} "
            f"grad={int(_grads(x, weight))} threads={torch.get_num_threads()}{among}"
            f"{'' if x.is_contiguous() else ' channels_last'}{' ' + extra if extra else ''}")


def choose(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups: int, shuffle: int,
           run: Run, name: Callable[[], str], candidates: Sequence[str] = CANDIDATES,
           fixed: Optional[str] = None, extra: str = "", extra_weights: Sequence[torch.Tensor] = ()) -> str:
    """The fastest of ``candidates`` for this call: by default ``"native"`` or ``"onednn"`` for a
    call the native kernel covers (see the module doc); :data:`POINTWISE` for a 1x1 one.

    ``run`` computes the call through a candidate, on the tensors it is given; ``name()``
    is the kernel's build name, which names the cache file. ``fixed``: the choice when tuning
    is off (default: the native kernel's fixed rule). ``extra`` goes into the key;
    ``extra_weights``: further weights of the call (a fused layer's 1x1): timing passes ``run``
    fresh tensors of their shapes after ``x`` and ``weight``, with their gradients timed too."""
    if not enabled():
        if fixed is not None:
            return fixed
        return "native" if weight.shape[1] <= MAX_IN_PER_GROUP else "onednn"
    key = key_of(x, weight, stride, padding, dilation, groups, shuffle, candidates, extra)
    got = _memory.get(key)
    if got is not None:
        return got
    grads = _grads(x, weight) or any(w.requires_grad for w in extra_weights) and torch.is_grad_enabled()
    with _lock:
        if key not in _memory:
            _memory[key] = _shared_choice(cache_path(name()), key,
                                          lambda: _time_candidates(run, x, weight, grads, candidates, extra_weights))
        return _memory[key]


def _shared_choice(path: Path, key: str, tune: Callable[[], Dict[str, float]]) -> str:
    """The file's choice for ``key``, else tune and record it, under the file's lock (taken
    once per thread: tuning a fused layer tunes its steps inside)."""
    held = _held.__dict__.setdefault("paths", set())
    nested = path in held  # this thread holds the flock already (an outer tuning)
    lock = None if nested else _open_lock(path)
    writable = nested or lock is not None
    try:
        if lock is not None:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            held.add(path)
        entries = _read(path)
        for k, e in entries.items():
            _memory.setdefault(k, e["choice"])
        if key in entries:
            return entries[key]["choice"]
        ms = tune()
        choice = min(ms, key=ms.get)
        if writable:
            entries = _read(path)  # again: nested tuning may have added entries
            entries[key] = {"choice": choice, "ms": {c: round(t, 4) for c, t in ms.items()}}
            try:
                atomic_write_json(path, {"format": FORMAT, "torch": torch.__version__, "choices": entries})
            except (OSError, ValueError) as exc:
                _warn_once(path.parent, exc)
        return choice
    finally:
        if lock is not None:
            held.discard(path)
            lock.close()  # also releases the flock


def _open_lock(path: Path):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path.with_suffix(".lock"), "a")
    except OSError as exc:
        _warn_once(path.parent, exc)
        return None


def _warn_once(folder: Path, exc: BaseException) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(f"osep autotune cache {folder} is not writable ({type(exc).__name__}); "
                      "choices are kept in memory only", RuntimeWarning, stacklevel=4)


def _read(path: Path) -> Dict[str, dict]:
    """The valid entries of the cache file; {} if it is missing, unreadable or corrupt."""
    try:
        data = json.loads(read_user_text(path, MAX_CACHE_BYTES, what="autotune cache"))
        choices = data["choices"] if data.get("format") == FORMAT else {}
        return {k: e for k, e in choices.items()
                if isinstance(k, str) and isinstance(e, dict) and e.get("choice") in CANDIDATES + POINTWISE + FUSED}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _time_candidates(run: Run, x: torch.Tensor, weight: torch.Tensor, grads: bool,
                     candidates: Sequence[str] = CANDIDATES,
                     extra_weights: Sequence[torch.Tensor] = ()) -> Dict[str, float]:
    """Median milliseconds of each candidate (1 warm-up, then REPS interleaved rounds) on
    fresh tensors drawn from a private generator: the global random state does not move."""
    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(tuple(x.shape), generator=gen, dtype=x.dtype)
    if not x.is_contiguous():  # a channels-last call is timed on a channels-last tensor (its key says so)
        xs = xs.contiguous(memory_format=torch.channels_last)
    ws = torch.randn(tuple(weight.shape), generator=gen, dtype=weight.dtype)
    extras = [torch.randn(tuple(w.shape), generator=gen, dtype=w.dtype) for w in extra_weights]
    leaves = [e.requires_grad_() for e, w in zip(extras, extra_weights) if w.requires_grad] if grads else []
    gy: Optional[torch.Tensor] = None
    times: Dict[str, list] = {c: [] for c in candidates}
    mode = torch.enable_grad() if grads else torch.no_grad()
    with mode:
        if grads:
            xs.requires_grad_()
            ws.requires_grad_()
        for rep in range(REPS + 1):
            for c in candidates:
                t0 = time.perf_counter()
                y = run(c, xs, ws, *extras)
                if grads:
                    if gy is None:
                        gy = torch.randn(tuple(y.shape), generator=gen, dtype=y.dtype)
                    torch.autograd.grad(y, [xs, ws] + leaves, gy)
                if rep:
                    times[c].append((time.perf_counter() - t0) * 1e3)
    return {c: statistics.median(t) for c, t in times.items()}

