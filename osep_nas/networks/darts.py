"""The DARTS evaluation networks (Liu et al. 2019), built from the one op registry.

``NetworkCIFAR`` and ``NetworkImageNet`` stack cells described by a
:class:`~osep_nas.genotypes.Genotype`; every edge is ``OPS[name](C, stride, True,
**osep_kw)``, so any genotype over registered ops works (DARTS' ``sep_conv_3x3`` as
well as ``osep_3x3`` or an op added with ``register_op``), and one set of plan
keywords (``rounding``, ``gamma``, ``n_convs``, ``channel_policy``) reaches every
osep op.

Forward convention (both networks): the output is the ``logits`` tensor, except in
training mode with ``auxiliary=True``, where it is the pair ``(logits, logits_aux)``.

Drop path: during training every non-identity edge output is zeroed per sample
with probability ``model.drop_path_prob`` (the trainer sets it each epoch) and the
survivors are scaled by 1 / (1 - p).

The auxiliary head is the attribute ``auxiliary_head``, which the project's counter
excludes from #Params and FLOPs as the paper does.  It sits after cell
``2 * layers // 3`` (a reduction cell), where the features are 8x8 on 32x32 CIFAR
images and 7x7 on 224x224 ImageNet images.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import nn

from osep_nas.genotypes.validation import check_genotype
from osep_nas.ops import OPS, FactorizedReduce, Identity, ReLUConvBN

__all__ = ["Cell", "NetworkCIFAR", "NetworkImageNet", "AuxiliaryHeadCIFAR", "AuxiliaryHeadImageNet",
           "drop_path", "check_genotype"]


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples of ``x`` with probability ``drop_prob``; rescale the kept ones."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


class Cell(nn.Module):
    """One DARTS cell: two preprocessed inputs, nodes summing two edges each, concatenation.

    ``reduction_prev`` makes the first input a ``FactorizedReduce`` (it comes from
    before the previous, reducing, cell and is twice as large).
    """

    def __init__(self, genotype, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool, **osep_kw):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        edges = genotype.reduce if reduction else genotype.normal
        concat = genotype.reduce_concat if reduction else genotype.normal_concat
        self._steps = len(edges) // 2
        self._concat = [int(k) for k in concat]
        self.multiplier = len(self._concat)
        self._indices = [int(i) for _, i in edges]
        self._ops = nn.ModuleList()
        for name, index in edges:
            stride = 2 if reduction and index < 2 else 1
            self._ops.append(OPS[name](C, stride, True, **osep_kw))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(self._steps):
            total = None
            for e in (2 * node, 2 * node + 1):
                op = self._ops[e]
                h = op(states[self._indices[e]])
                if self.training and drop_prob > 0.0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat([states[k] for k in self._concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """DARTS' auxiliary classifier on the 8x8 features (32x32 input): pool 5/3, 1x1, 2x2, linear."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),  # its input is a cell output the next cells still read
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),  # a no-op at 32x32 (already 1x1); keeps other sizes working
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class AuxiliaryHeadImageNet(nn.Module):
    """DARTS' ImageNet auxiliary classifier (7x7 features at 224): pool 5/2, 1x1, 2x2, linear."""

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),  # its input is a cell output the next cells still read
            nn.AvgPool2d(5, stride=2, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def _positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class _DartsNetwork(nn.Module):
    """Shared cell stacking, auxiliary head and forward of the two DARTS networks."""

    default_input_size: Tuple[int, int, int] = (3, 32, 32)

    def _build_cells(self, genotype, C_pp: int, C_p: int, C_curr: int, layers: int, reduction_prev: bool,
                     osep_kw: dict) -> Tuple[int, int]:
        """Append the cells; return the channels of the last cell and of the auxiliary cell."""
        self.cells = nn.ModuleList()
        self._aux_index = 2 * layers // 3
        C_aux = C_p
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = Cell(genotype, C_pp, C_p, C_curr, reduction, reduction_prev, **osep_kw)
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, cell.multiplier * C_curr
            if i == self._aux_index:
                C_aux = C_p
        return C_p, C_aux

    def _stem(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        s0, s1 = self._stem(x)
        logits_aux: Optional[torch.Tensor] = None
        use_aux = self._auxiliary and self.training
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if use_aux and i == self._aux_index:
                logits_aux = self.auxiliary_head(s1)
        logits = self.classifier(torch.flatten(self.global_pooling(s1), 1))
        if use_aux:
            return logits, logits_aux
        return logits


def _check_args(C: int, num_classes: int, layers: int, genotype) -> None:
    _positive(C, "C (init_channels)")
    _positive(num_classes, "num_classes")
    _positive(layers, "layers")
    if layers < 3:
        raise ValueError(f"layers must be at least 3 (two reduction cells and a normal one), got {layers}")
    check_genotype(genotype)


class NetworkCIFAR(_DartsNetwork):
    """DARTS evaluation network for 32x32 images.

    Stem 3x3 convolution to 3C channels + BN; ``layers`` cells with reduction cells at
    ``layers // 3`` and ``2 * layers // 3`` (channels doubled there); global average
    pool and a linear classifier.  ``osep_kw`` goes to every op of every cell.
    """

    default_input_size = (3, 32, 32)

    def __init__(self, C: int, num_classes: int, layers: int, auxiliary: bool, genotype,
                 drop_path_prob: float = 0.0, **osep_kw):
        super().__init__()
        _check_args(C, num_classes, layers, genotype)
        self.init_channels, self.num_cells = C, layers
        self._auxiliary = bool(auxiliary)
        self.drop_path_prob = float(drop_path_prob)
        self.genotype = genotype
        C_curr = 3 * C
        self.stem = nn.Sequential(nn.Conv2d(3, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_p, C_aux = self._build_cells(genotype, C_curr, C_curr, C, layers, False, osep_kw)
        if self._auxiliary:
            self.auxiliary_head = AuxiliaryHeadCIFAR(C_aux, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)

    def _stem(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        s = self.stem(x)
        return s, s


class NetworkImageNet(_DartsNetwork):
    """DARTS evaluation network for 224x224 images.

    stem0: 3x3 conv to C/2 (stride 2), BN, ReLU, 3x3 conv to C (stride 2), BN;
    stem1: ReLU, 3x3 conv (stride 2), BN; so the cells start at 28x28 with a
    reducing previous cell.  Reduction cells at ``layers // 3`` and ``2 * layers // 3``;
    global average pool (the 7x7 pool at 224) and a linear classifier.
    """

    default_input_size = (3, 224, 224)

    def __init__(self, C: int, num_classes: int, layers: int, auxiliary: bool, genotype,
                 drop_path_prob: float = 0.0, **osep_kw):
        super().__init__()
        _check_args(C, num_classes, layers, genotype)
        if C % 2:
            raise ValueError(f"C (init_channels) must be even for the ImageNet network (its first cell "
                             f"halves the stem output with a FactorizedReduce), got {C}")
        self.init_channels, self.num_cells = C, layers
        self._auxiliary = bool(auxiliary)
        self.drop_path_prob = float(drop_path_prob)
        self.genotype = genotype
        self.stem0 = nn.Sequential(
            nn.Conv2d(3, C // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C // 2), nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False), nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C),
        )
        C_p, C_aux = self._build_cells(genotype, C, C, C, layers, True, osep_kw)
        if self._auxiliary:
            self.auxiliary_head = AuxiliaryHeadImageNet(C_aux, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)

    def _stem(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stem0(x)
        return s0, self.stem1(s0)
