"""Datasets and loaders: CIFAR-10/100 python batches, ImageNet folders, sklearn digits.

One entry point, :func:`build_loaders`.  Tensor datasets (CIFAR, digits) are held
whole in memory as one tensor (on the training device when ``data.on_device``) and
augmented batch-wise on that device by :class:`BatchTransform`, with every random
draw taken from a ``torch.Generator`` seeded from (seed, epoch, rank).  So:

* a run is reproducible, and a resumed run sees exactly the batches and the
  augmentations an uninterrupted run would (the loader's state is just its epoch);
* on CUDA the loader never waits for CPU workers.

Distributed sharding: ``batch_size`` is the GLOBAL batch.  Every rank draws the same
global permutation and takes its part of each global batch (sizes differ by at most
one when the batch does not divide); a last global batch smaller than the number of
ranks is dropped.  Evaluation splits the test set into contiguous per-rank shards.
"""
from __future__ import annotations

import codecs
import functools
import math
import pickle
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "build_loaders", "TensorBatchLoader", "FolderBatchLoader", "BatchTransform",
    "load_cifar", "load_digits_tensors", "read_cifar_batch", "safe_unpickle",
    "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "IMAGENET_MEAN", "IMAGENET_STD",
    "DIGITS_SPLIT_SEED",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DIGITS_SPLIT_SEED = 0  # the digits train/test split never changes with training.seed
VAL_SPLIT_SEED = 0  # nor does the validation part held out of a training split

_CIFAR = {
    "cifar10": dict(folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)],
                    test=["test_batch"], label_key="labels", classes=10, meta="batches.meta",
                    names_key="label_names", mean=CIFAR10_MEAN, std=CIFAR10_STD, title="CIFAR-10"),
    "cifar100": dict(folder="cifar-100-python", train=["train"], test=["test"], label_key="fine_labels",
                     classes=100, meta="meta", names_key="fine_label_names", mean=CIFAR100_MEAN,
                     std=CIFAR100_STD, title="CIFAR-100"),
}


# ----------------------------------------------------------------------------- safe unpickling

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


# ----------------------------------------------------------------------------- CIFAR

def _get(d: dict, key: str) -> Any:
    if key in d:
        return d[key]
    return d.get(key.encode("latin1"))


def read_cifar_batch(path: Union[str, Path], num_classes: int = 10, label_key: str = "labels"
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """One official python batch -> (uint8 images N x 3 x 32 x 32, int64 labels N).

    Checks the dict layout, the array shape/dtype and the label range; any problem is
    a ValueError naming the file.  The official md5 sums are not required."""
    path = Path(path)
    d = safe_unpickle(path, "CIFAR batch")
    if not isinstance(d, dict):
        raise ValueError(f"{path}: not a CIFAR batch (a {type(d).__name__}, expected a dict)")
    data, labels = _get(d, "data"), _get(d, label_key)
    if data is None or labels is None:
        keys = sorted(k.decode("latin1") if isinstance(k, bytes) else str(k) for k in d)
        raise ValueError(f"{path}: not a CIFAR batch: needs keys 'data' and {label_key!r}, has {keys}")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: 'data' is a {desc}, expected uint8 rows of 3072 (N, 3072)")
    try:
        lab = np.asarray(labels)
    except Exception:
        lab = np.asarray([], dtype=object)
    if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"{path}: {label_key!r} must be a list of integers")
    if len(lab) != len(data):
        raise ValueError(f"{path}: {len(data)} images but {len(lab)} labels")
    if len(data) == 0:
        raise ValueError(f"{path}: holds no images")
    bad = (lab < 0) | (lab >= num_classes)
    if bad.any():
        raise ValueError(f"{path}: label {int(lab[bad][0])} out of range 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), lab.astype(np.int64)


def _cifar_folder(root: Union[str, Path, None], dataset: str, download: bool) -> Path:
    spec = _CIFAR[dataset]
    if root is None:
        raise FileNotFoundError(f"data.root is not set: {spec['title']} needs the folder holding "
                                f"{spec['folder']} (--data DIR)")
    root = Path(root).expanduser()
    files = spec["train"] + spec["test"]
    for cand in (root, root / spec["folder"]):
        if all((cand / f).is_file() for f in files):
            return cand
    if download:  # only here is the network used
        import torchvision
        cls = torchvision.datasets.CIFAR10 if dataset == "cifar10" else torchvision.datasets.CIFAR100
        root.mkdir(parents=True, exist_ok=True)
        cls(str(root), train=True, download=True)
        return root / spec["folder"]
    if not root.exists():
        raise FileNotFoundError(f"{spec['title']} data folder not found: {root}")
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder ({spec['title']} needs the folder of python batches)")
    folder = root / spec["folder"] if (root / spec["folder"]).is_dir() else root
    missing = [f for f in files if not (folder / f).is_file()]
    raise ValueError(f"{folder}: not a {spec['title']} python-batches folder, missing {', '.join(missing)} "
                     f"(set data.download: true to fetch it)")


def load_cifar(root: Union[str, Path, None], dataset: str = "cifar10", download: bool = False,
               include_test: bool = True) -> Tuple[torch.Tensor, torch.Tensor, Any, Any, List[str]]:
    """(train_x uint8 NCHW, train_y, test_x, test_y, class names) from a python-batches folder.
    ``include_test=False`` never opens the test batch (test_x, test_y are then None)."""
    spec = _CIFAR[dataset]
    folder = _cifar_folder(root, dataset, download)

    def read(names: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        parts = [read_cifar_batch(folder / n, spec["classes"], spec["label_key"]) for n in names]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)

    tx, ty = read(spec["train"])
    vx, vy = read(spec["test"]) if include_test else (None, None)
    names = [str(i) for i in range(spec["classes"])]
    meta = folder / spec["meta"]
    if meta.is_file():
        try:
            m = safe_unpickle(meta, "CIFAR meta")
            got = _get(m, spec["names_key"]) if isinstance(m, dict) else None
            if isinstance(got, list) and len(got) == spec["classes"]:
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in got]
        except ValueError:
            pass  # names are cosmetic
    return tx, ty, vx, vy, names


