"""Datasets and loaders: CIFAR-10/100 python batches, ImageNet folders, sklearn digits.

One entry point, :func:`build_loaders`.  Tensor datasets (CIFAR, digits) are held
whole in memory as one tensor (on the training device when ``data.on_device``) and
augmented batch-wise on that device by :class:`BatchTransform`, with every random
draw taken from a ``torch.Generator`` seeded from (seed, epoch, rank): a run is
reproducible, a resumed run sees the batches an uninterrupted run would, and on CUDA
the loader never waits for CPU workers.

Modules: ``unpickle`` (safe unpickling), ``datasets`` (CIFAR, digits, the validation
split), ``augment`` (batch transforms, seeds), ``loaders`` (sharded, seeded loaders);
this module builds them from a config.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from osep_nas.data.augment import BatchTransform, Cutout, derive_seed
from osep_nas.data.datasets import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, CIFAR_SPECS,
                                    DIGITS_SPLIT_SEED, IMAGENET_MEAN, IMAGENET_STD, VAL_SPLIT_SEED, holdout_split,
                                    load_cifar, load_digits_tensors, read_cifar_batch)
from osep_nas.data.loaders import FolderBatchLoader, TensorBatchLoader, rank_batches
from osep_nas.data.unpickle import safe_unpickle

__all__ = [
    "build_loaders", "TensorBatchLoader", "FolderBatchLoader", "BatchTransform",
    "load_cifar", "load_digits_tensors", "read_cifar_batch", "safe_unpickle",
    "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "IMAGENET_MEAN", "IMAGENET_STD",
    "DIGITS_SPLIT_SEED", "VAL_SPLIT_SEED", "holdout_split", "derive_seed", "rank_batches",
]


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
        train_tf.append(Cutout(cfg.cutout))
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
    if d.dataset in CIFAR_SPECS:
        spec = CIFAR_SPECS[d.dataset]
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
