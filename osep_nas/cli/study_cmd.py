"""``osep-nas study``: a grid of training runs with a results table and plots."""
from __future__ import annotations

import argparse

from osep_nas.data_arg import DATA_HELP, DATA_METAVAR, FOLDER_DATASETS

HELP = "run a study (models x seeds) and write results.csv, results.md and plots"
DESCRIPTION = (
    "Train every run of a study file once per seed with the training code and, after each run, "
    "write results.csv (one row per run and seed), results.md (mean and std over seeds, #Params, "
    "FLOPs, test top-1 after the last epoch; titled partial until every run is done) and plots "
    "(accuracy vs #Params, accuracy vs gamma). Rerunning the same command resumes a half-finished "
    "study: finished runs are skipped, interrupted ones resume from their last checkpoint. "
    "--report writes the files from the runs finished so far without training anything. See "
    "examples/studies/."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", metavar="FILE.yaml", help="study file (examples/studies/*.yaml)")
    p.add_argument("--data", metavar=DATA_METAVAR, default=None,
                   help=f"data of every run: {DATA_HELP} (e.g. ../shared/data/cifar-10-batches-py)")
    p.add_argument("--dataset", choices=FOLDER_DATASETS, default=None,
                   help="the kind of the --data folder, only where the folder does not tell")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a study key, e.g. --set epochs=1 --set seeds=[0] (repeatable)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: study.out of the file)")
    p.add_argument("--report", action="store_true",
                   help="train nothing: write results.csv, results.md and plots of the runs finished so far "
                        "(a study cut short, or still running in another process)")


def run(args: argparse.Namespace) -> int:
    from osep_nas.io import read_user_text
    from osep_nas.study import run_study

    result = run_study(args.study, args.overrides, data=args.data, out=args.out, dataset=args.dataset,
                       report_only=args.report)
    out = result["out"]
    print(read_user_text(f"{out}/results.md", 64 << 20, "study results"))
    print(f"wrote {out}/results.csv, {out}/results.md and plots in {out}/")
    return 0
