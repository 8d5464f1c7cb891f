"""The DARTS networks (Liu et al. 2019): the one genotype -> network builder.

``NetworkCIFAR`` and ``NetworkImageNet`` stack cells of a
:class:`~osep_nas.genotypes.Genotype` whose edges are ``OPS[name](C, stride, True, **osep_kw)``,
so any registered op works.  :class:`DartsSkeleton` is shared with
``search_spaces.darts_space.OSepDartsSpace``, which only swaps the fixed edges for search
edges.  Module names follow the DARTS code, so its checkpoints load (docs/config.md).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from osep_nas.genotypes.validation import check_genotype
from osep_nas.ops import OPS, FactorizedReduce, Identity, ReLUConvBN
from osep_nas.renamed import accepts_renamed

__all__ = ["Cell", "CellBase", "DartsSkeleton", "NetworkCIFAR", "NetworkImageNet", "AuxiliaryHead", "AuxPool",
           "drop_path", "reduction_indices", "check_genotype"]


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples of ``x`` with probability ``drop_prob``; rescale the kept ones."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    # x * mask / keep, bit for bit (a dropped sample divides by inf), in one pass over x, not two
    return x / (keep / mask)


def reduction_indices(layers: int) -> List[int]:
    """Indices of the reduction cells: 1/3 and 2/3 of the depth (DARTS)."""
    return sorted({layers // 3, 2 * layers // 3})


# -- cells ------------------------------------------------------------------------------------
class CellBase(nn.Module):
    """Two preprocessed inputs, ``steps`` nodes summing two edges each, concat of ``concat``.

    Subclasses create the edges and define :meth:`edge` (or :meth:`node`, where the two edges
    of a node share work).  ``reduction_prev`` makes the first input a ``FactorizedReduce``
    (it is twice as large as the second).
    """

    def __init__(self, C_prev_prev: int, C_prev: int, C: int, reduction: bool, reduction_prev: bool,
                 steps: int, concat: Sequence[int]):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        self._steps = steps
        self._concat = [int(k) for k in concat]
        self.multiplier = len(self._concat)

    def edge(self, e: int, states: List[torch.Tensor], drop_prob: float) -> torch.Tensor:
        """The output of edge ``e`` (edges ``2n`` and ``2n + 1`` feed node ``n``)."""
        raise NotImplementedError

    def node(self, n: int, states: List[torch.Tensor], drop_prob: float) -> torch.Tensor:
        """The output of node ``n``: the sum of its two edges."""
        return self.edge(2 * n, states, drop_prob) + self.edge(2 * n + 1, states, drop_prob)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for n in range(self._steps):
            states.append(self.node(n, states, drop_prob))
        return torch.cat([states[k] for k in self._concat], dim=1)


class Cell(CellBase):
    """One fixed DARTS cell of ``genotype``; drop path on every non-identity edge."""

    def __init__(self, genotype, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool, **osep_kw):
        edges = genotype.reduce if reduction else genotype.normal
        concat = genotype.reduce_concat if reduction else genotype.normal_concat
        super().__init__(C_prev_prev, C_prev, C, reduction, reduction_prev, len(edges) // 2, concat)
        self._indices = [int(i) for _, i in edges]
        self._ops = nn.ModuleList(OPS[name](C, 2 if reduction and index < 2 else 1, True, **osep_kw)
                                  for name, index in edges)

    def edge(self, e: int, states: List[torch.Tensor], drop_prob: float) -> torch.Tensor:
        op = self._ops[e]
        h = op(states[self._indices[e]])
        if self.training and drop_prob > 0.0 and not isinstance(op, (Identity, nn.Identity)):
            h = drop_path(h, drop_prob)
        return h


# -- the auxiliary head -------------------------------------------------------------------------
class AuxPool(nn.Module):
    """Average pooling to 2x2, for any feature size.

    Two 5x5 windows per axis, anchored at the borders, where they cover the map (6 to 10
    pixels): DARTS' pools (stride 3 on CIFAR's 8x8, stride 2 on ImageNet's 7x7);
    adaptive average pooling elsewhere.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h == w and 6 <= h <= 10:
            return F.avg_pool2d(x, 5, stride=h - 5, padding=0, count_include_pad=False)
        return F.adaptive_avg_pool2d(x, 2)


