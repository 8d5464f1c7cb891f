"""``osep-nas plan``: the osep plan of one convolution shape, beside conv and dsep."""
from __future__ import annotations

import argparse
import json
from typing import Dict, List

from osep_nas.plan import POLICIES, ROUNDINGS, OSepPlan, osep_plan

HELP = "plan an osep convolution and compare #Params/FLOPs with conv and dsep"
DESCRIPTION = (
    "Print the optimized separable convolution that replaces a C_IN -> C_OUT KxK convolution "
    "(Algorithm 1 of the paper): per-convolution channels, kernels and groups, its #Params and "
    "FLOPs (multiply-adds at --size x --size, stride 1) beside the conventional and the depth "
    "separable convolution of the same shape, and Algorithm 1's real-valued minimum N*t."
)


def _n_convs(text: str):
    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2 or 'auto', got {text!r}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("in_channels", type=int, metavar="C_IN", help="input channels")
    p.add_argument("out_channels", type=int, metavar="C_OUT", help="output channels")
    p.add_argument("kernel_size", type=int, metavar="K", help="kernel size (KxK)")
    p.add_argument("--n-convs", type=_n_convs, default=2, metavar="N|auto",
                   help="number of separated convolutions; 'auto' = round(ln(gamma C K^2))")
    p.add_argument("--gamma", type=float, default=1.0, help="overlap coefficient (>= 1 keeps the volumetric receptive field)")
    p.add_argument("--policy", choices=POLICIES, default="normal", help="internal channel policy")
    p.add_argument("--spatial", action="store_true", help="spatial osep: Kx1 then 1xK")
    p.add_argument("--dilation", type=int, default=1, help="dilation of the kernel")
    p.add_argument("--rounding", choices=ROUNDINGS, default="divisor",
                   help="integer group choice: exact divisor search (no copies) or the paper's ceil + padding")
    p.add_argument("--size", type=int, default=32, metavar="H", help="feature map height = width for FLOPs")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def comparison(plan: OSepPlan, size: int) -> List[Dict[str, object]]:
    """#Params and FLOPs of conv, dsep and osep for the plan's shape at size x size."""
    c_in, c_out = plan.in_channels, plan.out_channels
    kh, kw = plan.kernel_size
    hw = size * size
    conv = c_in * c_out * kh * kw
    dsep = c_in * kh * kw + c_in * c_out
    return [
        {"kind": "conv", "params": conv, "flops": conv * hw},
        {"kind": "dsep", "params": dsep, "flops": dsep * hw},
        {"kind": "osep", "params": plan.params, "flops": plan.flops(size, size)},
    ]


def run(args: argparse.Namespace) -> int:
    if args.size < 1:
        raise ValueError(f"--size must be a positive integer, got {args.size}")
    plan = osep_plan(args.in_channels, args.out_channels, args.kernel_size, n_convs=args.n_convs,
                     gamma=args.gamma, channel_policy=args.policy, spatial=args.spatial,
                     dilation=args.dilation, rounding=args.rounding)
    rows = comparison(plan, args.size)
    if args.json:
        print(json.dumps({
            "in_channels": plan.in_channels, "out_channels": plan.out_channels,
            "kernel_size": list(plan.kernel_size), "n_convs": plan.n_convs, "gamma": plan.gamma,
            "policy": plan.channel_policy, "spatial": plan.spatial, "rounding": plan.rounding,
            "channels": list(plan.channels), "kernels": [list(k) for k in plan.kernels],
            "groups": list(plan.groups), "algorithm_groups": list(plan.algorithm_groups),
            "params": plan.params, "ideal_params": plan.ideal_params,
            "fully_connected": plan.is_fully_connected(), "comparison": rows,
        }))
        return 0
    kh, kw = plan.kernel_size
    print(f"osep plan for a {kh}x{kw} convolution {plan.in_channels} -> {plan.out_channels} "
          f"(N={plan.n_convs}, gamma={plan.gamma:g}, policy={plan.channel_policy}, "
          f"{'spatial, ' if plan.spatial else ''}rounding={plan.rounding})")
    for line in plan.describe().splitlines():
        print("  " + line)
    if plan.algorithm_groups != plan.groups:
        print(f"  Algorithm 1's ceil'd groups {plan.algorithm_groups}; groups seeing only padding are not built")
    if plan.input_padding or plan.output_padding:
        print(f"  padding: +{plan.input_padding} input channels, +{plan.output_padding} output channels (dropped)")
    full = plan.is_fully_connected()
    print(f"  every output channel sees every input channel: {'yes' if full else 'no'}"
          + ("" if full or plan.gamma >= 1 else f" (gamma={plan.gamma:g} < 1 trades connectivity for #Params)"))
    ratio = plan.params / plan.ideal_params
    print(f"  Algorithm 1 real-valued minimum N*t = {plan.ideal_params:,.0f}; this plan = {ratio:.3f} x that")
    print()
    conv_params = rows[0]["params"]
    print(f"  {'kind':<6}{'#Params':>12}{'FLOPs@' + str(args.size) + 'x' + str(args.size):>16}{'vs conv':>10}")
    for r in rows:
        print(f"  {r['kind']:<6}{r['params']:>12,}{r['flops']:>16,}{r['params'] / conv_params:>10.3f}")
    return 0
