"""Search quality at equal budget: our Pareto evolution against random search, Optuna's
NSGA-II and Optuna's multi-objective TPE, by hypervolume of the (validation accuracy,
target #Params) front after every trial (issue 16).

Every strategy runs through the SAME trial loop, :func:`strategies.search.run_search`
(``search.strategy`` = evolution | random | nsga2 | motpe), on the same genotype space
(the default ``osep`` DARTS cell space, 4 nodes), the same objectives (validation accuracy:
max, #Params of the TARGET network, 36 ch x 20 cells: min) and the same budget of trials.
Two objectives:

* ``surrogate``: a DETERMINISTIC stand-in for accuracy, for fast exact comparisons (see
  :func:`surrogate_accuracy`). It is a fixed, seeded, smooth function of cell features
  (op mix, input sources, depth of each cell) plus a term rising with log #Params. It is NOT
  a measured or published accuracy (no DARTS-space table is available offline) and says
  nothing about which cells train well; it only makes the ranking of strategies exact and
  noise-free on a landscape with the same genotype space, #Params objective and a
  non-separable accuracy trade-off. ``search.rungs=1`` (no promotions: it has no fidelity).
* ``proxy``: the real trial protocol (:func:`strategies.proxy.proxy_train`: the default
  proxy network trained 80 steps on the embedded digits, scored on validation images;
  successive halving with the default rungs/eta). Noisy and ~4 s of one core a trial.

Front quality: after every trial ``n`` (the job that finished trial ``n``'s rung-0 training;
for ``n`` = budget, after the search's last job, promotions included), the front of every
trial at its highest finished rung is normalised with FIXED constants --
``f1 = 1 - accuracy/100`` (error fraction) and ``f2 = (params - P_LO) / (P_HI - P_LO)`` with
``P_LO``/``P_HI`` the exact least and greatest target #Params of the space -- and its
hypervolume (moocore, :func:`strategies.pareto.hypervolume`) is taken against the reference
point ``(1, 1)`` for every run, strategy and objective.

Cost shortcut (surrogate objective, every strategy alike): the target network's #Params is
computed exactly from the per-edge table of :class:`search_spaces.target.TargetParamsExpectation`
(a DARTS network's #Params is a constant plus a sum over edges; checked against the real
count at start-up) and its FLOPs are not counted (``count_flops`` of the 20-cell target costs
most of the cost of a target count, and FLOPs are not an objective here); records carry
``flops: null``, so a killed surrogate run starts over. Proxy runs count exactly and resume.

Each (objective, strategy, seed) run has its own folder under ``--runs``; a finished run
(``hv.json``) is skipped, a killed one resumed (``run_search(resume=True)``), so the proxy
benchmark can run in the background for hours and be re-invoked to report what has finished.

    python benchmarks/search_quality.py --objective surrogate --budget 60 --seeds 5
    nice -n 19 python benchmarks/search_quality.py --objective proxy --budget 60 --seeds 3
    python benchmarks/search_quality.py --objective proxy --budget 60 --seeds 3 --report-only
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from osep_nas.genotypes import Genotype  # noqa: E402
from search_spaces import target as _objectives  # noqa: E402
from strategies.fidelity import final_records  # noqa: E402
from strategies.pareto import hypervolume  # noqa: E402

STRATEGIES = ("evolution", "random", "nsga2", "motpe")
OBJECTIVES = ("surrogate", "proxy")
CHECKPOINTS = (15, 30, 60)
REFERENCE = (1.0, 1.0)
SURROGATE_SEED = 20261203
HERE = REPO / "benchmarks" / "results" / "search_quality"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
SECTION = "## Search quality: evolution vs random, Optuna NSGA-II and MOTPE (issue 16)"


# ----------------------------------------------------------------------------- exact, fast target #Params

class FastParams:
    """Exact #Params of a target network from the per-(cell, stride, op) table of
    :class:`~search_spaces.target.TargetParamsExpectation` (one-hot choices)."""

    def __init__(self, target: Any, ops: Sequence[str], num_nodes: int) -> None:
        self.exp = _objectives.TargetParamsExpectation(target, ops, num_nodes)
        self.constant, self.num_nodes, self.ops = int(self.exp.constant), int(num_nodes), list(ops)

    def __call__(self, g: Genotype) -> int:
        return self.exp.params_of(g)

    def bounds(self) -> Tuple[int, int]:
        """Exact least and greatest #Params over the space (inputs free per edge)."""
        lo = hi = self.constant
        for kind in ("normal", "reduce"):
            for node in range(self.num_nodes):
                values = [int(self.exp.row(kind, j)[op]) for j in range(node + 2) for op in self.ops]
                lo += 2 * min(values)
                hi += 2 * max(values)
        return lo, hi


