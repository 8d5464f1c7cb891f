"""``osep-nas search``: the in-process multi-objective (accuracy, #Params) search."""
from __future__ import annotations

import argparse
import math
from typing import List

from .search import FRONT_COLUMNS, load_search_config, run_search

HELP = "search osep cell genotypes for accuracy and #Params at once (Pareto front, knee genotype)"
DESCRIPTION = (
    "Multi-objective neural architecture search over DARTS cells with osep operations: regularized "
    "evolution with an NSGA-II tournament (or random sampling) proposes genotypes; each trains briefly as a "
    "small proxy network (NetworkCIFAR) on the training part of the proxy data and is scored by its top-1 on "
    "a validation part held out of the training split (the test split is never read). Successive halving "
    "retrains the best 1/eta of each rung eta x longer (search.rungs, search.eta); trials run in "
    "search.workers processes (default: every core), with results identical for any number of workers. "
    "The objectives are validation accuracy and the #Params of the TARGET network the user deploys "
    "(target section; default the DARTS CIFAR-10 network, 36 channels x 20 cells), counted before training. "
    "With no arguments it searches the embedded digits (no download) in about three minutes on two CPU "
    "cores. At the end it prints the Pareto front and the best (knee) genotype and writes into --out: "
    "pareto.yaml, pareto.png, knee_normal.png, knee_reduce.png, knee_genotype.yaml, trials.jsonl (one line per "
    "job), summary.json and state.json (saved after every job, so --resume continues a killed search without "
    "losing or repeating a job). Every config key: examples/search_digits.yaml."
)
EPILOG = "columns of the printed front:\n" + "\n".join(f"  {name:<14} {text}" for name, text in FRONT_COLUMNS)


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


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Wraps each line of the description/epilog on its own, so the column list keeps its lines."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        out = []
        for line in text.splitlines():
            if line.startswith("  "):  # a "  name  meaning" row: wrap under the meaning
                out.append(textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent + " " * 17))
            else:
                out.append(super()._fill_text(line, width, indent) if line.strip() else "")
        return "\n".join(out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = _HelpFormatter
    p.epilog = EPILOG
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
            out += ["data.dataset=digits", "data.root=null"]
        else:
            dataset = dataset_from_config if dataset_from_config != "digits" else "cifar10"
            out += [f"data.dataset={dataset}", f"data.root={_yaml_str(args.data)}"]
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
    cfg = load_search_config(args.config, _overrides(args, base.data.dataset))
    if args.data is not None and args.data != "digits":
        from pathlib import Path

        root = Path(args.data).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"--data: folder not found: {root}")
        if not root.is_dir():
            raise ValueError(f"--data: {root} is not a folder (give 'digits' or a folder of CIFAR python batches)")
    run_search(cfg, args.out, resume=args.resume, progress=False if args.quiet else None)
    return 0
