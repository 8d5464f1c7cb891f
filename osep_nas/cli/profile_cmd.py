"""``osep-nas profile``: #Params, FLOPs and forward latency of registered models.

#Params exclude auxiliary heads; FLOPs are multiply-adds of one image at the model's
input size (32x32 CIFAR, 224x224 ImageNet), both from the project's one counter.
Latency is the median wall time of a forward pass (eval mode, no grad) after warm-up.
``--paper`` adds the paper's figures (``osep_nas.reference``) and our/paper ratios.

The measuring functions (``profile_model``, ``measure_latency``, ``format_table``) are
shared with ``osep-nas eval``.
"""
from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

HELP = "#Params, FLOPs and latency of models, optionally beside the paper's figures"
DESCRIPTION = (
    "Print a table of #Params (auxiliary heads excluded), FLOPs (multiply-adds of one image at the model's "
    "input size) and measured forward latency for registered models (default: the paper's ResNets in conv, "
    "o- and d- forms, DARTS V2 and o-DARTS on CIFAR-10 and ImageNet, MobileNet and o-MobileNet). "
    "Names are registry names (see --list); 'o-ResNet20' is read as o_resnet20."
)

DEFAULT_MODELS: List[str] = [
    f"{prefix}resnet{d}" for d in (20, 32, 56, 110) for prefix in ("", "o_", "d_")
] + ["darts_v2_cifar", "o_darts_cifar", "darts_v2_imagenet", "o_darts_imagenet", "mobilenet", "o_mobilenet"]

DEFAULT_BATCH_SIZES = (1, 64)
#: CPU default: skip a (model, batch) above this many G multiply-adds (ResNet20/32 at batch 64 fit, ResNet56 does not)
DEFAULT_CPU_MAX_GMACS = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="models to profile (default: the paper's set)")
    parser.add_argument("--paper", action="store_true", help="add the paper's #Params/FLOPs and the ratio ours/paper")
    parser.add_argument("--rounding", choices=("divisor", "paper"), default=None,
                        help="osep group rounding for every model (default: the models' own, 'divisor')")
    parser.add_argument("--shortcut", choices=("A", "B"), default=None,
                        help="ResNet shortcuts at the stage transitions: A zero padding (He et al., the "
                             "models' default) or B 1x1 projection (what the paper's o-ResNet rows contain; "
                             "--rounding paper --shortcut B reproduces Table 6's o-ResNet figures)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device for the latency")
    add_latency_arguments(parser)
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the rows as JSON to FILE")
    parser.add_argument("--list", action="store_true", help="list the registered model names and exit")


def add_latency_arguments(parser: argparse.ArgumentParser) -> None:
    """The latency options shared by ``profile`` and ``eval``."""
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, metavar="B",
                        help="batch sizes to time, all of them forced (default 1 64, on the CPU only those "
                             "within --cpu-max-gmacs)")
    parser.add_argument("--cpu-max-gmacs", type=float, default=DEFAULT_CPU_MAX_GMACS,
                        help="with the default batch sizes on the CPU, skip a batch whose multiply-adds "
                             "(batch x FLOPs, in G) exceed this (batch 64 of DARTS or ImageNet models: ~34 G)")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed forward passes before timing")
    parser.add_argument("--repeats", type=int, default=10, help="timed forward passes (the median is reported)")
    parser.add_argument("--max-seconds", type=float, default=2.0,
                        help="timing budget of one (model, batch): past it timing stops once three passes "
                             "are done (one if a single pass takes longer)")


# -- measuring ---------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)``; ValueError if CUDA is asked for and absent."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available to this torch build")
    return torch.device(name)