_FAST: Dict[Any, FastParams] = {}
_REAL_COUNTS = _objectives._counts


def install_fast_counts(target: Any, fast: FastParams) -> None:
    """Route :meth:`Target.counts` of ``target`` to ``fast`` (flops None) in this process; other
    targets keep the real count."""
    _FAST[target] = fast

    def counts(tgt: Any, genotype: Genotype) -> Tuple[Tuple[str, Any], ...]:
        if tgt not in _FAST:
            return _REAL_COUNTS(tgt, genotype)
        return (("params", _FAST[tgt](genotype)), ("flops", None))
    _objectives._counts = counts  # type: ignore[assignment]


# ----------------------------------------------------------------------------- the deterministic objective

class Surrogate:
    """``accuracy = 100 * sigmoid(1.2 + z(g) + 1.5 * c(g))`` where

    * ``phi(g)``: per cell (normal, reduce), the share of its edges using each op, the share
      reading c_{k-2}, c_{k-1} and an intermediate node, and the longest path through the
      cell divided by the node count (26 numbers for the osep space);
    * ``z(g) = (w . phi + phi' Q phi) / 2`` with ``w`` ~ N(0, 1) and symmetric ``Q`` ~
      N(0, 0.5^2), both drawn once from ``numpy.random.default_rng(SURROGATE_SEED)``: a smooth,
      non-separable landscape over the genotype features;
    * ``c(g) = (log params - log P_LO) / (log P_HI - log P_LO)`` in [0, 1]: bigger networks
      score higher, so the front is a real trade-off.

    Fixed and deterministic; NOT an accuracy anyone measured."""

    def __init__(self, ops: Sequence[str], num_nodes: int, p_lo: int, p_hi: int) -> None:
        self.ops, self.num_nodes = list(ops), int(num_nodes)
        self.p_lo, self.p_hi = float(p_lo), float(p_hi)
        d = 2 * (len(self.ops) + 4)
        rng = np.random.default_rng(SURROGATE_SEED)
        self.w = rng.normal(0.0, 1.0, d)
        q = rng.normal(0.0, 0.5, (d, d))
        self.q = (q + q.T) / 2.0

    def features(self, g: Genotype) -> np.ndarray:
        out: List[float] = []
        for kind in ("normal", "reduce"):
            edges = [(str(op), int(j)) for op, j in getattr(g, kind)]
            n = len(edges)
            out += [sum(op == o for op, _ in edges) / n for o in self.ops]
            out += [sum(j == 0 for _, j in edges) / n, sum(j == 1 for _, j in edges) / n,
                    sum(j >= 2 for _, j in edges) / n]
            depth = [0, 0]
            for node in range(self.num_nodes):
                depth.append(1 + max(depth[j] for _, j in edges[2 * node: 2 * node + 2]))
            out.append(max(depth) / self.num_nodes)
        return np.asarray(out, dtype=float)

    def __call__(self, g: Genotype, params: float) -> float:
        phi = self.features(g)
        z = (float(self.w @ phi) + float(phi @ self.q @ phi)) / 2.0
        c = (math.log(params) - math.log(self.p_lo)) / (math.log(self.p_hi) - math.log(self.p_lo))
        return round(100.0 / (1.0 + math.exp(-(1.2 + z + 1.5 * c))), 6)


SURROGATE_TEXT = (
    "The surrogate is accuracy = 100 * sigmoid(1.2 + z + 1.5 c): z a fixed, seeded (numpy seed "
    f"{SURROGATE_SEED}) smooth quadratic function of 26 cell features (per cell: share of each op, share of "
    "edges reading c_{k-2} / c_{k-1} / an intermediate node, longest path / nodes), c = the log target #Params "
    "scaled to [0, 1] over the space. It is deterministic and exact, so it ranks strategies without noise on "
    "this genotype space and #Params objective; it is NOT a measured or published accuracy and says nothing "
    "about which cells train well.")


