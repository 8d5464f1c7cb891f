"""The DARTS cell search space with osep primitives, as an NNI 3.0 model space.

:class:`OSepDartsSpace` is the DARTS network of :mod:`osep_nas.networks.darts` with a search
edge in place of every fixed op, one set of choices for the normal cells and one for the
reduction cells (one genotype), labelled like NNI's own DARTS space (``normal/op_{i}_{k}``,
``normal/input_{i}_{k}``, ``reduce/...``; docs/strategies.md).  ``space.freeze(arch)``
returns an :class:`OSepDartsNet`: ``NetworkCIFAR`` with fresh weights and no NNI modules.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from search_spaces._nni import nas_nn  # noqa: F401  (quiet NNI import first)
from nni.mutable import label_scope
from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace
from nni.nas.profiler.pytorch.utils import ShapeTensor

from osep_nas.genotypes import (CELL_TYPES, Genotype, arch_to_genotype, genotype_to_arch, random_genotype,
                                validate_genotype)
from osep_nas.networks.darts import (AuxiliaryHead, CellBase, DartsSkeleton, NetworkCIFAR, check_sizes, drop_path,
                                     reduction_indices)
from osep_nas.ops import OPS
from osep_nas.renamed import accepts_renamed
from search_spaces.presets import PRESETS, resolve_op_candidates  # noqa: F401  (re-exported)
from search_spaces.profilers import register_flops, search_edge_flops

__all__ = [
    "PRESETS", "resolve_op_candidates", "OSepDartsSpace", "OSepDartsNet", "SearchEdge", "SearchNode", "SearchCell",
    "AuxiliaryHead", "drop_path", "reduction_indices", "random_genotype",
]

STEM_MULTIPLIER = 3
#: deprecated keyword -> its name in the one vocabulary of osep_nas' factories
_RENAMED = {"width": "init_channels", "num_cells": "layers"}


def _is_path_sampling(module: nn.Module) -> bool:
    """True for NNI's PathSamplingInput (RandomOneShot, ENAS), which only reads the sampled
    candidate; Proxyless' input also samples but needs every candidate for its gradient."""
    from nni.nas.oneshot.pytorch.supermodule.sampling import PathSamplingInput

    return type(module) is PathSamplingInput


# -- edges ---------------------------------------------------------------------------------
class _NodeMemo:
    """The outputs of one node's shared candidates, kept while the node computes (``table`` is
    None outside a node's forward)."""

    def __init__(self) -> None:
        self.table: Optional[Dict[tuple, tuple]] = None


class SharedCandidate(nn.Module):
    """A candidate op shared by the two edges of a node.  While its node computes, a second
    call on the same input tensor returns the first call's output: the second edge mixes the
    same candidate outputs with its own weights instead of computing them again."""

    def __init__(self, op: nn.Module, memo: _NodeMemo):
        super().__init__()
        self.op = op
        self._memo = memo

    def forward(self, x: Any) -> Any:
        table = self._memo.table
        if table is None:
            return self.op(x)
        key = (id(self), id(x))
        hit = table.get(key)
        if hit is not None and hit[0] is x:  # the input is held, so its id cannot be reused
            return hit[1]
        y = self.op(x)
        table[key] = (x, y)
        return y


