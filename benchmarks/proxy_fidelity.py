"""How well does the search's cheap proxy rank cells? Kendall tau / Spearman rho against a
longer training on real CIFAR-10.

Samples ``--cells`` genotypes of the default search space (fixed seed), scores each with the
search's own trial protocol (:func:`strategies.proxy.proxy_train`: validation accuracy) at
several proxy settings, and retrains each at a higher fidelity with the project's trainer
(:func:`osep_nas.train.train`) on the CIFAR-10 subset, scored on its test images (the ground
truth of this benchmark; no search reads them). Prints rank correlations of every proxy and
of "#Params alone" (the zero-cost baseline: target #Params as the predictor of accuracy)
with the high-fidelity accuracy, and of proxy #Params with target #Params.

Every finished run is written at once to ``--out`` (one JSON per cell and setting), so a
killed or timed-out run resumes where it stopped; ``--workers`` processes, 1 thread each.

    python benchmarks/proxy_fidelity.py                    # the full study (about 80 min of 2 idle cores)
    python benchmarks/proxy_fidelity.py --report-only      # the table of what has finished
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

REPO = Path(__file__).resolve().parents[1]
CIFAR = REPO.parent / "shared" / "data" / "cifar-10-batches-py"
OUT = REPO / "benchmarks" / "results" / "proxy_fidelity"

#: proxy settings scored for every cell: name -> (search config overrides, steps)
PROXIES: Dict[str, Dict[str, Any]] = {
    "digits-80": {"proxy": {"steps": 80}},          # rung 0 of the default search
    "digits-240": {"proxy": {"steps": 240}},        # rung 1 of the default search
    "digits-720": {"proxy": {"steps": 720}},        # a third rung
    "cifar16-240": {"proxy": {"steps": 240, "init_channels": 4, "max_val_images": 1017},
                    "data": {"dataset": "cifar10", "root": str(CIFAR), "image_size": 16}},
}
#: the high-fidelity training (the ground truth)
HIFI: Dict[str, Any] = {
    "model": {"init_channels": 12, "layers": 5, "auxiliary": False, "drop_path_prob": 0.0},
    "data": {"dataset": "cifar10", "root": str(CIFAR), "batch_size": 64, "crop": "pad", "padding": 4, "flip": True,
             "image_size": 32},
    "optim": {"lr": 0.05, "schedule": "cosine", "momentum": 0.9, "weight_decay": 3e-4, "grad_clip": 5.0},
    "training": {"epochs": 5, "deterministic": True, "tensorboard": False},
}


def sample_cells(n: int, seed: int) -> List[Any]:
    from search_spaces.genotype_space import GenotypeSpace

    space = GenotypeSpace("osep", num_nodes=4)
    rng = random.Random(seed)
    cells, keys = [], set()
    while len(cells) < n:
        g = space.random_sample(rng)
        if space.key(g) not in keys:
            keys.add(space.key(g))
            cells.append(g)
    return cells


def _write(path: Path, doc: Dict[str, Any]) -> None:
    from osep_nas.io import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, doc)


def proxy_job(args: Tuple[int, str, str, str]) -> str:
    """Score cell ``i`` with proxy ``name``: the search's trial protocol, trial index i."""
    i, name, genotype_text, out = args
    path = Path(out) / f"proxy-{name}-{i:02d}.json"
    if path.is_file():
        return f"{path.name} (kept)"
    import torch

    from osep_nas.genotypes import parse_genotype
    from strategies.proxy import TrialContext, prepare_proxy, proxy_train, torch_env, trial_seed
    from strategies.search_config import load_search_config

    cfg = load_search_config(PROXIES[name])
    setup = prepare_proxy(cfg)
    g = parse_genotype(genotype_text)
    ctx = TrialContext(i, trial_seed(0, i), setup.space, cfg, setup.train_loader, setup.val_loader,
                       setup.device)
    with torch_env(1, setup.device):
        res = proxy_train(g, ctx)
    cheap = setup.space.cheap_metrics(g)
    _write(path, {"cell": i, "proxy": name, **res, **cheap, "torch_threads": torch.get_num_threads()})
    return f"{path.name} {res['accuracy']:.2f}% {res['train_s']:.1f} s"