def measure_latency(model: nn.Module, input_size: Sequence[int], batch_size: int, device: torch.device,
                    warmup: int = 2, repeats: int = 10, max_seconds: float = 2.0) -> float:
    """Median seconds of one forward pass of a ``batch_size`` batch (eval mode, no grad).

    Runs ``warmup`` untimed passes (at least one), then up to ``repeats`` timed ones;
    past ``max_seconds`` timing stops once it has three passes (one when a single pass
    takes longer than ``max_seconds``).
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    was_training = model.training
    model.eval()
    x = torch.randn((batch_size,) + tuple(input_size), device=device)
    times: List[float] = []
    try:
        with torch.inference_mode():
            for _ in range(max(1, warmup)):
                model(x)
            _sync(device)
            start = time.perf_counter()
            for _ in range(max(1, repeats)):
                t0 = time.perf_counter()
                model(x)
                _sync(device)
                times.append(time.perf_counter() - t0)
                elapsed = time.perf_counter() - start
                if elapsed > max_seconds and (len(times) >= 3 or times[0] > max_seconds):
                    break
    finally:
        model.train(was_training)
    return statistics.median(times)


def check_latency_arguments(args: argparse.Namespace) -> None:
    """ValueError naming the first bad latency option."""
    for flag, lo in (("warmup", 0), ("repeats", 1), ("max_seconds", 0), ("cpu_max_gmacs", 0)):
        value = getattr(args, flag)
        if not value >= lo:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= {lo}, got {value}")
    for b in args.batch_sizes or ():
        if b < 1:
            raise ValueError(f"--batch-sizes must be positive, got {b}")


def latency_batch_sizes(args: argparse.Namespace, flops: int, device: torch.device) -> List[int]:
    """Batch sizes to time for a model of ``flops`` multiply-adds per image.

    ``--batch-sizes`` as given; else 1 and 64, on the CPU without those whose
    batch x FLOPs exceed ``--cpu-max-gmacs`` (batch 1 is always kept).
    """
    if getattr(args, "no_latency", False):
        return []
    if args.batch_sizes:
        return list(dict.fromkeys(args.batch_sizes))
    if device.type == "cpu":
        budget = getattr(args, "cpu_max_gmacs", DEFAULT_CPU_MAX_GMACS) * 1e9
        return [b for b in DEFAULT_BATCH_SIZES if b == 1 or b * flops <= budget]
    return list(DEFAULT_BATCH_SIZES)


def profile_model(model: nn.Module, input_size: Sequence[int], name: str = "", device: Optional[torch.device] = None,
                  batch_sizes: Union[Sequence[int], Callable[[int], Sequence[int]]] = (), warmup: int = 2,
                  repeats: int = 10, max_seconds: float = 2.0) -> Dict[str, Any]:
    """One table row: name, input, #Params, FLOPs and latency (ms) per batch size.

    ``batch_sizes`` may be a function of the FLOPs per image.
    """
    from osep_nas.complexity import count_flops, count_params

    device = device or torch.device("cpu")
    params = count_params(model)
    flops = count_flops(model.to("cpu"), tuple(input_size), device="cpu")
    row: Dict[str, Any] = {
        "model": name or type(model).__name__,
        "input": "x".join(str(s) for s in input_size[-2:]),
        "params": params,
        "params_m": params / 1e6,
        "flops": flops,
        "flops_g": flops / 1e9,
        "latency_ms": {},
    }
    if callable(batch_sizes):
        batch_sizes = batch_sizes(flops)
    if batch_sizes:
        model.to(device)
        for b in batch_sizes:
            row["latency_ms"][str(b)] = 1e3 * measure_latency(model, input_size, b, device, warmup, repeats,
                                                              max_seconds)
        model.to("cpu")
    return row


def add_paper_columns(row: Dict[str, Any], name: str) -> None:
    """Attach the paper's figures for ``name`` (if any) and the ratios ours/paper."""
    from osep_nas.reference import paper_figure

    fig = paper_figure(name)
    if fig is None:
        return
    row["paper"] = {"label": fig.label, "source": fig.source, "width": fig.width, "params_m": fig.params_m,
                    "flops_g": fig.flops_g, "accuracy": fig.accuracy}
    row["params_ratio"] = row["params_m"] / fig.params_m
    row["flops_ratio"] = row["flops_g"] / fig.flops_g


def describe_width(model: nn.Module) -> str:
    """The width the model was built with, as the paper states it (multiplier or channels x cells)."""
    if hasattr(model, "init_channels"):  # a DARTS network
        return f"{model.init_channels} ch x {model.layers}"
    mult = getattr(model, "width_mult", None)
    return f"{mult:g}" if mult is not None else ""


