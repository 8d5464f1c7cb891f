"""The report of a multi-objective search: Pareto table, ``pareto.yaml``, ``pareto.png``,
the knee's cell plots and its genotype file.

Works on plain trial records (the lines of ``trials.jsonl``: ``trial``, ``status``,
``genotype`` as the DARTS repr or a :class:`~osep_nas.genotypes.Genotype`, and the metrics),
so ``osep-nas search`` calls it at the end, and ``osep-nas export`` or the NNI strategy can
call it on any list of records. Every figure printed is measured or counted: accuracy and
#Params/FLOPs come from the records, the CIFAR network's #Params is counted on the network
built from the genotype. Every file is written atomically.
"""
from __future__ import annotations

import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from osep_nas.genotypes import Genotype, parse_genotype, plot_cell, save_genotype
from osep_nas.io import atomic_write_bytes, atomic_write_text, read_user_text

from .pareto import Objective, as_objectives, knee_point, pareto_front, to_min_matrix

__all__ = ["Report", "load_trials", "successful", "pareto_of", "format_front_table", "plot_pareto",
           "pareto_yaml_text", "write_report", "DEFAULT_OBJECTIVES"]

DEFAULT_OBJECTIVES = ("accuracy:max", "params:min")
Records = Sequence[Mapping[str, Any]]


@dataclass
class Report:
    """What :func:`write_report` produced: front records (ascending #Params), the knee record,
    the printed table and the files written."""
    front: List[Dict[str, Any]]
    knee: Optional[Dict[str, Any]]
    table: str
    files: Dict[str, Path] = field(default_factory=dict)


