"""The config of ``osep-nas search`` (and of the nnictl trial): sections, defaults, checks.

Loaded by the project's one loader (:func:`osep_nas.config.load_config`: strict keys and
types, ``--set`` overrides). Every key, its default and its meaning: ``examples/search_digits.yaml``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Union

from osep_nas.config import DataConfig, OptimConfig, _f, config_to_dict, load_config

from search_spaces.genotype_space import resolve_op_candidates
from search_spaces.target import DEFAULT_OBJECTIVES, METRICS, TargetSection, resolve_target
from .pareto import as_objectives

__all__ = ["SearchConfig", "SearchSection", "SpaceSection", "ProxySection", "ProxyData", "ProxyOptim", "TargetSection", "OutputSection",
           "load_search_config", "check_search_config", "STRATEGIES", "PROXY_DATASETS", "RESUMABLE_CHANGES"]

STRATEGIES = ("evolution", "random", "nsga2", "motpe")
PROXY_DATASETS = ("digits", "cifar10", "cifar100")
#: config keys that may change on --resume (they only decide when to stop, where to write, how many processes)
RESUMABLE_CHANGES = ("search.trials", "search.budget_minutes", "search.workers", "output.out")


@dataclass
class SearchSection:
    """The search algorithm, its trial protocol and its stopping rules."""
    strategy: str = _f("nsga2", "nsga2 (Optuna's NSGAIISampler, population search.population_size; the default: "
                       "best mean hypervolume in benchmarks/RESULTS.md) | evolution (our multi-objective "
                       "regularized evolution, NSGA-II tournament) | random (uniform sampling, a baseline) | "
                       "motpe (Optuna's multivariate multi-objective TPESampler)",
                       choices=STRATEGIES)
    trials: int = _f(24, "new architectures to train at rung 0 (failed ones count; over-budget ones are refused "
                         "untrained, not counted); promotions to higher rungs come on top", check="positive")
    population_size: int = _f(8, "evolution: population (the first ones are random samples)", check="positive")
    sample_size: int = _f(3, "evolution: tournament size (<= population_size)", check="positive")
    seed: int = _f(0, "seed of the proposals and of every trial's training", check="nonneg")
    max_params: Optional[float] = _f(None, "refuse, before training, architectures whose TARGET network has more "
                                     "parameters (unset: no limit)", check="positive")
    budget_minutes: Optional[float] = _f(None, "stop cleanly (between rounds) after this many minutes of this "
                                         "invocation (unset: no limit)", check="positive")
    objectives: List[str] = _f(list(DEFAULT_OBJECTIVES),
                               "NAME:max|min; accuracy (validation top-1 %), params, flops (of the target network)")
    rungs: int = _f(2, "successive halving: rungs of proxy.steps * eta**r steps (1: a single fidelity)",
                    check="positive", hi=6)
    eta: int = _f(3, "successive halving: the best 1/eta of a rung (Pareto rank) is promoted, with eta x the "
                     "steps", check="positive", hi=16)
    round_size: int = _f(4, "jobs asked at a time; a round's results are told in job order, so results do not "
                            "depend on search.workers", check="positive", hi=256)
    workers: Optional[int] = _f(None, "processes training trials in parallel, 1 thread each "
                                      "(unset: the number of cores)", check="positive", hi=256)


@dataclass
class SpaceSection:
    """The DARTS cell space."""
    op_candidates: str = _f("osep", "preset of search_spaces.presets (osep | darts | darts+osep) or "
                            "comma-separated op names")
    num_nodes: int = _f(4, "intermediate nodes per cell (2 inputs each)", check="positive", hi=64)
    exclude_none: bool = _f(True, "leave the 'none' op out, as DARTS' derivation does")
    distinct_inputs: bool = _f(False, "the two edges of a node read different states (DARTS' derivation); "
                               "default: each edge picks its input freely, as in the NNI space")


@dataclass
class ProxySection:
    """The proxy network every trial trains (a small NetworkCIFAR) and how long."""
    init_channels: int = _f(2, "channels of the first cell of the proxy network", check="positive", hi=1024)
    layers: int = _f(3, "cells of the proxy network (>= 3: reduction cells at layers//3 and 2*layers//3)",
                     check="positive")
    steps: int = _f(80, "SGD steps of a rung-0 trial (rung r: steps * eta**r)", check="positive")
    max_val_images: Optional[int] = _f(None, "score on the first N validation images only (unset: all)",
                                       check="positive")
    threads: int = _f(1, "CPU threads per trial (tiny networks gain nothing from more, and a fixed count keeps "
                         "results identical across machines)", check="positive")
    device: str = _f("cpu", "cpu | cuda | auto", choices=("cpu", "cuda", "auto"))


@dataclass
class ProxyData(DataConfig):
    """The proxy data: the trainer's ``data`` section with the proxy's defaults. Trials train on
    the training part and are scored on the validation part held out of the training split
    (``data.val_fraction``); the test split is never read."""
    dataset: str = _f("digits", "digits (sklearn's bundled 8x8 digits, no download) | cifar10 | cifar100 "
                      "(python batches in data.root)", choices=PROXY_DATASETS)
    batch_size: int = _f(32, check="positive")
    test_batch_size: Optional[int] = _f(512, "batch of the validation pass", check="positive")
    image_size: Optional[int] = _f(None, "image side (unset: digits 8, cifar 16)", check="positive")
    val_fraction: float = _f(0.2, "share of the training split held out to score trials (fixed stratified split)",
                             check="positive", hi=1.0, hi_open=True)
    crop: str = _f("none", "none | pad (random pad-and-crop by data.padding)", choices=("none", "pad"))
    padding: int = _f(2, "pad-and-crop padding in pixels", check="nonneg")
    flip: bool = _f(False, "random horizontal flip (not for digits)")


@dataclass
class ProxyOptim(OptimConfig):
    """The proxy's SGD: the trainer's ``optim`` section with the proxy's defaults; its schedule
    runs over the trial's steps (one step is one schedule "epoch")."""
    lr: float = _f(0.1, "initial learning rate (cosine: decays to optim.lr_min over the trial's steps)",
                   check="positive")
    nesterov: bool = _f(True)
    grad_clip: float = _f(5.0, "max gradient norm (0: off)", check="nonneg")


