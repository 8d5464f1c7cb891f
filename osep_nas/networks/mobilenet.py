"""MobileNet V1 (Howard et al. 2017) and its osep form (the paper's o-MobileNet).

The 13-block ImageNet MobileNet V1, with every depth separable block (``conv="dsep"``)
replaceable by one ``OSepConv2d`` (``"osep"``) or its spatial form (``"sosep"``), for the
paper's MobileNet comparison.  Layout and widths: docs/config.md.
"""
from __future__ import annotations

import math
from typing import Tuple, Union

import torch
from torch import nn

from osep_nas.conv import OSepConv2d, TunedConv2d
from osep_nas.networks.resnet import scale_channels

__all__ = ["mobilenet", "MobileNetV1", "MOBILENET_BLOCKS", "MOBILENET_CONVS"]

#: (output channels, stride) of the 13 depth separable blocks.
MOBILENET_BLOCKS: Tuple[Tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)
MOBILENET_CONVS = ("dsep", "osep", "sosep")


def _block(conv: str, c_in: int, c_out: int, stride: int, gamma: float, rounding: str,
           n_convs: Union[int, str], channel_policy: str) -> nn.Sequential:
    if conv == "dsep":
        return nn.Sequential(
            TunedConv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
            nn.BatchNorm2d(c_in), nn.ReLU(inplace=True),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        )
    return nn.Sequential(
        OSepConv2d(c_in, c_out, 3, stride=stride, gamma=gamma, rounding=rounding, n_convs=n_convs,
                   channel_policy=channel_policy, spatial=conv == "sosep"),
        nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class MobileNetV1(nn.Module):
    """MobileNet V1 with depth separable (``dsep``) or osep (``osep``/``sosep``) blocks."""

    default_input_size: Tuple[int, int, int] = (3, 224, 224)

    def __init__(self, conv: str = "dsep", width_mult: float = 1.0, num_classes: int = 1000, gamma: float = 1.0,
                 rounding: str = "divisor", n_convs: Union[int, str] = 2, channel_policy: str = "normal"):
        super().__init__()
        if conv not in MOBILENET_CONVS:
            raise ValueError(f"conv must be one of {', '.join(MOBILENET_CONVS)}, got {conv!r}")
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not width_mult > 0 \
                or not math.isfinite(width_mult):
            raise ValueError(f"width_mult must be a positive number, got {width_mult!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.conv_kind, self.width_mult = conv, float(width_mult)
        c = scale_channels(32, width_mult)
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c),
                                  nn.ReLU(inplace=True))
        blocks = []
        for out, stride in MOBILENET_BLOCKS:
            c_out = scale_channels(out, width_mult)
            blocks.append(_block(conv, c, c_out, stride, gamma, rounding, n_convs, channel_policy))
            c = c_out
        self.features = nn.Sequential(*blocks)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.stem(x))
        return self.classifier(torch.flatten(self.global_pooling(x), 1))


def mobilenet(conv: str = "dsep", width_mult: float = 1.0, num_classes: int = 1000, gamma: float = 1.0,
              rounding: str = "divisor", n_convs: Union[int, str] = 2, channel_policy: str = "normal") -> MobileNetV1:
    """MobileNet V1 (``conv="dsep"``) or o-MobileNet (``"osep"``; ``"sosep"`` spatial); the osep
    keywords (``gamma``, ``rounding``, ``n_convs``, ``channel_policy``) reach the osep blocks."""
    return MobileNetV1(conv=conv, width_mult=width_mult, num_classes=num_classes, gamma=gamma, rounding=rounding,
                       n_convs=n_convs, channel_policy=channel_policy)
