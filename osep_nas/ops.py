"""The one op registry: DARTS primitives and their osep replacements.

``OPS[name](C, stride, affine)`` builds a candidate operation mapping C channels to C
channels (spatially reduced by ``stride``), the DARTS repository's convention, so DARTS
code that does ``from operations import *`` runs unchanged with ``from osep_nas.ops import *``.
The osep factories also take the plan's keywords (``rounding``, ``gamma``, ``n_convs``,
``channel_policy``); the others accept and ignore them, so a builder passes one set to all.
The paper's rule ``sep_conv_KxK`` -> ``osep_KxK``, ``dil_conv_KxK`` -> ``osep_dil_KxK``
(``sosep_KxK``: the spatial form) is spelled out in docs/config.md.
"""
from __future__ import annotations

from typing import Callable, Dict, List

import torch
from torch import nn

from osep_nas import kernels
from osep_nas.conv import OSepConv2d, TunedConv2d

__all__ = [
    "OPS", "PRIMITIVES", "DARTS_PRIMITIVES", "OSEP_PRIMITIVES", "register_op", "op_names",
    "ReLUConvBN", "DilConv", "SepConv", "Identity", "Zero", "FactorizedReduce", "OSepBlock",
    "Conv7x1_1x7",
]

OpFactory = Callable[..., nn.Module]
OPS: Dict[str, OpFactory] = {}

OSEP_KEYWORDS = ("rounding", "gamma", "n_convs", "channel_policy")


def register_op(name: str, override: bool = False) -> Callable[[OpFactory], OpFactory]:
    """Decorator adding ``factory(C, stride, affine, **kw) -> nn.Module`` to ``OPS``.

    >>> @register_op("conv_3x3")
    ... def conv_3x3(C, stride, affine, **kw):
    ...     return ReLUConvBN(C, C, 3, stride, 1, affine)
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"op name must be an identifier-like string, got {name!r}")

    def deco(factory: OpFactory) -> OpFactory:
        if name in OPS and not override:
            raise ValueError(f"op {name!r} is already registered (pass override=True to replace it)")
        OPS[name] = factory
        return factory

    return deco


def op_names() -> List[str]:
    """All registered op names, in registration order."""
    return list(OPS)


def check_op(name: str) -> None:
    """Raise ValueError naming ``name`` and the known ops if it is not registered."""
    if name not in OPS:
        raise ValueError(f"unknown op {name!r}; known ops: {', '.join(OPS)}")


# -- building blocks (the names DARTS code imports) ---------------------------------
class ReLUConvBN(nn.Module):
    """ReLU, convolution, batch norm."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """ReLU, dilated depth-wise KxK, point-wise 1x1, batch norm (DARTS dil_conv)."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            TunedConv2d(C_in, C_in, kernel_size, stride=stride, padding=padding, dilation=dilation,
                        groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SepConv(nn.Module):
    """Two stacks of DilConv without dilation, stride on the first (DARTS sep_conv)."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            DilConv(C_in, C_in, kernel_size, stride, padding, 1, affine).op,
            DilConv(C_in, C_out, kernel_size, 1, padding, 1, affine).op,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class OSepBlock(nn.Module):
    """``stacks`` times (ReLU, OSepConv2d, BN): the paper's replacement of sep/dil convs."""

    def __init__(self, C_in: int, C_out: int, kernel_size: int, stride: int, dilation: int = 1,
                 stacks: int = 2, spatial: bool = False, affine: bool = True, **osep_kw):
        super().__init__()
        layers: List[nn.Module] = []
        for i in range(stacks):
            c_in = C_in if i == 0 else C_out
            layers += [
                nn.ReLU(inplace=False),
                OSepConv2d(c_in, C_out, kernel_size, stride=stride if i == 0 else 1, dilation=dilation,
                           spatial=spatial, **osep_kw),
                nn.BatchNorm2d(C_out, affine=affine),
            ]
        self.op = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if type(x) is not torch.Tensor or kernels.tracing_or_counting():
            return self.op(x)  # module by module, for tools that follow them (NNI's shape inference, tracing)
        # each ReLU goes into the osep layer after it (folded into its fused kernel where that runs)
        for i in range(0, len(self.op), 3):
            x = self.op[i + 2](self.op[i + 1](x, relu_input=True))
        return x


