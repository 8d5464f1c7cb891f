import torch, sys
from osep_nas import create_model
torch.set_num_threads(2)
torch.manual_seed(0)
for name in ("o_darts_cifar", "darts_v2_cifar"):
    m = create_model(name, num_classes=10)
    m.train()
    x = torch.randn(32, 3, 32, 32)
    def step():
        out = m(x)
        out = out[0] if isinstance(out, tuple) else out
        out.sum().backward()
    step()
    with torch.profiler.profile() as p:
        step(); step()
    print("==", name)
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40))
