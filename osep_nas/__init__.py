"""osep-nas: optimized separable convolution (osep) for neural architecture search."""
from osep_nas.plan import OSepPlan, ConvSpec, osep_plan
from osep_nas.conv import OSepConv2d
from osep_nas.complexity import count_params, count_flops

__version__ = "0.1.0"

__all__ = ["OSepPlan", "ConvSpec", "osep_plan", "OSepConv2d", "count_params", "count_flops",
           "create_model", "__version__"]


def __getattr__(name):  # lazy: the model registry pulls in every network family
    if name == "create_model":
        from osep_nas.models import create_model
        return create_model
    raise AttributeError(f"module 'osep_nas' has no attribute {name!r}")
