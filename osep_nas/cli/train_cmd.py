"""``osep-nas train``: retrain a network with one of the paper's recipes."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from osep_nas.data_arg import DATA_HELP, DATA_METAVAR, DIGITS, FOLDER_DATASETS, resolve_data

HELP = "train a DARTS genotype or a named model on CIFAR, ImageNet or the embedded digits"
DESCRIPTION = (
    "Train with a YAML recipe (examples/configs/*.yaml; see osep_nas.config for every key). "
    "Precedence: the config file, then each --set KEY=VALUE in order, then the explicit flags "
    "below. Writes OUT/metrics.jsonl, OUT/tb, OUT/last.pt (every epoch), OUT/best.pt and "
    "OUT/summary.json; --resume continues OUT/last.pt exactly. Under torchrun it trains with "
    "DistributedDataParallel: data.batch_size is the global batch split across ranks, and "
    "optim.lr is not rescaled."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config (default: built-in defaults, the digits dataset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, VALUE parsed as YAML (e.g. optim.lr=0.05, epochs=3); repeatable")
    p.add_argument("--model", metavar="NAME", help="model name for osep_nas.models.create_model (model.name)")
    p.add_argument("--genotype", metavar="TEXT|FILE",
                   help="DARTS genotype: a name (O_DARTS, DARTS_V2), its text, or a file holding it")
    p.add_argument("--data", metavar=DATA_METAVAR, help=f"data.dataset and data.root: {DATA_HELP}")
    p.add_argument("--dataset", choices=FOLDER_DATASETS + (DIGITS,),
                   help="the kind of the --data folder, only where the folder does not tell "
                        "(it holds both CIFAR-10 and CIFAR-100); '--dataset digits' is the old "
                        "spelling of '--data digits'")
    p.add_argument("--out", metavar="DIR", help="output folder (training.out)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--epochs", type=int, metavar="N", help="training.epochs")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="training.device")
    p.add_argument("--quiet", action="store_true", help="no per-epoch log lines on stderr")


def run(args: argparse.Namespace) -> int:
    from osep_nas.config import config_to_dict, load_config
    from osep_nas.genotypes.resolve import genotype_arg_text
    from osep_nas.train import train

    base = args.config
    if base is None and args.resume:  # resume a run with the config it was started with
        out = Path(args.out) if args.out else Path(load_config(None, args.overrides).training.out)
        if (out / "config.yaml").is_file():
            base = out / "config.yaml"
    cfg = load_config(base, args.overrides)
    tree = config_to_dict(cfg)
    if args.dataset == DIGITS and args.data is None and int(os.environ.get("RANK", "0") or 0) == 0:
        print("osep-nas train: note: --dataset digits is deprecated, use --data digits", file=sys.stderr)
    data = resolve_data(args.data, args.dataset, tree["data"]["dataset"])
    tree["data"].update(data)
    flags = {
        ("model", "name"): args.model,
        ("model", "genotype"): genotype_arg_text(args.genotype) if args.genotype else None,
        ("training", "out"): args.out,
        ("training", "epochs"): args.epochs,
        ("training", "device"): args.device,
        ("training", "resume"): True if args.resume else None,
    }
    for (section, key), value in flags.items():
        if value is not None:
            tree[section][key] = value
    if args.genotype and not args.model and tree["model"]["name"] not in (None, "darts"):
        tree["model"]["name"] = None  # --genotype alone means a DARTS network
    if args.model and not args.genotype and args.model != "darts":
        tree["model"]["genotype"] = None  # --model alone means that model, not the config's genotype
    try:
        cfg = load_config(tree)
    except ValueError as exc:
        msg = str(exc)
        raise ValueError(msg[len("config: "):] if msg.startswith("config: ") else msg) from None
    rank0 = int(os.environ.get("RANK", "0") or 0) == 0
    logger = logging.getLogger("osep_nas.train")
    if rank0 and not args.quiet and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    summary = train(cfg)
    final = summary.get("final") or {}
    if rank0:
        print(json.dumps({k: summary[k] for k in ("out", "epochs_done", "best_top1", "best_epoch", "params", "flops")}
                         | {"final_test_top1": final.get("test_top1")}))
    return 0
