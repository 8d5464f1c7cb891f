"""The results of a study: ``results.csv`` (one row per run and seed), ``results.md`` (mean and
std over seeds) and plots, all written atomically. Accuracy is the test top-1 after the LAST
epoch; the best epoch on the test split would be an optimistic pick."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Dict, List

from osep_nas.io import atomic_open, atomic_write_text

__all__ = ["ROW_FIELDS", "summarize", "markdown_table", "write_results", "plot_params", "plot_gamma"]

#: the columns of results.csv
ROW_FIELDS = ["run", "group", "model", "gamma", "seed", "params", "eval_params", "flops", "epochs", "final_top1",
              "best_top1", "wall_s"]
#: plot markers of run groups (searched, hand-designed and random cells apart); others cycle
_MARKERS = {"searched": "o", "hand-designed": "s", "random": "^"}


def _mean_std(values: List[Any]) -> tuple:
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
        first = g[0]
        table.append({"run": name, "group": first.get("group", ""), "model": first["model"], "gamma": first["gamma"],
                      "seeds": len(g), "params": first["params"], "eval_params": first.get("eval_params", ""),
                      "flops": first["flops"], "epochs": first["epochs"],
                      "final_mean": fm, "final_std": fs, "best_mean": bm, "best_std": bs})
    return table


def markdown_table(table: List[Dict[str, Any]], title: str) -> str:
    """The study's table; the group and 36 x 20 #Params columns appear when runs have them."""
    grouped = any(t["group"] for t in table)
    evaluated = any(t["eval_params"] for t in table)
    head = ["run"] + (["group"] if grouped else []) + ["model", "#Params (M)"]
    head += ["#Params 36x20 (M)"] if evaluated else []
    head += ["FLOPs (G)", "epochs", "seeds", "test top-1 % (last epoch, mean ± std)", "best-epoch top-1 %"]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |",
             "|" + "|".join("---" if h in ("run", "group", "model") else "---:" for h in head) + "|"]
    for t in table:
        cells = [t["run"]] + ([t["group"]] if grouped else []) + [t["model"], _millions(t["params"])]
        cells += [_millions(t["eval_params"])] if evaluated else []
        cells += [f"{t['flops'] / 1e9:.5f}" if t["flops"] else "?", str(t["epochs"]), str(t["seeds"]),
                  _mean_pm(t["final_mean"], t["final_std"], t["seeds"]), _mean_pm(t["best_mean"], t["best_std"], t["seeds"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _mean_pm(mean: float, std: float, seeds: int) -> str:
    """``mean ± std``; the mean alone for one seed, which has no spread to show."""
    return f"{mean:.2f} ± {std:.2f}" if seeds > 1 else f"{mean:.2f}"


def _millions(n: Any) -> str:
    return f"{n / 1e6:.3f}" if n else "?"


def write_results(rows: List[Dict[str, Any]], out_dir: Path, title: str) -> None:
    """results.csv, results.md and the plots, all written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=ROW_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows([{k: r.get(k, "") for k in ROW_FIELDS} for r in rows])
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
    """Accuracy (mean ± std over seeds) against #Params, one labeled point per run; runs of
    one group share a marker and a color, and the legend names the groups."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    grouped = any(t["group"] for t in table)
    styles: Dict[str, tuple] = {}
    for t in table:
        if not t["params"]:
            continue
        x = t["params"] / 1e6
        if grouped:
            group = t["group"] or "other"
            label = "_nolegend_" if group in styles else group  # one legend entry per group
            if group not in styles:
                styles[group] = (_MARKERS.get(group, "D"), f"C{len(styles)}")
            marker, color = styles[group]
            ax.errorbar([x], [t["final_mean"]], yerr=[t["final_std"]], fmt=marker, color=color, capsize=4,
                        label=label)
        else:
            ax.errorbar([x], [t["final_mean"]], yerr=[t["final_std"]], fmt="o", capsize=4, label=t["run"])
        ax.annotate(t["run"], (x, t["final_mean"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    if grouped:
        ax.legend(fontsize=8)
    ax.set_xlabel("#Params (M) of the retrained network")
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
