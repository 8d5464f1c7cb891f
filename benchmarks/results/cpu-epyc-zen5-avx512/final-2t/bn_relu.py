"""BatchNorm2d + ReLU forward+backward (training mode) at o-/d-/conv-ResNet20's stage-1 widths,
NCHW and channels-last, batch 64, 32 x 32: median ms of 15 after 3. Record script of
benchmarks/RESULTS.md (python <this>)."""
import sys

import torch

sys.path[:0] = [".", "benchmarks"]
from _timing import time_cases  # noqa: E402

torch.set_num_threads(2)


def bench(f):
    """Median ms of 15 calls after 3 (benchmarks/_timing.py)."""
    return time_cases({"f": f}, torch.device("cpu"), repeats=15, warmup=3)["f"] * 1e3


for c in (16, 44, 58):
    r = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        bn = torch.nn.BatchNorm2d(c)
        x = torch.randn(64, c, 32, 32).to(memory_format=fmt).requires_grad_()
        gy = torch.randn(64, c, 32, 32).to(memory_format=fmt)
        r.append(bench(lambda: torch.relu(bn(x)).backward(gy)))
    print(f"{c} ch @32: NCHW {r[0]:.2f} ms, channels_last {r[1]:.2f} ms")
