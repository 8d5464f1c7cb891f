"""The DARTS cell search space with osep primitives, as an NNI 3.0 model space.

Structure (Liu et al. 2019, search network): a 3x3 convolution stem with ``3 * width``
channels; ``num_cells`` cells, the ones at ``num_cells // 3`` and ``2 * num_cells // 3``
reduction cells (stride 2, channels doubled); every cell preprocesses its two inputs
(``FactorizedReduce`` when the previous cell reduced, else ReLU-1x1 conv-BN), computes
``num_nodes`` nodes that each sum two edges, and concatenates all its nodes; global
average pooling and a linear classifier.  The input size is free (8x8 digits and
32x32 CIFAR both work: reductions use stride 2 with "same" padding).

Choices: every normal cell shares one set of choices, every reduction cell another
(one genotype), labelled like NNI's own DARTS space::

    normal/op_{i}_{k}     the op of edge k (0 or 1) of the node with state index i (2..num_nodes+1)
    normal/input_{i}_{k}  its input, an InputChoice over states 0..i-1, sampled as [j]
    reduce/...            the same for reduction cells

so ``osep_nas.genotypes.genotype_to_arch`` / ``arch_to_genotype`` convert samples.

One edge in the space: ``InputChoice([op(states[j]) for j in range(i)])``.  The op is
applied to every candidate input and the InputChoice picks one result, because in a
reduction cell the stride of the op depends on the input (stride 2 on the cell inputs
0 and 1, stride 1 on earlier nodes): a reduction edge holds two LayerChoices with the
same label, ``op_reduce`` (stride 2, for inputs 0 and 1) and ``op`` (stride 1), whose
weights are shared by the inputs of their group.  So every candidate has the output
shape, which NNI's differentiable InputChoice (DARTS, GumbelDARTS) needs; under
path sampling (RandomOneShot, ENAS) only the sampled input's op runs.  The cost is
that a DARTS supernet computes each edge op once per candidate input (28 op
applications per 4-node cell where DARTS computes 14).

Fixed architectures: ``space.freeze(arch)`` (and NNI's multi-trial engines, which
rebuild the space inside ``model_context(arch)``) return an :class:`OSepDartsNet`, a
plain ``nn.Module`` holding only the chosen ops (fresh weights; nothing is inherited
from a supernet).  ``OSepDartsNet(genotype, ...)`` builds the same network straight
from any genotype.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from search_spaces._nni import nas_nn  # noqa: F401  (quiet NNI import first)
from nni.mutable import label_scope
from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace
from nni.nas.profiler.pytorch.utils import ShapeTensor

from osep_nas.networks.darts import drop_path  # the one drop-path implementation
from osep_nas.genotypes import (CELL_TYPES, Genotype, arch_to_genotype, genotype_to_arch, random_genotype,
                                validate_genotype)
from osep_nas.ops import OPS, FactorizedReduce, Identity, ReLUConvBN
from search_spaces.presets import PRESETS, resolve_op_candidates  # noqa: F401  (re-exported)
from search_spaces.profilers import register_flops, search_edge_flops, zero_cost_flops

__all__ = [
    "PRESETS", "resolve_op_candidates", "OSepDartsSpace", "OSepDartsNet", "SearchEdge", "FixedEdge",
    "DartsCell", "AuxiliaryHead", "drop_path", "reduction_indices", "random_genotype",
]

STEM_MULTIPLIER = 3


def reduction_indices(num_cells: int) -> List[int]:
    """Indices of the reduction cells: 1/3 and 2/3 of the depth (DARTS)."""
    return sorted({num_cells // 3, 2 * num_cells // 3})


def _is_path_sampling(module: nn.Module) -> bool:
    """True for NNI's PathSamplingInput (RandomOneShot, ENAS), which only reads the sampled
    candidate; Proxyless' input also samples but needs every candidate for its gradient."""
    from nni.nas.oneshot.pytorch.supermodule.sampling import PathSamplingInput

    return type(module) is PathSamplingInput


