"""The project's one config loader: a declared schema, strict YAML, ``--set`` overrides.

A training config has four sections (``model``, ``data``, ``optim``, ``training``), each a
dataclass with typed, defaulted fields.  Every violation (unknown key, wrong type, YAML
anchor or alias, a file over 1 MiB or not UTF-8) is one :class:`ConfigError`, a
``ValueError`` naming the key path, so bad input stops a command before it writes anything.
The fields, the rules and the ``--set KEY=VALUE`` syntax are in docs/config.md.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from osep_nas.config_schema import (ConfigError, build_section, leaf_index, one_line, sections_of, short_repr,
                                    show, suggest)

__all__ = [
    "ConfigError", "Config", "ModelConfig", "DataConfig", "OptimConfig", "TrainingConfig",
    "load_config", "config_to_dict", "config_to_yaml", "parse_override", "DATASETS", "SCHEDULES",
    "MAX_CONFIG_BYTES", "MAX_CONFIG_VALUES", "strict_yaml_load", "short_repr",
]

MAX_CONFIG_BYTES = 1 << 20  # a config is a few hundred bytes; refuse anything huge
MAX_CONFIG_VALUES = 10000  # values (nodes) a config mapping may hold when copied
DATASETS = ("cifar10", "cifar100", "imagenet", "digits")
SCHEDULES = ("cosine", "step", "linear", "exponential")
CROPS = ("auto", "pad", "resized", "none")
DEVICES = ("auto", "cpu", "cuda")


def _f(default: Any, doc: str = "", check: Optional[str] = None, choices: Optional[Tuple[str, ...]] = None,
       lo: Optional[float] = None, hi: Optional[float] = None, hi_open: bool = False) -> Any:
    """A dataclass field with a default and validation metadata.

    ``check``: "positive" (> 0) or "nonneg" (>= 0); ``lo``/``hi``: closed range
    (``hi_open``: upper bound excluded); ``choices``: allowed strings.
    """
    meta = {"doc": doc, "check": check, "choices": choices, "lo": lo, "hi": hi, "hi_open": hi_open}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """Which network to train.  ``genotype`` set: a DARTS evaluation network
    (NetworkCIFAR / NetworkImageNet by dataset); otherwise ``name`` from
    ``osep_nas.models.create_model``."""
    name: Optional[str] = _f(None, "model name for osep_nas.models.create_model ('darts' or unset with a genotype)")
    genotype: Optional[str] = _f(None, "DARTS genotype: a name in osep_nas.genotypes (O_DARTS), its text, or a file")
    init_channels: Optional[int] = _f(None, "DARTS networks: initial channels (unset: 36 CIFAR, 48 ImageNet, "
                                            "or the named model's default)", check="positive", hi=4096)
    layers: Optional[int] = _f(None, "DARTS networks: number of cells (unset: 20 CIFAR, 14 ImageNet, or the named "
                                     "model's default)", check="positive")
    auxiliary: bool = _f(False, "DARTS networks: auxiliary tower (its loss is weighted by training.auxiliary_weight)")
    drop_path_prob: float = _f(0.0, "final drop-path probability (ramped linearly from 0 over the training steps)",
                               lo=0.0, hi=1.0, hi_open=True)
    width_mult: Optional[float] = _f(None, "channel multiplier passed to create_model (unset: the model's default)",
                                     check="positive")
    gamma: Optional[float] = _f(None, "osep gamma passed to the model (unset: the model's default)",
                                check="positive")
    rounding: Optional[str] = _f(None, "channel rounding passed to create_model (unset: the model's default)")
    num_classes: Optional[int] = _f(None, "classes (unset: the dataset's)", check="positive")
    extra: Dict[str, Any] = _f({}, "further keyword arguments for create_model")


@dataclass
class DataConfig:
    """Dataset, batch size and augmentation."""
    dataset: str = _f("digits", "cifar10 | cifar100 | imagenet | digits (sklearn's bundled digits, no download)",
                      choices=DATASETS)
    root: Optional[str] = _f(None, "data folder (cifar: the python batches or their parent; imagenet: has train/ val/)")
    download: bool = _f(False, "cifar only: download with torchvision when the folder lacks the batches")
    batch_size: int = _f(96, "GLOBAL training batch (split evenly across DDP ranks)", check="positive")
    test_batch_size: Optional[int] = _f(None, "evaluation batch (unset: batch_size)", check="positive")
    image_size: Optional[int] = _f(None, "training crop size (unset: cifar 32, imagenet 224, digits 32)",
                                   check="positive")
    test_fraction: float = _f(0.2, "digits only: share of the 1797 images held out (fixed stratified split)",
                              check="positive", hi=1.0, hi_open=True)
    val_fraction: float = _f(0.0, "hold out this share of the TRAINING split (fixed stratified split) and evaluate "
                                  "on it; the test split is then never read (0: evaluate on the test split)",
                             lo=0.0, hi=1.0, hi_open=True)
    crop: str = _f("auto", "auto (imagenet: resized, else pad) | pad | resized | none", choices=CROPS)
    padding: int = _f(4, "pad-and-crop padding in pixels", check="nonneg")
    flip: bool = _f(True, "random horizontal flip")
    cutout: int = _f(0, "cutout square side in pixels (0: off)", check="nonneg")
    color_jitter: float = _f(0.0, "brightness/contrast/saturation jitter strength (0: off)", check="nonneg")
    normalize: bool = _f(True, "normalize by the dataset's channel mean and std")
    workers: int = _f(4, "imagenet only: DataLoader worker processes", check="nonneg")
    on_device: bool = _f(True, "tensor datasets: keep the whole set on the training device (GPU) and augment there")


@dataclass
class OptimConfig:
    """SGD and its learning-rate schedule."""
    lr: float = _f(0.025, "initial learning rate (not rescaled with the number of DDP ranks)", check="positive")
    lr_min: float = _f(0.0, "cosine: final learning rate", check="nonneg")
    momentum: float = _f(0.9, lo=0.0, hi=1.0)
    weight_decay: float = _f(3e-4, check="nonneg")
    nesterov: bool = _f(False)
    label_smoothing: float = _f(0.0, lo=0.0, hi=1.0, hi_open=True)
    grad_clip: float = _f(0.0, "max gradient norm (0: off)", check="nonneg")
    schedule: str = _f("cosine", "cosine | step | linear | exponential (see osep_nas.train.LRSchedule)",
                       choices=SCHEDULES)
    milestones: List[float] = _f([], "step: where the rate is multiplied by gamma, as fractions of training.epochs "
                                     "in (0, 1) ([0.5, 0.75] = epochs 100 and 150 of 200), so a recipe keeps its "
                                     "shape when epochs is overridden")
    gamma: float = _f(0.1, "step / exponential: decay factor", check="positive")
    step_epochs: float = _f(1.0, "exponential: epochs between two decays (0.8 for the MobileNet recipe)",
                            check="positive")


@dataclass
class TrainingConfig:
    """The training loop."""
    epochs: int = _f(10, check="positive")
    auxiliary_weight: float = _f(0.4, "weight of the auxiliary tower's loss", check="nonneg")
    seed: int = _f(0, check="nonneg")
    amp: bool = _f(True, "mixed precision (CUDA only; ignored on CPU)")
    channels_last: bool = _f(True, "channels-last memory format (CUDA only; ignored on CPU, see osep_nas.train)")
    deterministic: bool = _f(True, "deterministic algorithms (CPU resumes are then bit-exact)")
    device: str = _f("auto", "auto | cpu | cuda", choices=DEVICES)
    sync_bn: bool = _f(False, "DDP: synchronized BatchNorm across ranks (CUDA: nn.SyncBatchNorm; CPU: "
                              "osep_nas.sync_batchnorm.SyncBatchNorm2d)")
    out: str = _f("runs/train", "output folder (metrics.jsonl, tb/, last.pt, best.pt, summary.json)")
    resume: bool = _f(False, "continue from OUT/last.pt")
    log_every: int = _f(50, "steps between progress-bar updates (and steps.jsonl lines)", check="positive")
    log_steps: bool = _f(False, "write OUT/steps.jsonl: the global batch's training loss and lr every log_every "
                                "steps")
    max_steps_per_epoch: Optional[int] = _f(None, "cap on training steps per epoch (quick runs)", check="positive")
    tensorboard: bool = _f(True, "write TensorBoard scalars to OUT/tb")


@dataclass
class Config:
    """A whole training config."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)


