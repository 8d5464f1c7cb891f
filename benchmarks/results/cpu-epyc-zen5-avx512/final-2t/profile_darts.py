"""Where o-DARTS and DARTS V2 (CIFAR evaluation networks, auxiliary head, drop path 0.2) spend
a training step's fwd+bwd at batch 96 (2 threads, malloc kept as osep-nas does): torch.profiler
self CPU time of one step after one warm-up, by kind of operator. Record script of
benchmarks/RESULTS.md (python <this>, from the project root)."""
import sys
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, ".")
from osep_nas.allocator import keep_freed_memory  # noqa: E402
from osep_nas.models import create_model  # noqa: E402

keep_freed_memory()
torch.set_num_threads(2)
KINDS = [("osep kernels", ("Narrow", "Fused", "bmm")), ("oneDNN convolutions", ("convolution",)),
         ("batch norm", ("batch_norm",)), ("ReLU", ("threshold", "clamp", "relu")), ("pooling", ("pool",)),
         ("rest", ("",))]
crit = torch.nn.CrossEntropyLoss()
for name in ("darts_v2_cifar", "o_darts_cifar"):
    m = create_model(name, auxiliary=True, drop_path_prob=0.2)
    x, y = torch.randn(96, 3, 32, 32), torch.randint(0, 10, (96,))

    def step():
        out = m(x)
        crit(out[0] if isinstance(out, tuple) else out, y).backward()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    per = defaultdict(float)
    for e in prof.key_averages():
        kind = next(k for k, keys in KINDS if any(s in e.key for s in keys))
        per[kind] += e.self_cpu_time_total / 1e3
    print(f"{name} (C={m.init_channels if hasattr(m, 'init_channels') else '?'}): {sum(per.values()):.0f} ms = "
          + ", ".join(f"{k} {per[k]:.0f}" for k, _ in KINDS))