class SearchEdge(nn.Module):
    """One searchable edge: ``op_{i}_{k}`` (LayerChoice) applied to the input ``input_{i}_{k}``
    (InputChoice over states ``0..i-1``).

    The op runs on every candidate input and the InputChoice picks one result: in a
    reduction cell the op's stride depends on the input (2 on the cell inputs, 1 on
    nodes), so the edge holds two LayerChoices with one label, ``op_reduce`` (stride 2)
    and ``op`` (stride 1), and every candidate has the output shape that NNI's
    differentiable InputChoice needs.  Under path sampling only the sampled input runs.
    The candidate modules are the node's (:class:`SearchNode`), shared with its other edge.
    """

    def __init__(self, state_index: int, k: int, ops: Optional[Mapping[str, nn.Module]],
                 ops_reduce: Optional[Mapping[str, nn.Module]]):
        super().__init__()
        self.state_index = state_index
        self.k = k
        self.reduction = ops_reduce is not None
        self.input = InputChoice(state_index, 1, label=f"input_{state_index}_{k}")
        label = f"op_{state_index}_{k}"
        # stride-2 group (cell inputs of a reduction cell) and stride-1 group (everything else)
        self.op_reduce: Optional[LayerChoice] = LayerChoice(dict(ops_reduce), label=label) if ops_reduce else None
        self.op: Optional[LayerChoice] = LayerChoice(dict(ops), label=label) if ops else None

    def op_for(self, j: int) -> nn.Module:
        """The (shared) op module applied to candidate input ``j``."""
        return self.op_reduce if (self.reduction and j < 2) else self.op  # type: ignore[return-value]

    def forward(self, states: List[torch.Tensor]) -> torch.Tensor:
        n = self.state_index
        sampled = getattr(self.input, "_sampled", None)  # set by NNI's sampling supernets
        if sampled is not None and _is_path_sampling(self.input):
            chosen = sampled if isinstance(sampled, list) else [sampled]
            cands: List[Any] = [None] * n
            for j in chosen:
                cands[j] = self.op_for(j)(states[j])
            return self.input(cands)
        if isinstance(states[0], ShapeTensor):
            # NNI profilers' symbolic pass: the candidates of one op group have one shape, so run
            # each group once (its LayerChoice formula already visits every op)
            outs: Dict[int, Any] = {}
            for j in range(n):
                op = self.op_for(j)
                if id(op) not in outs:
                    outs[id(op)] = op(states[j])
            return self.input([outs[id(self.op_for(j))] for j in range(n)])
        return self.input([self.op_for(j)(states[j]) for j in range(n)])


class SearchNode(nn.Module):
    """Node ``i`` of a search cell: the sum of its two edges (labels ``op_{i}_0``/``input_{i}_0``
    and ``op_{i}_1``/``input_{i}_1``).

    The edges share one set of candidate ops per stride, as DARTS shares one mixed op per
    (node, input): each candidate runs once per input in a forward (14 op applications per
    4-node cell, not 28) and each edge mixes the outputs with its own op and input weights.
    """

    def __init__(self, state_index: int, candidates: Sequence[str], C: int, reduction: bool,
                 osep_kw: Mapping[str, Any]):
        super().__init__()
        self.state_index = state_index
        self._memo = _NodeMemo()

        def group(stride: int) -> Dict[str, nn.Module]:
            return {op: SharedCandidate(OPS[op](C, stride, True, **osep_kw), self._memo) for op in candidates}

        ops_reduce = group(2) if reduction else None
        ops = group(1) if (not reduction or state_index > 2) else None
        self.edges = nn.ModuleList(SearchEdge(state_index, k, ops, ops_reduce) for k in (0, 1))

    def forward(self, states: List[torch.Tensor]) -> torch.Tensor:
        self._memo.table = {}
        try:
            return self.edges[0](states) + self.edges[1](states)
        finally:
            self._memo.table = None


class SearchCell(CellBase):
    """A DARTS cell of ``num_nodes`` :class:`SearchNode` (all nodes concatenated)."""

    def __init__(self, cell_type: str, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool, num_nodes: int, candidates: Sequence[str], osep_kw: Mapping[str, Any]):
        super().__init__(C_prev_prev, C_prev, C, reduction, reduction_prev, num_nodes, range(2, num_nodes + 2))
        self.cell_type = cell_type
        with label_scope(cell_type):
            self.nodes = nn.ModuleList(SearchNode(node + 2, candidates, C, reduction, osep_kw)
                                       for node in range(num_nodes))

    def node(self, n: int, states: List[torch.Tensor], drop_prob: float) -> torch.Tensor:
        return self.nodes[n](states)  # the supernet has no drop path


# -- arguments --------------------------------------------------------------------------------
def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@accepts_renamed(**_RENAMED)
def _space_config(op_candidates: Union[str, Sequence[str]] = "osep", init_channels: int = 16, layers: int = 8,
                  num_nodes: int = 4, num_classes: int = 10, input_size: int = 32, in_channels: int = 3,
                  auxiliary: bool = False, drop_path_prob: float = 0.0, **osep_kw: Any) -> Dict[str, Any]:
    """Validate and normalise the arguments of :class:`OSepDartsSpace` (same signature)."""
    drop = float(drop_path_prob)
    if not 0.0 <= drop < 1.0:
        raise ValueError(f"drop_path_prob must be in [0, 1), got {drop_path_prob!r}")
    check_sizes(init_channels, layers, num_classes)
    cfg = dict(
        op_candidates=resolve_op_candidates(op_candidates), init_channels=init_channels, layers=layers,
        num_nodes=_positive(num_nodes, "num_nodes"), num_classes=num_classes,
        input_size=_positive(input_size, "input_size"), in_channels=_positive(in_channels, "in_channels"),
        auxiliary=bool(auxiliary), drop_path_prob=drop, osep_kw=dict(osep_kw),
    )
    if cfg["num_nodes"] > 64:
        raise ValueError(f"num_nodes must be at most 64, got {num_nodes}")
    # catches unknown keywords (typos) once, with the ops' own message
    OPS[cfg["op_candidates"][0]](8, 1, True, **cfg["osep_kw"])
    return cfg


