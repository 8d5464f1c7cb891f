"""One osep layer, fused native pass against its two (tuned) steps, forward+backward, batch 64,
2 threads, malloc kept as osep-nas does: median ms of 15 after 3; the ratio within the run.
Record script of benchmarks/RESULTS.md (python <this>, from the project root)."""
import sys

import torch

sys.path[:0] = [".", "benchmarks"]
from _timing import time_cases  # noqa: E402

from osep_nas import kernels  # noqa: E402
from osep_nas.allocator import keep_freed_memory  # noqa: E402
from osep_nas.conv import OSepConv2d  # noqa: E402

keep_freed_memory()
torch.set_num_threads(2)


def bench(f):
    """Median ms of 15 calls after 3 (benchmarks/_timing.py)."""
    return time_cases({"f": f}, torch.device("cpu"), repeats=15, warmup=3)["f"] * 1e3


print("layer (channels@pixels; groups KxK/1x1)      two steps ms   fused ms   fused/two steps")
for c, px in [(58, 32), (116, 16), (232, 8), (42, 32), (84, 16), (168, 8), (8, 32)]:
    m = OSepConv2d(c, c, 3)
    first, second = m.convs
    x = torch.randn(64, c, px, px, requires_grad=True)
    gy = torch.randn(64, c, px, px)
    steps = bench(lambda: m._forward_steps(x, [first.weight, second.weight]).backward(gy))
    fused = bench(lambda: kernels.fused_osep(x, first.weight, second.weight, first.padding, first.dilation,
                                             first.groups, second.groups).backward(gy))
    print(f"{c}@{px} ({first.groups}/{second.groups}){'':<28}{steps:>10.2f}{fused:>11.2f}{fused / steps:>18.2f}")
