"""The in-process multi-objective search: ``osep-nas search`` and :func:`run_search`.

One loop, one process: ask the evolution core (:class:`~strategies.evolution.ParetoEvolutionCore`)
for a genotype of the :class:`~strategies.genotype_space.GenotypeSpace`, build its proxy network
(``NetworkCIFAR`` at a tiny width and depth), train it for a few hundred SGD steps on the train
split, measure top-1 on the test split, tell the result. Objectives by default: accuracy (max)
and #Params of the proxy network (min), #Params and FLOPs coming from the project's counter
before training, so the ``max_params`` budget refuses an architecture without training it.

Outputs in ``OUT`` (every file but the append-only log is written atomically):

* ``config.yaml``  the resolved search config;
* ``state.json``   the evolution state and the config, saved after EVERY trial;
* ``trials.jsonl`` one JSON line per trial (trial, status, origin, parent, accuracy,
  params, flops, train_loss, train_s, reason, genotype as the DARTS repr);
* at the end, the report of :mod:`strategies.report` (``pareto.yaml``, ``pareto.png``,
  ``knee_normal.png``, ``knee_reduce.png``, ``knee_genotype.yaml``) and ``summary.json``.

Resume: ``state.json`` is the source of truth. A search killed at any moment (even SIGKILL
mid-trial) and resumed re-runs the trial that was in flight (``core.pending``) with the same
seed, rewrites ``trials.jsonl`` from the state, so no result is lost or counted twice, and ends
with the same front as an uninterrupted run. Each trial is seeded by (search seed, trial
index) and CPU training runs with deterministic algorithms on a fixed thread count.

The proxy training loop is deliberately small and lives here: :func:`osep_nas.train.train` is a
whole retraining run (epochs, checkpoints, TensorBoard), too heavy for 60-step trials. Data
comes from :func:`osep_nas.data.build_loaders` and evaluation from :func:`osep_nas.train.evaluate`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from osep_nas.config import _f, config_to_dict, config_to_yaml, load_config
from osep_nas.genotypes import Genotype
from osep_nas.io import append_jsonl, atomic_write_json, atomic_write_text

from .evolution import ParetoEvolutionCore, SearchExhausted, Trial
from .genotype_space import GenotypeSpace, resolve_op_candidates
from .pareto import as_objectives

__all__ = [
    "SearchConfig", "SearchSection", "SpaceSection", "ProxySection", "OutputSection",
    "load_search_config", "run_search", "SearchResult", "TrialContext", "proxy_train",
    "trial_record", "trial_seed", "STRATEGIES", "METRICS", "STATE_FORMAT",
]

STRATEGIES = ("evolution", "random")
PROXY_DATASETS = ("digits", "cifar10", "cifar100")
#: Metrics an objective may name: measured (accuracy, %) or counted before training.
METRICS = ("accuracy", "params", "flops")
STATE_FORMAT = "osep-nas-search"
STATE_VERSION = 1
#: population size that makes the core sample at random forever: the "random" strategy
RANDOM_POPULATION = 10 ** 9
#: config keys that may change on --resume (they only decide when to stop or where to write)
RESUMABLE_CHANGES = ("search.trials", "search.budget_minutes", "output.out")


# ----------------------------------------------------------------------------- config schema

@dataclass
class SearchSection:
    """The search algorithm and its stopping rules."""
    strategy: str = _f("evolution", "evolution (multi-objective regularized evolution, NSGA-II tournament) | "
                       "random (uniform sampling, a baseline)", choices=STRATEGIES)
    trials: int = _f(40, "architectures to train (failed trials count; over-budget ones are refused, not counted)",
                     check="positive")
    population_size: int = _f(12, "evolution: population (the first ones are random samples)", check="positive")
    sample_size: int = _f(4, "evolution: tournament size (<= population_size)", check="positive")
    seed: int = _f(0, "seed of the proposals and of every trial's training", check="nonneg")
    max_params: Optional[float] = _f(None, "refuse, before training, architectures whose PROXY network has more "
                                     "parameters (unset: no limit)", check="positive")
    budget_minutes: Optional[float] = _f(None, "stop cleanly (between trials) after this many minutes of this "
                                         "invocation (unset: no limit)", check="positive")
    objectives: List[str] = _f(["accuracy:max", "params:min"], "NAME:max|min with NAME in accuracy, params, flops")


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
    """The proxy task every trial trains: a small NetworkCIFAR on a small dataset."""
    dataset: str = _f("digits", "digits (sklearn's bundled 8x8 digits, no download) | cifar10 | cifar100 "
                      "(python batches in proxy.root)", choices=PROXY_DATASETS)
    root: Optional[str] = _f(None, "cifar: folder of the python batches (or its parent)")
    image_size: Optional[int] = _f(None, "image side (unset: digits 8, cifar 16)", check="positive")
    test_fraction: float = _f(0.2, "digits: share held out for the accuracy (fixed stratified split)",
                              check="positive", hi=1.0, hi_open=True)
    max_test_images: Optional[int] = _f(None, "evaluate on the first N test images only (unset: all)",
                                        check="positive")
    init_channels: int = _f(2, "channels of the first cell of the proxy network", check="positive", hi=1024)
    layers: int = _f(3, "cells of the proxy network (>= 3: reduction cells at layers//3 and 2*layers//3)",
                     check="positive")
    steps: int = _f(80, "SGD steps per trial", check="positive")
    batch_size: int = _f(32, check="positive")
    lr: float = _f(0.1, "initial learning rate (cosine decay to 0 over the steps)", check="positive")
    momentum: float = _f(0.9, "SGD momentum (Nesterov when > 0)", lo=0.0, hi=1.0, hi_open=True)
    weight_decay: float = _f(3e-4, check="nonneg")
    grad_clip: float = _f(5.0, "gradient norm clip (0: off)", check="nonneg")
    augment: bool = _f(False, "random pad-and-crop (and flips for cifar) during the proxy training")
    threads: int = _f(1, "CPU threads for the proxy training (tiny networks gain nothing from more, and a fixed "
                      "count keeps results identical across machines)", check="positive")
    device: str = _f("cpu", "cpu | cuda | auto", choices=("cpu", "cuda", "auto"))


@dataclass
class OutputSection:
    """Where results go."""
    out: Optional[str] = _f(None, "output folder (unset: runs/search-<timestamp>)")
    plots: bool = _f(True, "write pareto.png and the knee's cell plots")


@dataclass
class SearchConfig:
    """A whole ``osep-nas search`` config (loaded by :func:`osep_nas.config.load_config`)."""
    search: SearchSection = field(default_factory=SearchSection)
    space: SpaceSection = field(default_factory=SpaceSection)
    proxy: ProxySection = field(default_factory=ProxySection)
    output: OutputSection = field(default_factory=OutputSection)


def _check_search_config(cfg: SearchConfig) -> None:
    """Cross-field checks the schema cannot express; ValueError naming the key."""
    s, p = cfg.search, cfg.proxy
    if s.strategy == "evolution" and s.sample_size > s.population_size:
        raise ValueError(f"search.sample_size: must be <= search.population_size ({s.population_size}), "
                         f"got {s.sample_size}")
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
    if p.layers < 3:
        raise ValueError(f"proxy.layers: must be >= 3 (two reduction cells and a normal one), got {p.layers}")
    if p.dataset == "digits":
        if p.root is not None:
            raise ValueError("proxy.root: the digits are embedded; a folder means proxy.dataset cifar10 or cifar100")
        if p.image_size is not None and p.image_size < 8:
            raise ValueError(f"proxy.image_size: digits are 8x8, the size must be >= 8, got {p.image_size}")
    elif p.root is None:
        raise ValueError(f"proxy.root: proxy.dataset {p.dataset} needs the folder of its python batches "
                         f"(--data DIR)")
    if p.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("proxy.device: cuda requested but no CUDA device is available")


def load_search_config(path_or_dict: Union[str, "Path", Mapping[str, Any], SearchConfig, None] = None,
                       overrides: Optional[Sequence[str]] = None) -> SearchConfig:
    """Load and check a search config with the project's one loader (strict keys, types,
    ``--set`` overrides); raises ValueError (one line) or FileNotFoundError."""
    cfg = load_config(path_or_dict, overrides, schema=SearchConfig)
    _check_search_config(cfg)
    return cfg


# ----------------------------------------------------------------------------- trials

@dataclass
class TrialContext:
    """What a trainer gets for one trial (besides the genotype)."""
    index: int
    seed: int
    space: GenotypeSpace
    proxy: ProxySection
    train_loader: Any
    test_loader: Any
    device: torch.device


#: ``trainer(genotype, ctx) -> metrics``; must return at least ``accuracy`` (percent).
Trainer = Callable[[Genotype, TrialContext], Mapping[str, Any]]


def trial_seed(search_seed: int, index: int) -> int:
    """The seed of trial ``index`` (weights init and batch order): derived, not consecutive."""
    from osep_nas.data import derive_seed

    return derive_seed(int(search_seed), int(index), 0x5EA4C4)


def _limited(loader: Any, limit: Optional[int]) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches, cut after ``limit`` images."""
    seen = 0
    for x, y in loader:
        if limit is not None and seen + len(y) > limit:
            x, y = x[: limit - seen], y[: limit - seen]
        if len(y):
            yield x, y
        seen += len(y)
        if limit is not None and seen >= limit:
            return