def load_trials(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """Records of a ``trials.jsonl`` (a torn last line, as a kill may leave, is ignored)."""
    p = Path(path)
    if p.is_dir():
        p = p / "trials.jsonl"
    if not p.is_file():
        raise FileNotFoundError(f"trials log not found: {p}")
    out: List[Dict[str, Any]] = []
    lines = read_user_text(p, 256 << 20, "trials log").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                break
            raise ValueError(f"{p}:{n}: not a JSON line") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{p}:{n}: a trial record must be a JSON object")
        out.append(rec)
    return out


def _genotype(rec: Mapping[str, Any]) -> Genotype:
    g = rec.get("genotype")
    if isinstance(g, str):
        return parse_genotype(g)
    if isinstance(g, Mapping):
        return parse_genotype(json.dumps(g))
    if g is None:
        raise ValueError(f"trial {rec.get('trial')} has no genotype")
    return Genotype(*g)


def successful(records: Records, objectives: Sequence[Objective]) -> List[Dict[str, Any]]:
    """Records with status ok and a finite value for every objective."""
    out = []
    for rec in records:
        if rec.get("status", "ok") != "ok":
            continue
        try:
            if all(math.isfinite(float(rec[o.name])) for o in objectives):
                out.append(dict(rec))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _sort_key(objectives: Sequence[Objective]):
    # ascending in the first "min" objective (the #Params axis), then in the rest
    order = sorted(objectives, key=lambda o: o.direction != "min")
    return lambda r: tuple(o.sign * float(r[o.name]) for o in order) + (r.get("trial", 0),)


def pareto_of(records: Records, objectives: Any = DEFAULT_OBJECTIVES
              ) -> Tuple[List[Dict[str, Any]], Optional[Dict[str, Any]]]:
    """(front records sorted by ascending #Params-like objective, knee record) of the
    successful records; the knee is :func:`strategies.pareto.knee_point` of the front.
    Trials with exactly the same objective values appear once (the earliest); the later
    ones are listed in its ``ties``."""
    objs = as_objectives(objectives)
    ok = successful(records, objs)
    if not ok:
        return [], None
    front: List[Dict[str, Any]] = []
    by_point: Dict[Tuple[float, ...], Dict[str, Any]] = {}
    for i in pareto_front(ok, objs):  # ascending trial order: the first of equal points is kept
        rec = ok[i]
        point = tuple(float(rec[o.name]) for o in objs)
        if point in by_point:
            by_point[point].setdefault("ties", []).append(rec.get("trial"))
        else:
            by_point[point] = rec
            front.append(rec)
    front.sort(key=_sort_key(objs))
    knee = front[knee_point(to_min_matrix(front, objs))]
    return front, knee


def _fmt_int(v: Any) -> str:
    return "-" if v is None else f"{int(v):,}"


def format_front_table(front: Records, knee: Optional[Mapping[str, Any]], objectives: Any = DEFAULT_OBJECTIVES,
                       n_trials: Optional[int] = None, target: Optional[str] = None) -> str:
    """The Pareto front as a text table (``*`` marks the knee); ``target`` names the network
    whose #Params/FLOPs the records hold."""
    objs = as_objectives(objectives)
    head = f"Pareto front ({', '.join(f'{o.name}:{o.direction}' for o in objs)}): {len(front)} architecture(s)"
    if n_trials is not None:
        head += f" of {n_trials} trial(s)"
    if not front:
        return head + "\n  (no successful trial)"
    lines = [head, f"  {'':1}{'id':>4}  {'rung':>4}  {'steps':>5}  {'val acc %':>9}  {'#Params':>11}  {'FLOPs':>13}  "
                   f"{'proxy #Params':>13}"]
    for rec in front:
        mark = "*" if knee is not None and rec.get("trial") == knee.get("trial") else " "
        ties = rec.get("ties") or []
        lines.append(f"  {mark}{rec.get('trial', '?'):>4}  {_fmt_int(rec.get('rung')):>4}  "
                     f"{_fmt_int(rec.get('steps')):>5}  {float(rec['accuracy']):>9.2f}  "
                     f"{_fmt_int(rec.get('params')):>11}  {_fmt_int(rec.get('flops')):>13}  "
                     f"{_fmt_int(rec.get('proxy_params')):>13}"
                     + (f"  (same values: {', '.join('#' + str(t) for t in ties)})" if ties else ""))
    lines.append(f"  * = knee. val acc: top-1 of the trained proxy network on the validation part of the training "
                 f"split, at the trial's highest rung (rung r = r-th promotion, 'steps' SGD steps).")
    lines.append(f"  #Params, FLOPs (multiply-adds per image): the target network"
                 f"{' (' + target + ')' if target else ''} of the genotype; proxy #Params: the small network "
                 f"that was trained (a diagnostic, not an objective).")
    return "\n".join(lines)


def plot_pareto(path: Union[str, Path], records: Records, front: Records, knee: Optional[Mapping[str, Any]],
                objectives: Any = DEFAULT_OBJECTIVES, title: Optional[str] = None,
                subtitle: Optional[str] = None, target: Optional[str] = None) -> Path:
    """Accuracy vs the cost objective (#Params by default) of every successful trial, the
    front highlighted (and connected for two objectives), the knee marked; written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    objs = as_objectives(objectives)
    ok = successful(records, objs)
    y_key = "accuracy"
    cost = [o.name for o in objs if o.name != y_key]
    x_key = "params" if "params" in cost else cost[0]
    net = f"the target network ({target})" if target else "the target network"
    x_label = {"params": f"#Params of {net}", "flops": f"FLOPs of {net} (multiply-adds)"}[x_key]

    fig = Figure(figsize=(7.5, 5.0), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    front_ids = {r.get("trial") for r in front}
    others = [r for r in ok if r.get("trial") not in front_ids]
    ax.scatter([r[x_key] for r in others], [r[y_key] for r in others], s=22, c="#9aa5b1", alpha=0.8,
               edgecolors="none", label=f"trials ({len(ok)} ok)", zorder=2)
    if front:
        fx = [r[x_key] for r in front]
        fy = [r[y_key] for r in front]
        if len(objs) == 2:
            order = sorted(range(len(front)), key=lambda i: (fx[i], fy[i]))
            ax.step([fx[i] for i in order], [fy[i] for i in order], where="post", color="#d62728", lw=1.4,
                    alpha=0.8, zorder=3)
        ax.scatter(fx, fy, s=46, c="#d62728", edgecolors="black", linewidths=0.6, zorder=4,
                   label=f"Pareto front ({len(front)})")
        for r in front:
            label = f"#{r.get('trial')}" + "".join(f"=#{t}" for t in (r.get("ties") or [])[:3])
            ax.annotate(label, (r[x_key], r[y_key]), textcoords="offset points", xytext=(5, -11),
                        fontsize=7, color="#7f1010")
    if knee is not None:
        ax.scatter([knee[x_key]], [knee[y_key]], s=260, marker="*", c="#ffbf00", edgecolors="black",
                   linewidths=0.9, zorder=5, label=f"knee #{knee.get('trial')}: {float(knee[y_key]):.2f}%, "
                                                   f"{int(knee[x_key]):,}")
    ax.set_xlabel(x_label)
    ax.set_ylabel("top-1 accuracy on the validation split (%)")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    main = title or f"Pareto front: accuracy vs {'#Params' if x_key == 'params' else 'FLOPs'}"
    ax.set_title(main + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    p = Path(path)
    atomic_write_bytes(p, buf.getvalue())
    return p


def pareto_yaml_text(front: Records, knee: Optional[Mapping[str, Any]], objectives: Any = DEFAULT_OBJECTIVES,
                     meta: Optional[Mapping[str, Any]] = None) -> str:
    """YAML of the front: each member's id, metrics and genotype as the DARTS repr (which
    :func:`osep_nas.genotypes.parse_genotype` reads), plus the knee's id."""
    import yaml

    objs = as_objectives(objectives)
    members = []
    for rec in front:
        entry: Dict[str, Any] = {"id": rec.get("trial"), "knee": bool(knee is not None and
                                                                      rec.get("trial") == knee.get("trial"))}
        for key in ("accuracy", "params", "flops", "proxy_params", "rung", "steps", "train_loss", "origin", "parent",
                    "ties"):
            if key in rec:
                entry[key] = rec[key]
        entry["genotype"] = repr(_genotype(rec))
        members.append(entry)
    doc: Dict[str, Any] = {
        "objectives": [f"{o.name}:{o.direction}" for o in objs],
        "knee": None if knee is None else knee.get("trial"),
    }
    if meta:
        doc["meta"] = dict(meta)
    doc["front"] = members
    header = ("# osep-nas search: the Pareto front. Each genotype is a DARTS Genotype(...) repr;\n"
              "# osep_nas.genotypes.parse_genotype reads it. accuracy is the validation top-1 (%) of the\n"
              "# trained proxy network at its highest rung (steps), params/flops the #Params/multiply-adds\n"
              "# of the target network (meta.target) of the genotype, proxy_params the proxy's #Params.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, width=4096, default_flow_style=False)


def write_report(out_dir: Union[str, Path], records: Records, objectives: Any = DEFAULT_OBJECTIVES, *,
                 plots: bool = True, print_table: bool = True, write_files: bool = True,
                 target: Optional[str] = None, title: Optional[str] = None, subtitle: Optional[str] = None,
                 stream: Optional[IO[str]] = None) -> Report:
    """Compute the front and knee of ``records`` (one per trial), print the table and the knee
    genotype to ``stream`` (stdout), and write ``pareto.yaml``, ``knee_genotype.yaml`` and
    (``plots``) ``pareto.png``, ``knee_normal.png``, ``knee_reduce.png`` into ``out_dir``.
    ``target`` names the network the records' #Params/FLOPs were counted on."""
    out = Path(out_dir)
    objs = as_objectives(objectives)
    front, knee = pareto_of(records, objs)
    table = format_front_table(front, knee, objs, n_trials=len(records), target=target)
    files: Dict[str, Path] = {}
    if write_files:
        meta = {k: v for k, v in (("target", target), ("subtitle", subtitle)) if v}
        files["pareto.yaml"] = out / "pareto.yaml"
        atomic_write_text(files["pareto.yaml"], pareto_yaml_text(front, knee, objs, meta=meta or None))
        if knee is not None:
            files["knee_genotype.yaml"] = out / "knee_genotype.yaml"
            save_genotype(_genotype(knee), files["knee_genotype.yaml"])
        if plots:
            files["pareto.png"] = plot_pareto(out / "pareto.png", records, front, knee, objs, title=title,
                                              subtitle=subtitle, target=target)
            if knee is not None:
                g = _genotype(knee)
                for cell in ("normal", "reduce"):
                    files[f"knee_{cell}.png"] = Path(plot_cell(g, cell, out / f"knee_{cell}.png",
                                                               title=f"knee #{knee.get('trial')}: {cell} cell"))
    if print_table:
        s = stream or sys.stdout
        print(table, file=s)
        if knee is not None:
            print(f"best (knee) genotype #{knee.get('trial')} ({float(knee['accuracy']):.2f}%, "
                  f"{int(knee['params']):,} target params): {repr(_genotype(knee))}", file=s)
        else:
            print("no successful trial: no best genotype", file=s)
        s.flush()
    return Report(front=front, knee=knee, table=table, files=files)
