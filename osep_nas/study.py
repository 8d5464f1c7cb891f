"""Studies: a grid of training runs (models x seeds) with one table and plots at the end.

A study file (``examples/studies/*.yaml``) names a training recipe, the seeds and the runs;
every run is an ordinary :func:`osep_nas.train.train` call in ``OUT/<run>/seed<k>/``, done
runs are skipped and killed ones resume, and the study ends with ``results.csv``,
``results.md`` and accuracy plots (test top-1 after the last epoch).  The file format and
outputs are in docs/config.md.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from osep_nas.config import ConfigError, _f, load_config, one_line, short_repr
from osep_nas.io import atomic_open, atomic_write_text
from osep_nas.outlock import hold_out_dir

RUN_KEYS = {"model", "gamma", "set", "label"}


@dataclass
class StudySection:
    """What to train: a recipe, seeds and named runs."""
    name: str = _f("study", "study name (titles of the table and plots)")
    recipe: str = _f("../configs/resnet_cifar10.yaml", "training recipe, relative to the study file")
    seeds: List[int] = _f([0, 1], "seeds; every run is trained once per seed")
    epochs: Optional[int] = _f(None, "training.epochs of every run (unset: the recipe's)", check="positive")
    set: List[str] = _f([], "KEY=VALUE overrides of the recipe applied to every run")
    runs: Dict[str, Any] = _f({}, "run name -> {model: NAME, gamma: G (optional), set: [KEY=VALUE, ...]}")
    out: str = _f("runs/study", "output folder")


@dataclass
class StudyConfig:
    study: StudySection = field(default_factory=StudySection)


@dataclass
class RunSpec:
    name: str
    model: str
    gamma: Optional[float]
    overrides: List[str]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "run"  # never "." or ".."


def parse_runs(runs: Dict[str, Any]) -> List[RunSpec]:
    """Validate the ``study.runs`` mapping (one clear ConfigError per problem)."""
    if not runs:
        raise ConfigError("study.runs: a study needs at least one run")
    specs = []
    slugs = set()
    for name, spec in runs.items():
        path = f"study.runs.{one_line(str(name))}"  # a run name is user text: one line in messages
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: expected a mapping with a 'model' key, got {short_repr(spec)}")
        unknown = set(spec) - RUN_KEYS
        if unknown:
            first = one_line(sorted(map(str, unknown))[0])
            raise ConfigError(f"{path}.{first}: unknown key; run keys are {', '.join(sorted(RUN_KEYS))}")
        model = spec.get("model")
        if not isinstance(model, str):
            raise ConfigError(f"{path}.model: expected a model name, got {short_repr(model)}")
        gamma = spec.get("gamma")
        if gamma is not None and (isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or gamma < 0):
            raise ConfigError(f"{path}.gamma: expected a number >= 0 (0 = depth-wise), got {short_repr(gamma)}")
        sets = spec.get("set", [])
        if not isinstance(sets, list) or not all(isinstance(s, str) and "=" in s for s in sets):
            raise ConfigError(f"{path}.set: expected a list of KEY=VALUE strings, got {short_repr(sets)}")
        slug = _slug(str(name))
        if slug in slugs:
            raise ConfigError(f"{path}: two runs map to the same folder name {slug!r}")
        slugs.add(slug)
        specs.append(RunSpec(str(name), model, None if gamma is None else float(gamma), list(sets)))
    return specs


def load_study(path: str | Path, overrides: Sequence[str] = ()) -> StudyConfig:
    """Read and validate a study file with the project's config loader."""
    cfg = load_config(path, list(overrides), schema=StudyConfig)
    parse_runs(cfg.study.runs)
    if not cfg.study.seeds:
        raise ConfigError("study.seeds: at least one seed is needed")
    if any(s < 0 for s in cfg.study.seeds):
        raise ConfigError(f"study.seeds: seeds must be >= 0, got {cfg.study.seeds}")
    return cfg


