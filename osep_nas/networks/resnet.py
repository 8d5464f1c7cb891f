"""He et al.'s CIFAR ResNet (depth 6n + 2) with a choice of 3x3 convolution.

``conv`` picks what every 3x3 convolution of the residual blocks becomes, one per prefix of
the paper's Table 6: ``conv`` (ResNet), ``dw`` (dw-ResNet), ``dsep`` (d-ResNet),
``spatial`` (s-ResNet), ``osep`` (o-ResNet), ``sosep`` (so-ResNet).  The table of kinds and
the design decisions (stem, widths, shortcuts, zero-init) are in docs/config.md; their
checks against Table 6 are in benchmarks/RESULTS.md and ``tests/test_paper_tables.py``.
"""
from __future__ import annotations

import math
from typing import Any, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from osep_nas.conv import OSepConv2d, TunedConv2d

__all__ = ["resnet_cifar", "ResNetCIFAR", "BasicBlock", "make_conv3x3", "scale_channels", "CONV_KINDS",
           "SHORTCUTS"]

CONV_KINDS = ("conv", "dw", "dsep", "spatial", "osep", "sosep")
SHORTCUTS = ("A", "B")


def scale_channels(channels: int, width_mult: float) -> int:
    """``channels * width_mult`` rounded half up, at least 1 (the project's width rule)."""
    return max(1, int(math.floor(channels * width_mult + 0.5)))


class DepthSeparableConv2d(nn.Sequential):
    """Depth-wise KxK (stride here), BN, ReLU, point-wise 1x1 (MobileNet's block, minus its last BN)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__(
            TunedConv2d(in_channels, in_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                        groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
        )


class SpatialSeparableConv2d(nn.Sequential):
    """Kx1 (stride here) to min(C_in, C_out) channels, then 1xK to C_out."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        mid = min(in_channels, out_channels)
        pad = kernel_size // 2
        super().__init__(
            nn.Conv2d(in_channels, mid, (kernel_size, 1), stride=stride, padding=(pad, 0), bias=False),
            nn.Conv2d(mid, out_channels, (1, kernel_size), stride=(1, 1), padding=(0, pad), bias=False),
        )


def make_conv3x3(kind: str, in_channels: int, out_channels: int, stride: int = 1, gamma: float = 1.0,
                 rounding: str = "divisor", n_convs: Union[int, str] = 2, channel_policy: str = "normal") -> nn.Module:
    """A 3x3 "same" convolution of the given ``kind`` (the kinds: docs/config.md)."""
    if kind == "conv":
        return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
    if kind == "dw":
        return TunedConv2d(in_channels, out_channels, 3, stride=stride, padding=1,
                           groups=math.gcd(in_channels, out_channels), bias=False)
    if kind == "dsep":
        return DepthSeparableConv2d(in_channels, out_channels, 3, stride)
    if kind == "spatial":
        return SpatialSeparableConv2d(in_channels, out_channels, 3, stride)
    if kind in ("osep", "sosep"):
        return OSepConv2d(in_channels, out_channels, 3, stride=stride, gamma=gamma, rounding=rounding,
                          n_convs=n_convs, channel_policy=channel_policy, spatial=kind == "sosep")
    raise ValueError(f"conv must be one of {', '.join(CONV_KINDS)}, got {kind!r}")


class ShortcutA(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and append zero channels (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        if extra < 0:
            raise ValueError(f"option-A shortcut cannot drop channels ({in_channels} -> {out_channels})")
        self.pad = (extra // 2, extra - extra // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad != (0, 0):
            x = F.pad(x, (0, 0, 0, 0) + self.pad)
        return x


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Option-B shortcut: 1x1 convolution with ``stride`` and BN."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, conv: str, gamma: float, rounding: str,
                 shortcut: str = "A", **osep_kw: Any):
        super().__init__()
        self.conv1 = make_conv3x3(conv, in_channels, out_channels, stride, gamma, rounding, **osep_kw)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = make_conv3x3(conv, out_channels, out_channels, 1, gamma, rounding, **osep_kw)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = (ShortcutA(in_channels, out_channels, stride) if shortcut == "A"
                                        else _projection(in_channels, out_channels, stride))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetCIFAR(nn.Module):
    """CIFAR ResNet of depth 6n + 2 (see :func:`resnet_cifar`)."""

    default_input_size: Tuple[int, int, int] = (3, 32, 32)

    def __init__(self, depth: int, conv: str = "conv", width_mult: float = 1.0, num_classes: int = 10,
                 gamma: float = 1.0, rounding: str = "divisor", shortcut: str = "A",
                 zero_init_residual: bool = True, n_convs: Union[int, str] = 2, channel_policy: str = "normal"):
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (20, 32, 56, 110, ...), got {depth!r}")
        if conv not in CONV_KINDS:
            raise ValueError(f"conv must be one of {', '.join(CONV_KINDS)}, got {conv!r}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be 'A' (zero padding) or 'B' (1x1 projection), got {shortcut!r}")
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not width_mult > 0 \
                or not math.isfinite(width_mult):
            raise ValueError(f"width_mult must be a positive number, got {width_mult!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        n = (depth - 2) // 6
        self.depth, self.conv_kind, self.width_mult, self.shortcut = depth, conv, float(width_mult), shortcut
        widths = [scale_channels(c, width_mult) for c in (16, 32, 64)]
        self.widths = tuple(widths)
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        blocks = []
        c_in = widths[0]
        for stage, c_out in enumerate(widths):
            for b in range(n):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(BasicBlock(c_in, c_out, stride, conv, gamma, rounding, shortcut, n_convs=n_convs,
                                         channel_policy=channel_policy))
                c_in = c_out
        self.layers = nn.Sequential(*blocks)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in, num_classes)
        self.zero_init_residual = bool(zero_init_residual)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, BasicBlock) and zero_init_residual:
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.classifier(torch.flatten(self.global_pooling(x), 1))


def resnet_cifar(depth: int, conv: str = "conv", width_mult: float = 1.0, num_classes: int = 10,
                 gamma: float = 1.0, rounding: str = "divisor", shortcut: str = "A",
                 zero_init_residual: bool = True, n_convs: Union[int, str] = 2,
                 channel_policy: str = "normal") -> ResNetCIFAR:
    """He et al.'s CIFAR ResNet of ``depth`` = 6n + 2 with every block 3x3 conv of kind ``conv``.

    ``gamma``, ``rounding``, ``n_convs`` and ``channel_policy`` reach the osep/sosep
    convolutions (ignored by the others);
    ``shortcut`` is ``"A"`` (zero padding, default) or ``"B"`` (1x1 projection + BN);
    ``zero_init_residual`` starts every block's last BN scale at 0 (see docs/config.md).
    """
    return ResNetCIFAR(depth, conv=conv, width_mult=width_mult, num_classes=num_classes, gamma=gamma,
                       rounding=rounding, shortcut=shortcut, zero_init_residual=zero_init_residual,
                       n_convs=n_convs, channel_policy=channel_policy)
