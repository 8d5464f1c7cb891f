"""``OSepConv2d``: the optimized separable convolution as an ``nn.Module``.

N grouped convolutions in a row with no nonlinearity between them, and a
ShuffleNet channel shuffle between two convolutions, built from an
:class:`~osep_nas.plan.OSepPlan`.  The stride sits on the first convolution with a
kernel larger than 1x1 (the first one for N = 2), so no input pixel under the
window is skipped by a strided 1x1 before it.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from osep_nas import kernels
from osep_nas.kernels import autotune
from osep_nas.plan import OSepPlan, _pair, osep_plan
from osep_nas.shuffle import channel_shuffle

IMPLS = ("fast", "reference")
#: with ``OSEP_NAS_AUTOTUNE=0``, a stride-1 1x1 convolution on CPU with at least this many
#: pixels per channel runs as a batched matrix product (else oneDNN); with tuning on, the
#: faster of the two for the shape on this CPU runs.
MATMUL_MIN_PIXELS = 1024
#: the schedule of a layer the fused kernel may run whole (grouped KxK, shuffle, grouped 1x1)
FUSABLE = ["native", "matmul"]


class TunedConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose grouped calls (the depth-wise convolutions of DARTS' ``sep_conv`` and
    ``dil_conv``, of d-ResNet and MobileNet) run on the implementation that
    :func:`osep_nas.kernels.grouped_conv2d` measured fastest for the shape on this CPU (the
    native kernel or oneDNN); the same parameters, state dict and function as ``nn.Conv2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == 1 or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super().forward(x)
        return kernels.grouped_conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                                      self.groups)


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
        impl: str = "fast",
    ) -> None:
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
        self.impl = impl
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

        self._schedule = self._fast_schedule() if impl == "fast" else None

    # -- forward -----------------------------------------------------------------
    def forward(self, x: torch.Tensor, relu_input: bool = False) -> torch.Tensor:
        """The layer of ``x``, or of ``F.relu(x)`` with ``relu_input=True`` (DARTS' ReLU-conv-BN
        ops: where the fused kernel runs, the ReLU is folded into it and costs no pass)."""
        pad_in = self.plan.input_padding
        if pad_in:
            x = F.pad(x, (0, 0, 0, 0, 0, pad_in))
        if self._schedule is None:
            x = self._forward_reference(F.relu(x) if relu_input else x)
        else:
            x = self._forward_fast(x, relu_input)
        if self.plan.output_padding:
            x = x[:, : self.out_channels]
        return x

    def _forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The straightforward form: N convolutions with an explicit shuffle between them."""
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < last:
                x = channel_shuffle(x, conv.groups)
        return x

    def _fast_schedule(self) -> List[str]:
        """How each convolution runs in the fast form (same weights, same function).

        * ``"native"``: a grouped KxK convolution with at most
          ``kernels.NATIVE_MAX_IN_PER_GROUP`` input channels per group goes through
          ``kernels.grouped_conv2d``: where the direct CPU kernel covers the call (CPU,
          float, stride 1) the autotuner runs it or oneDNN, whichever is faster for that
          shape on this CPU (oneDNN's grouped convolution is slow for narrow groups, most
          of all backward), else ``F.conv2d``.
        * ``"matmul"``: a stride-1 1x1 convolution runs as ``torch.matmul`` of the
          (groups, out, in) weight with the (batch, groups, in, pixels) input view, on CPU
          tensors with at least ``MATMUL_MIN_PIXELS`` pixels (else as ``"conv"``).
        * ``"conv"``: the plain grouped convolution (then an explicit shuffle if needed).

        A layer scheduled ``FUSABLE`` (``["native", "matmul"]``: the usual two-step plan) may
        run whole as one fused native pass instead, where the autotuner finds it faster
        (:meth:`_fused_choice`).
        """
        schedule = []
        for conv in self.convs:
            n_in = conv.in_channels // conv.groups
            if conv.kernel_size != (1, 1) and 1 < conv.groups and n_in <= kernels.NATIVE_MAX_IN_PER_GROUP:
                schedule.append("native")
            elif conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0):
                schedule.append("matmul")
            else:
                schedule.append("conv")
        return schedule

    def _forward_fast(self, x: torch.Tensor, relu_input: bool = False) -> torch.Tensor:
        if self._schedule == FUSABLE:
            first, second = self.convs
            if kernels.fused_covers(x, first.weight, second.weight, first.stride, first.padding, first.dilation,
                                    first.groups, second.groups) and self._fused_choice(x, relu_input) == "fused":
                y = kernels.fused_osep(x, first.weight, second.weight, first.padding, first.dilation, first.groups,
                                       second.groups, relu_input)
                return y if second.bias is None else y + second.bias.view(1, -1, 1, 1)
        return self._forward_steps(F.relu(x) if relu_input else x, [conv.weight for conv in self.convs])

    def _fused_choice(self, x: torch.Tensor, relu_input: bool = False) -> str:
        """``"fused"`` (one native pass: :func:`osep_nas.kernels.fused_osep`) or ``"separate"``
        (the steps of the schedule, each tuned): the faster for this shape on this CPU, timed
        once by the autotuner; ``"separate"`` with ``OSEP_NAS_AUTOTUNE=0``."""
        first, second = self.convs

        def run(c: str, a: torch.Tensor, w: torch.Tensor, w1: torch.Tensor) -> torch.Tensor:
            if c == "fused":
                return kernels.fused_osep(a, w, w1, first.padding, first.dilation, first.groups, second.groups,
                                          relu_input)
            return self._forward_steps(F.relu(a) if relu_input else a, [w, w1])

        return autotune.choose(x, first.weight, first.stride, first.padding, first.dilation, first.groups,
                               first.groups, run, kernels._build_name, candidates=autotune.FUSED, fixed="separate",
                               extra=f"w1={'x'.join(map(str, second.weight.shape))} groups1={second.groups}"
                                     + (" relu_input" if relu_input else ""),
                               extra_weights=[second.weight])

    def _forward_steps(self, x: torch.Tensor, weights: List[torch.Tensor]) -> torch.Tensor:
        """The schedule's steps one by one, with ``weights`` (the convolutions' own, or the
        autotuner's stand-ins of their shapes)."""
        last = len(self.convs) - 1
        shuffled = False  # x is already in the order the shuffle would give
        for i, (conv, how, weight) in enumerate(zip(self.convs, self._schedule, weights)):
            need_shuffle = i < last and conv.groups > 1
            if how == "native":
                x = kernels.grouped_conv2d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation,
                                           conv.groups, shuffle_out=need_shuffle)
                shuffled = need_shuffle
            elif how == "matmul" and type(x) is torch.Tensor and not kernels.tracing_or_counting() \
                    and x.device.type == "cpu" and x.is_contiguous() and _pointwise_choice(x, conv) == "matmul":
                x = _pointwise_as_matmul(x, weight, conv.bias, conv.groups)
                shuffled = False
            else:
                # an NCHW input gives an NCHW output, also where model.to(channels_last) made the
                # weight channels-last (oneDNN would follow the weight, and the network would mix formats)
                w = _nchw(weight) if x.is_contiguous() and not kernels.tracing_or_counting() else weight
                x = conv(x) if w is conv.weight else conv._conv_forward(x, w, conv.bias)
                shuffled = False
            if need_shuffle and not shuffled:
                x = channel_shuffle(x, conv.groups)
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