def proxy_train(genotype: Genotype, ctx: TrialContext) -> Dict[str, Any]:
    """Train the proxy network of ``genotype`` for ``proxy.steps`` SGD steps (cosine learning
    rate, Nesterov momentum, gradient clipping), then measure top-1 on the test split.

    Returns ``accuracy`` (percent), ``train_loss`` (mean over the last up-to-20 steps) and
    ``train_s``. A non-finite loss raises ValueError (the trial is then recorded as failed)."""
    from osep_nas.train import evaluate

    p = ctx.proxy
    t0 = time.perf_counter()
    torch.manual_seed(ctx.seed)
    net = ctx.space.build(genotype).to(ctx.device)
    optimizer = torch.optim.SGD(net.parameters(), lr=p.lr, momentum=p.momentum, nesterov=p.momentum > 0,
                                weight_decay=p.weight_decay)
    loader = ctx.train_loader
    loader.load_state_dict({"seed": ctx.seed, "epoch": 0})
    net.train()
    step, epoch = 0, 0
    recent: List[torch.Tensor] = []
    while step < p.steps:
        loader.set_epoch(epoch)
        batches = 0
        for x, y in loader:
            if step >= p.steps:
                break
            lr = p.lr * 0.5 * (1.0 + math.cos(math.pi * step / p.steps))
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = x.to(ctx.device), y.to(ctx.device)
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if p.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), p.grad_clip)
            optimizer.step()
            recent = (recent + [loss.detach()])[-20:]
            step += 1
            batches += 1
        if batches == 0:
            raise ValueError("the training split yields no batch (proxy.batch_size larger than the split?)")
        epoch += 1
    train_loss = float(torch.stack(recent).mean())
    if not math.isfinite(train_loss):
        raise ValueError(f"training diverged (loss {train_loss}); lower proxy.lr")
    ev = evaluate(net, _limited(ctx.test_loader, p.max_test_images), ctx.device)
    if not ev["n"]:
        raise ValueError("the test split is empty")
    return {"accuracy": round(100.0 * ev["top1"] / ev["n"], 4), "train_loss": round(train_loss, 6),
            "train_s": round(time.perf_counter() - t0, 3)}


