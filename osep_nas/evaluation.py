"""Evaluation of a classifier on a loader: summed loss and top-1 / top-5 counts."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["evaluate", "split_output", "unwrap", "topk_correct", "pct"]


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def split_output(out: Any) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Logits and auxiliary logits from a model output (tensor or (logits, aux))."""
    if isinstance(out, (tuple, list)):
        if not out or not isinstance(out[0], torch.Tensor):
            raise ValueError("the model returned a sequence whose first item is not the logits tensor")
        aux = out[1] if len(out) > 1 and isinstance(out[1], torch.Tensor) else None
        return out[0], aux
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the model returned a {type(out).__name__}; expected logits or (logits, logits_aux)")
    return out, None


def topk_correct(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return (top == y[:, None]).any(dim=1).sum()


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, device: Union[str, torch.device] = "cpu", amp: bool = False,
             channels_last: bool = False) -> Dict[str, float]:
    """Sums over this rank's shard: {"loss_sum", "top1", "top5", "n"} (counts, not rates)."""
    device = torch.device(device)
    was = model.training
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=device)
    c1 = torch.zeros((), dtype=torch.int64, device=device)
    c5 = torch.zeros((), dtype=torch.int64, device=device)
    n = 0
    try:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                logits, _ = split_output(model(x))
            logits = logits.float()
            loss += F.cross_entropy(logits, y, reduction="sum").double()
            c1 += topk_correct(logits, y, 1)
            c5 += topk_correct(logits, y, 5)
            n += len(y)
    finally:
        model.train(was)
    return {"loss_sum": float(loss), "top1": float(c1), "top5": float(c5), "n": float(n)}


def pct(a: float, n: float) -> Optional[float]:
    return round(100.0 * a / n, 4) if n else None
