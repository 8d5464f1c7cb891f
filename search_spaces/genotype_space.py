"""A search-space adapter over DARTS genotypes for :class:`~strategies.evolution.ParetoEvolutionCore`.

:class:`GenotypeSpace` gives the multi-trial strategies what they need of a cell space:
random samples, one-edge mutations, a key shared by equivalent genotypes, JSON encoding,
and ``cheap_metrics`` (#Params and FLOPs of the TARGET network, counted before any
training, so over-budget cells are never trained).  The search, the NNI strategy and the
nnictl tuner share it.  Candidates, ops and keys are described in docs/strategies.md.
"""
from __future__ import annotations

import random
from typing import Dict, Hashable, List, Sequence, Tuple, Union

from torch import nn

from osep_nas import count_flops, count_params
from osep_nas.genotypes import Genotype, genotype_from_dict, genotype_to_dict, validate_genotype

from .target import Target, resolve_target
from .presets import PRESETS
from .presets import resolve_op_candidates as _resolve_preset

__all__ = ["PRESETS", "resolve_op_candidates", "GenotypeSpace", "edge_differences"]

CELLS: Tuple[str, str] = ("normal", "reduce")


def resolve_op_candidates(spec: Union[str, Sequence[str]], exclude_none: bool = True) -> List[str]:
    """Op names of a preset of :data:`search_spaces.presets.PRESETS` (``"osep"``, ``"darts"``,
    ``"darts+osep"``), of a comma-separated list (``"osep_3x3,skip_connect,max_pool_3x3"``) or of
    a sequence of names (checked by :func:`search_spaces.presets.resolve_op_candidates`);
    ``none`` is dropped when ``exclude_none``. Bad names raise ValueError."""
    if isinstance(spec, str) and spec.strip() not in PRESETS:
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    elif isinstance(spec, str):
        spec = spec.strip()
    ops = [op for op in _resolve_preset(spec) if not (exclude_none and op == "none")]
    if not ops:
        raise ValueError(f"op candidates {spec!r} leave no op once 'none' is excluded")
    return ops


