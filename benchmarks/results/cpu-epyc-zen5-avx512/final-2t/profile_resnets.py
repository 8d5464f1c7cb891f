"""Where o-ResNet20, d-ResNet20 and ResNet20 spend a training step's fwd+bwd (batch 64, NCHW,
2 threads, malloc kept as osep-nas does): torch.profiler self CPU time per step, by kind of
operator. Record script of benchmarks/RESULTS.md (python <this>, from the project root)."""
import sys
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, ".")
from osep_nas.allocator import keep_freed_memory  # noqa: E402
from osep_nas.models import create_model  # noqa: E402

keep_freed_memory()
torch.set_num_threads(2)
KINDS = [("convolutions (osep kernels, oneDNN, matmul)", ("Narrow", "Fused", "convolution", "bmm", "matmul")),
         ("batch norm", ("batch_norm",)), ("ReLU", ("threshold", "clamp", "relu")),
         ("residual adds, copies, rest", ("",))]
crit = torch.nn.CrossEntropyLoss()
for name in ("resnet20", "d_resnet20", "o_resnet20"):
    m = create_model(name)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    for _ in range(3):
        crit(m(x), y).backward()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            crit(m(x), y).backward()
    per = defaultdict(float)
    for e in prof.key_averages():
        kind = next(k for k, keys in KINDS if any(s in e.key for s in keys))
        per[kind] += e.self_cpu_time_total / 5e3
    total = sum(per.values())
    print(f"{name}: {total:.1f} ms/step (profiled) = " + ", ".join(f"{k} {per[k]:.1f}" for k, _ in KINDS))
