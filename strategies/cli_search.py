"""``osep-nas search``: the in-process multi-objective (accuracy, #Params) search."""
from __future__ import annotations

import argparse
import math
from typing import List

from .search import load_search_config, run_search

HELP = "search osep cell genotypes for accuracy and #Params at once (Pareto front, knee genotype)"
DESCRIPTION = (
    "Multi-objective neural architecture search over DARTS cells with osep operations, in this "
    "process: regularized evolution with an NSGA-II tournament proposes genotypes; each is trained "
    "briefly as a small proxy network (NetworkCIFAR) and scored by test accuracy and #Params. "
    "With no arguments it searches the embedded digits (no download) in about two minutes on two "
    "CPU cores. At the end it prints the Pareto front (accuracy, #Params, FLOPs, and the #Params of "
    "the full 36-channel 20-cell CIFAR network of each genotype) and the best (knee) genotype, and "
    "writes into --out: pareto.yaml, pareto.png, knee_normal.png, knee_reduce.png, "
    "knee_genotype.yaml, trials.jsonl (one line per trial), summary.json and state.json (saved "
    "after every trial, so --resume continues a killed search without losing or repeating a "
    "trial). Every config key, its default and its meaning: examples/search_digits.yaml."
)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="search config YAML (default: built-in defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set proxy.steps=100 (repeatable; short keys like "
                        "steps=100 work when unambiguous)")
    p.add_argument("--data", metavar="digits|DIR",
                   help="proxy data: 'digits' (embedded) or a folder of CIFAR python batches "
                        "(cifar10 unless the config says cifar100)")
    p.add_argument("--budget-minutes", type=_positive_float, metavar="M",
                   help="stop cleanly after M minutes (checked between trials)")
    p.add_argument("--trials", type=_positive_int, metavar="N", help="number of trials (search.trials)")
    p.add_argument("--seed", type=_nonneg_int, metavar="S", help="search seed (search.seed)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: output.out or runs/search-<timestamp>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the search in --out (same config; trials and budget may change)")
    p.add_argument("--quiet", action="store_true", help="no per-trial progress (the report is still printed)")


def _overrides(args: argparse.Namespace, dataset_from_config: str) -> List[str]:
    out = list(args.overrides)
    if args.data is not None:
        if args.data == "digits":
            out += ["proxy.dataset=digits", "proxy.root=null"]
        else:
            dataset = dataset_from_config if dataset_from_config != "digits" else "cifar10"
            out += [f"proxy.dataset={dataset}", f"proxy.root={_yaml_str(args.data)}"]
    if args.budget_minutes is not None:
        out.append(f"search.budget_minutes={args.budget_minutes!r}")
    if args.trials is not None:
        out.append(f"search.trials={args.trials}")
    if args.seed is not None:
        out.append(f"search.seed={args.seed}")
    return out


def _yaml_str(text: str) -> str:
    """``text`` as a YAML scalar that always reads back as this string."""
    import json

    return json.dumps(text)


def run(args: argparse.Namespace) -> int:
    base = load_search_config(args.config, args.overrides)  # errors in the file / --set first
    cfg = load_search_config(args.config, _overrides(args, base.proxy.dataset))
    if args.data is not None and args.data != "digits":
        from pathlib import Path

        root = Path(args.data).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"--data: folder not found: {root}")
        if not root.is_dir():
            raise ValueError(f"--data: {root} is not a folder (give 'digits' or a folder of CIFAR python batches)")
    run_search(cfg, args.out, resume=args.resume, progress=False if args.quiet else None)
    return 0