class AuxiliaryHead(nn.Module):
    """DARTS' auxiliary classifier for any input size: ReLU, pool to 2x2, 1x1 conv to 128,
    BN, ReLU, 2x2 conv to 768, BN, ReLU, linear (DARTS' layer indices, so its weights load)."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),  # its input is a cell output the next cells still read
            AuxPool(),
            nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


# -- the skeleton -----------------------------------------------------------------------------
def _positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_sizes(init_channels, layers, num_classes) -> None:
    """ValueError unless the sizes are positive integers and ``layers`` is at least 3."""
    _positive(init_channels, "init_channels")
    _positive(num_classes, "num_classes")
    _positive(layers, "layers")
    if layers < 3:
        raise ValueError(f"layers must be at least 3 (two reduction cells and a normal one), got {layers}")


#: ``make_cell(C_prev_prev, C_prev, C, reduction, reduction_prev) -> CellBase``
CellFactory = Callable[[int, int, int, bool, bool], CellBase]


class DartsSkeleton:
    """Cells, reduction placement, auxiliary head, classifier and forward of a DARTS network.

    Mixed into ``nn.Module`` subclasses (the networks here and NNI's ``ModelSpace`` in
    ``search_spaces``), which build their stem, then call :meth:`_build_skeleton`.
    """

    cells: nn.ModuleList
    auxiliary_head: Optional[nn.Module]
    drop_path_prob: float
    default_input_size: Tuple[int, int, int] = (3, 32, 32)

    def _build_skeleton(self, C_stem: int, init_channels: int, layers: int, num_classes: int, auxiliary: bool,
                        reduction_prev: bool, make_cell: CellFactory) -> None:
        self.init_channels, self.layers, self.num_classes = init_channels, layers, num_classes
        self._aux_index = 2 * layers // 3
        reductions = reduction_indices(layers)
        self.cells = nn.ModuleList()
        C_pp, C_p, C_curr, C_aux = C_stem, C_stem, init_channels, C_stem
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                C_curr *= 2
            cell = make_cell(C_pp, C_p, C_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, cell.multiplier * C_curr
            if i == self._aux_index:
                C_aux = C_p
        self.auxiliary_head = AuxiliaryHead(C_aux, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)

    def _stem(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _auxiliary_logits(self, features: torch.Tensor) -> Optional[torch.Tensor]:
        return self.auxiliary_head(features) if self.training else None  # type: ignore[misc]

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        s0, s1 = self._stem(x)
        logits_aux: Optional[torch.Tensor] = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self._aux_index and self.auxiliary_head is not None:
                logits_aux = self._auxiliary_logits(s1)
        logits = self.classifier(torch.flatten(self.global_pooling(s1), 1))
        if logits_aux is not None:
            return logits, logits_aux
        return logits

    def set_drop_path_prob(self, drop_prob: float) -> None:
        """Set the drop-path probability (DARTS raises it linearly over the epochs)."""
        if not 0.0 <= float(drop_prob) < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob!r}")
        self.drop_path_prob = float(drop_prob)

    def dummy_input(self, batch_size: int = 1) -> torch.Tensor:
        """A zero batch of ``default_input_size``, on the model's device (for profilers)."""
        param = next(self.parameters(), None)  # type: ignore[attr-defined]
        device = param.device if param is not None else None
        return torch.zeros(batch_size, *self.default_input_size, device=device)


def _fixed_cells(genotype, osep_kw: dict) -> CellFactory:
    def make_cell(C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool) -> CellBase:
        return Cell(genotype, C_pp, C_p, C, reduction, reduction_prev, **osep_kw)
    return make_cell


class NetworkCIFAR(DartsSkeleton, nn.Module):
    """DARTS evaluation network for 32x32 images (any size works).

    Stem 3x3 convolution to 3C channels + BN; ``layers`` cells with reduction cells at
    ``layers // 3`` and ``2 * layers // 3`` (channels doubled there); global average
    pool and a linear classifier.  ``osep_kw`` goes to every op of every cell.
    ``C`` is the deprecated name of ``init_channels``.
    """

    @accepts_renamed(C="init_channels")
    def __init__(self, init_channels: int, num_classes: int, layers: int, auxiliary: bool, genotype,
                 drop_path_prob: float = 0.0, in_channels: int = 3, **osep_kw):
        nn.Module.__init__(self)
        C = init_channels
        check_sizes(C, layers, num_classes)
        _positive(in_channels, "in_channels")
        self.genotype = genotype
        self.drop_path_prob = float(drop_path_prob)
        C_stem = 3 * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False), nn.BatchNorm2d(C_stem))
        self._build_skeleton(C_stem, C, layers, num_classes, auxiliary, False,
                             _fixed_cells(check_genotype(genotype), osep_kw))

    def _stem(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        s = self.stem(x)
        return s, s


class NetworkImageNet(DartsSkeleton, nn.Module):
    """DARTS evaluation network for 224x224 images.

    stem0: 3x3 conv to C/2 (stride 2), BN, ReLU, 3x3 conv to C (stride 2), BN;
    stem1: ReLU, 3x3 conv (stride 2), BN; so the cells start at 28x28 with a
    reducing previous cell.  Reduction cells at ``layers // 3`` and ``2 * layers // 3``;
    global average pool (the 7x7 pool at 224) and a linear classifier.
    ``C`` is the deprecated name of ``init_channels``.
    """

    default_input_size = (3, 224, 224)

    @accepts_renamed(C="init_channels")
    def __init__(self, init_channels: int, num_classes: int, layers: int, auxiliary: bool, genotype,
                 drop_path_prob: float = 0.0, **osep_kw):
        nn.Module.__init__(self)
        C = init_channels
        check_sizes(C, layers, num_classes)
        if C % 2:
            raise ValueError(f"init_channels must be even for the ImageNet network (its first cell "
                             f"halves the stem output with a FactorizedReduce), got {C}")
        self.genotype = genotype
        self.drop_path_prob = float(drop_path_prob)
        self.stem0 = nn.Sequential(
            nn.Conv2d(3, C // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C // 2), nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False), nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C),
        )
        self._build_skeleton(C, C, layers, num_classes, auxiliary, True,
                             _fixed_cells(check_genotype(genotype), osep_kw))

    def _stem(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stem0(x)
        return s0, self.stem1(s0)