# ----------------------------------------------------------------------------- digits

@functools.lru_cache(maxsize=1)
def _raw_digits() -> Tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, target = bunch.images, bunch.target
    images.flags.writeable = False
    target.flags.writeable = False
    return images, target


def load_digits_tensors(image_size: int = 32, test_fraction: float = 0.2
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits (1797 real images, no download) as RGB float
    images in [0, 1], bilinearly upsampled to ``image_size``, split by a fixed seeded
    stratified split (seed :data:`DIGITS_SPLIT_SEED`).  Returns (train_x, train_y, test_x, test_y)."""
    from sklearn.model_selection import train_test_split

    images, target = _raw_digits()
    x = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1).repeat(1, 3, 1, 1)
    y = torch.from_numpy(target.astype(np.int64))
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False).clamp_(0, 1)
    n_test = math.ceil(test_fraction * len(y))
    if n_test < 10 or len(y) - n_test < 10:
        raise ValueError(f"data.test_fraction: {test_fraction} leaves {n_test} of {len(y)} digits for testing; "
                         f"each side needs at least one image of each of the 10 classes")
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_fraction, random_state=DIGITS_SPLIT_SEED, stratify=target)
    tr, te = torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(te))
    return x[tr].contiguous(), y[tr].contiguous(), x[te].contiguous(), y[te].contiguous()


def holdout_split(labels: torch.Tensor, fraction: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """(keep, held-out) sorted indices of a fixed stratified split of ``labels`` (seed
    :data:`VAL_SPLIT_SEED`, independent of the training seed): the validation part a search
    selects on, carved out of the training split."""
    from sklearn.model_selection import train_test_split

    n = len(labels)
    n_val = math.ceil(fraction * n)
    classes = int(labels.max()) + 1 if n else 0
    if n_val < classes or n - n_val < classes:
        raise ValueError(f"data.val_fraction: {fraction} holds out {n_val} of {n} training images; each side needs "
                         f"at least one image of each of the {classes} classes")
    keep, held = train_test_split(np.arange(n), test_size=n_val, random_state=VAL_SPLIT_SEED,
                                  stratify=labels.numpy())
    return torch.from_numpy(np.sort(keep)), torch.from_numpy(np.sort(held))


# ----------------------------------------------------------------------------- batched augmentation

def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs, platforms and devices)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


class BatchTransform:
    """Augment a float batch (N, C, H, W) in [0, 1] on its own device.

    Steps in order: crop (``"pad"``: zero-pad ``padding`` and crop back at random;
    ``"resized"``: random resized crop, scale 0.08-1, ratio 3/4-4/3, to ``size``),
    horizontal flip, color jitter (brightness, contrast, saturation factors drawn from
    [1-s, 1+s], in that order), normalization, cutout (a ``cutout`` square zeroed after
    normalization, i.e. set to the mean; its center may lie anywhere, as in DARTS).
    All draws come from the generator passed in, in a fixed order.
    """

    def __init__(self, crop: str = "none", padding: int = 0, size: Optional[int] = None, flip: bool = False,
                 color_jitter: float = 0.0, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, cutout: int = 0,
                 scale: Tuple[float, float] = (0.08, 1.0), ratio: Tuple[float, float] = (3 / 4, 4 / 3)):
        if crop not in ("pad", "resized", "none"):
            raise ValueError(f"crop must be pad, resized or none, got {crop!r}")
        self.crop, self.padding, self.size, self.flip = crop, int(padding), size, bool(flip)
        self.color_jitter, self.cutout = float(color_jitter), int(cutout)
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)
        self.scale, self.ratio = scale, ratio

    def __repr__(self) -> str:
        return (f"BatchTransform(crop={self.crop!r}, padding={self.padding}, size={self.size}, flip={self.flip}, "
                f"color_jitter={self.color_jitter}, cutout={self.cutout}, normalize={self.mean is not None})")

    def __call__(self, x: torch.Tensor, g: Optional[torch.Generator] = None) -> torch.Tensor:
        n, _, h, w = x.shape
        dev = x.device

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=g, device=dev)

        if self.crop == "pad" and self.padding > 0 and n:
            p = self.padding
            padded = F.pad(x, (p, p, p, p)).permute(0, 2, 3, 1)  # N, H+2p, W+2p, C
            oy = torch.randint(0, 2 * p + 1, (n,), generator=g, device=dev)
            ox = torch.randint(0, 2 * p + 1, (n,), generator=g, device=dev)
            rows = oy[:, None] + torch.arange(h, device=dev)
            cols = ox[:, None] + torch.arange(w, device=dev)
            b = torch.arange(n, device=dev)
            x = padded[b[:, None, None], rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
        elif self.crop == "resized" and n:
            x = self._resized_crop(x, rand)
        if self.size is not None and (x.shape[-2] != self.size or x.shape[-1] != self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        if self.flip and n:
            do = rand(n) < 0.5
            x = torch.where(do[:, None, None, None], x.flip(3), x)
        if self.color_jitter > 0 and n:
            x = self._jitter(x, rand)
        if self.mean is not None:
            mean = torch.tensor(self.mean, device=dev, dtype=x.dtype).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=dev, dtype=x.dtype).view(1, -1, 1, 1)
            x = (x - mean) / std
        if self.cutout > 0 and n:
            hh, ww = x.shape[-2:]
            cy = torch.randint(0, hh, (n,), generator=g, device=dev)
            cx = torch.randint(0, ww, (n,), generator=g, device=dev)
            y0, x0 = cy - self.cutout // 2, cx - self.cutout // 2
            r = torch.arange(hh, device=dev)[None, :]
            c = torch.arange(ww, device=dev)[None, :]
            in_r = (r >= y0[:, None]) & (r < (y0 + self.cutout)[:, None])
            in_c = (c >= x0[:, None]) & (c < (x0 + self.cutout)[:, None])
            keep = ~(in_r[:, :, None] & in_c[:, None, :])
            x = x * keep[:, None].to(x.dtype)
        return x

    def _resized_crop(self, x: torch.Tensor, rand: Callable[..., torch.Tensor]) -> torch.Tensor:
        n, c, h, w = x.shape
        out = self.size or h
        tries = 10
        area = rand(n, tries) * (self.scale[1] - self.scale[0]) + self.scale[0]
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        ratio = torch.exp(rand(n, tries) * (hi - lo) + lo)
        cw = torch.sqrt(area * ratio) * w  # crop width / height in pixels
        ch = torch.sqrt(area / ratio) * h
        ok = (cw <= w) & (ch <= h)
        first = torch.argmax(ok.to(torch.int8), dim=1)  # first fitting try (0 when none fits)
        any_ok = ok.any(dim=1)
        cw = torch.where(any_ok, cw.gather(1, first[:, None])[:, 0], torch.full_like(cw[:, 0], float(w)))
        ch = torch.where(any_ok, ch.gather(1, first[:, None])[:, 0], torch.full_like(ch[:, 0], float(h)))
        x0 = rand(n) * (w - cw)
        y0 = rand(n) * (h - ch)
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = cw / w
        theta[:, 1, 1] = ch / h
        theta[:, 0, 2] = (x0 + cw / 2) / w * 2 - 1
        theta[:, 1, 2] = (y0 + ch / 2) / h * 2 - 1
        grid = F.affine_grid(theta, [n, c, out, out], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _jitter(self, x: torch.Tensor, rand: Callable[..., torch.Tensor]) -> torch.Tensor:
        n = x.shape[0]
        s = self.color_jitter
        lo = max(0.0, 1.0 - s)

        def factor() -> torch.Tensor:
            return (rand(n) * (1.0 + s - lo) + lo).view(n, 1, 1, 1)

        fb, fc, fs = factor(), factor(), factor()
        x = (x * fb).clamp(0, 1)
        if x.shape[1] == 3:
            wts = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            gray = (x * wts).sum(1, keepdim=True)
        else:
            gray = x.mean(1, keepdim=True)
        m = gray.mean(dim=(2, 3), keepdim=True)
        x = ((x - m) * fc + m).clamp(0, 1)
        gray = (x * wts).sum(1, keepdim=True) if x.shape[1] == 3 else x.mean(1, keepdim=True)
        return ((x - gray) * fs + gray).clamp(0, 1)


# ----------------------------------------------------------------------------- index plans

def _shuffled(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(derive_seed(seed, epoch, 0x5EED))
    return torch.randperm(n, generator=g)


def rank_batches(n: int, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False) -> List[torch.Tensor]:
    """The index batches one rank iterates in one epoch.

    Training (``shuffle``): global batches of ``batch_size`` from one permutation seeded
    by (seed, epoch), identical on every rank; rank r takes the r-th of ``world_size``
    near-equal parts of each.  Evaluation: the ordered indices split into contiguous
    per-rank shards, each cut into batches of ceil(batch_size / world_size)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    if shuffle:
        if batch_size < world_size:
            raise ValueError(f"data.batch_size {batch_size} is smaller than the {world_size} ranks")
        order = _shuffled(n, seed, epoch)
        out = []
        for start in range(0, n, batch_size):
            chunk = order[start:start + batch_size]
            if len(chunk) < batch_size and (drop_last or len(chunk) < world_size):
                break
            part = torch.tensor_split(chunk, world_size)[rank] if world_size > 1 else chunk
            out.append(part)
        return out
    shard = torch.tensor_split(torch.arange(n), world_size)[rank] if world_size > 1 else torch.arange(n)
    per = max(1, math.ceil(batch_size / world_size))
    return [shard[i:i + per] for i in range(0, len(shard), per)]


# ----------------------------------------------------------------------------- loaders

class _EpochSeeded:
    """Loader state: ``seed`` and ``epoch`` decide the order and augmentation of an epoch,
    so ``state_dict`` (both) is all a resume needs."""

    seed: int
    epoch: int

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def state_dict(self) -> Dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])


