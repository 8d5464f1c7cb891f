"""A timm-like model registry: ``create_model(name, **kw)``, ``list_models()``, ``register_model``.

One place builds every network of the paper (CIFAR ResNets, MobileNet, DARTS networks, in
their conv, d- and o- forms) with the paper's default sizes (:mod:`osep_nas.reference`,
:data:`DARTS_NETWORKS`) and one set of keyword names, so configs, studies and ``profile``
name models the same way.  Names match case-insensitively with ``-`` read as ``_``; unknown
names raise ValueError with the closest ones.  Keywords and defaults: docs/config.md.
"""
from __future__ import annotations

import difflib
import fnmatch
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from torch import nn

from osep_nas.genotypes.resolve import resolve_genotype

__all__ = ["register_model", "create_model", "list_models", "model_info", "ModelInfo", "normalize_name",
           "resolve_genotype", "CIFAR_INPUT", "IMAGENET_INPUT", "DARTS_NETWORKS", "DartsRow", "darts_model_name"]

CIFAR_INPUT: Tuple[int, int, int] = (3, 32, 32)
IMAGENET_INPUT: Tuple[int, int, int] = (3, 224, 224)


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model before building it."""

    name: str
    factory: Callable[..., nn.Module]
    input_size: Tuple[int, int, int]
    dataset: str  # "cifar10" or "imagenet": the data the default configuration is for
    description: str

    def keywords(self) -> List[str]:
        """The keyword arguments the factory accepts."""
        return [p.name for p in inspect.signature(self.factory).parameters.values()
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


_REGISTRY: Dict[str, ModelInfo] = {}


def normalize_name(name: str) -> str:
    """Registry spelling of a model name: lower case, ``-`` and spaces as ``_``."""
    return str(name).strip().lower().replace("-", "_").replace(" ", "_")


def register_model(name: str, input_size: Tuple[int, int, int] = CIFAR_INPUT, dataset: str = "cifar10",
                   override: bool = False) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding ``factory(**kw) -> nn.Module`` to the registry under ``name``."""
    key = normalize_name(name)
    if not key.isidentifier():
        raise ValueError(f"model name must be identifier-like, got {name!r}")

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if key in _REGISTRY and not override:
            raise ValueError(f"model {key!r} is already registered (pass override=True to replace it)")
        doc = (inspect.getdoc(factory) or "").strip().splitlines()
        _REGISTRY[key] = ModelInfo(key, factory, tuple(input_size), dataset, doc[0] if doc else "")
        return factory

    return deco


def list_models(pattern: Optional[str] = None) -> List[str]:
    """Registered model names, sorted; ``pattern`` filters with shell wildcards (``"o_resnet*"``)."""
    names = sorted(_REGISTRY)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, normalize_name(pattern))]
    return names


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name``; ValueError with close matches if unknown."""
    key = normalize_name(name)
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known models: {', '.join(list_models())}"
        raise ValueError(f"unknown model {name!r}{hint}")
    return _REGISTRY[key]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword overrides of its defaults.

    Sets ``model.default_input_size`` and ``model.model_name``.  A keyword the model
    does not take raises ValueError naming the accepted ones.
    """
    info = model_info(name)
    accepted = info.keywords()
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"model {info.name!r} does not take {', '.join(unknown)}; accepted: {', '.join(accepted)}")
    model = info.factory(**kwargs)
    model.default_input_size = tuple(getattr(model, "default_input_size", info.input_size))
    model.model_name = info.name
    return model


# -- ResNets on CIFAR ---------------------------------------------------------------
O_RESNET_WIDTHS = {20: 3.625, 32: 3.75, 56: 3.875, 110: 3.875}
D_RESNET_WIDTHS = {20: 2.72, 32: 2.75, 56: 2.75, 110: 2.75}

_RESNET_FAMILIES = {
    # prefix: (conv kind, default widths, description)
    "": ("conv", None, "He et al.'s CIFAR ResNet{d} (option-A shortcuts)"),
    "o_": ("osep", O_RESNET_WIDTHS, "o-ResNet{d}: every block 3x3 conv an osep conv, the paper's width"),
    "d_": ("dsep", D_RESNET_WIDTHS, "d-ResNet{d}: every block 3x3 conv depth separable, the paper's width"),
    "so_": ("sosep", O_RESNET_WIDTHS, "so-ResNet{d}: spatial osep, o-ResNet's width (the paper gives none)"),
    "dw_": ("dw", O_RESNET_WIDTHS, "dw-ResNet{d}: depth-wise 3x3 (Table 2's gamma -> 0), o-ResNet's width"),
    "s_": ("spatial", None, "s-ResNet{d}: 3x1 + 1x3 convs, width 1 (the paper gives none)"),
}


def _register_resnet(prefix: str, depth: int) -> None:
    conv, widths, desc = _RESNET_FAMILIES[prefix]
    default_width = widths[depth] if widths else 1.0

    def factory(num_classes: int = 10, width_mult: float = default_width, gamma: float = 1.0,
                rounding: str = "divisor", shortcut: str = "A", zero_init_residual: bool = True, n_convs: Any = 2,
                channel_policy: str = "normal") -> nn.Module:
        from osep_nas.networks.resnet import resnet_cifar

        return resnet_cifar(depth, conv=conv, width_mult=width_mult, num_classes=num_classes, gamma=gamma,
                            rounding=rounding, shortcut=shortcut, zero_init_residual=zero_init_residual,
                            n_convs=n_convs, channel_policy=channel_policy)

    factory.__doc__ = desc.format(d=depth) + (f", width_mult {default_width:g}" if widths else "") + "."
    register_model(f"{prefix}resnet{depth}", CIFAR_INPUT, "cifar10")(factory)


