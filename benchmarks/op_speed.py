"""Forward and forward+backward time of conv, dsep and osep layers and of whole ResNet20s.

Layer shapes are those of the paper's widened ResNet20s (Table 6): o-ResNet20 (x3.625:
58/116/232 channels at 32/16/8 pixels) against d-ResNet20 (x2.72: 44/87/174) at about
the same FLOPs, and conventional 16/32/64.  osep runs in its reference form (explicit
shuffle) and its fast form (``OSepConv2d(impl="fast")``), in NCHW and channels-last.
The last rows are whole networks: o-ResNet20 vs d-ResNet20 (matched FLOPs) and ResNet20.

    python benchmarks/op_speed.py --device cpu [--batch 64] [--json out.json]
"""
from __future__ import annotations

import torch
from torch import nn

from _timing import code_paths, common_args, machine, setup, time_cases, write_json
from osep_nas import OSepConv2d, count_flops, create_model
from osep_nas.conv import set_osep_impl
from osep_nas.networks.resnet import make_conv3x3

STAGES = [  # (osep channels, dsep channels, conv channels, pixels)
    (58, 44, 16, 32),
    (116, 87, 32, 16),
    (232, 174, 64, 8),
]


def _layer_cases(batch, device, channels_last, amp):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    cases, flops = {}, {}

    def add(name, module, channels, px):
        module = module.to(device).to(memory_format=fmt)
        x = torch.randn(batch, channels, px, px, device=device).to(memory_format=fmt).requires_grad_()
        flops[name] = count_flops(module, (channels, px, px))

        def fwd(m=module, x=x):
            with torch.no_grad(), torch.autocast(device.type, enabled=amp):
                m(x)

        def fwd_bwd(m=module, x=x):
            with torch.autocast(device.type, enabled=amp):
                y = m(x)
            y.float().sum().backward()
        cases[name + " | fwd"] = fwd
        cases[name + " | fwd+bwd"] = fwd_bwd

    for co, cd, cc, px in STAGES:
        add(f"conv {cc}@{px}", nn.Conv2d(cc, cc, 3, padding=1, bias=False), cc, px)
        add(f"dsep {cd}@{px}", make_conv3x3("dsep", cd, cd), cd, px)
        add(f"osep-ref {co}@{px}", OSepConv2d(co, co, 3, impl="reference"), co, px)
        add(f"osep-fast {co}@{px}", OSepConv2d(co, co, 3, impl="fast"), co, px)
        add(f"sosep-fast {co}@{px}", OSepConv2d(co, co, 3, spatial=True, impl="fast"), co, px)
    return cases, flops


def _net_cases(batch, device, channels_last, amp):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    cases, flops = {}, {}
    y = torch.randint(0, 10, (batch,), device=device)
    for name in ("resnet20", "d_resnet20", "o_resnet20"):
        for impl in (("fast", "reference") if name == "o_resnet20" else ("fast",)):
            model = set_osep_impl(create_model(name), impl).to(device).to(memory_format=fmt)
            label = f"net {name}" + (f" ({impl})" if name == "o_resnet20" else "")
            flops[label] = count_flops(model, (3, 32, 32))
            x = torch.randn(batch, 3, 32, 32, device=device).to(memory_format=fmt)

            def fwd(m=model, x=x):
                with torch.no_grad(), torch.autocast(device.type, enabled=amp):
                    m.eval()(x)

            def step(m=model, x=x):
                m.train()
                with torch.autocast(device.type, enabled=amp):
                    loss = nn.functional.cross_entropy(m(x).float(), y)
                loss.backward()
            cases[label + " | fwd"] = fwd
            cases[label + " | fwd+bwd"] = step
    return cases, flops


def main() -> None:
    p = common_args(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--layers-only", action="store_true")
    args = p.parse_args()
    device = setup(args)
    if device.type == "cpu":
        print(f"code paths: {code_paths()}")
    results = {"machine": machine(device), "batch": args.batch, "amp": args.amp, "rows": []}
    by_format = {}
    for channels_last in (False, True):
        fmt = "channels_last" if channels_last else "nchw"
        cases, flops = _layer_cases(args.batch, device, channels_last, args.amp)
        if not args.layers_only:
            c2, f2 = _net_cases(args.batch, device, channels_last, args.amp)
            cases.update(c2)
            flops.update(f2)
        times = by_format[fmt] = time_cases(cases, device, args.repeats, args.warmup)
        print(f"\n== {fmt}, batch {args.batch}, {device} ==")
        print(f"{'case':<34}{'MFLOPs/img':>12}{'fwd ms':>10}{'fwd+bwd ms':>12}")
        names = sorted({k.split(' | ')[0] for k in times}, key=list(flops).index)
        for n in names:
            f, b = times[n + " | fwd"] * 1e3, times[n + " | fwd+bwd"] * 1e3
            print(f"{n:<34}{flops[n] / 1e6:>12.2f}{f:>10.1f}{b:>12.1f}")
            results["rows"].append({"case": n, "format": fmt, "mflops_per_image": flops[n] / 1e6, "fwd_ms": f,
                                    "fwd_bwd_ms": b})
        print("ratios (same run):")
        for co, cd, cc, px in STAGES:
            for form in ("osep-ref", "osep-fast"):
                a = times[f"{form} {co}@{px} | fwd+bwd"] / times[f"dsep {cd}@{px} | fwd+bwd"]
                print(f"  {form} {co}@{px} / dsep {cd}@{px} fwd+bwd: {a:.2f}")
                results["rows"].append({"ratio": f"{form} {co}@{px} / dsep {cd}@{px}", "format": fmt, "fwd_bwd": a})
        if not args.layers_only:
            for form in ("fast", "reference"):
                for kind in ("fwd", "fwd+bwd"):
                    a = times[f"net o_resnet20 ({form}) | {kind}"] / times[f"net d_resnet20 | {kind}"]
                    print(f"  o-ResNet20 ({form}) / d-ResNet20 {kind}: {a:.2f}")
                    results["rows"].append({"ratio": f"o_resnet20 ({form}) / d_resnet20 {kind}", "format": fmt,
                                            "value": a})
    if not args.layers_only:
        results["goals"] = _print_goals(by_format)
    if args.json:
        write_json(args.json, results)


def _print_goals(by_format: dict) -> list:
    """The whole-network goals of issue 19, each a ratio of two timings of this run."""
    o, d, c = "net o_resnet20 (fast) | fwd+bwd", "net d_resnet20 | fwd+bwd", "net resnet20 | fwd+bwd"
    nchw, cl = by_format["nchw"], by_format["channels_last"]
    goals = [(f"o-ResNet20 / d-ResNet20 fwd+bwd, {f}", t[o] / t[d], 1.0) for f, t in by_format.items()]
    goals += [(f"o-ResNet20 / conv ResNet20 fwd+bwd, {f}", t[o] / t[c], 2.0) for f, t in by_format.items()]
    goals.append(("o-ResNet20 channels_last / NCHW fwd+bwd", cl[o] / nchw[o], 1.0))
    print("\ngoals (ratios of this run; met when <= goal):")
    rows = []
    for name, value, goal in goals:
        print(f"  {name:<44}{value:>6.2f}  goal <= {goal:.1f}  {'met' if value <= goal else 'NOT met'}")
        rows.append({"goal": name, "value": value, "limit": goal, "met": value <= goal})
    return rows


if __name__ == "__main__":
    main()
