"""``OSepConv2d``: the optimized separable convolution as an ``nn.Module``.

N grouped convolutions in a row with no nonlinearity between them, and a
ShuffleNet channel shuffle between two convolutions, built from an
:class:`~osep_nas.plan.OSepPlan`.  The stride sits on the first convolution with a
kernel larger than 1x1 (the first one for N = 2), so no input pixel under the
window is skipped by a strided 1x1 before it.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from osep_nas.plan import OSepPlan, _pair, osep_plan


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle of an NCHW tensor (see ``plan.shuffle_permutation``)."""
    if groups == 1:
        return x
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class OSepConv2d(nn.Module):
    """Optimized separable convolution replacing a ``kernel_size`` convolution.

    Args mirror ``nn.Conv2d`` plus the plan's knobs (see :func:`osep_nas.osep_plan`):
    ``padding=None`` means "same" for odd kernels; ``bias`` adds one bias to the last
    convolution (osep is one linear operator, so one bias suffices).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Union[int, Sequence[int]],
        stride: Union[int, Sequence[int]] = 1,
        padding: Optional[Union[int, Sequence[int]]] = None,
        dilation: Union[int, Sequence[int]] = 1,
        bias: bool = False,
        n_convs: Union[int, str] = 2,
        gamma: float = 1.0,
        channel_policy: str = "normal",
        spatial: bool = False,
        rounding: str = "divisor",
        plan: Optional[OSepPlan] = None,
    ) -> None:
        super().__init__()
        if plan is None:
            plan = osep_plan(in_channels, out_channels, kernel_size, n_convs=n_convs, gamma=gamma,
                             channel_policy=channel_policy, spatial=spatial, dilation=dilation,
                             rounding=rounding)
        self.plan = plan
        kh, kw = plan.kernel_size
        dh, dw = plan.dilation
        if padding is None:
            if kh % 2 == 0 or kw % 2 == 0:
                raise ValueError(f"padding=None ('same') needs an odd kernel_size, got {kh}x{kw}; give padding explicitly")
            pad = ((kh - 1) * dh // 2, (kw - 1) * dw // 2)
        else:
            pad = _pair(padding, "padding") if padding != 0 and padding != (0, 0) else (0, 0)
        self.stride = _pair(stride, "stride")
        self.padding = pad
        self.in_channels = plan.in_channels
        self.out_channels = plan.out_channels
        self.kernel_size = plan.kernel_size

        convs = []
        s_idx = plan.spatial_index
        for i, spec in enumerate(plan.convs):
            # the padding goes where the kernel is: height on the conv whose kernel is tall,
            # width on the conv whose kernel is wide (for spatial osep these differ)
            ph = pad[0] if spec.kernel[0] > 1 or (kh == 1 and i == s_idx) else 0
            pw = pad[1] if spec.kernel[1] > 1 or (kw == 1 and i == s_idx) else 0
            convs.append(nn.Conv2d(
                spec.in_channels, spec.out_channels, spec.kernel,
                stride=self.stride if i == s_idx else 1,
                padding=(ph, pw), dilation=spec.dilation, groups=spec.groups,
                bias=bias and i == len(plan.convs) - 1,
            ))
        self.convs = nn.ModuleList(convs)

    # -- forward -----------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_in = self.plan.input_padding
        if pad_in:
            x = F.pad(x, (0, 0, 0, 0, 0, pad_in))
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < last:
                x = channel_shuffle(x, conv.groups)
        if self.plan.output_padding:
            x = x[:, : self.out_channels]
        return x

    # -- complexity ----------------------------------------------------------------
    def macs(self, input_shape: Sequence[int], output_shape: Sequence[int]) -> int:
        """Multiply-adds for one image (used by ``osep_nas.count_flops``)."""
        h, w = input_shape[-2], input_shape[-1]
        total = 0
        for i, conv in enumerate(self.convs):
            h, w = _conv_out(h, w, conv)
            total += conv.weight.numel() * h * w
        return total

    def extra_repr(self) -> str:
        p = self.plan
        head = (f"{p.in_channels}, {p.out_channels}, kernel_size={p.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, n_convs={p.n_convs}, gamma={p.gamma:g}, policy={p.channel_policy}, "
                f"spatial={p.spatial}, rounding={p.rounding}, groups={p.groups}, params={p.params}")
        if p.dilation != (1, 1):
            head += f", dilation={p.dilation}"
        return head


def _conv_out(h: int, w: int, conv: nn.Conv2d):
    kh, kw = conv.kernel_size
    dh, dw = conv.dilation
    ph, pw = conv.padding
    sh, sw = conv.stride
    return ((h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1)