def data_overrides(recipe: str | Path, data: Optional[str], dataset: Optional[str] = None) -> List[str]:
    """``--data digits|DIR`` (and ``--dataset`` where the folder's kind is ambiguous) as
    overrides of the recipe (:func:`osep_nas.data_arg.resolve_data`)."""
    from osep_nas.data_arg import resolve_data

    if data is None and dataset is None:
        return []
    configured = load_config(recipe).data.dataset
    return [f"data.{k}={json.dumps(v)}" for k, v in resolve_data(data, dataset, configured).items()]


def run_overrides(study: StudySection, run: RunSpec, seed: int, out: Path, data: Sequence[str] = ()) -> List[str]:
    """The recipe overrides of one run: study-wide ones, then the data's (:func:`data_overrides`),
    then the run's, then seed/out."""
    sets = [f"model.name={run.model}"]
    if run.gamma is not None and run.gamma > 0:
        sets.append(f"model.gamma={run.gamma}")
    if study.epochs is not None:
        sets.append(f"training.epochs={study.epochs}")
    if isinstance(data, (str, Path)):  # a data folder, as before the data vocabulary
        data = [f"data.root={json.dumps(str(data))}"]
    sets += list(data)
    sets += list(study.set) + list(run.overrides)
    sets += [f"training.seed={seed}", f"training.out={out}"]
    return sets


def run_study(path: str | Path, overrides: Sequence[str] = (), data: Optional[str] = None,
              out: Optional[str] = None, progress: Optional[bool] = None, log=print,
              dataset: Optional[str] = None) -> Dict[str, Any]:
    """Run (or resume) every run of the study, then write the CSV, table and plots.
    ``data``: ``"digits"`` or a data folder for every run (``dataset`` where its kind is
    ambiguous), as ``--data`` of the command line."""
    from osep_nas.train import train  # heavy import, only when a study runs

    path = Path(path)
    cfg = load_study(path, overrides)
    study = cfg.study
    recipe = (path.parent / study.recipe).resolve()
    if not recipe.exists():
        raise FileNotFoundError(f"study.recipe: recipe file not found: {recipe}")
    data_sets = data_overrides(recipe, data, dataset)
    out_dir = Path(out or study.out)
    runs = parse_runs(study.runs)
    # validate every run's config before training anything
    plans = []
    for run in runs:
        for seed in study.seeds:
            run_out = out_dir / _slug(run.name) / f"seed{seed}"
            sets = run_overrides(study, run, seed, run_out, data_sets)
            load_config(recipe, sets)
            plans.append((run, seed, run_out, sets))
    with hold_out_dir(out_dir):  # one writer per OUT (creates it); a second study on it is refused
        rows = []
        for i, (run, seed, run_out, sets) in enumerate(plans, 1):
            summary_path = run_out / "summary.json"
            summary = _read_summary(summary_path)
            if summary is None:
                resume = (run_out / "last.pt").exists()
                log(f"[{i}/{len(plans)}] {run.name} seed {seed}: {'resuming' if resume else 'training'} -> {run_out}")
                tc = load_config(recipe, sets + [f"training.resume={'true' if resume else 'false'}"])
                summary = train(tc, progress=progress)
            else:
                log(f"[{i}/{len(plans)}] {run.name} seed {seed}: done earlier ({summary_path})")
            final = summary.get("final") or {}
            rows.append({
                "run": run.name, "model": run.model, "gamma": "" if run.gamma is None else run.gamma, "seed": seed,
                "params": summary.get("params"), "flops": summary.get("flops"),
                "epochs": summary.get("epochs_done"), "final_top1": final.get("test_top1"),
                "best_top1": summary.get("best_top1"), "wall_s": summary.get("wall_s"),
            })
        write_results(rows, out_dir, study.name)
    return {"out": str(out_dir), "rows": rows}