class TensorBatchLoader(_EpochSeeded):
    """In-memory batch loader for a dataset held as two tensors.

    ``images``: uint8 (scaled by 1/255) or float in [0, 1], (N, C, H, W); ``labels``:
    int64 (N,).  Iterating yields ``(x, y)`` on the loader's device, transformed by
    ``transform`` with a generator seeded by (seed, epoch, rank).  Call
    :meth:`set_epoch` before each epoch; ``state_dict`` is the whole loader state.
    ``batch_size`` is the global batch (see :func:`rank_batches`)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 transform: Optional[BatchTransform] = None, shuffle: bool = False, drop_last: bool = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1,
                 device: Union[str, torch.device, None] = None):
        if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"images (N, C, H, W) and labels (N,) expected, got {tuple(images.shape)} "
                             f"and {tuple(labels.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.images, self.labels = images, labels
        self.batch_size, self.transform = int(batch_size), transform
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.epoch = 0
        if device is not None:
            self.to(device)

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def dataset_size(self) -> int:
        return len(self.labels)

    def to(self, device: Union[str, torch.device]) -> "TensorBatchLoader":
        """Move the whole dataset to ``device`` (augmentation then runs there)."""
        self.images = self.images.to(device)
        self.labels = self.labels.to(device)
        return self

    def _batches(self) -> List[torch.Tensor]:
        return rank_batches(self.dataset_size, self.batch_size, shuffle=self.shuffle, seed=self.seed,
                            epoch=self.epoch, rank=self.rank, world_size=self.world_size, drop_last=self.drop_last)

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        dev = self.device
        g = torch.Generator(device=dev)
        g.manual_seed(derive_seed(self.seed, self.epoch, self.rank, 0xA06))
        for idx in self._batches():
            idx = idx.to(dev)
            x = self.images.index_select(0, idx)
            x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
            if self.transform is not None:
                x = self.transform(x, g)
            yield x, self.labels.index_select(0, idx)


class _Cutout:
    """Cutout for one CHW tensor (ImageFolder pipeline), drawn from torch's global RNG."""

    def __init__(self, length: int):
        self.length = int(length)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        cy = int(torch.randint(0, h, (1,)))
        cx = int(torch.randint(0, w, (1,)))
        y0, x0 = max(0, cy - self.length // 2), max(0, cx - self.length // 2)
        y1, x1 = min(h, cy - self.length // 2 + self.length), min(w, cx - self.length // 2 + self.length)
        img = img.clone()
        img[..., y0:y1, x0:x1] = 0
        return img


class FolderBatchLoader(_EpochSeeded):
    """Batches of an ImageFolder-style dataset read by DataLoader workers, with the
    same sharding and per-epoch seeding as :class:`TensorBatchLoader`."""

    def __init__(self, dataset: Any, batch_size: int, *, shuffle: bool = False, drop_last: bool = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1, workers: int = 4, pin_memory: bool = False):
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.workers, self.pin_memory = int(workers), bool(pin_memory)
        self.epoch = 0

    @property
    def dataset_size(self) -> int:
        return len(self.dataset)

    def _batches(self) -> List[List[int]]:
        return [b.tolist() for b in rank_batches(self.dataset_size, self.batch_size, shuffle=self.shuffle,
                                                 seed=self.seed, epoch=self.epoch, rank=self.rank,
                                                 world_size=self.world_size, drop_last=self.drop_last)]

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, self.rank, 0xF01D))
        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=self._batches(), num_workers=self.workers,
                                             pin_memory=self.pin_memory, generator=g)
        return iter(loader)


