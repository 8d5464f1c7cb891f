"""Datasets held as tensors: CIFAR-10/100 python batches, scikit-learn's digits, and the
fixed stratified validation split carved out of a training split."""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, List, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from osep_nas.data.unpickle import safe_unpickle

__all__ = ["load_cifar", "read_cifar_batch", "load_digits_tensors", "holdout_split", "CIFAR_SPECS",
           "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "IMAGENET_MEAN", "IMAGENET_STD",
           "DIGITS_SPLIT_SEED", "VAL_SPLIT_SEED"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DIGITS_SPLIT_SEED = 0  # the digits train/test split never changes with training.seed
VAL_SPLIT_SEED = 0  # nor does the validation part held out of a training split

CIFAR_SPECS = {
    "cifar10": dict(folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)],
                    test=["test_batch"], label_key="labels", classes=10, meta="batches.meta",
                    names_key="label_names", mean=CIFAR10_MEAN, std=CIFAR10_STD, title="CIFAR-10"),
    "cifar100": dict(folder="cifar-100-python", train=["train"], test=["test"], label_key="fine_labels",
                     classes=100, meta="meta", names_key="fine_label_names", mean=CIFAR100_MEAN,
                     std=CIFAR100_STD, title="CIFAR-100"),
}


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
    spec = CIFAR_SPECS[dataset]
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
    spec = CIFAR_SPECS[dataset]
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