# -- edges ---------------------------------------------------------------------------------
class SearchEdge(nn.Module):
    """One searchable edge: ``op_{i}_{k}`` (LayerChoice) applied to the input ``input_{i}_{k}``
    (InputChoice over states ``0..i-1``).  See the module docstring for the layout."""

    def __init__(self, state_index: int, k: int, candidates: Sequence[str], C: int, reduction: bool,
                 osep_kw: Mapping[str, Any]):
        super().__init__()
        self.state_index = state_index
        self.k = k
        self.reduction = reduction
        self.input = InputChoice(state_index, 1, label=f"input_{state_index}_{k}")

        def choice(stride: int) -> LayerChoice:
            return LayerChoice({op: OPS[op](C, stride, True, **osep_kw) for op in candidates},
                               label=f"op_{state_index}_{k}")

        # stride-2 group (cell inputs of a reduction cell) and stride-1 group (everything else)
        self.op_reduce: Optional[LayerChoice] = choice(2) if reduction else None
        self.op: Optional[LayerChoice] = choice(1) if (not reduction or state_index > 2) else None

    def op_for(self, j: int) -> nn.Module:
        """The (shared) op module applied to candidate input ``j``."""
        return self.op_reduce if (self.reduction and j < 2) else self.op  # type: ignore[return-value]

    def forward(self, states: List[torch.Tensor], drop_prob: float = 0.0) -> torch.Tensor:
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


class FixedEdge(nn.Module):
    """One edge of a fixed cell: ``op(states[index])``, with drop path on non-identity ops."""

    def __init__(self, op_name: str, index: int, C: int, stride: int, osep_kw: Mapping[str, Any]):
        super().__init__()
        self.op_name = op_name
        self.index = index
        self.op = OPS[op_name](C, stride, True, **osep_kw)
        self._identity = isinstance(self.op, (Identity, nn.Identity))

    def forward(self, states: List[torch.Tensor], drop_prob: float = 0.0) -> torch.Tensor:
        out = self.op(states[self.index])
        if self.training and drop_prob > 0.0 and not self._identity:
            out = drop_path(out, drop_prob)
        return out

    def extra_repr(self) -> str:
        return f"{self.op_name}, input={self.index}"


EdgeFactory = Callable[[str, int, int, int, bool], nn.Module]  # (cell_type, state_index, k, C, reduction)