# ----------------------------------------------------------------------------- YAML

class _StrictSafeLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases (alias bombs, merge keys)."""

    def compose_node(self, parent, index):  # noqa: D401 - yaml hook
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise ConfigError(f"line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are not allowed")
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:
            raise ConfigError(f"line {event.start_mark.line + 1}: YAML anchors (&{event.anchor}) are not allowed")
        return super().compose_node(parent, index)


# YAML 1.1 only takes floats with a dot and a signed exponent ("1.0e+6"); accept
# "1e-3" and "1.0e6" as floats too (what anyone writing a learning rate means).
_StrictSafeLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_StrictSafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def strict_yaml_load(text: str, source: str) -> Any:
    """Parse ``text`` as YAML with the strict safe loader (no anchors, no aliases).

    Every problem is one :class:`ConfigError` whose message starts with ``source``.
    """
    return _yaml_load(text, source)


def _yaml_load(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None


def _read_file(path: Path) -> str:
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    if not path.is_file():
        raise ConfigError(f"{path}: not a file")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {size} bytes, more than the {MAX_CONFIG_BYTES} a config may have")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _cross_checks(cfg: Config) -> None:
    o = cfg.optim
    if o.schedule == "step":
        if not o.milestones:
            raise ConfigError("optim.milestones: schedule 'step' needs at least one milestone")
    if any(not 0 < m < 1 for m in o.milestones):
        raise ConfigError(f"optim.milestones: fractions of training.epochs in (0, 1), e.g. [0.5, 0.75] for epochs "
                          f"100 and 150 of 200; got {o.milestones}")
    if any(b <= a for a, b in zip(o.milestones, o.milestones[1:])):
        raise ConfigError(f"optim.milestones: must increase, got {o.milestones}")
    if o.nesterov and o.momentum == 0:
        raise ConfigError("optim.nesterov: Nesterov momentum needs optim.momentum > 0")
    if o.lr_min > o.lr:
        raise ConfigError(f"optim.lr_min: must be <= optim.lr ({o.lr}), got {o.lr_min}")
    if cfg.data.dataset == "digits" and cfg.data.image_size is not None and cfg.data.image_size < 8:
        raise ConfigError(f"data.image_size: digits are 8x8, the size must be >= 8, got {cfg.data.image_size}")


def _from_mapping(raw: Any, source: str, schema: type = Config) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections "
                          f"({', '.join(sections_of(schema))}), got {show(raw)}")
    sections = sections_of(schema)
    leaves = leaf_index(schema)
    built = {}
    try:
        for key, value in raw.items():
            if not isinstance(key, str) or key not in sections:
                key_s = str(key)
                hint = suggest(key_s, list(sections))
                if not hint and key_s in leaves:
                    hint = f" (did you mean {' or '.join(leaves[key_s])}?)"
                raise ConfigError(f"{one_line(key_s)}: unknown section{hint}; sections are {', '.join(sections)}")
            built[key] = build_section(key, sections[key], value, leaves)
        cfg = schema(**built)
        if isinstance(cfg, Config):
            _cross_checks(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


# ----------------------------------------------------------------------------- overrides

def parse_override(text: str, schema: type = Config) -> Tuple[List[str], Any]:
    """``'optim.lr=0.05'`` -> (['optim', 'lr'], 0.05); resolves short aliases."""
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"--set {short_repr(text)}: expected KEY=VALUE, e.g. optim.lr=0.05")
    key, _, value_text = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {short_repr(text)}: empty key")
    shown = one_line(key)  # echoed in messages: one line, bounded
    if len(value_text) > 64 * 1024:
        raise ConfigError(f"--set {shown}: value too long")
    value = _yaml_load(value_text, f"--set {shown}") if value_text.strip() else None
    parts = key.split(".")
    sections = sections_of(schema)
    if parts[0] not in sections:
        leaves = leaf_index(schema)
        if len(parts) == 1 and parts[0] in leaves:
            paths = leaves[parts[0]]
            if len(paths) > 1:
                raise ConfigError(f"--set {shown}: ambiguous short key; spell out one of {', '.join(paths)}")
            parts = paths[0].split(".")
        else:
            candidates = list(sections) + [p for ps in leaves.values() for p in ps] + list(leaves)
            raise ConfigError(f"--set {shown}: unknown key{suggest(key, candidates) if len(key) <= 100 else ''}")
    return parts, value


def _apply(tree: Dict[str, Any], parts: List[str], value: Any, key: str) -> None:
    node = tree
    for i, p in enumerate(parts[:-1]):
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i + 1])} is not a mapping")
        node = child
    last = parts[-1]
    if len(parts) == 1 and isinstance(value, dict) and isinstance(node.get(last), dict):
        node[last] = {**node[last], **value}  # --set "optim={lr: 0.1}" merges into the section
    else:
        node[last] = value


# ----------------------------------------------------------------------------- public

def config_to_dict(cfg: Any) -> Dict[str, Any]:
    """The config as nested plain dicts (YAML/JSON/``torch.load(weights_only)`` safe)."""
    return dataclasses.asdict(cfg)


def config_to_yaml(cfg: Any) -> str:
    """The config as YAML text that :func:`load_config` reads back to an equal config."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)