# -- output ----------------------------------------------------------------------------
def _fmt(value: Optional[float], digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def format_table(rows: List[Dict[str, Any]], paper: bool = False) -> str:
    """Fixed-width text table of profile rows."""
    batches: List[str] = []
    for r in rows:
        for b in r.get("latency_ms", {}):
            if b not in batches:
                batches.append(b)
    batches.sort(key=int)
    head = ["model", "input", "width", "#Params (M)", "FLOPs (G)"] + [f"ms @ b{b}" for b in batches]
    if paper:
        head += ["paper #Params (M)", "ours/paper", "paper FLOPs (G)", "ours/paper"]
    body = []
    for r in rows:
        line = [r["model"], r["input"], r.get("width", ""), _fmt(r["params_m"], 4), _fmt(r["flops_g"], 5)]
        line += [_fmt(r.get("latency_ms", {}).get(b), 2) for b in batches]
        if paper:
            p = r.get("paper")
            line += [_fmt(p["params_m"], 3) if p else "-", _fmt(r.get("params_ratio"), 3),
                     _fmt(p["flops_g"], 5) if p else "-", _fmt(r.get("flops_ratio"), 3)]
        body.append(line)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    left = {0, 1, 2}

    def render(cells: List[str]) -> str:
        return "  ".join(str(c).ljust(w) if i in left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [render(head), render(["-" * w for w in widths])] + [render(b) for b in body]
    return "\n".join(out)


def notes(rows: List[Dict[str, Any]], args: argparse.Namespace, device: torch.device) -> List[str]:
    notes = ["#Params: auxiliary heads excluded; FLOPs: multiply-adds of one image at the input size."]
    if any(r.get("latency_ms") for r in rows):
        notes.append(f"latency: median ms per forward pass on {device.type} "
                     f"({torch.get_num_threads()} threads, torch {torch.__version__}), eval mode.")
        if device.type == "cpu" and not args.batch_sizes and any(
                str(b) not in r["latency_ms"] for r in rows for b in DEFAULT_BATCH_SIZES):
            notes.append(f"'-': batch skipped on the CPU, over {args.cpu_max_gmacs:g} G multiply-adds "
                         "(--cpu-max-gmacs; --batch-sizes forces).")
    if getattr(args, "paper", False):
        notes.append("paper: Table 6 (ResNets), Table 3 (DARTS, CIFAR-10), Table 5 (ImageNet, MobileNet).")
        if any(r["model"] == "o_mobilenet" for r in rows):
            notes.append("o-MobileNet: the paper gives no width; ours is 1.5, matched on #Params "
                         "(FLOPs then stay below the paper's).")
    return notes


def profile_names(names: Sequence[str], args: argparse.Namespace, device: torch.device) -> List[Dict[str, Any]]:
    """Build and profile each registered model ``names`` (with ``--rounding``/``--shortcut`` where it takes them)."""
    from osep_nas.models import create_model, model_info

    infos = [model_info(n) for n in names]  # fail on a bad name before any work
    rows = []
    for info in infos:
        asked = {"rounding": args.rounding, "shortcut": getattr(args, "shortcut", None)}
        kw = {k: v for k, v in asked.items() if v is not None and k in info.keywords()}
        model = create_model(info.name, **kw)
        size = tuple(model.default_input_size)
        row = profile_model(model, size, info.name, device, lambda f: latency_batch_sizes(args, f, device),
                            args.warmup, args.repeats, args.max_seconds)
        row["width"] = describe_width(model)
        if args.paper:
            add_paper_columns(row, info.name)
        rows.append(row)
    return rows


def write_json(path: str, rows: List[Dict[str, Any]], args: argparse.Namespace, device: torch.device) -> None:
    """Rows plus the measuring conditions, written atomically."""
    from osep_nas.io import atomic_write_json

    atomic_write_json(path, {
        "device": device.type,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "rounding": getattr(args, "rounding", None) or "model default",
        "shortcut": getattr(args, "shortcut", None) or "model default",
        "rows": rows,
    })


def run(args: argparse.Namespace) -> int:
    from osep_nas.models import list_models, model_info

    if args.list:
        for name in list_models():
            print(f"{name:20s} {model_info(name).description}")
        return 0
    device = resolve_device(args.device)
    check_latency_arguments(args)
    rows = profile_names(args.names or DEFAULT_MODELS, args, device)
    print(format_table(rows, paper=args.paper))
    for note in notes(rows, args, device):
        print(note)
    if args.json:
        write_json(args.json, rows, args, device)
    return 0