@dataclass
class OutputSection:
    """Where results go."""
    out: Optional[str] = _f(None, "output folder (unset: runs/search-<timestamp>)")
    plots: bool = _f(True, "write pareto.png and the knee's cell plots")


@dataclass
class SearchConfig:
    """A whole ``osep-nas search`` config."""
    search: SearchSection = field(default_factory=SearchSection)
    space: SpaceSection = field(default_factory=SpaceSection)
    proxy: ProxySection = field(default_factory=ProxySection)
    data: ProxyData = field(default_factory=ProxyData)
    optim: ProxyOptim = field(default_factory=ProxyOptim)
    target: TargetSection = field(default_factory=TargetSection)
    output: OutputSection = field(default_factory=OutputSection)


def check_search_config(cfg: SearchConfig) -> None:
    """Cross-field checks the schema cannot express; ValueError naming the key."""
    import torch

    s, p = cfg.search, cfg.proxy
    if s.strategy == "evolution" and s.sample_size > s.population_size:
        raise ValueError(f"search.sample_size: must be <= search.population_size ({s.population_size}), "
                         f"got {s.sample_size}")
    if s.rungs > 1 and s.eta < 2:
        raise ValueError(f"search.eta: successive halving needs eta >= 2, got {s.eta} (or set search.rungs=1)")
    try:
        objectives = as_objectives(s.objectives)
    except ValueError as exc:
        raise ValueError(f"search.objectives: {exc}") from None
    for o in objectives:
        if o.name not in METRICS:
            raise ValueError(f"search.objectives: unknown metric {o.name!r}; known: {', '.join(METRICS)}")
    if len(objectives) < 2:
        raise ValueError("search.objectives: a multi-objective search needs at least two objectives")
    if "accuracy" not in [o.name for o in objectives]:
        raise ValueError("search.objectives: accuracy must be one of the objectives (it is what trials measure)")
    try:
        resolve_op_candidates(cfg.space.op_candidates, cfg.space.exclude_none)
    except ValueError as exc:
        raise ValueError(str(exc) if str(exc).startswith("space.") else f"space.op_candidates: {exc}") from None
    resolve_target(cfg.target)
    if p.layers < 3:
        raise ValueError(f"proxy.layers: must be >= 3 (two reduction cells and a normal one), got {p.layers}")
    d = cfg.data
    try:  # the trainer's own cross-field checks of its data and optim sections
        load_config({"data": config_to_dict(d), "optim": config_to_dict(cfg.optim)})
    except ValueError as exc:
        raise ValueError(str(exc).removeprefix("config: ")) from None
    if d.dataset == "digits":
        if d.root is not None:
            raise ValueError("data.root: the digits are embedded; a folder means data.dataset cifar10 or cifar100")
    elif d.root is None:
        raise ValueError(f"data.root: data.dataset {d.dataset} needs the folder of its python batches "
                         f"(--data DIR)")
    if p.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("proxy.device: cuda requested but no CUDA device is available")


def load_search_config(path_or_dict: Union[str, Path, Mapping[str, Any], SearchConfig, None] = None,
                       overrides: Optional[Sequence[str]] = None) -> SearchConfig:
    """Load and check a search config; raises ValueError (one line) or FileNotFoundError."""
    cfg = load_config(path_or_dict, overrides, schema=SearchConfig)
    check_search_config(cfg)
    return cfg