class DartsCell(nn.Module):
    """Two preprocessed inputs, ``num_nodes`` nodes summing two edges each, concat of ``concat``."""

    def __init__(self, cell_type: str, C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool,
                 num_nodes: int, concat: Sequence[int], make_edge: EdgeFactory):
        super().__init__()
        self.cell_type = cell_type
        self.reduction = reduction
        self.num_nodes = num_nodes
        self.concat = [int(c) for c in concat]
        self.pre0 = FactorizedReduce(C_pp, C) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, 0)
        self.pre1 = ReLUConvBN(C_p, C, 1, 1, 0)
        self.edges = nn.ModuleList(
            make_edge(cell_type, node + 2, k, C, reduction) for node in range(num_nodes) for k in (0, 1)
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for node in range(self.num_nodes):
            states.append(self.edges[2 * node](states, drop_prob) + self.edges[2 * node + 1](states, drop_prob))
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS' auxiliary classifier made size-agnostic: ReLU, adaptive 2x2 average pool,
    1x1 conv to 128, BN, ReLU, 2x2 conv to 768, BN, ReLU, linear.  Excluded from #Params
    and FLOPs by the project's counter (attribute name ``auxiliary_head``) and by the
    NNI profiler formula registered in :mod:`search_spaces.profilers`."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AdaptiveAvgPool2d(2),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=False),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(x.view(x.size(0), -1))


# -- the network skeleton shared by the space and the fixed network ----------------------------
def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _space_config(op_candidates: Union[str, Sequence[str]] = "osep", width: int = 16, num_cells: int = 8,
                  num_nodes: int = 4, num_classes: int = 10, input_size: int = 32, in_channels: int = 3,
                  auxiliary: bool = False, drop_path_prob: float = 0.0, **osep_kw: Any) -> Dict[str, Any]:
    """Validate and normalise the arguments of :class:`OSepDartsSpace` (same signature)."""
    drop = float(drop_path_prob)
    if not 0.0 <= drop < 1.0:
        raise ValueError(f"drop_path_prob must be in [0, 1), got {drop_path_prob!r}")
    cfg = dict(
        op_candidates=resolve_op_candidates(op_candidates),
        width=_positive(width, "width"), num_cells=_positive(num_cells, "num_cells"),
        num_nodes=_positive(num_nodes, "num_nodes"), num_classes=_positive(num_classes, "num_classes"),
        input_size=_positive(input_size, "input_size"), in_channels=_positive(in_channels, "in_channels"),
        auxiliary=bool(auxiliary), drop_path_prob=drop, osep_kw=dict(osep_kw),
    )
    if cfg["num_nodes"] > 64:
        raise ValueError(f"num_nodes must be at most 64, got {num_nodes}")
    # catches unknown keywords (typos) once, with the ops' own message
    OPS[cfg["op_candidates"][0]](8, 1, True, **cfg["osep_kw"])
    return cfg


class _DartsSkeleton:
    """Stem, cells, auxiliary head, classifier and forward; mixed into the space and the net."""

    cells: nn.ModuleList
    auxiliary_head: Optional[nn.Module]
    drop_path_prob: float

    def _build(self, cfg: Mapping[str, Any], make_edge: EdgeFactory,
               concat: Mapping[str, Sequence[int]], num_nodes: Mapping[str, int]) -> None:
        C = cfg["width"]
        c_stem = STEM_MULTIPLIER * C
        self.stem = nn.Sequential(nn.Conv2d(cfg["in_channels"], c_stem, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c_stem))
        C_pp, C_p, C_curr = c_stem, c_stem, C
        reductions = reduction_indices(cfg["num_cells"])
        self._aux_index = 2 * cfg["num_cells"] // 3
        self.cells = nn.ModuleList()
        reduction_prev = False
        C_aux = C_p
        for i in range(cfg["num_cells"]):
            reduction = i in reductions
            if reduction:
                C_curr *= 2
            cell_type = "reduce" if reduction else "normal"
            cell = DartsCell(cell_type, C_pp, C_p, C_curr, reduction, reduction_prev, num_nodes[cell_type],
                             concat[cell_type], make_edge)
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, len(concat[cell_type]) * C_curr
            if i == self._aux_index:
                C_aux = C_p
        self.auxiliary_head = AuxiliaryHead(C_aux, cfg["num_classes"]) if cfg["auxiliary"] else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, cfg["num_classes"])
        self.drop_path_prob = cfg["drop_path_prob"]
        self.num_classes = cfg["num_classes"]
        self.input_size = cfg["input_size"]
        self.in_channels = cfg["in_channels"]

    def forward(self, x: torch.Tensor):
        """Logits; ``(logits, logits_aux)`` in training mode when the auxiliary head is on."""
        s0 = s1 = self.stem(x)
        logits_aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self._aux_index and self.auxiliary_head is not None:
                if isinstance(s1, ShapeTensor):
                    # NNI profilers' symbolic pass: visit the head for its shapes (it is counted as
                    # zero) in eval mode, where batch norm accepts a batch of one
                    head_mode = self.auxiliary_head.training
                    self.auxiliary_head.eval()
                    self.auxiliary_head(s1)
                    self.auxiliary_head.train(head_mode)
                elif self.training:
                    logits_aux = self.auxiliary_head(s1)
        out = self.global_pooling(s1)
        logits = self.classifier(out.view(out.size(0), -1))
        if logits_aux is not None:
            return logits, logits_aux
        return logits

    def set_drop_path_prob(self, drop_prob: float) -> None:
        """Set the drop-path probability (DARTS raises it linearly over the epochs)."""
        if not 0.0 <= float(drop_prob) < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob!r}")
        self.drop_path_prob = float(drop_prob)

    def dummy_input(self, batch_size: int = 1) -> torch.Tensor:
        """A zero batch of the configured input size, on the model's device (for profilers)."""
        param = next(self.parameters(), None)  # type: ignore[attr-defined]
        device = param.device if param is not None else None
        return torch.zeros(batch_size, self.in_channels, self.input_size, self.input_size, device=device)


