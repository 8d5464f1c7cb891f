"""The paper's published figures, as labeled reference data (the only copy in the project).

Source: "Optimized Separable Convolution" (ICLR 2022 submission): Table 6 (ResNets on
CIFAR-10, with inference times), Table 3 (DARTS on CIFAR-10), Table 5 (DARTS and
MobileNet on ImageNet), Table 2 (accuracy of o-ResNet by overlap coefficient gamma).
#Params exclude the auxiliary head; FLOPs are multiply-adds of one 32x32 (CIFAR) or
224x224 (ImageNet) image.  These are the paper's claims, kept to compare against and
never used to build anything.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from osep_nas.models import normalize_name

__all__ = ["PaperFigure", "PAPER_FIGURES", "paper_figure", "GAMMA_ACCURACY_CIFAR10", "GAMMA_COLUMNS"]


@dataclass(frozen=True)
class PaperFigure:
    """One row of the paper's tables, keyed in ``PAPER_FIGURES`` by our model name."""

    label: str                  # the paper's name for the network
    source: str                 # table it comes from
    width: str                  # channel multiplier or channels x cells, as the paper states it
    params_m: float             # #Params, millions
    flops_g: float              # multiply-adds, billions
    accuracy: float             # CIFAR-10 accuracy or ImageNet top-1, %
    cpu_time_s: Optional[float] = None  # Table 6 inference time, Intel i5-8250 (batch not stated)
    gpu_time_s: Optional[float] = None  # Table 6 inference time, RTX 2080 Ti


def _resnets() -> Dict[str, PaperFigure]:
    rows = {
        # name: (label, width, params, flops, accuracy, cpu s, gpu s)
        "resnet20": ("ResNet20", "-", 0.270, 0.04055, 91.25, 0.0310, 0.0057),
        "o_resnet20": ("o-ResNet20", "3.625", 0.221, 0.04070, 93.37, 0.0468, 0.0120),
        "d_resnet20": ("d-ResNet20", "2.72", 0.250, 0.0400, 92.66, 0.0468, 0.0060),
        "resnet32": ("ResNet32", "-", 0.464, 0.06886, 92.49, 0.0469, 0.0067),
        "o_resnet32": ("o-ResNet32", "3.75", 0.367, 0.06726, 93.69, 0.0937, 0.0185),
        "d_resnet32": ("d-ResNet32", "2.75", 0.429, 0.06565, 92.98, 0.1154, 0.0092),
        "resnet56": ("ResNet56", "-", 0.853, 0.12548, 93.03, 0.0938, 0.0101),
        "o_resnet56": ("o-ResNet56", "3.875", 0.682, 0.12574, 93.81, 0.1562, 0.0330),
        "d_resnet56": ("d-ResNet56", "2.75", 0.786, 0.11890, 92.69, 0.1875, 0.0181),
        "resnet110": ("ResNet110", "-", 1.728, 0.25289, 93.39, 0.1563, 0.0178),
        "o_resnet110": ("o-ResNet110", "3.875", 1.337, 0.24763, 94.88, 0.3216, 0.0671),
        "d_resnet110": ("d-ResNet110", "2.75", 1.590, 0.23870, 93.40, 0.3462, 0.0317),
    }
    return {k: PaperFigure(v[0], "Table 6", v[1], v[2], v[3], v[4], v[5], v[6]) for k, v in rows.items()}


PAPER_FIGURES: Dict[str, PaperFigure] = {
    **_resnets(),
    "darts_v2_cifar": PaperFigure("(d-)DARTS V2, CIFAR-10", "Table 3", "36 ch, 20 cells", 3.35, 0.528, 97.24),
    "o_darts_cifar": PaperFigure("o-DARTS, CIFAR-10", "Table 3", "42 ch, 20 cells", 3.25, 0.572, 97.67),
    "darts_v2_imagenet": PaperFigure("(d-)DARTS V2, ImageNet", "Table 5", "48 ch, 14 cells", 4.72, 0.530, 73.3),
    "o_darts_imagenet": PaperFigure("o-DARTS, ImageNet", "Table 5", "56 ch, 14 cells", 4.50, 0.554, 74.2),
    "mobilenet": PaperFigure("(d-)MobileNet", "Table 5", "1.0", 4.20, 0.575, 70.6),
    "o_mobilenet": PaperFigure("o-MobileNet", "Table 5", "not given", 3.00, 0.564, 71.1),
}

#: Table 2 columns: overlap coefficient gamma (0.0 = depth-wise, inf = conventional convolution).
GAMMA_COLUMNS = (0.0, 1 / 16, 1 / 4, 1.0, 4.0, 16.0, 64.0, float("inf"))
#: Table 2: CIFAR-10 accuracy (%) of the channel-multiplied o-ResNets per gamma column.
GAMMA_ACCURACY_CIFAR10: Dict[str, tuple] = {
    "o_resnet20": (90.2, 91.45, 92.56, 93.37, 92.84, 93.06, 92.16, 91.25),
    "o_resnet32": (89.82, 92.31, 92.8, 93.69, 93.65, 93.03, 93.07, 92.49),
    "o_resnet56": (89.88, 92.71, 92.88, 93.81, 93.8, 93.49, 92.73, 93.03),
    "o_resnet110": (90.26, 94.04, 94.85, 94.88, 94.83, 94.41, 93.95, 93.39),
}


def paper_figure(name: str) -> Optional[PaperFigure]:
    """The paper's figure for model ``name`` (registry spelling or "o-ResNet20"), else None."""
    return PAPER_FIGURES.get(normalize_name(name))
