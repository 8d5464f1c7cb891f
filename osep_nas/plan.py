"""Planning an optimized separable convolution (Theorem 1 / Algorithm 1 of the paper).

A K_H x K_W convolution C_in -> C_out becomes N grouped convolutions in a row with a channel
shuffle between two of them.  :func:`osep_plan` chooses the internal channels, kernels and
groups (``rounding="divisor"``: an exact search over groups PyTorch runs without copies;
``"paper"``: Algorithm 1's ceil'd groups with channel padding); :class:`OSepPlan` holds the
result, and ``plan.params`` is exactly the number of weights the module holds (bias
excluded).  The two rounding rules are described in docs/config.md.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from osep_nas.plan_groups import divisor_groups, paper_layout, real_groups
from osep_nas.shuffle import shuffle_permutation

POLICIES = ("normal", "linear", "bottleneck", "inverted")
ROUNDINGS = ("divisor", "paper")

Pair = Tuple[int, int]


@dataclass(frozen=True)
class ConvSpec:
    """One of the N convolutions of an osep plan, with the channel counts it really holds."""

    in_channels: int
    out_channels: int
    kernel: Pair
    groups: int
    dilation: Pair = (1, 1)

    @property
    def params(self) -> int:
        """Weights of this convolution (no bias)."""
        return self.out_channels * (self.in_channels // self.groups) * self.kernel[0] * self.kernel[1]

    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups


@dataclass(frozen=True)
class OSepPlan:
    """The result of ``osep_plan``: per-convolution channels, kernels, groups and #Params."""

    in_channels: int
    out_channels: int
    kernel_size: Pair
    n_convs: int
    gamma: float
    channel_policy: str
    spatial: bool
    dilation: Pair
    rounding: str
    convs: Tuple[ConvSpec, ...]
    ideal_params: float = field(compare=False)  # Algorithm 1's real-valued minimum N * t
    algorithm_groups: Tuple[int, ...] = field(default=(), compare=False)  # Algorithm 1's ceil'd g_l ("paper")

    # -- views -----------------------------------------------------------------
    @property
    def channels(self) -> Tuple[int, ...]:
        """C_1 .. C_{N+1} as the module holds them (C_1 = in, C_{N+1} = out, before padding)."""
        inner = tuple(c.out_channels for c in self.convs[:-1])
        return (self.in_channels,) + inner + (self.out_channels,)

    @property
    def kernels(self) -> Tuple[Pair, ...]:
        return tuple(c.kernel for c in self.convs)

    @property
    def groups(self) -> Tuple[int, ...]:
        return tuple(c.groups for c in self.convs)

    @property
    def dilations(self) -> Tuple[Pair, ...]:
        return tuple(c.dilation for c in self.convs)

    @property
    def params(self) -> int:
        """Exact number of weights the module built from this plan holds (no bias)."""
        return sum(c.params for c in self.convs)

    @property
    def input_padding(self) -> int:
        """Zero channels appended to the input (``rounding="paper"`` only)."""
        return self.convs[0].in_channels - self.in_channels

    @property
    def output_padding(self) -> int:
        """Extra output channels computed and dropped (``rounding="paper"`` only)."""
        return self.convs[-1].out_channels - self.out_channels

    @property
    def spatial_index(self) -> int:
        """Index of the first convolution with a kernel larger than 1x1 (0 if none)."""
        for i, c in enumerate(self.convs):
            if c.kernel != (1, 1):
                return i
        return 0

    def flops(self, height: int, width: int, stride: int = 1) -> int:
        """Multiply-adds for one image of ``height`` x ``width`` (stride on the spatial conv)."""
        h, w = height, width
        total = 0
        for i, c in enumerate(self.convs):
            if i == self.spatial_index and stride > 1:
                kh = (c.kernel[0] - 1) * c.dilation[0] + 1
                kw = (c.kernel[1] - 1) * c.dilation[1] + 1
                h = (h + 2 * ((kh - 1) // 2) - kh) // stride + 1
                w = (w + 2 * ((kw - 1) // 2) - kw) // stride + 1
            total += c.params * h * w
        return total

    def connectivity(self) -> np.ndarray:
        """Boolean C_out x C_in matrix: does output channel o depend on input channel i.

        Composes the block-diagonal group structure of each convolution with the
        ShuffleNet shuffle between them, exactly as ``OSepConv2d`` computes.
        """
        return _connectivity(self.convs, self.in_channels, self.out_channels)

    def is_fully_connected(self) -> bool:
        """True when every output channel sees every input channel (volumetric RF kept)."""
        return bool(self.connectivity().all())

    def describe(self) -> str:
        """One line per convolution, for ``extra_repr`` and ``osep-nas plan``."""
        rows = []
        for i, c in enumerate(self.convs):
            dil = f" dilation={c.dilation[0]}x{c.dilation[1]}" if c.dilation != (1, 1) else ""
            rows.append(
                f"conv{i + 1}: {c.in_channels}->{c.out_channels} k={c.kernel[0]}x{c.kernel[1]} "
                f"groups={c.groups} ({c.in_per_group} in/group){dil} params={c.params}"
            )
        return "\n".join(rows)


# -- argument checking ---------------------------------------------------------
def _pair(value: Union[int, Sequence[int]], name: str) -> Pair:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        a, b = value
    else:
        a = b = value
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(a), int(b)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def auto_n_convs(in_channels: int, out_channels: int, kernel_size: Pair, gamma: float = 1.0) -> int:
    """The paper's optimal number of convolutions N* = ln(gamma C K^2), rounded, at least 2.

    C is the geometric mean of C_in and C_out, K^2 = K_H * K_W.
    """
    c = math.sqrt(in_channels * out_channels)
    return max(2, int(round(math.log(gamma * c * kernel_size[0] * kernel_size[1]))))


def internal_channels(in_channels: int, out_channels: int, policy: str) -> int:
    """C_2 = ... = C_N from the channel policy (at least 1)."""
    lo, hi = min(in_channels, out_channels), max(in_channels, out_channels)
    if policy == "normal":
        value = lo
    elif policy == "linear":
        value = (in_channels + out_channels) / 2
    elif policy == "bottleneck":
        value = hi / 4
    elif policy == "inverted":
        value = 4 * lo
    else:
        raise ValueError(f"channel_policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    return max(1, int(round(value)))


def internal_kernels(kernel_size: Pair, n_convs: int, spatial: bool) -> List[Pair]:
    """One convolution carries the whole kernel, the others are 1x1 (spatial: Kx1 then 1xK).

    The carrier is convolution floor(N/2) (1-based), the first one for N = 2.
    """
    kh, kw = kernel_size
    m = n_convs // 2 - 1  # 0-based index of floor(N/2)
    kernels: List[Pair] = [(1, 1)] * n_convs
    if spatial:
        kernels[m] = (kh, 1)
        kernels[m + 1] = (1, kw)
    else:
        kernels[m] = (kh, kw)
    return kernels


def _connectivity(convs: Sequence[ConvSpec], in_channels: int, out_channels: int) -> np.ndarray:
    """Body of :meth:`OSepPlan.connectivity` (also used while choosing the paper layout)."""
    conn = None
    for i, c in enumerate(convs):
        m_in = c.in_channels // c.groups
        m_out = c.out_channels // c.groups
        block = (np.arange(c.out_channels)[:, None] // m_out) == (np.arange(c.in_channels)[None, :] // m_in)
        block = block.astype(np.float32)
        if conn is None:
            conn = block[:, :in_channels]
        else:
            conn = np.minimum(block @ conn, 1.0)
        if i < len(convs) - 1:
            conn = conn[shuffle_permutation(c.out_channels, c.groups)]
    return conn[:out_channels] > 0


def _hashable(value):
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value


def osep_plan(
    in_channels: int,
    out_channels: int,
    kernel_size: Union[int, Sequence[int]],
    n_convs: Union[int, str] = 2,
    gamma: float = 1.0,
    channel_policy: str = "normal",
    spatial: bool = False,
    dilation: Union[int, Sequence[int]] = 1,
    rounding: str = "divisor",
    kernels: Optional[Sequence[Union[int, Sequence[int]]]] = None,
) -> OSepPlan:
    """Plan an optimized separable convolution (paper's Algorithm 1).

    Args:
        in_channels, out_channels: C_in and C_out of the convolution it replaces.
        kernel_size: K or (K_H, K_W) of the convolution it replaces.
        n_convs: N >= 2, or ``"auto"`` for N* = round(ln(gamma C K^2)) (at least 2).
        gamma: overlap coefficient > 0; gamma >= 1 keeps every output channel connected
            to every input channel (the volumetric receptive field).
        channel_policy: internal channels C_2..C_N: ``normal`` min(C_in, C_out),
            ``linear`` (C_in + C_out)/2, ``bottleneck`` max/4, ``inverted`` 4 min.
        spatial: spatial osep: K x 1 then 1 x K instead of one K x K.
        dilation: dilation of the kernel-carrying convolution(s).
        rounding: ``"divisor"`` (exact search over divisor groups, no copies; default)
            or ``"paper"`` (ceil of Algorithm 1 with channel padding, see docs/config.md).
        kernels: optional internal kernel sizes, one per convolution; they must satisfy
            sum_l K_l - (N - 1) = K in each direction.

    Returns:
        An :class:`OSepPlan` (immutable, cached per arguments) whose ``params`` equals
        the module's weight count.

    Raises:
        ValueError: naming the bad argument.
    """
    args = tuple(_hashable(a) for a in (in_channels, out_channels, kernel_size, n_convs, gamma,
                                        channel_policy, spatial, dilation, rounding, kernels))
    try:
        hash(args)
    except TypeError:
        raise ValueError(f"osep_plan arguments must be numbers, strings or sequences of ints, got {args!r}")
    return _osep_plan_cached(*args)


MAX_CHANNELS = 65536  # far beyond any real layer; larger sizes only exhaust memory


@functools.lru_cache(maxsize=4096)
def _osep_plan_cached(in_channels, out_channels, kernel_size, n_convs, gamma, channel_policy, spatial, dilation,
                      rounding, kernels) -> OSepPlan:
    """Uncached body of :func:`osep_plan` (the same arguments, all given, hashable)."""
    c_in = _positive_int(in_channels, "in_channels")
    c_out = _positive_int(out_channels, "out_channels")
    for name, c in (("in_channels", c_in), ("out_channels", c_out)):
        if c > MAX_CHANNELS:
            raise ValueError(f"{name} must be at most {MAX_CHANNELS}, got {c}")
    ksize = _pair(kernel_size, "kernel_size")
    dil = _pair(dilation, "dilation")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float, np.floating)) or not gamma > 0 \
            or not math.isfinite(gamma):
        raise ValueError(f"gamma must be a positive finite number, got {gamma!r}")
    gamma = float(gamma)
    if channel_policy not in POLICIES:
        raise ValueError(f"channel_policy must be one of {', '.join(POLICIES)}, got {channel_policy!r}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
    if n_convs == "auto":
        n = auto_n_convs(c_in, c_out, ksize, gamma)
    elif isinstance(n_convs, bool) or not isinstance(n_convs, (int, np.integer)) or n_convs < 2:
        raise ValueError(f"n_convs must be an integer >= 2 or 'auto', got {n_convs!r}")
    else:
        n = int(n_convs)
    if n > 16:
        raise ValueError(f"n_convs must be at most 16, got {n}")

    if kernels is not None:
        if len(kernels) != n:
            raise ValueError(f"kernels must list {n} kernel sizes (one per convolution), got {len(kernels)}")
        ks = [_pair(k, "kernels") for k in kernels]
        for axis, name in ((0, "height"), (1, "width")):
            if sum(k[axis] for k in ks) - (n - 1) != ksize[axis]:
                raise ValueError(f"kernels do not add up to the kernel {name}: sum(K_l) - (N-1) must be {ksize[axis]}")
    else:
        ks = internal_kernels(ksize, n, spatial)
    dils: List[Pair] = [
        (dil[0] if k[0] > 1 else 1, dil[1] if k[1] > 1 else 1) for k in ks
    ]
    mid = internal_channels(c_in, c_out, channel_policy)
    chans = [c_in] + [mid] * (n - 1) + [c_out]
    areas = [k[0] * k[1] for k in ks]

    # Algorithm 1's real-valued minimum N * t (unconstrained by the group bounds).
    t = (gamma * math.prod(chans) * math.prod(areas)) ** (1.0 / n)
    ideal = n * t

    if rounding == "divisor":
        groups = divisor_groups(chans, areas, gamma)
        alg_groups = groups
        held = list(chans)
    else:
        g_real = real_groups(chans, areas, gamma)
        groups = [
            int(min(math.ceil(g - 1e-9), chans[l], chans[l + 1])) for l, g in enumerate(g_real)
        ]
        alg_groups = [max(1, g) for g in groups]
        groups, held = paper_layout(chans, alg_groups)
        layout = [ConvSpec(held[l], held[l + 1], ks[l], groups[l]) for l in range(n)]
        if gamma >= 1 and not _connectivity(layout, c_in, c_out).all():
            groups, held = paper_layout(chans, alg_groups, connect=True)

    convs = tuple(
        ConvSpec(held[l], held[l + 1], ks[l], groups[l], dils[l]) for l in range(n)
    )
    return OSepPlan(
        in_channels=c_in,
        out_channels=c_out,
        kernel_size=ksize,
        n_convs=n,
        gamma=gamma,
        channel_policy=channel_policy,
        spatial=bool(spatial),
        dilation=dil,
        rounding=rounding,
        convs=convs,
        ideal_params=ideal,
        algorithm_groups=tuple(alg_groups),
    )