class OSepDartsNet(_DartsSkeleton, nn.Module):
    """The fixed network of one genotype, on the search space's skeleton (a plain ``nn.Module``).

    Any registered ops and any concat lists are accepted; ``num_nodes`` comes from the
    genotype.  This is what ``OSepDartsSpace.freeze(arch)`` returns.
    """

    def __init__(self, genotype: Genotype, width: int = 16, num_cells: int = 8, num_classes: int = 10,
                 input_size: int = 32, in_channels: int = 3, auxiliary: bool = False, drop_path_prob: float = 0.0,
                 **osep_kw: Any):
        nn.Module.__init__(self)
        g = validate_genotype(genotype)
        cfg = _space_config("osep", width, num_cells, 1, num_classes, input_size, in_channels, auxiliary,
                            drop_path_prob, **osep_kw)
        self.genotype = g
        edges = {"normal": g.normal, "reduce": g.reduce}

        def make_edge(cell_type: str, i: int, k: int, C: int, reduction: bool) -> nn.Module:
            op, j = edges[cell_type][2 * (i - 2) + k]
            return FixedEdge(op, j, C, 2 if reduction and j < 2 else 1, cfg["osep_kw"])

        self._build(cfg, make_edge, {"normal": g.normal_concat, "reduce": g.reduce_concat},
                    {"normal": len(g.normal) // 2, "reduce": len(g.reduce) // 2})


class OSepDartsSpace(_DartsSkeleton, ModelSpace):
    """DARTS cell search space over osep (and/or DARTS) primitives, for NNI 3.0.

    Args:
        op_candidates: ``"osep"`` (default: ``OSEP_PRIMITIVES``), ``"darts"``
            (``DARTS_PRIMITIVES``), ``"darts+osep"`` (their union) or a list of op names
            registered in ``osep_nas.ops.OPS``.
        width: channels of the first cells (the stem has ``3 * width``).
        num_cells: cells; reductions at ``num_cells // 3`` and ``2 * num_cells // 3``.
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

    def __init__(self, op_candidates: Union[str, Sequence[str]] = "osep", width: int = 16, num_cells: int = 8,
                 num_nodes: int = 4, num_classes: int = 10, input_size: int = 32, in_channels: int = 3,
                 auxiliary: bool = False, drop_path_prob: float = 0.0, **osep_kw: Any):
        super().__init__()
        cfg = _space_config(op_candidates, width, num_cells, num_nodes, num_classes, input_size, in_channels,
                            auxiliary, drop_path_prob, **osep_kw)
        self._config = cfg
        self.op_candidates = cfg["op_candidates"]
        self.num_nodes = cfg["num_nodes"]

        def make_edge(cell_type: str, i: int, k: int, C: int, reduction: bool) -> nn.Module:
            with label_scope(cell_type):
                return SearchEdge(i, k, cfg["op_candidates"], C, reduction, cfg["osep_kw"])

        full = list(range(2, cfg["num_nodes"] + 2))
        self._build(cfg, make_edge, {"normal": full, "reduce": full},
                    {"normal": cfg["num_nodes"], "reduce": cfg["num_nodes"]})

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
        return OSepDartsNet(g, width=cfg["width"], num_cells=cfg["num_cells"], num_classes=cfg["num_classes"],
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


# NNI profiler formulas for the modules above (shape inference, #Params/FLOPs expressions).
register_flops(AuxiliaryHead, zero_cost_flops)  # counted as zero, like osep_nas.count_params
register_flops(SearchEdge, search_edge_flops)
