"""Synchronized BatchNorm2d for CPU (gloo) data-parallel training.

PyTorch's ``nn.SyncBatchNorm`` runs on CUDA tensors only.  :class:`SyncBatchNorm2d` does the
same with plain collectives: in training mode with more than one rank, one differentiable
all-reduce of per-channel (count, sum, sum of squares) gives the global mean and variance
(running statistics: ``nn.BatchNorm2d``'s momentum rule), so a DDP step equals one process
stepping on the global batch.  In eval mode or without a process group it is exactly
``nn.BatchNorm2d``, with the same ``state_dict`` keys.  :func:`convert_sync_batchnorm` swaps
every ``nn.BatchNorm2d`` of a model in place.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["SyncBatchNorm2d", "convert_sync_batchnorm", "all_reduce_sum"]


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks of ``group``; the gradient is the sum of the ranks' gradients.

    Same as ``torch.distributed.nn.functional.all_reduce`` (which warns as deprecated
    from torch 2.9 on, at every call)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Optional[Any]) -> torch.Tensor:  # type: ignore[override]
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[torch.Tensor, None]:  # type: ignore[override]
        return _AllReduceSum.apply(grad, ctx.group), None


def all_reduce_sum(tensor: torch.Tensor, group: Optional[Any] = None) -> torch.Tensor:
    """Differentiable all-reduce (sum) of ``tensor`` over ``group`` (default: the world)."""
    return _AllReduceSum.apply(tensor, group)


def _world_size(group: Optional[Any]) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training-mode batch statistics span all ranks of
    ``process_group`` (default: the world); see the module docstring."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group: Optional[Any] = None,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.process_group = process_group

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or _world_size(self.process_group) <= 1:
            return super().forward(input)
        self._check_input_dim(input)
        return self._sync_forward(input)

    def _sync_forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        dims = [0, 2, 3]
        n_local = x.numel() // c if c else 0
        if n_local > 0:  # local moments (stable), then sums in float64 so the reduction loses nothing
            var_l, mean_l = torch.var_mean(x, dim=dims, correction=0)
            mean_l, var_l = mean_l.double(), var_l.double()
        else:
            mean_l = var_l = x.new_zeros(c, dtype=torch.float64) + x.sum() * 0  # keeps x in the graph
        stats = torch.cat([mean_l * n_local, (var_l + mean_l * mean_l) * n_local,
                           torch.full((1,), float(n_local), dtype=torch.float64, device=x.device)])
        stats = all_reduce_sum(stats, self.process_group)
        count = float(stats[-1].detach())
        if count <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got {int(count)} "
                             f"over all ranks (input size {list(x.shape)})")
        mean = stats[:c] / count
        var = (stats[c:2 * c] / count - mean * mean).clamp_min(0.0)
        if self.track_running_stats and self.num_batches_tracked is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                if self.running_mean is not None and self.running_var is not None:
                    self.running_mean.mul_(1.0 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
                    unbiased = var * (count / (count - 1.0))
                    self.running_var.mul_(1.0 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        shape = (1, c, 1, 1)
        invstd = torch.rsqrt(var + self.eps).to(x.dtype)
        y = (x - mean.to(x.dtype).view(shape)) * invstd.view(shape)
        if self.weight is not None:
            y = y * self.weight.to(x.dtype).view(shape)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype).view(shape)
        return y


def convert_sync_batchnorm(module: nn.Module, process_group: Optional[Any] = None) -> nn.Module:
    """``module`` with every ``nn.BatchNorm2d`` replaced by :class:`SyncBatchNorm2d`.

    The new layers reuse the old parameter and buffer tensors (an optimizer built on the
    model keeps working) and keep eps, momentum, affine, track_running_stats and the
    training flag; ``state_dict`` keys are unchanged.  Returns the converted module (a new
    object when ``module`` itself is a BatchNorm2d, else ``module`` changed in place)."""
    out = module
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, SyncBatchNorm2d):
        out = SyncBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats, process_group)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        if hasattr(module, "qconfig"):
            out.qconfig = module.qconfig
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, process_group))
    return out