class SurrogateTrainer:
    """A ``trainer=`` for :func:`run_search`: the surrogate accuracy, no training."""

    def __init__(self, surrogate: Surrogate) -> None:
        self.surrogate = surrogate

    def __call__(self, genotype: Genotype, ctx: Any) -> Dict[str, Any]:
        params = ctx.space.cheap_metrics(genotype)["params"]
        return {"accuracy": self.surrogate(genotype, params), "train_loss": None, "train_s": 0.0}


# ----------------------------------------------------------------------------- hypervolume

def normalise(records: Sequence[Mapping[str, Any]], p_lo: float, p_hi: float) -> np.ndarray:
    """(n, 2) minimisation matrix: 1 - accuracy/100 and (params - P_LO) / (P_HI - P_LO) of the ok records."""
    ok = [r for r in records if r.get("status") == "ok" and r.get("accuracy") is not None]
    if not ok:
        return np.zeros((0, 2))
    return np.array([[1.0 - float(r["accuracy"]) / 100.0, (float(r["params"]) - p_lo) / (p_hi - p_lo)]
                     for r in ok], dtype=float)


def hv_of(records: Sequence[Mapping[str, Any]], p_lo: float, p_hi: float,
          reference: Sequence[float] = REFERENCE) -> float:
    """Hypervolume of the normalised records (moocore) against ``reference``."""
    return hypervolume(normalise(records, p_lo, p_hi), list(reference))


def hv_curve(jobs: Sequence[Mapping[str, Any]], budget: int, p_lo: float, p_hi: float,
             final: bool = True) -> List[float]:
    """HV after trial 1..n (n <= budget): jobs are read in job order; after the job that ends
    trial n's rung-0 training the front of every trial at its highest finished rung is taken;
    for a finished run (``final``) the last value is taken after every job (closing promotions
    included)."""
    jobs = sorted(jobs, key=lambda r: int(r["job"]))
    curve: List[float] = []
    for pos, rec in enumerate(jobs):
        if int(rec["rung"]) == 0 and len(curve) < budget:
            curve.append(hv_of(final_records(jobs[: pos + 1]), p_lo, p_hi))
    if curve and final:
        curve[-1] = hv_of(final_records(jobs), p_lo, p_hi)
    return curve


def recompute(out: Path, budget: int, p_lo: float, p_hi: float, final: bool = True) -> List[float]:
    """The HV curve of a run (finished, or still running: ``final=False``), from its ``state.json`` jobs."""
    state = json.loads((out / "state.json").read_text())
    return hv_curve(state["jobs"], budget, p_lo, p_hi, final)


# ----------------------------------------------------------------------------- running

def run_config(objective: str, strategy: str, seed: int, budget: int,
               extra: Sequence[str] = ()) -> Dict[str, Any]:
    """The search config of one run; ``extra``: ``search.KEY=VALUE`` settings (a variant, see ``--set``)."""
    cfg: Dict[str, Any] = {"search": {"strategy": strategy, "trials": budget, "seed": seed, "workers": 1},
                           "output": {"plots": False}}
    if objective == "surrogate":
        cfg["search"]["rungs"] = 1
    for item in extra:
        key, sep, value = item.partition("=")
        sec, dot, name = key.strip().partition(".")
        if not sep or not dot or sec != "search" or name in ("strategy", "trials", "seed", "workers"):
            raise ValueError(f"--set takes search.KEY=VALUE (not strategy/trials/seed/workers), got {item!r}")
        import yaml

        cfg["search"][name] = yaml.safe_load(value)
    return cfg


def run_one(objective: str, strategy: str, seed: int, budget: int, runs: Path, p_lo: int, p_hi: int,
            trainer: Any, extra: Sequence[str] = (), tag: str = "") -> Dict[str, Any]:
    from strategies.search import run_search

    out = runs / (objective + (f"-{tag}" if tag else "")) / f"{strategy}-s{seed}"
    done = out / "hv.json"
    if done.is_file():
        saved = json.loads(done.read_text())
        if saved.get("budget") == budget:
            return saved
    # a surrogate run's records carry flops null, which a resumed search refuses: it starts over (seconds)
    resume = (out / "state.json").is_file() and objective == "proxy"
    if not resume and out.exists():
        shutil.rmtree(out)
    t0 = time.time()
    res = run_search(run_config(objective, strategy, seed, budget, extra), out, resume=resume, progress=False,
                     trainer=trainer, report=False, print_report=False)
    curve = hv_curve(res.records, budget, p_lo, p_hi)
    row = {"objective": objective, "strategy": strategy, "seed": seed, "budget": budget, "hv": curve,
           "trials": len(res.final), "jobs": len(res.records), "refused": res.n_refused,
           "wall_s": round(time.time() - t0, 1), "resumed_from_job": res.resumed_from,
           "p_lo": p_lo, "p_hi": p_hi, "reference": list(REFERENCE)}
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(row))
    os.replace(tmp, done)
    return row