class _ShapePassAuxiliary:
    """Runs the auxiliary head in NNI profilers' symbolic pass, for its shapes only (it counts
    as zero), in eval mode, where batch norm accepts a batch of one."""

    def _auxiliary_logits(self, features: torch.Tensor) -> Optional[torch.Tensor]:
        if not isinstance(features, ShapeTensor):
            return DartsSkeleton._auxiliary_logits(self, features)  # type: ignore[arg-type]
        head = self.auxiliary_head  # type: ignore[attr-defined]
        mode = head.training
        head.eval()
        head(features)
        head.train(mode)
        return None


# -- the fixed network and the space -------------------------------------------------------------
class OSepDartsNet(_ShapePassAuxiliary, NetworkCIFAR):
    """``NetworkCIFAR`` of one genotype, with the search space's arguments: what
    ``OSepDartsSpace.freeze(arch)`` returns.  ``num_nodes`` and concat come from the genotype."""

    @accepts_renamed(**_RENAMED)
    def __init__(self, genotype: Genotype, init_channels: int = 16, layers: int = 8, num_classes: int = 10,
                 input_size: int = 32, in_channels: int = 3, auxiliary: bool = False, drop_path_prob: float = 0.0,
                 **osep_kw: Any):
        g = validate_genotype(genotype)
        cfg = _space_config("osep", init_channels, layers, 1, num_classes, input_size, in_channels, auxiliary,
                            drop_path_prob, **osep_kw)
        super().__init__(cfg["init_channels"], cfg["num_classes"], cfg["layers"], cfg["auxiliary"], g,
                         cfg["drop_path_prob"], in_channels=cfg["in_channels"], **cfg["osep_kw"])
        self.input_size, self.in_channels = cfg["input_size"], cfg["in_channels"]
        self.default_input_size = (self.in_channels, self.input_size, self.input_size)


