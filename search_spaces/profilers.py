"""NNI 3.0 profiler support for the osep modules and :class:`OSepDartsSpace`.

NNI's profilers (``NumParamsProfiler``, ``FlopsProfiler``, ``ExpectationProfilerPenalty``)
know ``torch.nn`` layers and NNI's choice modules only.  This module registers shape and
FLOPs/params formulas for the osep modules (:func:`register_formulas`, run at import), so
the profilers agree with the project's counter (``osep_nas.count_params``; and
``count_flops`` through :func:`paper_flops_profiler`), and offers :func:`arch_probs` and
:func:`expected_params` for one-shot search.  Formulas and conventions: docs/strategies.md.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from search_spaces._nni import nas_nn  # noqa: F401  (quiet NNI import first)
from nni.mutable import Categorical, MutableExpression, SampleValidationError
from nni.nas.profiler.pytorch.flops import (FlopsParamsCounterConfig, FlopsProfiler, FlopsResult, NumParamsProfiler,
                                            _flops_formula, count_flops_params, register_flops_formula)
from nni.nas.profiler.pytorch.utils import MutableShape, ShapeTensor
from nni.nas.profiler.pytorch.utils.misc import _leaf_registry, profiler_leaf_module
from nni.nas.profiler.pytorch.utils.shape_formula import (_shape_inference_formulas,
                                                           register_shape_inference_formula)

from osep_nas.conv import OSepConv2d, TunedConv2d
from osep_nas.networks.darts import AuxiliaryHead, AuxPool
from osep_nas.ops import FactorizedReduce, Identity, Zero

__all__ = ["register_formulas", "register_flops", "zero_cost_flops", "search_edge_flops", "InputIndex", "params_profiler", "flops_profiler", "paper_flops_profiler",
           "arch_probs", "expected_params"]

_REGISTERED = False


# -- a Categorical view of an InputChoice ---------------------------------------------------------
def _as_index(value: Any) -> Any:
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return value[0]
    return value


class InputIndex(Categorical):
    """``Categorical(range(n))`` under an InputChoice's label, reading ``[j]`` samples as ``j``.

    Used only inside profiler expressions; never registered in a model space.
    """

    def __init__(self, n_candidates: int, label: Any):
        super().__init__(list(range(n_candidates)), label=label)

    def check_contains(self, sample: Mapping[str, Any]) -> Optional[SampleValidationError]:
        if self.label in sample:
            sample = {**sample, self.label: _as_index(sample[self.label])}
        return super().check_contains(sample)

    def freeze(self, sample: Mapping[str, Any]) -> Any:
        self.validate(sample)
        return _as_index(sample[self.label])

    def evaluate(self, values: Any) -> Any:
        return _as_index(super().evaluate(values))


# -- formulas for osep_nas modules -----------------------------------------------------------
def _conv_hw(h: Any, w: Any, conv: nn.Conv2d):
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = conv.kernel_size, conv.dilation, conv.padding, conv.stride
    return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1


def _osep_shape(module: OSepConv2d, input: ShapeTensor) -> MutableShape:
    shape = list(input.real_shape)  # type: ignore[arg-type]
    h, w = shape[-2], shape[-1]
    for conv in module.convs:
        h, w = _conv_hw(h, w, conv)
    return MutableShape(*shape[:-3], module.out_channels, h, w)


def _osep_flops(module: OSepConv2d, input: tuple, output: Any, count_bias: bool = True) -> FlopsResult:
    h, w = input[0][-2], input[0][-1]
    flops: Any = 0
    params = 0
    for conv in module.convs:
        h, w = _conv_hw(h, w, conv)
        flops = flops + conv.weight.numel() * h * w
        params += conv.weight.numel()
        if conv.bias is not None:
            params += conv.bias.numel()
            if count_bias:
                flops = flops + conv.out_channels * h * w
    return FlopsResult(flops, params)


def _fr_shape(module: FactorizedReduce, input: ShapeTensor) -> MutableShape:
    shape = list(input.real_shape)  # type: ignore[arg-type]
    h, w = _conv_hw(shape[-2], shape[-1], module.conv_1)
    return MutableShape(*shape[:-3], module.bn.num_features, h, w)


def _fr_flops(module: FactorizedReduce, input: tuple, output: Any, count_bias: bool = True,
              count_normalization: bool = True, count_activation: bool = True) -> FlopsResult:
    x = input[0]
    H, W = x[-2], x[-1]
    h1, w1 = _conv_hw(H, W, module.conv_1)
    # the second path runs on x[:, :, 1:, 1:] (when both sizes exceed 1), then is zero-padded
    if isinstance(H, int) and isinstance(W, int) and min(H, W) > 1:
        h2, w2 = _conv_hw(H - 1, W - 1, module.conv_2)
    else:
        h2, w2 = h1, w1
    flops: Any = (module.conv_1.weight.numel() * h1 * w1 + module.conv_2.weight.numel() * h2 * w2)
    params = module.conv_1.weight.numel() + module.conv_2.weight.numel()
    out_numel = module.bn.num_features * h1 * w1
    if count_normalization:
        flops = flops + 2 * (1 + int(module.bn.affine)) * out_numel
        params += 2 * module.bn.num_features if module.bn.affine else 0
    if count_activation:
        flops = flops + x[1:].numel()
    return FlopsResult(flops, params)


def _zero_shape(module: Zero, input: ShapeTensor) -> MutableShape:
    shape = list(input.real_shape)  # type: ignore[arg-type]
    s = module.stride
    if s == 1:
        return MutableShape(*shape)
    return MutableShape(*shape[:-2], (shape[-2] - 1) // s + 1, (shape[-1] - 1) // s + 1)


def _aux_pool_shape(module: AuxPool, input: ShapeTensor) -> MutableShape:
    shape = list(input.real_shape)  # type: ignore[arg-type]
    return MutableShape(*shape[:-2], 2, 2)


def zero_cost_flops(module: nn.Module, input: tuple, output: Any) -> FlopsResult:
    """Pooling, identity, zero: no parameters, no multiply-adds (the paper's convention)."""
    return FlopsResult(0, 0)


# -- the search edge ---------------------------------------------------------------------------
def _switch(choice: Categorical, values: Dict[str, Any]) -> Any:
    distinct = {repr(v) for v in values.values()}
    if len(distinct) == 1:
        return next(iter(values.values()))
    return MutableExpression.switch_case(choice, values)


def search_edge_flops(module: nn.Module, input: tuple, output: Any, name: str,
                shapes: Dict[str, Any], config: FlopsParamsCounterConfig) -> FlopsResult:
    """Params/FLOPs of a ``SearchEdge`` as an expression of its op (and input) choice."""
    def per_op(attr: str) -> Dict[str, FlopsResult]:
        lc = getattr(module, attr)
        return {str(c): count_flops_params(f"{name}.{attr}.{c}", lc[c], shapes, config) for c in lc.names}

    groups = {attr: per_op(attr) for attr in ("op", "op_reduce") if getattr(module, attr) is not None}
    choice = next(getattr(module, attr) for attr in ("op", "op_reduce") if getattr(module, attr) is not None).choice

    def combine(field: str) -> Any:
        exprs = {attr: _switch(choice, {c: getattr(r, field) for c, r in res.items()}) for attr, res in groups.items()}
        if len(exprs) == 1:
            return next(iter(exprs.values()))
        same = all(repr(getattr(groups["op"][c], field)) == repr(getattr(groups["op_reduce"][c], field))
                   for c in groups["op"])
        if same:
            return exprs["op"]
        index = InputIndex(module.state_index, module.input.label)
        return MutableExpression.condition(index < 2, exprs["op_reduce"], exprs["op"])

    return FlopsResult(combine("flops"), combine("params"))


# -- registration ----------------------------------------------------------------------------
def _leaf(cls: type) -> None:
    if not any(c is cls for c in _leaf_registry):
        profiler_leaf_module(cls)


def register_flops(cls: type, formula: Any) -> None:
    """Register ``formula`` as the FLOPs/params formula of ``cls`` with NNI (idempotent)."""
    if _flops_formula.get(cls) is not formula:
        register_flops_formula(cls, formula)


def register_formulas() -> None:
    """Register the shape and FLOPs/params formulas of the osep_nas modules with NNI (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    flops = register_flops

    def shape(cls: type, formula: Any) -> None:
        if _shape_inference_formulas.get(cls) is not formula:
            register_shape_inference_formula(cls, formula)

    for cls, shape_formula, flops_formula in (
        # NNI looks formulas up by exact type: the tuned convolution takes nn.Conv2d's
        (TunedConv2d, _shape_inference_formulas[nn.Conv2d], _flops_formula[nn.Conv2d]),
        (OSepConv2d, _osep_shape, _osep_flops),
        (FactorizedReduce, _fr_shape, _fr_flops),
        (Zero, _zero_shape, zero_cost_flops),
        (AuxPool, _aux_pool_shape, zero_cost_flops),
    ):
        _leaf(cls)
        shape(cls, shape_formula)
        flops(cls, flops_formula)
    # the auxiliary head counts as zero, like osep_nas.count_params (the paper excludes it)
    for cls in (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Identity, Identity, AuxiliaryHead):
        flops(cls, zero_cost_flops)
    _REGISTERED = True


register_formulas()


# -- convenience constructors ---------------------------------------------------------------------
def _dummy(space: nn.Module, batch_size: int) -> torch.Tensor:
    if hasattr(space, "dummy_input"):
        return space.dummy_input(batch_size)  # type: ignore[operator]
    raise ValueError("pass an input tensor: the space has no dummy_input()")


def params_profiler(space: nn.Module, dummy_input: Optional[torch.Tensor] = None) -> NumParamsProfiler:
    """NNI's ``NumParamsProfiler`` on ``space`` (build it before a one-shot strategy mutates the space)."""
    return NumParamsProfiler(space, dummy_input if dummy_input is not None else _dummy(space, 1))


def flops_profiler(space: nn.Module, dummy_input: Optional[torch.Tensor] = None, **config: Any) -> FlopsProfiler:
    """NNI's ``FlopsProfiler`` on ``space`` with NNI's counting config (``count_bias`` ...)."""
    return FlopsProfiler(space, dummy_input if dummy_input is not None else _dummy(space, 1), **config)


def paper_flops_profiler(space: nn.Module, dummy_input: Optional[torch.Tensor] = None) -> FlopsProfiler:
    """``FlopsProfiler`` counting multiply-adds of convolutions and linear layers only
    (the paper's FLOPs, what ``osep_nas.count_flops`` reports), for one image."""
    return flops_profiler(space, dummy_input, count_bias=False, count_normalization=False, count_activation=False)


def arch_probs(supernet: nn.Module) -> Dict[str, Dict[Any, torch.Tensor]]:
    """Differentiable choice probabilities of a DARTS/GumbelDARTS supernet, per label.

    Same keys and layout as NNI's ``export_probs()`` (op name -> p for op labels,
    input index -> p for input labels), but the values are tensors attached to the
    architecture parameters.  NNI 3.0's own ``export_probs()`` returns floats
    (``.cpu().tolist()``), so a penalty computed from it has no gradient: use this
    instead to penalise the expected #Params in the architecture loss.
    """
    probs: Dict[str, Dict[Any, torch.Tensor]] = {}
    for module in supernet.modules():
        alpha = getattr(module, "_arch_alpha", None)
        label = getattr(module, "label", None)
        softmax = getattr(module, "_softmax", None)
        if not isinstance(alpha, torch.Tensor) or label is None or softmax is None or label in probs:
            continue
        weights = softmax(alpha)
        if hasattr(module, "names"):          # DifferentiableMixedLayer
            keys = list(module.names)
        else:                                 # DifferentiableMixedInput
            keys = list(range(len(weights)))
        probs[label] = {k: weights[i] for i, k in enumerate(keys)}
    return probs


def expected_params(profiler: Any, probs: Mapping[str, Mapping[Any, Any]]) -> Any:
    """Expectation of an ``ExpressionProfiler``'s value (e.g. #Params) under per-label
    distributions: ``export_probs()`` floats give a float, :func:`arch_probs` tensors give
    a differentiable tensor."""
    from nni.nas.oneshot.pytorch.supermodule._expression_utils import expression_expectation

    return expression_expectation(profiler.expression, {k: dict(v) for k, v in probs.items()})
