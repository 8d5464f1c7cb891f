"""Loaders with per-epoch seeding and DDP sharding: the index plan of one rank, tensor
datasets held in memory, and ImageFolder datasets read by DataLoader workers.

``batch_size`` is the GLOBAL batch.  Every rank draws the same global permutation and
takes its part of each global batch (sizes differ by at most one when the batch does
not divide); a last global batch smaller than the number of ranks is dropped.
Evaluation splits the data into contiguous per-rank shards.  A loader's state is its
seed and epoch, so a resumed run sees exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch

from osep_nas.data.augment import BatchTransform, derive_seed

__all__ = ["rank_batches", "TensorBatchLoader", "FolderBatchLoader"]


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