for _prefix in _RESNET_FAMILIES:
    for _depth in (20, 32, 56, 110):
        _register_resnet(_prefix, _depth)


# -- DARTS networks -------------------------------------------------------------------
@dataclass(frozen=True)
class DartsRow:
    """A registered DARTS evaluation network: its cell and its size."""

    genotype: Optional[str]  # a name in osep_nas.genotypes; None: the caller passes genotype=
    imagenet: bool  # NetworkImageNet (224 px) rather than NetworkCIFAR (32 px)
    init_channels: int
    layers: int
    description: str


#: The one table of DARTS sizes (the paper's Tables 3 and 5): DARTS 36 ch x 20 cells on
#: CIFAR-10 and 48 x 14 on ImageNet; o-DARTS 42 and 56 channels at the same depths.
DARTS_NETWORKS: Dict[str, DartsRow] = {
    "darts_v1_cifar": DartsRow("DARTS_V1", False, 36, 20, "DARTS V1 cell, CIFAR-10 evaluation network"),
    "darts_v2_cifar": DartsRow("DARTS_V2", False, 36, 20, "DARTS V2 cell, CIFAR-10 evaluation network"),
    "o_darts_cifar": DartsRow("O_DARTS", False, 42, 20, "o-DARTS (DARTS V2 with osep), CIFAR-10"),
    "darts_v2_imagenet": DartsRow("DARTS_V2", True, 48, 14, "DARTS V2 cell, ImageNet evaluation network"),
    "o_darts_imagenet": DartsRow("O_DARTS", True, 56, 14, "o-DARTS (DARTS V2 with osep), ImageNet"),
    "darts_cifar": DartsRow(None, False, 36, 20, "Any genotype (genotype=...), CIFAR-10 network"),
    "darts_imagenet": DartsRow(None, True, 48, 14, "Any genotype (genotype=...), ImageNet network"),
}


def darts_model_name(dataset: str) -> str:
    """The registry name of the DARTS network of any genotype for ``dataset``'s image size."""
    return "darts_imagenet" if dataset == "imagenet" else "darts_cifar"


def _darts(row: DartsRow, genotype: Any, init_channels: int, layers: int, num_classes: int, width_mult: float,
           auxiliary: bool, drop_path_prob: float, osep_kw: Dict[str, Any]) -> nn.Module:
    from osep_nas.networks.darts import NetworkCIFAR, NetworkImageNet
    from osep_nas.networks.resnet import scale_channels

    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not width_mult > 0:
        raise ValueError(f"width_mult must be a positive number, got {width_mult!r}")
    C = init_channels if width_mult == 1.0 else scale_channels(init_channels, width_mult)
    cls = NetworkImageNet if row.imagenet else NetworkCIFAR
    kw = {k: v for k, v in osep_kw.items() if v is not None}
    return cls(C, num_classes, layers, auxiliary, resolve_genotype(genotype), drop_path_prob=drop_path_prob, **kw)


def _register_darts(name: str, row: DartsRow) -> None:
    def factory(genotype: Any = row.genotype, init_channels: int = row.init_channels, layers: int = row.layers,
                num_classes: int = 1000 if row.imagenet else 10, width_mult: float = 1.0, auxiliary: bool = False,
                drop_path_prob: float = 0.0, gamma: Optional[float] = None, rounding: Optional[str] = None,
                n_convs: Any = None, channel_policy: Optional[str] = None) -> nn.Module:
        if genotype is None:
            raise ValueError(f"model {name!r} needs genotype= (a Genotype, a name such as DARTS_V2, or text)")
        return _darts(row, genotype, init_channels, layers, num_classes, width_mult, auxiliary, drop_path_prob,
                      dict(gamma=gamma, rounding=rounding, n_convs=n_convs, channel_policy=channel_policy))

    factory.__doc__ = f"{row.description}, {row.init_channels} ch x {row.layers} cells."
    register_model(name, IMAGENET_INPUT if row.imagenet else CIFAR_INPUT,
                   "imagenet" if row.imagenet else "cifar10")(factory)


for _name, _row in DARTS_NETWORKS.items():
    _register_darts(_name, _row)


# -- MobileNet V1 ----------------------------------------------------------------------
#: o-MobileNet's width: not given by the paper; 1.5 matches its 3.00 M #Params (2.90 M with
#: the default rounding) while keeping FLOPs below its 0.564 G (the paper's "match one,
#: do not exceed the other" rule); width 2.0 would match the FLOPs but hold 4.18 M.
O_MOBILENET_WIDTH = 1.5


@register_model("mobilenet", IMAGENET_INPUT, "imagenet")
def _mobilenet(num_classes: int = 1000, width_mult: float = 1.0, gamma: float = 1.0,
               rounding: str = "divisor", n_convs: Any = 2, channel_policy: str = "normal") -> nn.Module:
    """MobileNet V1 (Howard et al. 2017), 4.2 M #Params at width 1.0."""
    from osep_nas.networks.mobilenet import mobilenet

    return mobilenet("dsep", width_mult=width_mult, num_classes=num_classes, gamma=gamma, rounding=rounding,
                     n_convs=n_convs, channel_policy=channel_policy)


@register_model("o_mobilenet", IMAGENET_INPUT, "imagenet")
def _o_mobilenet(num_classes: int = 1000, width_mult: float = O_MOBILENET_WIDTH, gamma: float = 1.0,
                 rounding: str = "divisor", n_convs: Any = 2, channel_policy: str = "normal") -> nn.Module:
    """o-MobileNet: every depth separable block one osep block, width 1.5 (matches the paper's #Params)."""
    from osep_nas.networks.mobilenet import mobilenet

    return mobilenet("osep", width_mult=width_mult, num_classes=num_classes, gamma=gamma, rounding=rounding,
                     n_convs=n_convs, channel_policy=channel_policy)
