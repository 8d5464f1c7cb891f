"""Images per second of a training step (forward, backward, SGD update).

o-DARTS vs DARTS V2 (CIFAR-10 evaluation networks, batch 96 as the DARTS recipe; and at
8 channels x 5 cells, batch 64, the small networks of the proxy and of the studies) and
o-ResNet20 vs d-ResNet20 vs ResNet20 (batch 128 as the ResNet recipe), auxiliary head
and drop path as in training.  Memory format as the trainer picks it (``--memory-format
auto``: channels-last on CUDA, NCHW on CPU); ``nchw``/``channels_last`` force one.
Ratios are computed within the run.

    python benchmarks/train_throughput.py --device cpu [--json out.json]
"""
from __future__ import annotations

import torch
from torch import nn

from _timing import code_paths, common_args, machine, setup, time_cases, write_json
from osep_nas import create_model

GROUPS = {  # models, batch, keywords of create_model
    "darts": (("darts_v2_cifar", "o_darts_cifar"), 96, {}),
    # the small networks of the proxy and of the search-to-retrain study (8 channels x 5 cells)
    "darts-8x5": (("darts_v2_cifar", "o_darts_cifar"), 64, {"init_channels": 8, "layers": 5}),
    "resnet": (("resnet20", "d_resnet20", "o_resnet20"), 128, {}),
}
#: goal of issue 19: the osep network's training step no slower than its baseline
GOALS = {"darts": ("o_darts_cifar", 1.0), "darts-8x5": ("o_darts_cifar", 1.0), "resnet": ("o_resnet20", 1.0)}


def _step(model: nn.Module, batch: int, device: torch.device, amp: bool, fmt: torch.memory_format):
    model = model.to(device).to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    x = torch.randn(batch, 3, 32, 32, device=device).to(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=amp):
            out = model(x)
            logits, aux = out if isinstance(out, tuple) else (out, None)
            loss = nn.functional.cross_entropy(logits.float(), y)
            if aux is not None:
                loss = loss + 0.4 * nn.functional.cross_entropy(aux.float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return step


def main() -> None:
    p = common_args(__doc__.splitlines()[0])
    p.add_argument("--groups", nargs="+", choices=sorted(GROUPS), default=sorted(GROUPS))
    p.add_argument("--darts-batch", type=int, default=None, help="override the batch of both DARTS groups (96 and 64)")
    p.add_argument("--resnet-batch", type=int, default=None, help="override the ResNet batch (128)")
    p.add_argument("--memory-format", choices=("auto", "nchw", "channels_last"), default="auto",
                   help="auto: channels-last on CUDA, NCHW on CPU (what osep_nas.train does)")
    args = p.parse_args()
    device = setup(args)
    cl = args.memory_format == "channels_last" or (args.memory_format == "auto" and device.type == "cuda")
    fmt = torch.channels_last if cl else torch.contiguous_format
    if device.type == "cpu":
        print(f"code paths: {code_paths()}")
    results = {"machine": machine(device), "amp": args.amp, "memory_format": "channels_last" if cl else "nchw",
               "rows": []}
    for group in args.groups:
        names, batch, size = GROUPS[group]
        batch = getattr(args, f"{group.split('-')[0]}_batch") or batch
        cases = {}
        for name in names:
            kw = {"auxiliary": True, "drop_path_prob": 0.2, **size} if "darts" in name else {}
            cases[name] = _step(create_model(name, **kw), batch, device, args.amp, fmt)
        times = time_cases(cases, device, args.repeats, args.warmup)
        base = names[0] if group.startswith("darts") else "d_resnet20"
        size_note = f", {size['init_channels']} ch x {size['layers']} cells" if size else ""
        print(f"\n== {group}: training step{size_note}, batch {batch}, {device}, {results['memory_format']}"
              f"{', AMP' if args.amp else ''} ==")
        print(f"{'model':<18}{'step ms':>10}{'images/s':>10}  {'time vs ' + base}")
        for name in names:
            t = times[name]
            print(f"{name:<18}{t * 1e3:>10.1f}{batch / t:>10.1f}{t / times[base]:>18.2f}")
            results["rows"].append({"model": name, "batch": batch, "step_ms": t * 1e3, "images_per_s": batch / t,
                                    "time_ratio_to": base, "ratio": t / times[base]})
        model, goal = GOALS[group]
        ratio = times[model] / times[base]
        print(f"goal: {model} / {base} <= {goal:.1f}: {ratio:.2f}, {'met' if ratio <= goal else 'NOT met'}")
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
