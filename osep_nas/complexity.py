"""The one complexity counter of the project: #Params and FLOPs (multiply-adds).

Paper convention: FLOPs are the multiply-adds of convolutions and linear layers for
one image (batch norm, activations, pooling, biases and additions are not counted).
Auxiliary heads are excluded when asked: a submodule whose attribute name starts
with ``auxiliary`` is an auxiliary head (the DARTS convention).

A module may define ``macs(input_shape, output_shape) -> int``; it is then counted
by that method and not entered (``OSepConv2d`` does this, so its fast forms count
the same as the reference form).
"""
from __future__ import annotations

from typing import Iterable, List, Sequence, Set, Tuple, Union

import torch
from torch import nn

AUX_PREFIX = "auxiliary"


def _aux_modules(module: nn.Module) -> List[nn.Module]:
    return [m for name, m in module.named_modules() if name.split(".")[-1].startswith(AUX_PREFIX)]


def count_params(module: nn.Module, exclude_auxiliary: bool = True, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (auxiliary heads excluded by default, as the paper)."""
    skip: Set[int] = set()
    if exclude_auxiliary:
        for aux in _aux_modules(module):
            skip.update(id(p) for p in aux.parameters())
    seen: Set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) in skip or id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def _leaf_macs(m: nn.Module, inp: Tuple[torch.Tensor, ...], out) -> int:
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        k = 1
        for s in m.kernel_size:
            k *= s
        return int(out[0].numel()) * (m.in_channels // m.groups) * k
    if isinstance(m, (nn.ConvTranspose2d,)):
        k = m.kernel_size[0] * m.kernel_size[1]
        return int(inp[0][0].numel()) * (m.out_channels // m.groups) * k
    if isinstance(m, nn.Linear):
        return int(out[0].numel()) * m.in_features
    return 0


def count_flops(
    module: nn.Module,
    input_size: Sequence[int],
    exclude_auxiliary: bool = True,
    device: Union[str, torch.device, None] = None,
) -> int:
    """Multiply-adds of one forward pass for ONE image of ``input_size`` = (C, H, W).

    ``input_size`` may also be (N, C, H, W); the count is per image either way.
    The module runs once in eval mode on zeros (auxiliary heads then do not run;
    with ``exclude_auxiliary=False`` they are run on the features they would get
    in training by calling the module in training mode with batch statistics frozen).
    """
    shape = tuple(int(s) for s in input_size)
    if len(shape) == 3:
        shape = (1,) + shape
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"input_size must be (C, H, W) or (N, C, H, W) with positive sizes, got {tuple(input_size)}")
    if device is None:
        try:
            device = next(module.parameters()).device
        except StopIteration:
            device = "cpu"
    aux = {id(m) for m in _aux_modules(module)} if exclude_auxiliary else set()
    counted_inside: Set[int] = set()
    total = [0]
    handles = []

    def make_hook(m: nn.Module):
        def hook(mod, inp, out):
            if id(mod) in counted_inside:
                return
            if hasattr(mod, "macs"):
                total[0] += int(mod.macs(tuple(inp[0].shape), tuple(out.shape)))
            else:
                total[0] += _leaf_macs(mod, inp, out)
        return hook

    # mark modules that sit inside a macs()-owning module or inside an excluded head
    for name, m in module.named_modules():
        if id(m) in aux or hasattr(m, "macs"):
            for sub in m.modules():
                if sub is not m:
                    counted_inside.add(id(sub))
            if id(m) in aux:
                counted_inside.add(id(m))
    for m in module.modules():
        if id(m) in counted_inside:
            continue
        if hasattr(m, "macs") or isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)):
            handles.append(m.register_forward_hook(make_hook(m)))

    was_training = module.training
    try:
        if exclude_auxiliary:
            module.eval()
        else:
            module.train()
            _freeze_bn(module)
        with torch.no_grad():
            module(torch.zeros(shape, device=device))
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return total[0]  # hooks count per image (out[0], plan per image)


def _freeze_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
