"""osep-nas: optimized separable convolution (osep) for neural architecture search.

The public names are loaded on first use (PEP 562), so ``import osep_nas.cli`` or
``import osep_nas.io`` does not import torch: a command that refuses its input does so
in a fraction of a second."""
from __future__ import annotations

from osep_nas.lazy import lazy_getattr

__version__ = "0.1.0"

_LAZY = {
    "OSepPlan": "osep_nas.plan",
    "ConvSpec": "osep_nas.plan",
    "osep_plan": "osep_nas.plan",
    "OSepConv2d": "osep_nas.conv",
    "count_params": "osep_nas.complexity",
    "count_flops": "osep_nas.complexity",
    "create_model": "osep_nas.models",  # the model registry pulls in every network family
}

__all__ = ["OSepPlan", "ConvSpec", "osep_plan", "OSepConv2d", "count_params", "count_flops",
           "create_model", "__version__"]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__():
    return sorted(set(globals()) | set(__all__))