# ----------------------------------------------------------------------------- ImageNet

def _imagenet(cfg: Any, size: int, seed: int, rank: int, world_size: int, pin: bool):
    import torchvision
    from torchvision import transforms as T

    if cfg.root is None:
        raise FileNotFoundError("data.root is not set: ImageNet needs a folder with train/ and val/ (--data DIR)")
    root = Path(cfg.root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"ImageNet data folder not found: {root}")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise ValueError(f"{root}: not an ImageNet folder, missing {split}/ (one sub-folder per class)")
    crop = "resized" if cfg.crop == "auto" else cfg.crop
    train_tf: List[Any] = []
    if crop == "resized":
        train_tf.append(T.RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)))
    else:
        train_tf += [T.Resize(size), T.CenterCrop(size)]
        if crop == "pad" and cfg.padding > 0:
            train_tf.append(T.RandomCrop(size, padding=cfg.padding))
    if cfg.flip:
        train_tf.append(T.RandomHorizontalFlip())
    if cfg.color_jitter > 0:
        train_tf.append(T.ColorJitter(cfg.color_jitter, cfg.color_jitter, cfg.color_jitter))
    train_tf.append(T.ToTensor())
    test_tf: List[Any] = [T.Resize(int(round(size / 0.875))), T.CenterCrop(size), T.ToTensor()]
    if cfg.normalize:
        train_tf.append(T.Normalize(IMAGENET_MEAN, IMAGENET_STD))
        test_tf.append(T.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    if cfg.cutout > 0:
        train_tf.append(_Cutout(cfg.cutout))
    try:
        train_set = torchvision.datasets.ImageFolder(str(root / "train"), T.Compose(train_tf))
        test_set = torchvision.datasets.ImageFolder(str(root / "val"), T.Compose(test_tf))
    except (FileNotFoundError, RuntimeError) as exc:
        raise ValueError(f"{root}: not an ImageNet folder tree ({' '.join(str(exc).split())})") from None
    if train_set.classes != test_set.classes:
        raise ValueError(f"{root}: train/ has {len(train_set.classes)} classes and val/ has "
                         f"{len(test_set.classes)}, or their names differ")
    test_bs = cfg.test_batch_size or cfg.batch_size
    train = FolderBatchLoader(train_set, cfg.batch_size, shuffle=True, seed=seed, rank=rank, world_size=world_size,
                              workers=cfg.workers, pin_memory=pin)
    test = FolderBatchLoader(test_set, test_bs, shuffle=False, seed=seed, rank=rank, world_size=world_size,
                             workers=cfg.workers, pin_memory=pin)
    info = dict(dataset="imagenet", num_classes=len(train_set.classes), image_size=size, input_size=(3, size, size),
                train_size=len(train_set), test_size=len(test_set), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                classes=list(train_set.classes), root=str(root), transform=repr(T.Compose(train_tf)))
    return train, test, info


# ----------------------------------------------------------------------------- entry point

def build_loaders(config: Any, *, device: Union[str, torch.device, None] = None, rank: int = 0,
                  world_size: int = 1, seed: Optional[int] = None) -> Tuple[Any, Any, Dict[str, Any]]:
    """``(train_loader, test_loader, info)`` for ``config`` (a :class:`~osep_nas.config.Config`,
    a mapping or a YAML path; only ``config.data`` and ``training.seed`` are used).

    ``device``: where tensor datasets live and are augmented (default CPU; ignored when
    ``data.on_device`` is false).  ``rank``/``world_size``: DDP sharding.
    With ``data.val_fraction > 0`` the second loader yields a validation part held out of
    the training split and the test split is never read (``info["eval_split"]``).  ``info``
    holds dataset, num_classes, image_size, input_size (C, H, W), train_size, test_size,
    mean, std, classes, root, transform.  Loaders have ``set_epoch``, ``__len__``
    (batches per epoch for this rank), ``state_dict`` and yield ``(x, y)``.
    Raises FileNotFoundError for a missing folder, ValueError for a bad one."""
    from osep_nas.config import Config, load_config

    cfg = config if isinstance(config, Config) else load_config(config)
    d = cfg.data
    seed = cfg.training.seed if seed is None else int(seed)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    if d.batch_size < world_size:
        raise ValueError(f"data.batch_size: the global batch {d.batch_size} is smaller than the {world_size} ranks")
    dev = torch.device(device) if (device is not None and d.on_device) else torch.device("cpu")
    if d.dataset == "imagenet":
        return _imagenet(d, d.image_size or 224, seed, rank, world_size, pin=dev.type == "cuda")

    validate = d.val_fraction > 0
    if d.dataset in _CIFAR:
        spec = _CIFAR[d.dataset]
        tx, ty, vx, vy, classes = load_cifar(d.root, d.dataset, d.download, include_test=not validate)
        size = d.image_size or 32
        if validate:
            keep, held = holdout_split(ty, d.val_fraction)
            tx, ty, vx, vy = tx[keep], ty[keep], tx[held], ty[held]
        if size != 32:  # resize once, keep uint8
            def rs(t: torch.Tensor) -> torch.Tensor:
                out = F.interpolate(t.float(), size=(size, size), mode="bilinear", align_corners=False)
                return out.round_().clamp_(0, 255).to(torch.uint8)
            tx, vx = rs(tx), rs(vx)
        mean, std, num_classes, root = spec["mean"], spec["std"], spec["classes"], str(d.root)
    else:  # digits
        size = d.image_size or 32
        tx, ty, vx, vy = load_digits_tensors(size, d.test_fraction)
        if validate:  # the test part is dropped unread
            keep, held = holdout_split(ty, d.val_fraction)
            tx, ty, vx, vy = tx[keep], ty[keep], tx[held], ty[held]
        m, s = float(tx.mean()), float(tx.std())
        mean, std, num_classes, classes, root = (m, m, m), (s, s, s), 10, [str(i) for i in range(10)], None

    crop = "pad" if d.crop == "auto" else d.crop
    norm_mean, norm_std = (mean, std) if d.normalize else (None, None)
    train_tf = BatchTransform(crop=crop, padding=d.padding, size=size, flip=d.flip, color_jitter=d.color_jitter,
                              mean=norm_mean, std=norm_std, cutout=d.cutout)
    test_tf = BatchTransform(crop="none", size=size, mean=norm_mean, std=norm_std)
    train = TensorBatchLoader(tx, ty, d.batch_size, transform=train_tf, shuffle=True, seed=seed, rank=rank,
                              world_size=world_size, device=dev)
    test = TensorBatchLoader(vx, vy, d.test_batch_size or d.batch_size, transform=test_tf, shuffle=False,
                             seed=seed, rank=rank, world_size=world_size, device=dev)
    info = dict(dataset=d.dataset, num_classes=num_classes, image_size=size, input_size=(3, size, size),
                train_size=len(ty), test_size=len(vy), mean=tuple(mean), std=tuple(std), classes=classes,
                root=root, transform=repr(train_tf), eval_split="validation" if validate else "test")
    return train, test, info
