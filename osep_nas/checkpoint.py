"""Training checkpoints: atomic saves, safe loads, exact RNG capture.

A checkpoint is a dict written by ``torch.save`` through :func:`osep_nas.io.atomic_open`
(temp file + fsync + rename: a kill never leaves a half-written ``last.pt``), holding only
what ``torch.load(weights_only=True)`` accepts: tensors, numbers, strings, bools, None,
lists, tuples and dicts.  So loading never runs code from the file, and RNG states are
stored as tensors and ints (see :func:`capture_rng_state`).

Keys written by the trainer: ``format``, ``version``, ``model``, ``optimizer``,
``scheduler``, ``scaler``, ``rng``, ``loader``, ``epoch`` (epochs completed),
``best_top1``, ``best_epoch``, ``config`` (nested dict), ``genotype`` (text or None).
"""
from __future__ import annotations

import os
import pickle
import random
import re
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Union

import numpy as np
import torch
from torch import nn

from osep_nas.io import atomic_open, open_user_file

__all__ = ["save_checkpoint", "load_checkpoint", "load_model_state", "check_state_dict",
           "capture_rng_state", "restore_rng_state", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION",
           "RESUME_KEYS"]

CHECKPOINT_FORMAT = "osep-nas-checkpoint"
CHECKPOINT_VERSION = 1
#: keys a checkpoint needs for ``--resume``
RESUME_KEYS = ("model", "optimizer", "scheduler", "rng", "epoch")
#: the largest checkpoint :func:`load_checkpoint` reads
MAX_CHECKPOINT_BYTES = 16 << 30

PathLike = Union[str, "Path"]


def save_checkpoint(path: PathLike, state: Mapping[str, Any]) -> None:
    """Write ``state`` (plus ``format``/``version`` tags) to ``path`` atomically.

    Raises ValueError when ``state`` holds an object ``weights_only`` loading would
    refuse (checked before anything is written), so a checkpoint that saves always loads."""
    state = dict(state)
    state.setdefault("format", CHECKPOINT_FORMAT)
    state.setdefault("version", CHECKPOINT_VERSION)
    _check_plain(state, "state")
    with atomic_open(path, "wb") as fh:
        torch.save(state, fh)


_PLAIN = (str, int, float, bool, type(None), bytes, torch.Tensor, torch.dtype, torch.device, torch.Size)


def _check_plain(obj: Any, where: str) -> None:
    if isinstance(obj, _PLAIN):
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise ValueError(f"checkpoint {where}: key {k!r} is a {type(k).__name__}, not a string or int")
            _check_plain(v, f"{where}.{k}")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise ValueError(f"checkpoint {where}: a {type(obj).__name__} cannot be loaded with weights_only; "
                     f"store tensors, numbers, strings, lists or dicts")


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device, None] = "cpu",
                    required: Iterable[str] = ("model",)) -> Dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``.

    FileNotFoundError for a missing file; ValueError (naming the file) for a truncated
    or corrupt file, random bytes, a pickle carrying code, a non-dict payload, or one
    missing any of the ``required`` keys."""
    path = Path(path)
    # the one bounded reader: regular files only (never a device or a pipe), at most MAX_CHECKPOINT_BYTES
    with open_user_file(path, MAX_CHECKPOINT_BYTES, "checkpoint") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            raise ValueError(f"{path}: empty checkpoint file")
        try:
            with warnings.catch_warnings():  # a refused pickle: one error line, no warning lines
                warnings.simplefilter("ignore")
                state = torch.load(fh, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as exc:
            text = " ".join(str(exc).split())
            found = re.search(r"(unsupported (global|operand):?\s+(GLOBAL\s+)?[\w.]+)", text, re.IGNORECASE)
            if found or "weights_only" in text.lower() or "weights only" in text.lower():
                what = f" ({found.group(1)})" if found else ""
                raise ValueError(f"{path}: refused: the checkpoint holds objects other than tensors and plain "
                                 f"data{what}; only torch.load(weights_only=True) content is accepted") from None
            raise ValueError(f"{path}: corrupt checkpoint ({text[:200]})") from None
        except Exception as exc:  # noqa: BLE001 - whatever torch.load raises on garbage (struct.error: fuzzing)
            if isinstance(exc, (FileNotFoundError, PermissionError)):
                raise
            detail = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise ValueError(f"{path}: not a readable checkpoint (truncated or corrupt: {detail})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not an osep-nas checkpoint (holds a {type(state).__name__}, expected a dict)")
    missing = [k for k in required if k not in state]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return state


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Any], source: str = "checkpoint") -> None:
    """ValueError naming the first key that is missing, unexpected, or of another shape."""
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"{source}: model state is a {type(state_dict).__name__}, expected a dict of tensors")
    own = model.state_dict()
    for key, want in own.items():
        if key not in state_dict:
            raise ValueError(f"{source}: does not fit this model: missing key {key!r}")
        got = state_dict[key]
        if not isinstance(got, torch.Tensor):
            raise ValueError(f"{source}: does not fit this model: {key!r} is a {type(got).__name__}")
        if tuple(got.shape) != tuple(want.shape):
            raise ValueError(f"{source}: does not fit this model: {key!r} has shape {tuple(got.shape)}, "
                             f"the model expects {tuple(want.shape)}")
    for key in state_dict:
        if key not in own:
            raise ValueError(f"{source}: does not fit this model: unexpected key {key!r}")


def load_model_state(model: nn.Module, state_dict: Mapping[str, Any], source: str = "checkpoint") -> None:
    """Strictly load ``state_dict`` into ``model`` (DDP ``module.`` prefixes are stripped)
    after :func:`check_state_dict`, so a mismatch is one clear ValueError."""
    if isinstance(state_dict, Mapping) and state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    check_state_dict(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True)


# ----------------------------------------------------------------------------- RNG

def capture_rng_state() -> Dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states as tensors/ints (weights_only safe)."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: Dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() and
        torch.cuda.is_initialized() else [],
    }
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`; ValueError if the dict is malformed."""
    try:
        py = state["python"]
        random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
        nps = state["numpy"]
        np.random.set_state((str(nps["name"]), nps["keys"].numpy().astype(np.uint32), int(nps["pos"]),
                             int(nps["has_gauss"]), float(nps["gauss"])))
        torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
        cuda = state.get("cuda") or []
        if cuda and torch.cuda.is_available():
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all([c.cpu().to(torch.uint8) for c in cuda])
            else:  # another machine shape: restore what applies
                torch.cuda.set_rng_state(cuda[0].cpu().to(torch.uint8))
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise ValueError(f"checkpoint rng state is malformed ({type(exc).__name__}: {exc})") from None
