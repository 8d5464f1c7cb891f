"""The process around a training run: distributed set-up, determinism, seeding, progress bars."""
from __future__ import annotations

import contextlib
import os
import random
import sys
from typing import Any, Iterator, List, Tuple

import numpy as np
import torch

__all__ = ["Dist", "setup_distributed", "determinism", "seed_all", "progress_bar"]


class Dist:
    def __init__(self) -> None:
        self.rank, self.world_size, self.local_rank = 0, 1, 0
        self.enabled = False
        self.owned = False

    def all_sum(self, values: List[float], device: torch.device) -> List[float]:
        if not self.enabled:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj: Any) -> List[Any]:
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: List[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def setup_distributed(device_pref: str) -> Tuple[Dist, torch.device]:
    d = Dist()
    env = os.environ
    cuda = torch.cuda.is_available() and device_pref != "cpu"
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise ValueError("training.device: cuda requested but no CUDA device is available")
    if all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")) and int(env["WORLD_SIZE"]) > 1:
        import torch.distributed as dist

        d.rank, d.world_size, d.local_rank = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"])
        d.enabled = True
        if cuda:
            torch.cuda.set_device(d.local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if cuda else "gloo")
            d.owned = True
        device = torch.device("cuda", d.local_rank) if cuda else torch.device("cpu")
    else:
        device = torch.device("cuda") if cuda else torch.device("cpu")
    return d, device


@contextlib.contextmanager
def determinism(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic algorithms for the run; previous global settings restored after."""
    prev = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    want = prev[:2]
    try:
        if enabled:
            if device.type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                want = (True, True)
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
            else:
                want = (True, False)
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if want != prev[:2]:  # the call is slow the first time (it imports the compiler stack)
            torch.use_deterministic_algorithms(want[0], warn_only=want[1])
        yield
    finally:
        if want != prev[:2]:
            torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev[2], prev[3]


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NullBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)