def load_config(path_or_dict: Union[str, "os.PathLike[str]", Mapping[str, Any], Config, None] = None,
                overrides: Optional[Sequence[str]] = None, schema: type = Config) -> Any:
    """Load and validate a config.

    ``path_or_dict``: a YAML file path, a mapping, an existing config (re-validated) or
    ``None`` (all defaults).  ``overrides``: ``KEY=VALUE`` strings applied in order on
    top of it (syntax: docs/config.md).  Returns a ``schema`` instance (``Config``).
    Raises :class:`ConfigError` (a ``ValueError``) or ``FileNotFoundError``.
    """
    if path_or_dict is None:
        raw: Any = {}
        source = "config"
    elif dataclasses.is_dataclass(path_or_dict) and not isinstance(path_or_dict, type):
        raw = config_to_dict(path_or_dict)
        source = "config"
    elif isinstance(path_or_dict, Mapping):
        raw = _deep_copy(dict(path_or_dict))
        source = "config"
    elif isinstance(path_or_dict, (str, os.PathLike)):
        path = Path(path_or_dict)
        raw = _yaml_load(_read_file(path), str(path))
        source = str(path)
    else:
        raise ConfigError(f"config: expected a file path or a mapping, got {type(path_or_dict).__name__}")
    _from_mapping(raw, source, schema)  # report file errors before override errors
    if overrides:
        if isinstance(overrides, str):
            overrides = [overrides]
        tree = _deep_copy(raw) if isinstance(raw, dict) else {}
        for text in overrides:
            parts, value = parse_override(text, schema)
            _apply(tree, parts, value, one_line(".".join(parts)))
            try:
                _from_mapping(tree, "config", schema)
            except ConfigError as exc:
                msg = str(exc)
                msg = msg[len("config: "):] if msg.startswith("config: ") else msg
                raise ConfigError(f"--set {one_line(text)}: {msg}") from None
        raw = tree
        source = "config"
    return _from_mapping(raw, source, schema)


def _deep_copy(obj: Any, budget: Optional[List[int]] = None) -> Any:
    """Copy nested dicts/lists, counting nodes: a mapping whose shared references expand
    to more than ``MAX_CONFIG_VALUES`` values is refused, not expanded."""
    if budget is None:
        budget = [MAX_CONFIG_VALUES]
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(f"config: too large (over {MAX_CONFIG_VALUES} values)")
    if isinstance(obj, dict):
        return {k: _deep_copy(v, budget) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deep_copy(v, budget) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_deep_copy(v, budget) for v in obj)
    return obj
