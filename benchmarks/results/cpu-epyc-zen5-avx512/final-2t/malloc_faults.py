"""Page faults and time per o/d/conv-ResNet20 training step (fwd+bwd), malloc as started or
kept (MALLOPT="trim mmap": the settings of osep_nas.allocator, in its order). Record script of
benchmarks/RESULTS.md; run from the project root: python <this> o d c"""
import ctypes
import os
import resource
import sys
import time

import torch

sys.path.insert(0, ".")
from osep_nas.models import create_model  # noqa: E402

torch.set_num_threads(2)
if "mmap" in os.environ.get("MALLOPT", ""):
    ctypes.CDLL("libc.so.6").mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD first (trim alone would mmap every block)
if "trim" in os.environ.get("MALLOPT", ""):
    ctypes.CDLL("libc.so.6").mallopt(-1, 2 ** 31 - 1)  # M_TRIM_THRESHOLD
for name in sys.argv[1:]:
    m = create_model({"o": "o_resnet20", "d": "d_resnet20", "c": "resnet20"}[name])
    x = torch.randn(64, 3, 32, 32)
    for _ in range(3):
        m(x).sum().backward()
    ts = []
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        t = time.perf_counter()
        m(x).sum().backward()
        ts.append(time.perf_counter() - t)
    f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ts.sort()
    print(name, f"{ts[5] * 1e3:.1f} ms  minor faults/iter {(f1 - f0) / 10:.0f}")