class Conv7x1_1x7(nn.Module):
    """ReLU, 1x7 then 7x1 convolution, batch norm (DARTS conv_7x1_1x7)."""

    def __init__(self, C: int, stride: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
            nn.Conv2d(C, C, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
            nn.BatchNorm2d(C, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Identity(nn.Module):
    """The identity (skip_connect at stride 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """The 'none' op: zeros of the output shape."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset stride-2 1x1 convolutions, concatenated."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even C_out, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        a = self.conv_1(x)
        # the second path is offset by one pixel; on odd sizes its output is one short
        b = self.conv_2(x[:, :, 1:, 1:] if min(x.shape[-2:]) > 1 else x)
        if b.shape[-2:] != a.shape[-2:]:
            b = nn.functional.pad(b, (0, a.shape[-1] - b.shape[-1], 0, a.shape[-2] - b.shape[-2]))
        return self.bn(torch.cat([a, b], dim=1))


# -- the registry ------------------------------------------------------------------
def _osep_kw(kw: dict) -> dict:
    unknown = set(kw) - set(OSEP_KEYWORDS)
    if unknown:
        raise ValueError(f"unknown op keyword(s): {', '.join(sorted(unknown))}; accepted: {', '.join(OSEP_KEYWORDS)}")
    return kw


def _plain(kw: dict) -> None:
    _osep_kw(kw)  # accepted and ignored, but typos are still caught


@register_op("none")
def _none(C: int, stride: int, affine: bool, **kw) -> nn.Module:
    _plain(kw)
    return Zero(stride)


@register_op("avg_pool_3x3")
def _avg_pool_3x3(C: int, stride: int, affine: bool, **kw) -> nn.Module:
    _plain(kw)
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


@register_op("max_pool_3x3")
def _max_pool_3x3(C: int, stride: int, affine: bool, **kw) -> nn.Module:
    _plain(kw)
    return nn.MaxPool2d(3, stride=stride, padding=1)


@register_op("skip_connect")
def _skip_connect(C: int, stride: int, affine: bool, **kw) -> nn.Module:
    _plain(kw)
    return Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine)


def _register_sep(k: int) -> None:
    @register_op(f"sep_conv_{k}x{k}")
    def _sep(C: int, stride: int, affine: bool, **kw) -> nn.Module:
        _plain(kw)
        return SepConv(C, C, k, stride, k // 2, affine=affine)


def _register_dil(k: int) -> None:
    @register_op(f"dil_conv_{k}x{k}")
    def _dil(C: int, stride: int, affine: bool, **kw) -> nn.Module:
        _plain(kw)
        return DilConv(C, C, k, stride, k - 1, 2, affine=affine)


def _register_osep(k: int) -> None:
    @register_op(f"osep_{k}x{k}")
    def _osep(C: int, stride: int, affine: bool, **kw) -> nn.Module:
        return OSepBlock(C, C, k, stride, stacks=2, affine=affine, **_osep_kw(kw))

    @register_op(f"osep_dil_{k}x{k}")
    def _osep_dil(C: int, stride: int, affine: bool, **kw) -> nn.Module:
        return OSepBlock(C, C, k, stride, dilation=2, stacks=1, affine=affine, **_osep_kw(kw))

    @register_op(f"sosep_{k}x{k}")
    def _sosep(C: int, stride: int, affine: bool, **kw) -> nn.Module:
        return OSepBlock(C, C, k, stride, stacks=2, spatial=True, affine=affine, **_osep_kw(kw))


for _k in (3, 5, 7):
    _register_sep(_k)
for _k in (3, 5):
    _register_dil(_k)


@register_op("conv_7x1_1x7")
def _conv_7x1_1x7(C: int, stride: int, affine: bool, **kw) -> nn.Module:
    _plain(kw)
    return Conv7x1_1x7(C, stride, affine=affine)


for _k in (3, 5):
    _register_osep(_k)

#: The DARTS search set (Liu et al. 2019).
DARTS_PRIMITIVES: List[str] = [
    "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
]
#: The osep search set: DARTS' with sep/dil convolutions replaced by osep and sosep ones.
OSEP_PRIMITIVES: List[str] = [
    "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "osep_3x3", "osep_5x5", "osep_dil_3x3", "osep_dil_5x5", "sosep_3x3", "sosep_5x5",
]
#: The default search set of this project.
PRIMITIVES: List[str] = list(OSEP_PRIMITIVES)