def trial_record(trial: Trial) -> Dict[str, Any]:
    """The ``trials.jsonl`` line of a told trial: everything is derived from the evolution
    state, so the log can be rebuilt from ``state.json`` after a kill."""
    rec: Dict[str, Any] = {"trial": trial.index, "status": trial.status, "origin": trial.origin,
                           "parent": trial.parent}
    metrics = trial.record
    for key in ("accuracy", "params", "flops", "train_loss", "train_s"):
        rec[key] = metrics.get(key)
    for key, value in metrics.items():
        if key not in rec:
            rec[key] = value
    rec["reason"] = trial.reason
    rec["genotype"] = repr(Genotype(*trial.candidate)) if trial.candidate is not None else None
    return rec


# ----------------------------------------------------------------------------- result

@dataclass
class SearchResult:
    """What :func:`run_search` returns. ``records``: every trial's ``trials.jsonl`` record;
    ``front``: records of the Pareto front, ascending #Params (with ``params_cifar`` when the
    report was written); ``knee``: the knee record (None if no success).
    ``stop_reason``: trials | budget | exhausted | stopped (``stop_after``, as a kill)."""
    out_dir: Path
    records: List[Dict[str, Any]]
    front: List[Dict[str, Any]]
    knee: Optional[Dict[str, Any]]
    stop_reason: str
    n_ok: int
    n_failed: int
    n_refused: int
    wall_s: float
    resumed_from: int = 0
    report: Any = None

    @property
    def knee_genotype(self) -> Optional[Genotype]:
        from osep_nas.genotypes import parse_genotype

        return parse_genotype(self.knee["genotype"]) if self.knee else None