def _read_summary(path: Path) -> Optional[Dict[str, Any]]:
    from osep_nas.io import read_user_text

    if not path.exists():
        return None
    try:
        summary = json.loads(read_user_text(path, what="run summary"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and summary.get("completed") else None


# -- results ------------------------------------------------------------------------
def _mean_std(values: List[float]) -> tuple:
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def summarize(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One entry per run name, in the study's order: mean/std of accuracies over seeds."""
    order: List[str] = []
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        if r["run"] not in groups:
            order.append(r["run"])
        groups.setdefault(r["run"], []).append(r)
    table = []
    for name in order:
        g = groups[name]
        fm, fs = _mean_std([r["final_top1"] for r in g])
        bm, bs = _mean_std([r["best_top1"] for r in g])
        table.append({"run": name, "model": g[0]["model"], "gamma": g[0]["gamma"], "seeds": len(g),
                      "params": g[0]["params"], "flops": g[0]["flops"], "epochs": g[0]["epochs"],
                      "final_mean": fm, "final_std": fs, "best_mean": bm, "best_std": bs})
    return table


def markdown_table(table: List[Dict[str, Any]], title: str) -> str:
    lines = [f"### {title}", "",
             "| run | model | #Params (M) | FLOPs (G) | epochs | seeds | test top-1 % (last epoch, mean ± std) "
             "| best-epoch top-1 % |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for t in table:
        params = f"{t['params'] / 1e6:.3f}" if t["params"] else "?"
        flops = f"{t['flops'] / 1e9:.5f}" if t["flops"] else "?"
        lines.append(f"| {t['run']} | {t['model']} | {params} | {flops} | {t['epochs']} | {t['seeds']} | "
                     f"{t['final_mean']:.2f} ± {t['final_std']:.2f} | {t['best_mean']:.2f} ± {t['best_std']:.2f} |")
    return "\n".join(lines) + "\n"


def write_results(rows: List[Dict[str, Any]], out_dir: Path, title: str) -> None:
    """results.csv, results.md and the plots, all written atomically."""
    buf = io.StringIO()
    fields = ["run", "model", "gamma", "seed", "params", "flops", "epochs", "final_top1", "best_top1", "wall_s"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / "results.csv", buf.getvalue())
    table = summarize(rows)
    atomic_write_text(out_dir / "results.md", markdown_table(table, title))
    plot_params(table, out_dir / "accuracy_vs_params.png", title)
    if any(t["gamma"] != "" for t in table):
        plot_gamma(table, out_dir / "accuracy_vs_gamma.png", title)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_open(path, "wb", encoding=None) as fh:
        fig.savefig(fh, format="png", dpi=120, bbox_inches="tight")


def plot_params(table: List[Dict[str, Any]], path: Path, title: str) -> None:
    """Accuracy (mean ± std over seeds) against #Params, one labeled point per run."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for t in table:
        if not t["params"]:
            continue
        x = t["params"] / 1e6
        ax.errorbar([x], [t["final_mean"]], yerr=[t["final_std"]], fmt="o", capsize=4, label=t["run"])
        ax.annotate(t["run"], (x, t["final_mean"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("#Params (M)")
    ax.set_ylabel("test top-1 (%) after the last epoch")
    ax.set_title(f"{title}: accuracy vs #Params (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    _save(fig, path)
    plt.close(fig)


def plot_gamma(table: List[Dict[str, Any]], path: Path, title: str) -> None:
    """Accuracy against the overlap coefficient gamma (log scale; gamma 0 = depth-wise)."""
    plt = _figure()
    pts = [t for t in table if t["gamma"] != ""]
    positive = [float(t["gamma"]) for t in pts if float(t["gamma"]) > 0]
    dw_x = min(positive) / 4 if positive else 1.0
    xs = [float(t["gamma"]) if float(t["gamma"]) > 0 else dw_x for t in pts]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.errorbar(xs, [t["final_mean"] for t in pts], yerr=[t["final_std"] for t in pts], fmt="o-", capsize=4)
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs)
    ax.set_xticklabels(["dw" if float(t["gamma"]) == 0 else f"{float(t['gamma']):g}" for t in pts])
    for x, t in zip(xs, pts):
        if t["params"]:
            ax.annotate(f"{t['params'] / 1e6:.3f}M", (x, t["final_mean"]), textcoords="offset points",
                        xytext=(0, 8), ha="center", fontsize=7)
    ax.set_xlabel("overlap coefficient gamma (dw = depth-wise, gamma -> 0); labels: #Params")
    ax.set_ylabel("test top-1 (%) after the last epoch")
    ax.set_title(f"{title}: accuracy vs gamma (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    _save(fig, path)
    plt.close(fig)