class GenotypeSpace:
    """DARTS cell genotypes over ``ops`` with ``num_nodes`` nodes per cell (see
    docs/strategies.md). ``init_channels``, ``layers``, ``num_classes`` and ``input_size`` describe the
    proxy network that :meth:`build` makes; ``target`` (a :class:`~search_spaces.target.Target`,
    a preset name or ``None`` for the CIFAR-10 network) the network :meth:`cheap_metrics` counts."""

    def __init__(self, ops: Union[str, Sequence[str]] = "osep", num_nodes: int = 4, exclude_none: bool = True,
                 distinct_inputs: bool = False, init_channels: int = 4, layers: int = 5, num_classes: int = 10,
                 input_size: Tuple[int, int, int] = (3, 8, 8), target: Union[Target, str, None] = None) -> None:
        self.ops = resolve_op_candidates(ops, exclude_none)
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
            raise ValueError(f"space.num_nodes must be a positive integer, got {num_nodes!r}")
        if len(self.ops) < 2 and num_nodes < 2 and distinct_inputs:
            raise ValueError("the space holds a single genotype: give at least two ops or two nodes")
        self.num_nodes = num_nodes
        self.distinct_inputs = bool(distinct_inputs)
        self.init_channels = int(init_channels)
        self.layers = int(layers)
        self.num_classes = int(num_classes)
        self.input_size = tuple(int(s) for s in input_size)
        self.target = target if isinstance(target, Target) else resolve_target(target)
        self._cheap_cache: Dict[Hashable, Dict[str, int]] = {}

    def __repr__(self) -> str:
        return (f"GenotypeSpace(ops={self.ops}, num_nodes={self.num_nodes}, distinct_inputs={self.distinct_inputs}, "
                f"proxy C={self.init_channels} "
                f"layers={self.layers} input={self.input_size}, target {self.target.describe()})")

    # ------------------------------------------------------------------ protocol
    def random_sample(self, rng: random.Random) -> Genotype:
        """Uniform ops; inputs uniform among the node's predecessors (two different ones with
        ``distinct_inputs``)."""
        cells = {}
        for cell in CELLS:
            edges: List[Tuple[str, int]] = []
            for node in range(self.num_nodes):
                if self.distinct_inputs:
                    inputs = rng.sample(range(node + 2), 2)
                else:
                    inputs = [rng.randrange(node + 2), rng.randrange(node + 2)]
                edges += [(rng.choice(self.ops), inputs[0]), (rng.choice(self.ops), inputs[1])]
            cells[cell] = edges
        concat = list(range(2, self.num_nodes + 2))
        return Genotype(cells["normal"], concat, cells["reduce"], list(concat))

    def mutate(self, candidate: Genotype, rng: random.Random) -> Genotype:
        """Change exactly one thing: the op of one edge (to another candidate op) or the input of
        one edge (to another predecessor; with ``distinct_inputs`` not the sibling edge's). The
        site is drawn uniformly among the possible (cell, edge, op|input) changes."""
        g = validate_genotype(candidate)
        sites: List[Tuple[str, int, str]] = []
        for cell in CELLS:
            edges = getattr(g, cell)
            for pos in range(len(edges)):
                if len(self.ops) > 1:
                    sites.append((cell, pos, "op"))
                if self._input_choices(edges, pos):
                    sites.append((cell, pos, "input"))
        if not sites:
            raise ValueError("this genotype admits no single-edge change in this space")
        cell, pos, kind = rng.choice(sites)
        edges = list(getattr(g, cell))
        op, index = edges[pos]
        if kind == "op":
            edges[pos] = (rng.choice([o for o in self.ops if o != op]), index)
        else:
            edges[pos] = (op, rng.choice(self._input_choices(edges, pos)))
        return g._replace(**{cell: edges})

    def _input_choices(self, edges: Sequence[Tuple[str, int]], pos: int) -> List[int]:
        node = pos // 2
        taken = {edges[pos][1], edges[pos ^ 1][1]} if self.distinct_inputs else {edges[pos][1]}
        return [j for j in range(node + 2) if j not in taken]

    def key(self, candidate: Genotype) -> Hashable:
        """Content key; the two edges of a node are sorted (their outputs are summed)."""
        parts: List[Tuple] = []
        for cell in CELLS:
            edges = [(str(op), int(i)) for op, i in getattr(candidate, cell)]
            nodes = tuple(tuple(sorted(edges[k:k + 2])) for k in range(0, len(edges), 2))
            parts.append((cell, nodes, tuple(int(c) for c in getattr(candidate, f"{cell}_concat"))))
        return tuple(parts)

    def encode(self, candidate: Genotype) -> Dict[str, list]:
        return genotype_to_dict(candidate)

    def decode(self, value: Dict[str, list]) -> Genotype:
        return genotype_from_dict(value)

    def cheap_metrics(self, candidate: Genotype) -> Dict[str, int]:
        """``params``/``flops`` of the target network (the objectives) and ``proxy_params``/
        ``proxy_flops`` of the proxy network (diagnostics), counted once per key."""
        k = self.key(candidate)
        hit = self._cheap_cache.get(k)
        if hit is None:
            net = self.build(candidate)
            hit = {**self.target.counts(candidate), "proxy_params": int(count_params(net)),
                   "proxy_flops": int(count_flops(net, self.input_size))}
            self._cheap_cache[k] = hit
        return dict(hit)

    # ------------------------------------------------------------------ helpers
    def build(self, candidate: Genotype) -> nn.Module:
        """The proxy network (the DARTS CIFAR network at the proxy width/depth, no auxiliary head)."""
        from osep_nas.models import create_model

        return create_model("darts_cifar", genotype=candidate, init_channels=self.init_channels,
                            layers=self.layers, num_classes=self.num_classes, auxiliary=False)

    def contains(self, candidate: Genotype) -> bool:
        """Whether ``candidate`` is a genotype of this space (ops, node count, inputs, concat)."""
        try:
            g = validate_genotype(candidate)
        except ValueError:
            return False
        concat = list(range(2, self.num_nodes + 2))
        for cell in CELLS:
            edges = getattr(g, cell)
            if len(edges) != 2 * self.num_nodes or list(getattr(g, f"{cell}_concat")) != concat:
                return False
            if any(op not in self.ops for op, _ in edges):
                return False
            if self.distinct_inputs and any(edges[k][1] == edges[k + 1][1] for k in range(0, len(edges), 2)):
                return False
        return True


def edge_differences(a: Genotype, b: Genotype) -> List[Tuple[str, int, str]]:
    """(cell, edge position, "op"|"input") of every field that differs between two genotypes
    of the same shape (used by tests and reports)."""
    diffs: List[Tuple[str, int, str]] = []
    for cell in CELLS:
        for pos, ((op1, i1), (op2, i2)) in enumerate(zip(getattr(a, cell), getattr(b, cell))):
            if op1 != op2:
                diffs.append((cell, pos, "op"))
            if i1 != i2:
                diffs.append((cell, pos, "input"))
    return diffs
