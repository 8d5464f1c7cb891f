"""Safe unpickling: plain containers and numpy arrays of plain dtypes, nothing else.

The CIFAR python batches are pickles.  This unpickler resolves no global but a few
numpy stand-ins that build arrays from checked parts, so a crafted file can neither
run code nor crash numpy; any other content is a ValueError naming the file.
"""
from __future__ import annotations

import codecs
import math
import pickle
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

__all__ = ["safe_unpickle"]


class _RefusedGlobal(pickle.UnpicklingError):
    pass


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of ``bytes`` use it, latin-1 only."""
    if str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise _RefusedGlobal(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(obj, "latin1", errors)


# numpy's own unpickling functions are NOT handed to the unpickler: a crafted dtype state
# crashes the interpreter in dtype.__setstate__ (numpy 2.4: ``(3, '|', None, -1, -1, 0)``
# segfaults; found by tests/test_fuzz.py).  Stand-ins build the arrays from checked parts.
_PLAIN_KINDS = "biufcSU"  # bool, integers, floats, complex, fixed bytes/str: no objects, no structs
_MAX_NDIM = 32


class _DtypeStub:
    """``numpy.dtype(spec, align, copy)`` in a pickle: a plain dtype, made here; its
    pickled state is compared with the canonical one, never passed to numpy."""

    def __init__(self, spec: Any = None, align: Any = False, copy: Any = False) -> None:
        if not isinstance(spec, str) or len(spec) > 16:
            raise _RefusedGlobal(f"numpy dtype {str(spec)[:40]!r} is not allowed")
        try:
            dt = np.dtype(spec)
        except (TypeError, ValueError):
            raise _RefusedGlobal(f"numpy dtype {spec!r} is not allowed") from None
        if dt.kind not in _PLAIN_KINDS or dt.fields is not None or dt.subdtype is not None:
            raise _RefusedGlobal(f"numpy dtype {spec!r} is not allowed (plain numbers and strings only)")
        self.value = dt

    def __setstate__(self, state: Any) -> None:
        canon = self.value.__reduce__()[2]
        if not (isinstance(state, tuple) and len(state) == len(canon) and state[0] == canon[0]
                and state[1] in ("<", ">", "|", "=") and all(type(a) is type(b) and a == b
                                                             for a, b in zip(state[2:], canon[2:]))):
            raise _RefusedGlobal("a numpy dtype with an unusual pickled state is not allowed")
        if state[1] in ("<", ">") and state[1] != canon[1]:
            self.value = self.value.newbyteorder(state[1])


def _dtype_of(dtype: Any) -> np.dtype:
    if not isinstance(dtype, _DtypeStub):
        raise _RefusedGlobal(f"expected a numpy dtype, got {type(dtype).__name__}")
    return dtype.value


def _array_from(raw: Any, dtype: Any, shape: Any, fortran: bool = False) -> np.ndarray:
    dt = _dtype_of(dtype)
    if not isinstance(shape, tuple) or len(shape) > _MAX_NDIM or not all(type(n) is int and n >= 0 for n in shape):
        raise ValueError(f"bad array shape {str(shape)[:60]}")
    if not isinstance(raw, (bytes, bytearray)):
        raise ValueError(f"array data must be bytes, got {type(raw).__name__}")
    if math.prod(shape) * dt.itemsize != len(raw):
        raise ValueError(f"array of shape {shape} and dtype {dt} needs {math.prod(shape) * dt.itemsize} bytes, "
                         f"has {len(raw)}")
    return np.frombuffer(bytes(raw), dt).reshape(shape, order="F" if fortran else "C").copy(order="A")


class _ArrayStub:
    """``numpy._core.multiarray._reconstruct(ndarray, ...)`` in a pickle; the array is made
    from its checked state (version, shape, dtype, fortran order, raw bytes)."""

    def __init__(self) -> None:
        self.value: Optional[np.ndarray] = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1 and isinstance(state[3], bool)):
            raise ValueError("bad numpy array state")
        self.value = _array_from(state[4], state[2], state[1], state[3])


def _reconstruct(cls: Any, shape: Any = None, typecode: Any = None) -> _ArrayStub:
    if cls is not np.ndarray:
        raise _RefusedGlobal("numpy _reconstruct of anything but an ndarray is not allowed")
    return _ArrayStub()


def _scalar(dtype: Any, raw: Any = None) -> Any:
    return _array_from(raw, dtype, (1,))[0]


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any = "C") -> np.ndarray:
    return _array_from(buf, dtype, shape, order == "F")


def _resolve(obj: Any, done: Dict[int, Any]) -> Any:
    """The unpickled object with the stand-ins replaced by their arrays and dtypes
    (containers edited in place, each visited once: shared and cyclic ones are fine)."""
    key = id(obj)
    if key in done:
        return done[key]
    if isinstance(obj, (_DtypeStub, _ArrayStub)):
        if obj.value is None:
            raise ValueError("a numpy array without its data")
        done[key] = obj.value
        return obj.value
    if isinstance(obj, list):
        done[key] = obj
        for i, v in enumerate(obj):
            obj[i] = _resolve(v, done)
    elif isinstance(obj, dict):
        done[key] = obj
        for k in list(obj):
            if isinstance(k, (_DtypeStub, _ArrayStub)):
                raise ValueError("a numpy object as a dict key")
            obj[k] = _resolve(obj[k], done)
    elif isinstance(obj, tuple):
        done[key] = obj
        items = tuple(_resolve(v, done) for v in obj)
        if any(a is not b for a, b in zip(items, obj)):
            obj = done[key] = items
    elif isinstance(obj, (set, frozenset)):
        if any(isinstance(v, (_DtypeStub, _ArrayStub)) for v in obj):
            raise ValueError("a numpy object in a set")
    return obj


def _numpy_globals() -> Dict[Tuple[str, str], Any]:
    table: Dict[Tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _DtypeStub,
                                         ("_codecs", "encode"): _latin1_encode}
    for pkg in ("numpy.core", "numpy._core"):
        table[(f"{pkg}.multiarray", "_reconstruct")] = _reconstruct
        table[(f"{pkg}.multiarray", "scalar")] = _scalar
        table[(f"{pkg}.numeric", "_frombuffer")] = _frombuffer
    return table


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed to rebuild numpy arrays.

    Any other global (``os.system``, ``builtins.eval``, ...) is refused before it is
    looked up, so a crafted file cannot run code."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            shown = ascii(f"{module}.{name}")[1:-1]  # from the file: escaped and bounded, one line
            raise _RefusedGlobal(f"global {shown[:120]} is not allowed") from None


def safe_unpickle(path: Union[str, Path], what: str = "pickle") -> Any:
    """Load a pickle of plain containers and numpy arrays; anything else -> ValueError."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return _resolve(_NumpyOnlyUnpickler(fh, encoding="latin1").load(), {})
    except _RefusedGlobal as exc:
        raise ValueError(f"{path}: refused to load {what}: {exc} (only numpy arrays may be inside)") from None
    except OSError:
        raise
    except MemoryError:  # a corrupt length field asking for more memory than there is (found by fuzzing)
        raise ValueError(f"{path}: corrupt {what} (it asks for more memory than this machine has)") from None
    except Exception as exc:  # truncated / corrupt: EOFError, UnpicklingError, ValueError, ...
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ValueError(f"{path}: corrupt or truncated {what} ({type(exc).__name__}: {detail})") from None

