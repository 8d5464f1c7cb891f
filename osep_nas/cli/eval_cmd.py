"""``osep-nas eval``: #Params, FLOPs and latency of the evaluation network of a genotype.

The network is the DARTS evaluation network of the genotype's cells, built by
``create_model`` (``darts_cifar`` or ``darts_imagenet``: the paper's sizes, from
``osep_nas.models.DARTS_NETWORKS``).

``run`` is three steps, kept apart so accuracy evaluation can be added beside the
profile: ``model_from_args(args)``, ``profile_network(args, model)``, printing.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, Optional

from torch import nn

from osep_nas.cli import profile_cmd
from osep_nas.data_arg import DATA_HELP, DATA_METAVAR, resolve_data
from osep_nas.models import DARTS_NETWORKS

HELP = "#Params, FLOPs and latency of a genotype's evaluation network"
DESCRIPTION = (
    "Build the DARTS evaluation network of a genotype (DARTS repr, JSON or YAML text, a file holding one, or a "
    "name such as DARTS_V2 or O_DARTS) and print its #Params (auxiliary head excluded), FLOPs (multiply-adds "
    "of one image) and forward latency."
)

#: dataset -> its classes (the network's size comes from the DARTS table)
DATASET_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
_CIFAR, _IMAGENET = DARTS_NETWORKS["darts_cifar"], DARTS_NETWORKS["darts_imagenet"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--genotype", default=None, metavar="TEXT|FILE",
                        help="genotype text, a file holding it, or a published name (DARTS_V2, O_DARTS)")
    parser.add_argument("--checkpoint", default=None, metavar="FILE",
                        help="a checkpoint of `osep-nas train` (last.pt / best.pt): evaluate its accuracy on the "
                             "test split (top-1, top-5) with #Params and FLOPs; the network and data come from "
                             "the config stored in it")
    parser.add_argument("--data", default=None, metavar=DATA_METAVAR,
                        help=f"with --checkpoint: the test data, {DATA_HELP} (default: the data stored in the "
                             f"checkpoint)")
    parser.add_argument("--dataset", choices=sorted(DATASET_CLASSES), default=None,
                        help="with --genotype: the network layout, CIFAR (32x32, the default) or ImageNet "
                             "(224x224); with --checkpoint and --data DIR: the folder's kind where it does not "
                             "tell")
    parser.add_argument("--init-channels", type=int, default=None, help="channels of the first cell "
                        f"(default {_CIFAR.init_channels} on CIFAR, {_IMAGENET.init_channels} on ImageNet)")
    parser.add_argument("--layers", type=int, default=None,
                        help=f"number of cells (default {_CIFAR.layers} CIFAR, {_IMAGENET.layers} ImageNet)")
    parser.add_argument("--num-classes", type=int, default=None, help="classes (default: the dataset's)")
    parser.add_argument("--auxiliary", action="store_true", help="build the auxiliary head (never counted)")
    parser.add_argument("--rounding", choices=("divisor", "paper"), default=None, help="osep group rounding")
    parser.add_argument("--gamma", type=float, default=None, help="osep overlap coefficient (default 1)")
    parser.add_argument("--osep", action="store_true",
                        help="replace the genotype's sep/dil convolutions by osep ones first (the paper's rule)")
    parser.add_argument("--paper", action="store_true",
                        help="add the paper's figures when the network is one of its DARTS rows")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device for the latency")
    profile_cmd.add_latency_arguments(parser)
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the result as JSON to FILE")


def _positive(value, flag: str) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{flag} must be a positive integer, got {value}")


def model_from_args(args: argparse.Namespace) -> nn.Module:
    """The evaluation network ``args`` describe, by ``create_model`` (ValueError on bad input)."""
    from osep_nas.models import create_model, darts_model_name, resolve_genotype

    _positive(args.init_channels, "--init-channels")
    _positive(args.layers, "--layers")
    _positive(args.num_classes, "--num-classes")
    if args.gamma is not None and not args.gamma > 0:
        raise ValueError(f"--gamma must be positive, got {args.gamma}")
    if getattr(args, "dataset", None) is None:
        args.dataset = "cifar10"  # the default layout
    genotype = resolve_genotype(args.genotype)
    if args.osep:
        from osep_nas.genotypes import to_osep

        genotype = to_osep(genotype)
    kw: Dict[str, Any] = {k: v for k, v in (("init_channels", args.init_channels), ("layers", args.layers),
                                            ("rounding", args.rounding), ("gamma", args.gamma)) if v is not None}
    return create_model(darts_model_name(args.dataset), genotype=genotype, auxiliary=args.auxiliary,
                        num_classes=args.num_classes or DATASET_CLASSES[args.dataset], **kw)


def _paper_name(model: nn.Module, dataset: str) -> str:
    """The registry name of the paper's DARTS row this network is, or ''."""
    from osep_nas import genotypes as G

    size = (model.init_channels, model.layers)
    for name, row in DARTS_NETWORKS.items():
        if row.genotype is None or dataset != ("imagenet" if row.imagenet else "cifar10"):
            continue
        if _same_genotype(model.genotype, getattr(G, row.genotype)) and size == (row.init_channels, row.layers):
            return name
    return ""