# ----------------------------------------------------------------------------- aggregation

def _fmt(values: Sequence[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f} (1 seed, no spread)"
    return f"{np.mean(values):.4f} ± {float(np.std(values, ddof=1)):.4f}"


def summarise(rows: Sequence[Mapping[str, Any]], budget: int,
              also_best: Sequence[float] = ()) -> Tuple[str, Dict[str, Any]]:
    """The markdown table (mean ± sample sd over seeds) and its numbers. Rows of runs still
    running (``finished`` False) count at the checkpoints they have passed (n= says how many
    runs a cell holds when that is not every finished one)."""
    checkpoints = [c for c in CHECKPOINTS if c <= budget] or [budget]
    full = [r for r in rows if r.get("finished", True) and len(r["hv"]) >= budget]
    best = max([r["hv"][budget - 1] for r in full] + list(also_best), default=float("nan"))
    head = (["strategy", "seeds"] + [f"HV @{c}" for c in checkpoints]
            + ["trials to 95% of best final HV", "wall s / run"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    numbers: Dict[str, Any] = {"best_final_hv": best}
    for strategy in STRATEGIES:
        mine = [r for r in full if r["strategy"] == strategy]
        running = [r for r in rows if r["strategy"] == strategy and not r.get("finished", True)]
        if not mine and not running:
            continue
        cells = [strategy, f"{len(mine)}" + (f" (+{len(running)} running)" if running else "")]
        stats: Dict[str, Any] = {}
        for c in checkpoints:
            vals = [r["hv"][c - 1] for r in mine + running if len(r["hv"]) >= c]
            if vals:
                stats[c] = (float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, len(vals))
            cells.append(_fmt(vals) + (f" (n={len(vals)})" if vals and len(vals) != len(mine) else ""))
        if not mine:
            cells += ["-", "-"]
            numbers[strategy] = stats
            lines.append("| " + " | ".join(cells) + " |")
            continue
        reach = []
        for r in mine:
            hit = next((i + 1 for i, v in enumerate(r["hv"]) if v >= 0.95 * best), None)
            if hit is not None:
                reach.append(hit)
        cells.append(f"{np.mean(reach):.1f} (reached by {len(reach)}/{len(mine)})" if reach
                     else f"not reached (0/{len(mine)})")
        cells.append(f"{np.mean([r['wall_s'] for r in mine]):.0f}")
        numbers[strategy] = stats
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), numbers


def plot(rows: Sequence[Mapping[str, Any]], budget: int, objective: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for strategy in STRATEGIES:
        mine = np.array([r["hv"][:budget] for r in rows if r["strategy"] == strategy and len(r["hv"]) >= budget])
        if not len(mine):
            continue
        x = np.arange(1, budget + 1)
        mean, sd = mine.mean(axis=0), (mine.std(axis=0, ddof=1) if len(mine) > 1 else np.zeros(budget))
        ax.plot(x, mean, label=f"{strategy} ({len(mine)} seeds)")
        ax.fill_between(x, mean - sd, mean + sd, alpha=0.15)
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume (normalised, ref (1, 1))")
    ax.set_title(f"search quality, {objective} objective: mean ± sd over seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def verdict(numbers: Mapping[str, Any], budget: int) -> str:
    """One sentence per Optuna/ours comparison, computed from the table's numbers."""
    have = [s for s in STRATEGIES if s in numbers and numbers[s]]
    common = [k for k in (list(CHECKPOINTS) + [budget]) if k <= budget and all(k in numbers[s] for s in have)]
    if not have or not common:
        return "no checkpoint reached by every strategy yet."
    c = max(common)
    ranked = sorted(have, key=lambda s: -numbers[s][c][0])
    parts = [f"ranking by mean HV @{c}: " + " > ".join(f"{s} {numbers[s][c][0]:.4f}" for s in ranked) + "."]
    if "random" in have:
        rm, rsd, rn = numbers["random"][c]
        for s in have:
            if s == "random":
                continue
            m, sd, n = numbers[s][c]
            gap = m - rm
            if min(n, rn) < 2:
                parts.append(f"{s}: {gap:+.4f} vs random, from fewer than 2 seeds: no spread, no claim.")
                continue
            spread = max(sd, rsd)
            word = "above random by more than the larger seed sd" if gap > spread else \
                "NOT above random by more than the larger seed sd"
            parts.append(f"{s}: {gap:+.4f} vs random (larger sd {spread:.4f}), {word}.")
    return " ".join(parts)


def write_results(objective: str, text: str) -> None:
    """Replace this objective's block (between markers) in the RESULTS.md section; append the
    section if absent."""
    begin, end = f"<!-- search_quality:{objective}:begin -->", f"<!-- search_quality:{objective}:end -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    doc = RESULTS_MD.read_text()
    if SECTION in doc:  # keep the section's introduction current
        head, _, rest = doc.partition(SECTION)
        cut = rest.find("<!-- search_quality:")
        rest = rest[cut:] if cut >= 0 else ""
        doc = head + SECTION + "\n\n" + INTRO + ("\n\n" + rest if rest else "\n")
    if begin in doc and end in doc:
        doc = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _m: block, doc, flags=re.S)
    else:
        if SECTION not in doc:
            doc = doc.rstrip() + f"\n\n{SECTION}\n\n" + INTRO + "\n"
        doc = doc.rstrip() + "\n\n" + block + "\n"
    tmp = RESULTS_MD.with_suffix(".md.tmp")
    tmp.write_text(doc)
    os.replace(tmp, RESULTS_MD)


INTRO = (
    "`benchmarks/search_quality.py`: the four strategies through the same trial loop (`run_search`), the "
    "default `osep` 4-node cell space, objectives validation accuracy (max) and #Params of the target "
    "network (36 ch x 20 cells, min), equal trial budget, search defaults otherwise (population_size 8, "
    "sample_size 3, round_size 4; NSGA-II's population is `search.population_size`). Hypervolume (moocore) "
    "of the (1 - accuracy/100, (params - P_LO)/(P_HI - P_LO)) front after every trial, reference point "
    "(1, 1) for every run; P_LO/P_HI are the exact least/greatest target #Params of the space. Mean ± sample "
    "sd over seeds. Surrogate runs do not count the target's FLOPs (not an objective, and counting them is "
    "most of the cost of a target count) and take its #Params from the exact per-edge table, checked "
    "against the real count at start-up; proxy runs count both exactly (seconds beside a trial's training). Evolution and random share their first population_size proposals per "
    "seed (the same random stream), as do nsga2 and motpe (Optuna's seeded random start). Every figure below "
    "is printed by the script.")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--objective", choices=OBJECTIVES, required=True)
    ap.add_argument("--budget", type=int, default=60, help="trials per run (default 60)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per strategy")
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated subset")
    ap.add_argument("--runs", type=Path, default=HERE / "runs", help="one folder per (objective, strategy, seed)")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="search.KEY=VALUE",
                    help="a variant (e.g. search.population_size=16) for every run of this invocation; use --tag")
    ap.add_argument("--tag", default="", help="name of the variant: runs in <objective>-<tag>, its own table")
    ap.add_argument("--report-only", action="store_true", help="run nothing; tabulate the finished runs")
    ap.add_argument("--no-results-md", action="store_true", help="do not write benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    if args.budget < 1 or args.seeds < 1:
        raise SystemExit("error: --budget and --seeds must be positive")
    if args.extra and not re.fullmatch(r"[A-Za-z0-9_.]+", args.tag):
        raise SystemExit("error: a --set variant needs a --tag of letters, digits, '_' or '.'")
    try:
        run_config(args.objective, "evolution", 0, args.budget, args.extra)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad:
        raise SystemExit(f"error: unknown strategy {bad[0]!r}; known: {', '.join(STRATEGIES)}")

    from search_spaces.genotype_space import resolve_op_candidates
    from search_spaces.target import resolve_target
    from strategies.search import load_search_config

    cfg = load_search_config(run_config(args.objective, "evolution", 0, args.budget))
    ops = resolve_op_candidates(cfg.space.op_candidates, cfg.space.exclude_none)
    target = resolve_target(cfg.target)
    fast = FastParams(target, ops, cfg.space.num_nodes)
    p_lo, p_hi = fast.bounds()
    print(f"space: {cfg.space.op_candidates} ops {ops}, {cfg.space.num_nodes} nodes; target {target.describe()}; "
          f"P_LO {p_lo:,}  P_HI {p_hi:,}; reference point {REFERENCE} on (1 - acc/100, (params - P_LO)/(P_HI - P_LO))")
    if not args.report_only:
        import random

        from search_spaces.genotype_space import GenotypeSpace

        space = GenotypeSpace(ops, cfg.space.num_nodes)
        rng = random.Random(1)
        checks = [space.random_sample(rng) for _ in range(2)]
        real = [dict(_REAL_COUNTS(target, _objectives._freeze(g)))["params"] for g in checks]
        mine = [fast(g) for g in checks]
        print(f"fast #Params check against the real count of the target network: {mine} vs {real}: "
              f"{'equal' if mine == real else 'DIFFERENT'}")
        if mine != real:
            raise SystemExit("error: the per-edge #Params table disagrees with the real count")
        if args.objective == "surrogate":  # a proxy trial costs seconds: count exactly, FLOPs included
            install_fast_counts(target, fast)
    trainer = SurrogateTrainer(Surrogate(ops, cfg.space.num_nodes, p_lo, p_hi)) if args.objective == "surrogate" \
        else None

    label = args.objective + (f"-{args.tag}" if args.tag else "")
    rows: List[Dict[str, Any]] = []
    for seed in range(args.seeds):  # seed-major, so an unfinished proxy benchmark has whole seeds
        for strategy in strategies:
            if args.report_only:
                path = args.runs / label / f"{strategy}-s{seed}" / "hv.json"
                if path.is_file():
                    row = json.loads(path.read_text())
                    if row.get("budget") == args.budget:
                        rows.append(dict(row, hv=recompute(path.parent, args.budget, p_lo, p_hi)))
                elif (path.parent / "state.json").is_file():
                    rows.append({"strategy": strategy, "seed": seed, "finished": False,
                                 "hv": recompute(path.parent, args.budget, p_lo, p_hi, final=False)})
                continue
            row = run_one(args.objective, strategy, seed, args.budget, args.runs, p_lo, p_hi, trainer,
                          args.extra, args.tag)
            rows.append(row)
            print(f"{args.objective} {strategy:9s} seed {seed}: HV@{args.budget} {row['hv'][-1]:.4f} "
                  f"({row['trials']} trials, {row['jobs']} jobs, {row['refused']} refused, {row['wall_s']} s)",
                  flush=True)

    base_best: List[float] = []
    if args.tag:  # a variant's "95% of the best" is taken against the default runs too
        for path in sorted((args.runs / args.objective).glob("*/hv.json")):
            row = json.loads(path.read_text())
            if row.get("budget") == args.budget and len(row["hv"]) >= args.budget:
                base_best.append(row["hv"][args.budget - 1])
    table, numbers = summarise(rows, args.budget, base_best)
    line = verdict(numbers, args.budget)
    png = HERE / f"hv_{label}.png"
    if not args.tag:
        plot(rows, args.budget, label, png)
    n_done = sum(1 for r in rows if r.get("finished", True))
    n_all = args.seeds * len(strategies)
    what = ("deterministic surrogate accuracy, search.rungs=1. " + SURROGATE_TEXT) if args.objective == "surrogate" \
        else \
        "real proxy (default trial protocol on the embedded digits, successive halving 80/240 steps)"
    if args.extra:
        what = f"VARIANT {args.tag} ({', '.join(args.extra)}) of the {args.objective} objective above"
    head = (f"### {label} objective\n\n{what}\n\n"
            f"{n_done}/{n_all} runs finished, budget {args.budget} trials, seeds 0..{args.seeds - 1}; best final HV "
            f"{numbers['best_final_hv']:.4f}; P_LO {p_lo:,}, P_HI {p_hi:,}, reference (1, 1).\n")
    text = f"{head}\n{table}\n\n{line}\n"
    if not args.tag:
        text += f"\n![HV against trials, {label}](results/search_quality/{png.name})\n"
    print()
    print(text)
    if not args.no_results_md:
        write_results(label, text)
        print(f"wrote {RESULTS_MD}" + ("" if args.tag else f" and {png}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