def _claim(run_dir: Path) -> bool:
    """Mark ``run_dir`` as this process's, unless a live process holds it: a second invocation of
    the benchmark then takes the cells the first has not started (both on one machine)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    owner = run_dir / "owner.pid"
    try:
        pid = int(owner.read_text())
        if pid != os.getpid():
            os.kill(pid, 0)
            return False
    except (OSError, ValueError):
        pass  # no owner, or a dead one: take it over (the training resumes from its last.pt)
    owner.write_text(str(os.getpid()))
    return True


def hifi_job(args: Tuple[int, str, str, int]) -> str:
    """Retrain cell ``i`` at the high fidelity (seed ``seed``), test accuracy of the last epoch."""
    i, genotype_text, out, seed = args
    path = Path(out) / f"hifi-s{seed}-{i:02d}.json"
    if path.is_file():
        return f"{path.name} (kept)"
    run_dir = Path(out) / "runs" / f"s{seed}-{i:02d}"
    if not _claim(run_dir):
        return f"{path.name} (running in another process)"
    import shutil

    import torch

    from osep_nas.train import train

    torch.set_num_threads(1)
    cfg = json.loads(json.dumps(HIFI))
    cfg["model"]["genotype"] = genotype_text
    cfg["training"].update({"out": str(run_dir), "seed": seed, "resume": (run_dir / "last.pt").is_file()})
    t0 = time.time()
    summary = train(cfg, progress=False)
    final = summary["final"]
    _write(path, {"cell": i, "seed": seed, "test_top1": final["test_top1"], "train_loss": final["train_loss"],
                  "params": summary["params"], "flops": summary["flops"], "wall_s": round(time.time() - t0, 1),
                  "epochs": HIFI["training"]["epochs"]})
    shutil.rmtree(run_dir, ignore_errors=True)
    return f"{path.name} {final['test_top1']:.2f}% {time.time() - t0:.0f} s"


def _load(out: Path, pattern: str) -> List[Dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob(pattern))]


def report(out: Path, n_cells: int, seeds: List[int]) -> str:
    from scipy.stats import kendalltau, spearmanr

    hifi = {}
    for rec in (r for r in _load(out, "hifi-s*.json") if r["seed"] in seeds):
        hifi.setdefault(rec["cell"], []).append(rec["test_top1"])
    truth = {c: sum(v) / len(v) for c, v in hifi.items() if len(v) == len(seeds)}
    lines = [f"high fidelity: NetworkCIFAR {HIFI['model']['init_channels']} ch x {HIFI['model']['layers']} cells, "
             f"{HIFI['training']['epochs']} epochs on the CIFAR-10 subset (32 px), test top-1, mean of "
             f"{len(seeds)} seed(s); {len(truth)} of {n_cells} cells done"]
    if len(seeds) > 1 and truth:
        spread = [abs(hifi[c][0] - hifi[c][1]) for c in truth]
        lines.append(f"seed-to-seed |difference| of the high-fidelity accuracy: mean {sum(spread) / len(spread):.2f}, "
                     f"max {max(spread):.2f} points")
    rows = []
    proxy_recs: Dict[str, Dict[int, Dict[str, Any]]] = {}
    for rec in _load(out, "proxy-*.json"):
        proxy_recs.setdefault(rec["proxy"], {})[rec["cell"]] = rec
    any_proxy = next(iter(proxy_recs.values()), {})

    def corr(name: str, xs: List[float], ys: List[float]) -> None:
        n = len(xs)
        if n < 4:
            rows.append(f"  {name:<34} n={n:<3} (too few)")
            return
        tau, p_tau = kendalltau(xs, ys)
        rho, _ = spearmanr(xs, ys)
        se = math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1)))  # tau's standard error under independence
        rows.append(f"  {name:<34} n={n:<3} Kendall tau {tau:+.3f} (SE {se:.2f}, p {p_tau:.2f})  Spearman rho {rho:+.3f}")

    for name in PROXIES:
        recs = proxy_recs.get(name, {})
        cells = sorted(c for c in recs if c in truth)
        corr(f"proxy {name} accuracy", [recs[c]["accuracy"] for c in cells], [truth[c] for c in cells])
        if recs:
            mean_s = sum(r["train_s"] for r in recs.values()) / len(recs)
            rows[-1] += f"  ({mean_s:.1f} s a trial)"
    cells = sorted(c for c in any_proxy if c in truth)
    corr("#Params alone (target, 36x20)", [-any_proxy[c]["params"] for c in cells], [truth[c] for c in cells])
    rows[-1] += "  (fewer params predicted better)"
    corr("#Params alone, more = better", [any_proxy[c]["params"] for c in cells], [truth[c] for c in cells])
    for a, b in (("digits-80", "digits-240"), ("digits-240", "digits-720"), ("digits-80", "digits-720"),
                 ("digits-240", "cifar16-240")):  # does a proxy agree with itself trained longer, or on CIFAR?
        ra, rb = proxy_recs.get(a, {}), proxy_recs.get(b, {})
        both = sorted(set(ra) & set(rb))
        corr(f"proxy {a} vs proxy {b}", [ra[c]["accuracy"] for c in both], [rb[c]["accuracy"] for c in both])
    dig = proxy_recs.get("digits-80", {})
    c2 = sorted(dig)
    corr("proxy #Params vs target #Params", [dig[c]["proxy_params"] for c in c2], [dig[c]["params"] for c in c2])
    return "\n".join(lines + rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", type=int, default=12)
    p.add_argument("--seed", type=int, default=2026, help="seed of the cell sample")
    p.add_argument("--hifi-seeds", type=int, nargs="+", default=[0],
                   help="seeds of the high-fidelity training (one seed of 12 cells: about 80 min of 2 idle cores)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cells = sample_cells(args.cells, args.seed)
    (out / "cells.json").write_text(json.dumps([repr(g) for g in cells], indent=1))
    if not args.report_only:
        if not CIFAR.is_dir():
            raise SystemExit(f"the CIFAR-10 subset is needed: {CIFAR} not found")
        jobs_p = [(i, name, repr(g), str(out)) for name in PROXIES for i, g in enumerate(cells)]
        jobs_h = [(i, repr(g), str(out), s) for s in args.hifi_seeds for i, g in enumerate(cells)]
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(args.workers, maxtasksperchild=4) as pool:
            for msg in pool.imap_unordered(proxy_job, jobs_p):
                print(msg, flush=True)
            for msg in pool.imap_unordered(hifi_job, jobs_h):
                print(msg, flush=True)
    print(report(out, args.cells, args.hifi_seeds))


if __name__ == "__main__":
    main()
