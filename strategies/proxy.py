"""The trial protocol: one proxy training, scored on validation data.

A trial builds the genotype's proxy network (``NetworkCIFAR`` at a tiny width and depth),
trains it for a rung's number of SGD steps on the training part of the proxy data, and
measures top-1 on the validation part held out of the training split (``data.val_fraction``);
the test split is never read. Data and SGD are the trainer's own sections, loaders and schedule
(:class:`~osep_nas.config.DataConfig`, :class:`~osep_nas.config.OptimConfig`,
:class:`~osep_nas.lr_schedule.LRSchedule`); the loop is its own because a trial counts steps,
without the epochs, checkpoints and TensorBoard of :func:`osep_nas.train.train`.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F

from osep_nas.genotypes import Genotype

from search_spaces.genotype_space import GenotypeSpace
from search_spaces.target import resolve_target
from .search_config import SearchConfig

__all__ = ["TrialContext", "Trainer", "ProxySetup", "trial_seed", "proxy_train", "prepare_proxy", "torch_env"]


@dataclass
class TrialContext:
    """What a trainer gets for one job (besides the genotype)."""
    index: int
    seed: int
    space: GenotypeSpace
    cfg: SearchConfig
    train_loader: Any
    val_loader: Any
    device: torch.device
    steps: Optional[int] = None  # unset: proxy.steps (rung 0)
    rung: int = 0


#: ``trainer(genotype, ctx) -> metrics``; must return at least ``accuracy`` (percent).
Trainer = Callable[[Genotype, TrialContext], Mapping[str, Any]]


def trial_seed(search_seed: int, index: int, rung: int = 0) -> int:
    """The seed of trial ``index`` at ``rung`` (weights init and batch order): derived, not
    consecutive, and independent of which worker runs it."""
    from osep_nas.data import derive_seed

    if rung == 0:
        return derive_seed(int(search_seed), int(index), 0x5EA4C4)
    return derive_seed(int(search_seed), int(index), 0x5EA4C4, int(rung))


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


def proxy_train(genotype: Genotype, ctx: TrialContext, net: Optional[torch.nn.Module] = None) -> Dict[str, Any]:
    """Train the proxy network of ``genotype`` (or ``net``, e.g. the model NNI froze) for
    ``ctx.steps`` SGD steps (``optim``: the schedule runs over the steps), then measure top-1
    on the validation part.

    Returns ``accuracy`` (validation top-1, percent), ``train_loss`` (mean of the last up to
    20 steps) and ``train_s``. A non-finite loss raises ValueError (the trial then fails)."""
    from osep_nas.lr_schedule import LRSchedule
    from osep_nas.train import evaluate

    p, o = ctx.cfg.proxy, ctx.cfg.optim
    steps = int(ctx.steps or p.steps)
    t0 = time.perf_counter()
    torch.manual_seed(ctx.seed)
    net = (ctx.space.build(genotype) if net is None else net).to(ctx.device)
    optimizer = torch.optim.SGD(net.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                                weight_decay=o.weight_decay)
    schedule = LRSchedule(o, steps)
    loader = ctx.train_loader
    loader.load_state_dict({"seed": ctx.seed, "epoch": 0})
    net.train()
    step, epoch = 0, 0
    recent: List[torch.Tensor] = []
    while step < steps:
        loader.set_epoch(epoch)
        batches = 0
        for x, y in loader:
            if step >= steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = schedule.lr_at(step)
            x, y = x.to(ctx.device), y.to(ctx.device)
            loss = F.cross_entropy(net(x), y, label_smoothing=o.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if o.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), o.grad_clip)
            optimizer.step()
            recent = (recent + [loss.detach()])[-20:]
            step += 1
            batches += 1
        if batches == 0:
            raise ValueError("the training part yields no batch (data.batch_size larger than the split?)")
        epoch += 1
    train_loss = float(torch.stack(recent).mean())
    if not math.isfinite(train_loss):
        raise ValueError(f"training diverged (loss {train_loss}); lower optim.lr")
    ev = evaluate(net, _limited(ctx.val_loader, p.max_val_images), ctx.device)
    if not ev["n"]:
        raise ValueError("the validation part is empty")
    return {"accuracy": round(100.0 * ev["top1"] / ev["n"], 4), "train_loss": round(train_loss, 6),
            "train_s": round(time.perf_counter() - t0, 3)}


@dataclass
class ProxySetup:
    """The proxy data and space of a search config, built once per process."""
    cfg: SearchConfig
    space: GenotypeSpace
    train_loader: Any
    val_loader: Any
    info: Dict[str, Any]
    device: torch.device


def prepare_proxy(cfg: SearchConfig) -> ProxySetup:
    """Load the proxy data (training split only) and make the space; everything that can fail
    on bad input, done before any output is written."""
    from osep_nas.config import config_to_dict
    from osep_nas.data import build_loaders

    p = cfg.proxy
    if p.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(p.device)
    image_size = cfg.data.image_size or (8 if cfg.data.dataset == "digits" else 16)
    data = {**config_to_dict(cfg.data), "image_size": image_size}
    train_loader, val_loader, info = build_loaders({"data": data}, device=device)
    assert info["eval_split"] == "validation"
    if len(train_loader) == 0:
        raise ValueError("proxy: the training part yields no batch")
    space = GenotypeSpace(cfg.space.op_candidates, cfg.space.num_nodes, cfg.space.exclude_none,
                          cfg.space.distinct_inputs, init_channels=p.init_channels, layers=p.layers,
                          num_classes=int(info["num_classes"]), input_size=(3, image_size, image_size),
                          target=resolve_target(cfg.target))
    return ProxySetup(cfg, space, train_loader, val_loader, info, device)


@contextlib.contextmanager
def torch_env(threads: int, device: torch.device) -> Iterator[None]:
    """Fixed thread count and deterministic algorithms for trials; restored after."""
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
