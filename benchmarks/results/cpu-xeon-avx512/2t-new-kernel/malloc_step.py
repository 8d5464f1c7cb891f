import torch, time
from osep_nas import create_model
torch.set_num_threads(2); torch.manual_seed(0)
x = torch.randn(32, 3, 32, 32)
res = {}
for name in ("o_darts_cifar", "darts_v2_cifar"):
    m = create_model(name, num_classes=10); m.train()
    def step():
        out = m(x); out = out[0] if isinstance(out, tuple) else out
        out.sum().backward()
    step()
    ts = []
    for _ in range(3):
        a = time.perf_counter(); step(); ts.append(time.perf_counter() - a)
    res[name] = sorted(ts)[1]
print({k: round(v, 3) for k, v in res.items()}, "ratio", round(res["o_darts_cifar"] / res["darts_v2_cifar"], 3))
