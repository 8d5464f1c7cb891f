"""BatchNorm2d + ReLU forward+backward (training mode) at o-/d-/conv-ResNet20's stage-1 widths,
NCHW and channels-last, batch 64, 32 x 32: median ms of 15 after 3. Record script of
benchmarks/RESULTS.md (python <this>)."""
import time

import torch

torch.set_num_threads(2)


def bench(f, n=15):
    for _ in range(3):
        f()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2] * 1e3


for c in (16, 44, 58):
    r = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        bn = torch.nn.BatchNorm2d(c)
        x = torch.randn(64, c, 32, 32).to(memory_format=fmt).requires_grad_()
        gy = torch.randn(64, c, 32, 32).to(memory_format=fmt)
        r.append(bench(lambda: torch.relu(bn(x)).backward(gy)))
    print(f"{c} ch @32: NCHW {r[0]:.2f} ms, channels_last {r[1]:.2f} ms")
