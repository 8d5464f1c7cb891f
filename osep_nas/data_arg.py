"""The one data vocabulary of the command line: ``--data digits|DIR``.

``train``, ``eval --checkpoint``, ``study`` and ``search`` all take ``--data``: ``digits``
(embedded) or a folder whose kind (CIFAR-10, CIFAR-100, ImageFolder) is read from what it
holds; ``--dataset`` is needed only where the folder does not say which (docs/config.md).
This module is light (no torch), so the command line can resolve it before training starts.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional

__all__ = ["DIGITS", "DATA_METAVAR", "DATA_HELP", "FOLDER_DATASETS", "folder_kinds", "resolve_data"]

DIGITS = "digits"
DATA_METAVAR = "digits|DIR"
DATA_HELP = ("'digits' (the embedded data, no download) or a data folder: CIFAR-10/100 python batches or an "
             "ImageNet-style ImageFolder tree (train/, val/); its kind is read from the folder")
FOLDER_DATASETS = ("cifar10", "cifar100", "imagenet")

_FILES = {
    "cifar10": ("cifar-10-batches-py", ["data_batch_1", "test_batch"]),
    "cifar100": ("cifar-100-python", ["train", "test"]),
}


def _has_files(folder: Path, names: List[str]) -> bool:
    return all((folder / n).is_file() for n in names)


def folder_kinds(root: "os.PathLike[str] | str") -> List[str]:
    """The datasets whose files ``root`` holds (possibly several, possibly none)."""
    root = Path(root).expanduser()
    kinds = []
    for name, (sub, files) in _FILES.items():
        if _has_files(root, files) or _has_files(root / sub, files):
            kinds.append(name)
    if (root / "train").is_dir() and (root / "val").is_dir():
        kinds.append("imagenet")
    return kinds


def resolve_data(data: Optional[str], dataset: Optional[str] = None,
                 configured: Optional[str] = None) -> Dict[str, Optional[str]]:
    """``{"dataset": ..., "root": ...}`` for ``--data`` / ``--dataset`` given the dataset a
    config already names (``configured``); only the keys to change.  ValueError (one line,
    naming the right flag) when they contradict each other or the folder's kind cannot
    be told; FileNotFoundError for a folder that does not exist."""
    if dataset is not None and dataset not in FOLDER_DATASETS + (DIGITS,):
        raise ValueError(f"--dataset {dataset!r}: expected one of {', '.join(FOLDER_DATASETS)}")
    if data is None:
        return {} if dataset is None else {"dataset": dataset}
    if data == DIGITS:
        if dataset not in (None, DIGITS):
            raise ValueError(f"--data digits is the embedded data set; --dataset {dataset} needs a folder "
                             f"(--data DIR)")
        return {"dataset": DIGITS, "root": None}
    if dataset == DIGITS:
        raise ValueError(f"--dataset digits takes no folder: give --data digits (not --data {data})")
    root = Path(data).expanduser()
    if dataset is not None:
        return {"dataset": dataset, "root": data}
    if not root.exists():
        if configured in FOLDER_DATASETS:  # the loader says what is missing (or downloads, when asked)
            return {"dataset": configured, "root": data}
        raise FileNotFoundError(f"--data: folder not found: {data} (give 'digits' or a data folder)")
    if not root.is_dir():
        raise ValueError(f"--data: {data} is not a folder (give 'digits' or a data folder)")
    kinds = folder_kinds(root)
    if configured in kinds or (not kinds and configured in FOLDER_DATASETS):
        return {"dataset": configured, "root": data}  # the config's kind, or the loader says what is missing
    if len(kinds) == 1:
        return {"dataset": kinds[0], "root": data}
    if kinds:
        raise ValueError(f"--data: {data} holds {' and '.join(kinds)}; choose one with --dataset "
                         f"{'|'.join(kinds)}")
    raise ValueError(f"--data: cannot tell what {data} holds (no CIFAR-10/100 python batches, no train/ and val/ "
                     f"folders); give --dataset {'|'.join(FOLDER_DATASETS)}")
