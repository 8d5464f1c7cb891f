"""What a search's objectives measure: the ``target`` network and its counts.

A front is a claim about the network the user deploys, so ``params`` and ``flops`` are
counted on the *target* network of a genotype (default: the DARTS CIFAR-10 evaluation
network, 36 channels x 20 cells, 32 px, auxiliary head excluded), with the project's one
counter and before any training. The proxy network a trial trains is only a diagnostic
(``proxy_params``): its tiny width and depth order cells differently from the target.

One definition serves ``osep-nas search``, the nnictl trial/tuner, the NNI
``ParetoEvolution`` strategy and the one-shot penalty: :class:`TargetSection` in their
configs, :func:`resolve_target` to a :class:`Target`, :meth:`Target.counts` per genotype.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from torch import nn

from osep_nas import count_flops, count_params
from osep_nas.config import _f
from osep_nas.genotypes import Genotype

__all__ = ["TargetSection", "Target", "TargetParamsExpectation", "resolve_target", "TARGET_PRESETS", "METRICS",
           "DEFAULT_OBJECTIVES"]

#: preset name -> create_model name (a DARTS evaluation network taking ``genotype=``)
TARGET_PRESETS = {"cifar10": "darts_cifar", "imagenet": "darts_imagenet"}
#: metrics an objective may name: measured on validation (accuracy, %) or counted on the target
METRICS = ("accuracy", "params", "flops")
DEFAULT_OBJECTIVES = ("accuracy:max", "params:min")


@dataclass
class TargetSection:
    """The network on which ``params`` and ``flops`` are counted (the one the user deploys)."""
    model: str = _f("cifar10", "cifar10 (DARTS CIFAR-10 evaluation network: 36 ch x 20 cells, 32 px) | imagenet "
                    "(48 ch x 14 cells, 224 px) | a create_model name taking genotype= (darts_cifar, darts_imagenet)")
    init_channels: Optional[int] = _f(None, "override the model's initial channels (unset: its default)",
                                      check="positive", hi=4096)
    layers: Optional[int] = _f(None, "override the model's number of cells (unset: its default)",
                               check="positive", hi=1000)
    num_classes: Optional[int] = _f(None, "override the model's classes (unset: its default)", check="positive",
                                    hi=100000)
    image_size: Optional[int] = _f(None, "input side for FLOPs (unset: the model's, 32 or 224)", check="positive",
                                   hi=4096)


@dataclass(frozen=True)
class Target:
    """A resolved target: ``create_model(model, genotype=g, auxiliary=False, **kwargs)`` at
    ``input_size``. Hashable, so counts are cached per (target, genotype)."""
    model: str
    kwargs: Tuple[Tuple[str, int], ...]
    input_size: Tuple[int, int, int]

    def describe(self) -> str:
        kw = dict(self.kwargs)
        return (f"{self.model} {kw.get('init_channels', '?')} ch x {kw.get('layers', '?')} cells, "
                f"{self.input_size[-1]} px, {kw.get('num_classes', '?')} classes")

    def build(self, genotype: Genotype) -> nn.Module:
        """The target network of ``genotype`` (no auxiliary head)."""
        from osep_nas.models import create_model

        return create_model(self.model, genotype=genotype, auxiliary=False, **dict(self.kwargs))

    def counts(self, genotype: Genotype) -> Dict[str, int]:
        """``{"params", "flops"}`` of the target network (multiply-adds of one image)."""
        return dict(_counts(self, _freeze(genotype)))


def _freeze(g: Genotype) -> Genotype:
    return Genotype(tuple((str(op), int(i)) for op, i in g.normal), tuple(int(c) for c in g.normal_concat),
                    tuple((str(op), int(i)) for op, i in g.reduce), tuple(int(c) for c in g.reduce_concat))


@functools.lru_cache(maxsize=4096)
def _counts(target: Target, genotype: Genotype) -> Tuple[Tuple[str, int], ...]:
    g = Genotype(list(genotype.normal), list(genotype.normal_concat), list(genotype.reduce),
                 list(genotype.reduce_concat))
    net = target.build(g)
    return (("params", int(count_params(net))), ("flops", int(count_flops(net, target.input_size))))


def resolve_target(section: Any = None) -> Target:
    """A :class:`Target` from a :class:`TargetSection`, a mapping of its fields, a preset or
    model name, or ``None`` (the default). ValueError names the bad key."""
    from osep_nas.models import model_info

    if section is None:
        section = TargetSection()
    elif isinstance(section, str):
        section = TargetSection(model=section)
    elif isinstance(section, dict):
        unknown = sorted(set(section) - set(TargetSection.__dataclass_fields__))
        if unknown:
            raise ValueError(f"target: unknown key(s) {', '.join(map(str, unknown))}")
        section = TargetSection(**section)
    name = TARGET_PRESETS.get(str(section.model).strip().lower(), section.model)
    try:
        info = model_info(name)
    except ValueError as exc:
        raise ValueError(f"target.model: {exc}; presets: {', '.join(TARGET_PRESETS)}") from None
    accepted = info.keywords()
    if "genotype" not in accepted:
        raise ValueError(f"target.model: {info.name!r} is not built from a genotype (no genotype= keyword); "
                         f"use {', '.join(TARGET_PRESETS)} or darts_cifar/darts_imagenet")
    import inspect

    defaults = {p.name: p.default for p in inspect.signature(info.factory).parameters.values()}
    kwargs: Dict[str, int] = {}
    for key in ("init_channels", "layers", "num_classes"):
        value = getattr(section, key)
        if value is None:
            value = defaults.get(key)
        if value is not None:
            kwargs[key] = int(value)
    if kwargs.get("layers", 3) < 3:
        raise ValueError(f"target.layers: must be >= 3 (two reduction cells and a normal one), got {kwargs['layers']}")
    side = int(section.image_size or info.input_size[-1])
    if info.input_size[-1] >= 224 and side < 32:
        raise ValueError(f"target.image_size: {info.name} has a stride-4 stem and two reductions; "
                         f"the side must be >= 32, got {side}")
    return Target(info.name, tuple(sorted(kwargs.items())), (int(info.input_size[0]), side, side))


class TargetParamsExpectation:
    """E[#Params of the target network] under per-edge choice probabilities of a DARTS cell
    space (labels ``{cell}/op_{i}_{k}`` and ``{cell}/input_{i}_{k}``): the one-shot search's
    penalty, differentiable when the probabilities are tensors and exact for one-hot ones.

    A DARTS network's #Params is a constant (stem, preprocessing, classifier) plus the sum of
    its edges' ops, and an edge's op depends only on its cell's channels and stride (2 for
    the inputs 0 and 1 of a reduction cell). Every (cell type, stride, op) entry is counted
    once by the project's counter on the op as the target network builds it."""

    def __init__(self, target: Target, ops: Any, num_nodes: int) -> None:
        from osep_nas.networks.darts import Cell
        from osep_nas.ops import OPS

        self.target, self.ops, self.num_nodes = target, [str(o) for o in ops], int(num_nodes)
        ref_edges = [(next((o for o in self.ops if o != "none"), self.ops[0]), 0)] * (2 * self.num_nodes)
        concat = list(range(2, self.num_nodes + 2))
        ref = Genotype(ref_edges, concat, ref_edges, concat)
        net = target.build(ref)
        cells = [m for m in net.modules() if isinstance(m, Cell)]
        self.table: Dict[Tuple[str, int], Dict[str, int]] = {}
        for cell in cells:
            C = next(m for m in cell.preprocess1.modules() if isinstance(m, nn.Conv2d)).out_channels
            kind = "reduce" if cell.reduction else "normal"
            for stride in ((1, 2) if cell.reduction else (1,)):
                row = self.table.setdefault((kind, stride), {op: 0 for op in self.ops})
                for op in self.ops:
                    row[op] += int(count_params(OPS[op](C, stride, True)))
        edges = sum(self.table[(kind, 2 if kind == "reduce" and i < 2 else 1)][op]
                    for kind in ("normal", "reduce") for op, i in ref_edges)
        self.constant = int(target.counts(ref)["params"]) - edges

    def row(self, kind: str, input_index: int) -> Dict[str, int]:
        """#Params of each op on an edge of ``kind`` cells reading state ``input_index``."""
        return self.table[(kind, 2 if kind == "reduce" and input_index < 2 else 1)]

    def params_of(self, genotype: Genotype) -> int:
        """The target's #Params for one genotype (a one-hot choice), from the table."""
        return self.constant + sum(self.row(kind, int(j))[str(op)] for kind in ("normal", "reduce")
                                   for op, j in getattr(genotype, kind))

    def __call__(self, probs: Any) -> Any:
        total: Any = float(self.constant)
        for kind in ("normal", "reduce"):
            for node in range(self.num_nodes):
                for k in (0, 1):
                    p_op = probs[f"{kind}/op_{node + 2}_{k}"]
                    if kind == "reduce":
                        p_in = {int(j[0] if isinstance(j, (list, tuple)) else j): p
                                for j, p in probs[f"{kind}/input_{node + 2}_{k}"].items()}
                        p2 = sum(p for j, p in p_in.items() if j < 2)
                        p1 = sum(p for j, p in p_in.items() if j >= 2)
                        rows = ((p1, self.table[(kind, 1)]), (p2, self.table[(kind, 2)]))
                    else:
                        rows = ((1.0, self.table[(kind, 1)]),)
                    for weight, row in rows:
                        total = total + weight * sum(p * row[str(op)] for op, p in p_op.items())
        return total