class OSepDartsSpace(_ShapePassAuxiliary, DartsSkeleton, ModelSpace):
    """DARTS cell search space over osep (and/or DARTS) primitives, for NNI 3.0.

    Args:
        op_candidates: ``"osep"`` (default: ``OSEP_PRIMITIVES``), ``"darts"``
            (``DARTS_PRIMITIVES``), ``"darts+osep"`` (their union) or a list of op names
            registered in ``osep_nas.ops.OPS``.
        init_channels: channels of the first cells (the stem has ``3 * init_channels``);
            ``width`` is its deprecated name.
        layers: cells; reductions at ``layers // 3`` and ``2 * layers // 3``;
            ``num_cells`` is its deprecated name.
        num_nodes: intermediate nodes per cell (two edges each).
        num_classes, input_size, in_channels: the data (``input_size`` is used by
            :meth:`dummy_input`; the network itself takes any size).
        auxiliary: DARTS' auxiliary head after the second reduction cell (training-mode
            output becomes ``(logits, logits_aux)``: for retraining frozen models, not for
            NNI's ``Classification`` evaluator).
        drop_path_prob: drop path of frozen models (the supernet ignores it).
        **osep_kw: plan keywords for the osep ops (``rounding``, ``gamma``, ``n_convs``,
            ``channel_policy``).

    ``space.freeze(arch)`` -> :class:`OSepDartsNet`; ``space.genotype(arch)`` -> Genotype.
    """

    @accepts_renamed(**_RENAMED)
    def __init__(self, op_candidates: Union[str, Sequence[str]] = "osep", init_channels: int = 16, layers: int = 8,
                 num_nodes: int = 4, num_classes: int = 10, input_size: int = 32, in_channels: int = 3,
                 auxiliary: bool = False, drop_path_prob: float = 0.0, **osep_kw: Any):
        super().__init__()
        cfg = _space_config(op_candidates, init_channels, layers, num_nodes, num_classes, input_size, in_channels,
                            auxiliary, drop_path_prob, **osep_kw)
        self._config = cfg
        self.op_candidates = cfg["op_candidates"]
        self.num_nodes = cfg["num_nodes"]
        self.input_size, self.in_channels = cfg["input_size"], cfg["in_channels"]
        self.default_input_size = (self.in_channels, self.input_size, self.input_size)
        self.drop_path_prob = cfg["drop_path_prob"]
        C_stem = STEM_MULTIPLIER * cfg["init_channels"]
        self.stem = nn.Sequential(nn.Conv2d(self.in_channels, C_stem, 3, padding=1, bias=False), nn.BatchNorm2d(C_stem))

        def make_cell(C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool) -> SearchCell:
            return SearchCell("reduce" if reduction else "normal", C_pp, C_p, C, reduction, reduction_prev,
                              cfg["num_nodes"], cfg["op_candidates"], cfg["osep_kw"])

        self._build_skeleton(C_stem, cfg["init_channels"], cfg["layers"], cfg["num_classes"], cfg["auxiliary"],
                             False, make_cell)

    def _stem(self, x: torch.Tensor):
        s = self.stem(x)
        return s, s

    # -- fixed architectures -------------------------------------------------------------------
    @classmethod
    def create_fixed_module(cls, sample: dict, *args: Any, **kwargs: Any) -> OSepDartsNet:
        """Called by NNI when the space is built inside ``model_context(sample)`` (multi-trial)."""
        cfg = _space_config(*args, **kwargs)
        return cls._fixed(sample, cfg)

    @staticmethod
    def _check(g: Genotype, cfg: Mapping[str, Any]) -> Genotype:
        allowed = set(cfg["op_candidates"])
        for cell in CELL_TYPES:
            edges = getattr(g, cell)
            if len(edges) // 2 != cfg["num_nodes"]:
                raise ValueError(f"arch has {len(edges) // 2} {cell} nodes, the space has {cfg['num_nodes']}")
            for op, _ in edges:
                if op not in allowed:
                    raise ValueError(f"arch uses op {op!r} in the {cell} cell, which is not among the space's "
                                     f"candidates ({', '.join(cfg['op_candidates'])})")
        return g

    @classmethod
    def _fixed(cls, sample: Mapping[str, Any], cfg: Mapping[str, Any]) -> OSepDartsNet:
        g = cls._check(arch_to_genotype(sample), cfg)
        return OSepDartsNet(g, init_channels=cfg["init_channels"], layers=cfg["layers"], num_classes=cfg["num_classes"],
                            input_size=cfg["input_size"], in_channels=cfg["in_channels"],
                            auxiliary=cfg["auxiliary"], drop_path_prob=cfg["drop_path_prob"], **cfg["osep_kw"])

    def freeze(self, sample: Mapping[str, Any]) -> OSepDartsNet:  # type: ignore[override]
        """The fixed network of an arch dict (fresh weights): an :class:`OSepDartsNet`."""
        return self._fixed(sample, self._config)

    @staticmethod
    def genotype(sample: Mapping[str, Any]) -> Genotype:
        """The genotype of an arch dict sampled from this space."""
        return arch_to_genotype(sample)

    def arch(self, genotype: Genotype) -> Dict[str, Any]:
        """The arch dict of ``genotype``; ValueError if the space cannot express it."""
        arch = genotype_to_arch(genotype)
        self._check(validate_genotype(genotype), self._config)
        return arch

    def random_arch(self, seed: Optional[int] = None) -> Dict[str, Any]:
        """A uniformly random arch dict of this space (NNI's ``Mutable.random``)."""
        import random as _random
        from numpy.random import RandomState

        state = RandomState(_random.Random(seed).randrange(2 ** 31) if seed is not None else None)
        sample: Dict[str, Any] = {}
        for mutable in self.simplify().values():
            mutable.random(memo=sample, random_state=state)
        return sample

    @property
    def config(self) -> Dict[str, Any]:
        """The normalised constructor arguments (op list, sizes, osep keywords)."""
        return dict(self._config)


# the NNI profiler formula of the search edge (#Params/FLOPs as an expression of its choices)
register_flops(SearchEdge, search_edge_flops)
