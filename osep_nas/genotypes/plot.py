"""Drawing one cell of a genotype to a PNG, SVG or PDF file (networkx layout, matplotlib's
Agg canvas; both imported only when a plot is asked for)."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from osep_nas.genotypes.base import Genotype, check_cell_type
from osep_nas.genotypes.validation import validate_genotype

__all__ = ["plot_cell"]

_COLORS = {"input": "#a8e6a1", "node": "#9ecbff", "output": "#ffe08a"}
_OUT = "c_{k}"


def _cell_graph(genotype: Genotype, cell_type: str):
    """networkx DiGraph of one cell; edge attribute ``ops`` lists the op names (two edges
    from the same input merge into one arrow carrying both names)."""
    import networkx as nx

    g = validate_genotype(genotype)
    edges = getattr(g, cell_type)
    concat = getattr(g, f"{cell_type}_concat")
    n_nodes = len(edges) // 2
    names = ["c_{k-2}", "c_{k-1}"] + [str(n) for n in range(n_nodes)]
    graph = nx.DiGraph()
    for idx, name in enumerate(names):
        graph.add_node(name, kind="input" if idx < 2 else "node")
    graph.add_node(_OUT, kind="output")
    for pos, (op, j) in enumerate(edges):
        dst, src = names[pos // 2 + 2], names[j]
        if graph.has_edge(src, dst):
            graph[src][dst]["ops"].append(op)
        else:
            graph.add_edge(src, dst, ops=[op])
    for k in concat:
        graph.add_edge(names[k], _OUT, ops=[])
    return graph, names


def _layout(graph, names: List[str]) -> Dict[str, Tuple[float, float]]:
    """Left-to-right layered layout: x = longest path from the inputs; within a layer the
    nodes are ordered by the mean height of their predecessors (fewer crossings)."""
    depth: Dict[str, int] = {names[0]: 0, names[1]: 0}
    for name in names[2:]:
        depth[name] = 1 + max(depth[p] for p in graph.predecessors(name))
    depth[_OUT] = max(depth.values()) + 1
    pos: Dict[str, Tuple[float, float]] = {names[0]: (0.0, 1.0), names[1]: (0.0, -1.0)}
    for x in range(1, depth[_OUT] + 1):
        members = [n for n in names[2:] + [_OUT] if depth[n] == x]
        members.sort(key=lambda n: -sum(pos[p][1] for p in graph.predecessors(n) if p in pos)
                     / max(1, sum(1 for p in graph.predecessors(n) if p in pos)))
        m = len(members)
        for r, name in enumerate(members):
            pos[name] = (2.8 * x, 1.1 * ((m - 1) / 2.0 - r))
    return pos


def _place_labels(segments, nodes, box_of, node_half):
    """Greedy label placement along straight edges: for each edge pick the point (among
    fractions of its length) whose label box overlaps the node discs and the labels placed
    so far the least, preferring the middle of the edge."""
    placed: List[Tuple[float, float, float, float]] = []  # centre x, centre y, half width, half height
    out = []

    def overlap(a, b) -> float:
        dx = min(a[0] + a[2], b[0] + b[2]) - max(a[0] - a[2], b[0] - b[2])
        dy = min(a[1] + a[3], b[1] + b[3]) - max(a[1] - a[3], b[1] - b[3])
        return dx * dy if dx > 0 and dy > 0 else 0.0

    node_boxes = [(x, y, node_half[0], node_half[1]) for x, y in nodes]
    for (x0, y0), (x1, y1), text in segments:
        hw, hh = box_of(text)
        best, best_cost = None, None
        for step in range(13):
            t = 0.5 + (0.05 * ((step + 1) // 2)) * (1 if step % 2 else -1)
            c = (x0 + t * (x1 - x0), y0 + t * (y1 - y0), hw, hh)
            cost = sum(overlap(c, b) for b in placed) * 4 + sum(overlap(c, b) for b in node_boxes) + abs(t - 0.5) * 1e-3
            if best_cost is None or cost < best_cost - 1e-12:
                best, best_cost = c, cost
        placed.append(best)
        out.append(((best[0], best[1]), text))
    return out


def plot_cell(genotype: Genotype, cell_type: str, path: Union[str, "os.PathLike[str]"],
              title: Optional[str] = None) -> Path:
    """Draw one cell (``"normal"`` or ``"reduce"``) to ``path`` (.png, .svg or .pdf), atomically.

    Inputs ``c_{k-2}``, ``c_{k-1}`` (green), intermediate nodes ``0..n-1`` (blue) and the
    output ``c_{k}`` (yellow, fed by the concatenated nodes through dashed arrows), laid
    out left to right, op edges labelled with their op names.  Uses matplotlib's Agg
    canvas directly (no pyplot, no global backend change).
    """
    import networkx as nx
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from osep_nas.io import atomic_write_bytes

    check_cell_type(cell_type)
    p = Path(path)
    fmt = p.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg", "pdf"):
        raise ValueError(f"plot path must end with .png, .svg or .pdf, got {p.name!r}")
    graph, names = _cell_graph(genotype, cell_type)
    pos = _layout(graph, names)
    xs = [x for x, _ in pos.values()]
    ys = [y for _, y in pos.values()]
    span_x, span_y = max(xs) - min(xs), max(ys) - min(ys)
    width = max(7.0, 1.15 * span_x + 2.5)
    height = max(4.0, 1.25 * span_y + 2.2)
    fig = Figure(figsize=(width, height), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_axis_off()
    node_size = 1500  # points^2: a disc of about 0.54 inch
    axes_w, axes_h = width * 0.86, height * 0.78  # inches the data roughly spans
    per_in_x = (span_x * 1.16 + 1e-9) / axes_w
    per_in_y = (max(span_y, 1.0) * 1.3) / axes_h
    op_edges = [(u, v) for u, v, d in graph.edges(data=True) if d["ops"]]
    nx.draw_networkx_edges(graph, pos, ax=ax, edgelist=op_edges, arrows=True, arrowstyle="-|>", arrowsize=15,
                           width=1.4, edge_color="#444444", node_size=node_size)
    y_out = pos[_OUT][1]
    for u, v, d in graph.edges(data=True):
        if d["ops"]:
            continue
        (x0, y0), (x1, y1) = pos[u], pos[v]
        blocked = any(x0 < pos[n][0] < x1 and abs(y0 + (y1 - y0) * (pos[n][0] - x0) / (x1 - x0) - pos[n][1]) < 0.45
                      for n in graph.nodes if n not in (u, v))
        bend = (-0.15 if y0 > y_out else 0.15) if abs(y0 - y_out) > 1e-9 else 0.0
        if blocked:
            bend = -0.3 if y0 >= y_out else 0.3
        nx.draw_networkx_edges(graph, pos, ax=ax, edgelist=[(u, v)], arrows=True, arrowstyle="-|>",
                               arrowsize=13, width=1.1, edge_color="#9a9a9a", style="dashed",
                               node_size=node_size, connectionstyle=f"arc3,rad={bend}")
    kinds = nx.get_node_attributes(graph, "kind")
    order = list(graph.nodes)
    nx.draw_networkx_nodes(graph, pos, ax=ax, nodelist=order, node_size=node_size,
                           node_color=[_COLORS[kinds[n]] for n in order], edgecolors="#333333", linewidths=1.2)
    labels = {n: (f"${n}$" if n.startswith("c_") else n) for n in order}
    nx.draw_networkx_labels(graph, pos, ax=ax, labels=labels, font_size=13, font_weight="bold")
    segments = [(pos[u], pos[v], "\n".join(graph[u][v]["ops"])) for u, v in op_edges]

    def box_of(text: str) -> Tuple[float, float]:
        lines = text.split("\n")
        w_in = 0.075 * max(len(line) for line in lines) + 0.1
        h_in = 0.16 * len(lines) + 0.08
        return w_in / 2 * per_in_x, h_in / 2 * per_in_y

    node_half = (0.27 * per_in_x, 0.27 * per_in_y)
    for (x, y), text in _place_labels(segments, [pos[n] for n in order], box_of, node_half):
        ax.text(x, y, text, fontsize=9, ha="center", va="center", zorder=5,
                bbox=dict(boxstyle="round,pad=0.25", fc="white", ec="#aaaaaa", alpha=0.95))
    ax.set_title(title or f"{cell_type} cell", fontsize=14)
    ax.margins(0.08, 0.15)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    atomic_write_bytes(p, buf.getvalue())
    return p