def _same_genotype(a, b) -> bool:
    def norm(g):
        return ([tuple(e) for e in g.normal], list(g.normal_concat), [tuple(e) for e in g.reduce],
                list(g.reduce_concat))
    return norm(a) == norm(b)


def profile_network(args: argparse.Namespace, model: nn.Module) -> Dict[str, Any]:
    """#Params, FLOPs and latency of ``model`` as one profile row."""
    device = profile_cmd.resolve_device(args.device)
    size = tuple(model.default_input_size)
    row = profile_cmd.profile_model(model, size, f"{args.dataset} network", device,
                                    lambda f: profile_cmd.latency_batch_sizes(args, f, device), args.warmup,
                                    args.repeats, args.max_seconds)
    row["width"] = profile_cmd.describe_width(model)
    row["genotype"] = str(model.genotype)
    if args.paper:
        name = _paper_name(model, args.dataset)
        if name:
            profile_cmd.add_paper_columns(row, name)
    return row


def evaluate_checkpoint(path: str, data: Optional[str] = None, dataset: Optional[str] = None) -> Dict[str, Any]:
    """Top-1/top-5 on the test split, #Params and FLOPs of a training checkpoint.

    The checkpoint is read with ``torch.load(weights_only=True)``; its stored config
    rebuilds the network and the data loaders.  ``data`` (``"digits"`` or a folder, as
    ``--data``; ``dataset`` where the folder's kind is ambiguous) replaces the stored data."""
    import torch

    from osep_nas import count_flops, count_params
    from osep_nas.checkpoint import load_checkpoint, load_model_state
    from osep_nas.config import ConfigError, load_config
    from osep_nas.data import build_loaders
    from osep_nas.train import build_model, evaluate

    if data is not None and data != "digits" and not Path(data).exists():
        raise FileNotFoundError(f"data folder not found: {data}")
    state = load_checkpoint(path, required=("model", "config"))
    stored = state["config"]
    if not isinstance(stored, dict):
        raise ValueError(f"{path}: the stored config is not a mapping")
    if data is not None:  # --data replaces the stored data set and folder
        section = stored.get("data") if isinstance(stored.get("data"), dict) else {}
        configured = section.get("dataset") if isinstance(section.get("dataset"), str) else None
        stored = dict(stored, data=dict(section, **resolve_data(data, dataset, configured)))
    # never trust the stored config to download anything
    try:
        cfg = load_config(stored, ["data.download=false"])
    except ConfigError as exc:
        raise ConfigError(f"{path}: stored config: {exc}") from None
    _, test_loader, info = build_loaders(cfg, device="cpu")
    model = build_model(cfg, info)
    load_model_state(model, state["model"], source=str(path))
    sums = evaluate(model, test_loader, device="cpu")
    n = sums["n"] or 1.0
    return {
        "checkpoint": str(path), "epoch": state.get("epoch"), "dataset": cfg.data.dataset,
        "test_images": int(sums["n"]), "test_top1": round(100.0 * sums["top1"] / n, 4),
        "test_top5": round(100.0 * sums["top5"] / n, 4), "test_loss": round(sums["loss_sum"] / n, 6),
        "params": count_params(model), "flops": count_flops(model, tuple(info["input_size"])),
        "torch_threads": torch.get_num_threads(),
    }


def run(args: argparse.Namespace) -> int:
    if args.checkpoint is not None:
        if args.genotype is not None:
            raise ValueError("give either --checkpoint (accuracy of a trained network) or --genotype (profile), not both")
        result = evaluate_checkpoint(args.checkpoint, args.data, args.dataset)
        print(f"checkpoint {result['checkpoint']} (epoch {result['epoch']}), {result['dataset']} test split "
              f"({result['test_images']} images):")
        print(f"  top-1 {result['test_top1']:.2f}%  top-5 {result['test_top5']:.2f}%  loss {result['test_loss']:.4f}")
        print(f"  #Params {result['params']:,} (auxiliary head excluded)  FLOPs {result['flops']:,} multiply-adds")
        if args.json:
            from osep_nas.io import atomic_write_json

            atomic_write_json(args.json, result)
        return 0
    if args.genotype is None:
        raise ValueError("give --genotype TEXT|FILE (profile a genotype's network) or --checkpoint FILE (accuracy)")
    if args.data is not None:
        raise ValueError("--data goes with --checkpoint (with --genotype, --dataset chooses the network layout)")
    args.dataset = args.dataset or "cifar10"
    profile_cmd.check_latency_arguments(args)
    model = model_from_args(args)
    row = profile_network(args, model)
    print(f"genotype: {row['genotype']}")
    print(profile_cmd.format_table([row], paper=args.paper))
    device = profile_cmd.resolve_device(args.device)
    for note in profile_cmd.notes([row], args, device):
        print(note)
    if args.json:
        profile_cmd.write_json(args.json, [row], args, device)
    return 0
