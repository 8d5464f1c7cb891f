"""``osep-nas space``: write or check the nnictl search space of the osep cell space."""
from __future__ import annotations

import argparse
import json
import sys

HELP = "write or check the nnictl search space (searchSpaceFile) of the osep cell space"
DESCRIPTION = (
    "Write the osep DARTS cell space in nnictl's HPO format (one 'choice' per edge op and per "
    "edge input of the normal and the reduction cell), or check an existing file. Prints the "
    "number of choices and the size of the space."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from search_spaces.presets import PRESETS

    parser.add_argument("--preset", default="osep", choices=sorted(PRESETS),
                        help="op candidates: osep primitives, DARTS primitives, or both")
    parser.add_argument("--ops", default=None, metavar="OP[,OP...]",
                        help="comma-separated op names instead of a preset (any op in osep_nas.ops.OPS)")
    parser.add_argument("--num-nodes", type=int, default=4, help="intermediate nodes per cell")
    parser.add_argument("--out", default=None, metavar="FILE",
                        help="write the search space JSON here (atomically); default: print it to stdout")
    parser.add_argument("--check", default=None, metavar="FILE",
                        help="only validate FILE (JSON, or YAML by suffix) and print its summary")


def run(args: argparse.Namespace) -> int:
    from search_spaces.hpo import check_search_space, to_nni_search_space, write_search_space

    if args.check is not None:
        if args.out is not None:
            raise ValueError("--check and --out cannot be combined")
        summary = check_search_space(args.check)
        print(f"{args.check}: ok, {summary}")
        return 0
    ops = [o.strip() for o in args.ops.split(",") if o.strip()] if args.ops else args.preset
    if args.out is not None:
        summary = write_search_space(args.out, ops, args.num_nodes)
        print(f"wrote {args.out}: {summary}")
        return 0
    space = to_nni_search_space(ops, args.num_nodes)
    summary = check_search_space(space)
    json.dump(space, sys.stdout, indent=2)
    sys.stdout.write("\n")
    print(summary, file=sys.stderr)
    return 0
