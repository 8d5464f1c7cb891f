"""The native narrow grouped convolution against PyTorch's (oneDNN), piece by piece.

Forward, input gradient and weight gradient of the grouped KxK convolutions osep plans
produce (o-ResNet20's layers and a few more), ``F.conv2d`` / ``convolution_backward``
against ``osep_nas.kernels``, medians of interleaved rounds, ratios within the run.

    python benchmarks/narrow_conv.py [--batch 64] [--json out.json]
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from _timing import common_args, machine, setup, time_cases, write_json
from osep_nas import kernels

SHAPES = [  # (channels, inputs per group, outputs per group, pixels)
    (58, 2, 2, 32), (62, 2, 2, 32), (42, 2, 2, 32), (58, 2, 2, 16), (84, 3, 3, 16), (116, 4, 4, 16),
    (232, 4, 4, 8), (32, 1, 2, 32), (96, 6, 6, 16), (232, 8, 8, 8),
]


def main() -> None:
    p = common_args(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    device = setup(args)
    if device.type != "cpu":
        raise SystemExit("the native kernel is a CPU kernel: use --device cpu")
    ext = kernels.load()
    if ext is None:
        raise SystemExit("the native kernel did not build here (needs g++ and ninja)")
    backward = torch.ops.aten.convolution_backward
    cases = {}
    for c, n, m, px in SHAPES:
        g = c // n
        x = torch.randn(args.batch, c, px, px)
        w = torch.randn(g * m, n, 3, 3)
        gy = torch.randn(args.batch, g * m, px, px)
        conf = ([1, 1], [1, 1], g, 1)
        name = f"{c} ch, {n} in/{m} out per group, {px}x{px}"
        cases[(name, "oneDNN", "fwd")] = lambda x=x, w=w, g=g: F.conv2d(x, w, padding=1, groups=g)
        cases[(name, "oneDNN", "grad in")] = lambda x=x, w=w, gy=gy, g=g: backward(
            gy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], g, [True, False, False])
        cases[(name, "oneDNN", "grad w")] = lambda x=x, w=w, gy=gy, g=g: backward(
            gy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], g, [False, True, False])
        cases[(name, "native", "fwd")] = lambda x=x, w=w, conf=conf: ext.forward(x, w, *conf)
        cases[(name, "native", "grad in")] = lambda x=x, w=w, gy=gy, c=conf: ext.backward(gy, x, w, *c, True, False)
        cases[(name, "native", "grad w")] = lambda x=x, w=w, gy=gy, c=conf: ext.backward(gy, x, w, *c, False, True)
    times = time_cases(cases, device, args.repeats, args.warmup)
    print(f"== grouped 3x3 convolution, batch {args.batch}, cpu: ms (fwd / grad input / grad weight = sum) ==")
    print(f"{'shape':<36}{'oneDNN':>26}{'native':>26}{'native/oneDNN':>15}")
    rows = []
    for c, n, m, px in SHAPES:
        name = f"{c} ch, {n} in/{m} out per group, {px}x{px}"
        t = {impl: [times[(name, impl, k)] * 1e3 for k in ("fwd", "grad in", "grad w")]
             for impl in ("oneDNN", "native")}
        cols = {impl: f"{v[0]:.1f} / {v[1]:.1f} / {v[2]:.1f} = {sum(v):.1f}" for impl, v in t.items()}
        ratio = sum(t["native"]) / sum(t["oneDNN"])
        print(f"{name:<36}{cols['oneDNN']:>26}{cols['native']:>26}{ratio:>15.2f}")
        rows.append({"shape": name, "onednn_ms": t["oneDNN"], "native_ms": t["native"], "ratio": ratio})
    if args.json:
        write_json(args.json, {"machine": machine(device), "batch": args.batch, "rows": rows})


if __name__ == "__main__":
    main()