def _pointwise_as_matmul(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                         groups: int) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, groups=groups)`` for a stride-1, unpadded 1x1 (grouped)
    convolution, as one batched matmul."""
    b, c, h, w = x.shape
    n, m = c // groups, weight.shape[0] // groups
    y = torch.matmul(weight.view(groups, m, n), x.reshape(b, groups, n, h * w)).view(b, groups * m, h, w)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y


def _nchw(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` with NCHW strides: itself if it has them, a view where its memory is already
    in that order (a channels-last 1x1 weight), else a copy."""
    shape, strides, step = weight.shape, [], 1
    for size in reversed(shape):
        strides.insert(0, step)
        step *= size
    return weight if list(weight.stride()) == strides else weight.reshape(-1).view(shape)


def _pointwise_choice(x: torch.Tensor, conv: nn.Conv2d) -> str:
    """``"matmul"`` or ``"onednn"`` for a stride-1 1x1 convolution on a contiguous CPU tensor:
    the faster for the shape (timed once per shape by the autotuner); the pixel rule of
    :data:`MATMUL_MIN_PIXELS` with ``OSEP_NAS_AUTOTUNE=0``."""
    def run(c: str, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return _pointwise_as_matmul(a, w, None, conv.groups) if c == "matmul" else F.conv2d(a, w, groups=conv.groups)

    fixed = "matmul" if x.shape[-1] * x.shape[-2] >= MATMUL_MIN_PIXELS else "onednn"
    return autotune.choose(x, conv.weight, (1, 1), (0, 0), (1, 1), conv.groups, 1, run, kernels._build_name,
                           candidates=autotune.POINTWISE, fixed=fixed)


def _conv_out(h: int, w: int, conv: nn.Conv2d):
    kh, kw = conv.kernel_size
    dh, dw = conv.dilation
    ph, pw = conv.padding
    sh, sw = conv.stride
    return ((h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1)


def set_osep_impl(model: nn.Module, impl: str) -> nn.Module:
    """Switch every OSepConv2d in ``model`` to ``impl`` ("fast" or "reference"); same weights."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    for m in model.modules():
        if isinstance(m, OSepConv2d):
            m.impl = impl
            m._schedule = m._fast_schedule() if impl == "fast" else None
    return model
