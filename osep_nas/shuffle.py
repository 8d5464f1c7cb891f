"""The ShuffleNet channel shuffle between two grouped convolutions: as an index
permutation (for planning and weight folding) and on an NCHW tensor (for the module
and the native kernel's fallback).  Needs numpy only; torch tensors are used through
their methods."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["shuffle_permutation", "channel_shuffle"]


def shuffle_permutation(channels: int, groups: int) -> np.ndarray:
    """Index array p such that ``shuffled = x[:, p]`` is the ShuffleNet channel shuffle.

    Viewing the channels as a (groups, channels/groups) grid and reading it column
    by column: new position j * groups + i takes old channel i * (channels/groups) + j.
    """
    per = channels // groups
    return np.arange(channels).reshape(groups, per).T.reshape(-1)


def channel_shuffle(x: "torch.Tensor", groups: int) -> "torch.Tensor":
    """ShuffleNet channel shuffle of an NCHW tensor (the permutation of :func:`shuffle_permutation`)."""
    if groups == 1:
        return x
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)