# ----------------------------------------------------------------------------- setup

@dataclass
class _Setup:
    cfg: SearchConfig
    space: GenotypeSpace
    train_loader: Any
    test_loader: Any
    info: Dict[str, Any]
    device: torch.device


def _data_config(p: ProxySection, image_size: int) -> Dict[str, Any]:
    pad = max(1, image_size // 8)
    return {
        "data": {
            "dataset": p.dataset, "root": p.root, "batch_size": p.batch_size, "test_batch_size": 512,
            "image_size": image_size, "test_fraction": p.test_fraction,
            "crop": "pad" if p.augment else "none", "padding": pad,
            "flip": bool(p.augment and p.dataset != "digits"), "normalize": True, "on_device": True,
        },
    }


def prepare_proxy(cfg: SearchConfig) -> _Setup:
    """Everything that can fail on bad input, done before OUT is touched."""
    p = cfg.proxy
    if p.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(p.device)
    image_size = p.image_size or (8 if p.dataset == "digits" else 16)
    from osep_nas.data import build_loaders

    train_loader, test_loader, info = build_loaders(_data_config(p, image_size), device=device)
    if len(train_loader) == 0:
        raise ValueError("proxy: the training split yields no batch")
    space = GenotypeSpace(cfg.space.op_candidates, cfg.space.num_nodes, cfg.space.exclude_none,
                          cfg.space.distinct_inputs, init_channels=p.init_channels, layers=p.layers, num_classes=int(info["num_classes"]),
                          input_size=(3, image_size, image_size))
    return _Setup(cfg, space, train_loader, test_loader, info, device)


def _make_core(cfg: SearchConfig, space: GenotypeSpace) -> ParetoEvolutionCore:
    s = cfg.search
    random_only = s.strategy == "random"
    return ParetoEvolutionCore(
        space, s.objectives,
        population_size=RANDOM_POPULATION if random_only else s.population_size,
        sample_size=1 if random_only else s.sample_size,
        seed=s.seed, max_params=s.max_params, params_key="params", max_attempts=500)


def _comparable(cfg_dict: Mapping[str, Any]) -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for sec, values in cfg_dict.items():
        for key, value in (values or {}).items():
            if f"{sec}.{key}" not in RESUMABLE_CHANGES and sec != "output":
                flat[f"{sec}.{key}"] = value
    return json.loads(json.dumps(flat))


def _read_state(out: Path) -> Optional[Dict[str, Any]]:
    path = out / "state.json"
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable search state ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: not an osep-nas search state")
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: search state version {state.get('version')}, this osep-nas reads {STATE_VERSION}")
    return state


def _check_out(out: Path, cfg: SearchConfig, resume: bool) -> Optional[Dict[str, Any]]:
    """Decide whether OUT may be used; returns the saved state when resuming one."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} exists and is not a folder")
    busy = out.is_dir() and any(out.iterdir())
    if not busy:
        return None
    try:
        state = _read_state(out)
    except ValueError:
        state = None
        if resume:
            raise
    same = state is not None and _comparable(state.get("config", {})) == _comparable(config_to_dict(cfg))
    if not resume:
        if same:
            raise ValueError(f"output folder {out} already holds this search; add --resume to continue it, "
                             f"or choose another --out")
        what = "a different search" if state is not None else "other files"
        raise ValueError(f"output folder {out} is not empty (it holds {what}); choose another --out")
    if state is None:
        raise ValueError(f"cannot resume: {out} holds no search (no state.json)")
    if not same:
        saved, now = _comparable(state.get("config", {})), _comparable(config_to_dict(cfg))
        diff = [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(saved) | set(now))
                if saved.get(k) != now.get(k)]
        raise ValueError(f"cannot resume {out}: the config differs from the saved search ({'; '.join(diff[:4])}"
                         f"{'; ...' if len(diff) > 4 else ''}); only {', '.join(RESUMABLE_CHANGES)} may change")
    return state


@contextlib.contextmanager
def torch_env(threads: int, device: torch.device) -> Iterator[None]:
    """Fixed thread count and deterministic algorithms for the search; restored after."""
    prev_threads = torch.get_num_threads()
    prev_det = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    want = (True, device.type == "cuda")  # CUDA: warn only where no deterministic kernel exists
    try:
        torch.set_num_threads(threads)
        if want != prev_det:
            torch.use_deterministic_algorithms(want[0], warn_only=want[1])
        yield
    finally:
        torch.set_num_threads(prev_threads)
        if want != prev_det:
            torch.use_deterministic_algorithms(prev_det[0], warn_only=prev_det[1])


def _save_state(out: Path, cfg: SearchConfig, core: ParetoEvolutionCore) -> None:
    atomic_write_json(out / "state.json", {
        "format": STATE_FORMAT, "version": STATE_VERSION, "config": config_to_dict(cfg),
        "evolution": core.state_dict(),
    })


def _rewrite_log(out: Path, core: ParetoEvolutionCore) -> None:
    text = "".join(json.dumps(trial_record(t)) + "\n" for t in core.history)
    atomic_write_text(out / "trials.jsonl", text)


# ----------------------------------------------------------------------------- progress

class _Progress:
    """A tqdm bar over trials on a terminal; one printed line per trial otherwise."""

    def __init__(self, total: int, done: int, enabled: Optional[bool]) -> None:
        self.enabled = True if enabled is None else bool(enabled)
        self.total = total
        self.bar = None
        if self.enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc="search", unit="trial", dynamic_ncols=True,
                            file=sys.stderr)

    def trial(self, rec: Dict[str, Any], n_front: int) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            if rec["status"] == "ok":
                self.bar.set_postfix_str(f"acc {rec['accuracy']:.1f}% params {rec['params']:,} front {n_front}")
            self.bar.update(1)
            return
        head = f"[{rec['trial'] + 1:>3}/{self.total}] #{rec['trial']:<3}"
        if rec["status"] == "ok":
            print(f"{head}  acc {rec['accuracy']:6.2f}%  params {rec['params']:>9,}  flops {rec['flops']:>11,}  "
                  f"{rec.get('train_s') or 0:5.1f} s  {rec['origin']}"
                  f"{'' if rec['parent'] is None else ' of #' + str(rec['parent'])}  front {n_front}", flush=True)
        else:
            print(f"{head}  FAILED: {rec['reason']}", flush=True)

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- the loop

def default_out_dir() -> Path:
    return Path("runs") / time.strftime("search-%Y%m%d-%H%M%S")


def run_search(config: Union[SearchConfig, Mapping[str, Any], str, "Path", None] = None,
               out_dir: Union[str, Path, None] = None, resume: bool = False, progress: Optional[bool] = None, *,
               trainer: Optional[Trainer] = None, stop_after: Optional[int] = None,
               report: bool = True, print_report: bool = True) -> SearchResult:
    """Run (or resume) a search; see the module docstring.

    ``config``: a :class:`SearchConfig`, a mapping or a YAML path. ``out_dir``: default
    ``output.out`` or ``runs/search-<timestamp>``. ``progress``: per-trial output (tqdm bar on
    a terminal, one line per trial otherwise; ``None`` = on). ``trainer``: replaces
    :func:`proxy_train` (tests, other proxies). ``stop_after``: return after this many trials of
    this invocation without writing the report, as if killed. ``report``: write the report
    files (pareto.yaml/png, cell plots, summary.json) at the end; ``print_report``: print the
    summary line, the front table and the knee genotype to stdout.

    Bad input raises ValueError/FileNotFoundError before any file is written."""
    t0 = time.time()
    cfg = config if isinstance(config, SearchConfig) else load_search_config(config)
    _check_search_config(cfg)
    if stop_after is not None and stop_after < 0:
        raise ValueError(f"stop_after must be >= 0, got {stop_after}")
    out = Path(out_dir if out_dir is not None else (cfg.output.out or default_out_dir())).expanduser()
    setup = prepare_proxy(cfg)
    core = _make_core(cfg, setup.space)
    state = _check_out(out, cfg, resume)
    if state is not None:
        try:
            core.load_state_dict(state["evolution"])
        except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:
            detail = " ".join(str(exc).split())[:200] or type(exc).__name__
            if isinstance(exc, KeyError):
                detail = f"missing {detail}"
            raise ValueError(f"{out / 'state.json'}: malformed search state ({detail})") from None
    out.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, out=str(out)))
    atomic_write_text(out / "config.yaml", config_to_yaml(cfg))
    _save_state(out, cfg, core)
    _rewrite_log(out, core)  # after a kill the log may lack the last told trial; the state has it
    resumed_from = len(core.history)

    trainer = trainer or proxy_train
    s = cfg.search
    budget_s = None if s.budget_minutes is None else 60.0 * s.budget_minutes
    bar = _Progress(s.trials, min(resumed_from, s.trials), progress)
    if resumed_from:
        bar.note(f"resuming {out}: {resumed_from} trial(s) done")
    stop_reason = "trials"
    ran = 0
    try:
        with torch_env(cfg.proxy.threads, setup.device):
            while True:
                if len(core.history) >= s.trials:
                    stop_reason = "trials"
                    break
                if stop_after is not None and ran >= stop_after:
                    stop_reason = "stopped"
                    break
                if budget_s is not None and time.time() - t0 >= budget_s:
                    stop_reason = "budget"
                    bar.note(f"budget of {s.budget_minutes:g} min reached after {len(core.history)} trial(s)")
                    break
                pending = core.pending
                if pending:
                    candidate = pending[0]
                else:
                    try:
                        candidate = core.ask()
                    except SearchExhausted as exc:
                        stop_reason = "exhausted"
                        bar.note(f"search space exhausted: {exc}")
                        break
                    _save_state(out, cfg, core)  # the pending candidate survives a kill mid-trial
                index = len(core.history)
                ctx = TrialContext(index, trial_seed(s.seed, index), setup.space, cfg.proxy,
                                   setup.train_loader, setup.test_loader, setup.device)
                try:
                    metrics = dict(trainer(candidate, ctx))
                    if not isinstance(metrics.get("accuracy"), (int, float)):
                        raise ValueError(f"the trainer returned no numeric 'accuracy' (got {sorted(metrics)})")
                    reason = None
                except Exception as exc:  # noqa: BLE001 - a failing trial must not end the search
                    metrics, reason = None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                    if setup.device.type == "cuda":
                        torch.cuda.empty_cache()
                trial = core.tell(candidate, metrics, reason=reason)
                _save_state(out, cfg, core)
                ran += 1
                if trial is not None:
                    rec = trial_record(trial)
                    append_jsonl(out / "trials.jsonl", rec)
                    bar.trial(rec, len({tuple(t.record[o.name] for o in core.objectives) for t in core.front()}))
    finally:
        bar.close()

    from .report import pareto_of, write_report

    records = [trial_record(t) for t in core.history]
    front_recs, knee = pareto_of(records, s.objectives)
    result = SearchResult(out_dir=out, records=records, front=front_recs, knee=knee, stop_reason=stop_reason,
                          n_ok=sum(r["status"] == "ok" for r in records),
                          n_failed=sum(r["status"] != "ok" for r in records), n_refused=core.n_rejected,
                          wall_s=round(time.time() - t0, 3), resumed_from=resumed_from)
    if stop_reason == "stopped":
        return result
    show = print_report
    if show:
        print(f"search: {len(records)} trials ({result.n_ok} ok, {result.n_failed} failed, {core.n_rejected} "
              f"refused over max_params) in {result.wall_s:.1f} s, stopped by {stop_reason}; results in {out}")
    rep = write_report(out, records, s.objectives, plots=cfg.output.plots, print_table=show, write_files=report,
                       num_classes=int(setup.info["num_classes"]), subtitle=_subtitle(cfg, setup))
    result.report = rep
    result.front, result.knee = rep.front, rep.knee
    summary = {
        "out": str(out), "stop_reason": stop_reason, "trials": len(records), "ok": result.n_ok,
        "failed": result.n_failed, "refused_over_max_params": core.n_rejected, "duplicates_skipped": core.n_duplicates,
        "front": [r["trial"] for r in rep.front], "knee": rep.knee["trial"] if rep.knee else None,
        "knee_genotype": rep.knee["genotype"] if rep.knee else None,
        "objectives": list(s.objectives), "search_wall_s": result.wall_s, "resumed_from": resumed_from,
    }
    if report:
        atomic_write_json(out / "summary.json", summary)
    return result


def _subtitle(cfg: SearchConfig, setup: _Setup) -> str:
    p = cfg.proxy
    size = setup.space.input_size[-1]
    return (f"{cfg.search.strategy}, proxy NetworkCIFAR C={p.init_channels} layers={p.layers} on "
            f"{p.dataset} {size}x{size}, {p.steps} steps")
