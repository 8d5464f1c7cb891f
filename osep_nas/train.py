"""The trainer: SGD retraining of a network on CIFAR, ImageNet or the embedded digits.

``train(config)`` runs the paper's recipes (SGD with a learning-rate schedule, label
smoothing, the DARTS auxiliary loss and drop path), resumes exactly, and runs under
``torchrun``; its outputs, resume and distributed rules are in docs/training.md.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Union

import torch
from torch import nn

from osep_nas.allocator import keep_freed_memory
from osep_nas.checkpoint import (RESUME_KEYS, capture_rng_state, load_checkpoint, load_model_state,
                                 restore_rng_state, save_checkpoint)
from osep_nas.config import Config, config_to_dict, config_to_yaml, load_config
from osep_nas.data import build_loaders, derive_seed
from osep_nas.evaluation import evaluate, pct, split_output, unwrap
from osep_nas.genotypes.resolve import resolve_genotype
from osep_nas.io import append_jsonl, atomic_write_json, atomic_write_text
from osep_nas.lr_schedule import LRSchedule
from osep_nas.outlock import hold_out_dir
from osep_nas.run_folder import check_out_dir, config_diff, read_metrics, trim_metrics
from osep_nas.train_env import Dist, determinism, progress_bar, seed_all, setup_distributed

__all__ = ["train", "build_model", "resolve_genotype", "LRSchedule", "evaluate", "DEFAULT_NUM_CLASSES"]

log = logging.getLogger("osep_nas.train")

DEFAULT_NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000, "digits": 10}
ModelBuilder = Callable[[Config, Dict[str, Any]], nn.Module]


# ----------------------------------------------------------------------------- model

def build_model(config: Union[Config, Mapping[str, Any]], info: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """The network ``config.model`` describes, built by ``osep_nas.models.create_model``.

    ``model.genotype`` set: the DARTS network of the dataset's image size
    (``darts_cifar`` or ``darts_imagenet``, sizes from ``osep_nas.models.DARTS_NETWORKS``);
    otherwise ``model.name``.  Keywords: ``num_classes``, the set ones of width_mult / gamma /
    rounding / init_channels / layers, auxiliary and drop_path_prob when the model takes
    them (or when asked for), and ``model.extra``.  ``num_classes``: ``model.num_classes``,
    else ``info["num_classes"]``, else the dataset's."""
    from osep_nas.models import create_model, darts_model_name, model_info

    cfg = config if isinstance(config, Config) else load_config(config)
    m = cfg.model
    num_classes = m.num_classes or (info or {}).get("num_classes") or DEFAULT_NUM_CLASSES[cfg.data.dataset]
    name = m.name
    kw: Dict[str, Any] = dict(num_classes=num_classes)
    if m.genotype:
        if m.name not in (None, "darts"):
            raise ValueError(f"model.genotype builds a DARTS network; model.name must be unset or 'darts', "
                             f"got {m.name!r}")
        if m.width_mult is not None:
            raise ValueError("model.width_mult: not used with a genotype; set model.init_channels instead")
        name = darts_model_name(cfg.data.dataset)
        kw["genotype"] = resolve_genotype(m.genotype)
    elif not m.name:
        raise ValueError("model.name: no model given; set a model name (--model) or a genotype (--genotype)")
    elif m.name == "darts":
        raise ValueError("model.name: 'darts' needs model.genotype (e.g. --genotype O_DARTS)")
    accepted = set(model_info(name).keywords())
    for key in ("gamma", "rounding", "width_mult", "init_channels", "layers"):
        if getattr(m, key) is not None:
            kw[key] = getattr(m, key)
    if m.auxiliary or "auxiliary" in accepted:
        kw["auxiliary"] = m.auxiliary
    if m.drop_path_prob or "drop_path_prob" in accepted:
        kw["drop_path_prob"] = m.drop_path_prob
    kw.update(m.extra)
    return create_model(name, **kw)


# ----------------------------------------------------------------------------- train

def train(config: Union[Config, Mapping[str, Any], str, "os.PathLike[str]"],
          model_builder: Optional[ModelBuilder] = None, *, stop_after: Optional[int] = None,
          progress: Optional[bool] = None) -> Dict[str, Any]:
    """Train the model ``config`` describes; return the summary (also in OUT/summary.json).

    ``model_builder(config, info) -> nn.Module`` replaces :func:`build_model` (``info``
    is the data info of :func:`osep_nas.data.build_loaders`, with ``num_classes``).
    ``stop_after``: return once this many epochs are complete (a later resume goes on,
    as after a kill).  ``progress``: tqdm bars (default: only when stderr is a terminal).

    Summary keys: out, epochs, epochs_done, completed, resumed_from, best_top1,
    best_epoch, final (the last metrics record), params, flops, device, world_size, wall_s
    (over every run of a resumed training; None where an earlier run's time was not
    recorded), session_wall_s (this call's).

    On CPU, glibc malloc is set to keep freed memory for the rest of the process
    (:mod:`osep_nas.allocator`; ``OSEP_NAS_KEEP_MEMORY=0`` turns that off).
    """
    t0 = time.time()
    cfg = config if isinstance(config, Config) else load_config(config)
    tc = cfg.training
    out = Path(tc.out).expanduser()
    if stop_after is not None and stop_after < 0:
        raise ValueError(f"stop_after must be >= 0, got {stop_after}")
    dist_ctx, device = setup_distributed(tc.device)
    if device.type == "cpu":
        keep_freed_memory()  # no page faults for the activations every step re-allocates (osep_nas.allocator)
    try:
        with contextlib.ExitStack() as stack:
            if dist_ctx.rank == 0:  # one writer per OUT: a second train/study/search on it is refused
                check_out_dir(out, resume=True)  # a file, not writable: its own message; then the lock
                stack.enter_context(hold_out_dir(out))  # before "already holds a run": a live owner is named
            stack.enter_context(determinism(tc.deterministic, device))
            return _train(cfg, model_builder, out, dist_ctx, device, stop_after, progress, t0)
    finally:
        if dist_ctx.owned:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(cfg: Config, model_builder: Optional[ModelBuilder], out: Path, dctx: Dist, device: torch.device,
           stop_after: Optional[int], progress: Optional[bool], t0: float) -> Dict[str, Any]:
    tc, oc = cfg.training, cfg.optim
    rank0 = dctx.rank == 0
    cuda = device.type == "cuda"
    use_amp = bool(tc.amp and cuda)
    # CUDA only: the channels-last backward of NetworkImageNet crashes on CPU (docs/training.md)
    channels_last = bool(tc.channels_last and cuda)

    # ---- validate everything before OUT is touched
    check_out_dir(out, tc.resume)
    ckpt = None
    last_path = out / "last.pt"
    if tc.resume and not last_path.exists():
        started = any((out / name).exists() for name in ("config.yaml", "metrics.jsonl"))
        if not started:
            raise FileNotFoundError(f"nothing to resume: no checkpoint at {last_path}")
        # killed before its first checkpoint: nothing a checkpoint held is lost; start over
        log.info("%s: no checkpoint yet; starting from epoch 0", out)
    elif tc.resume:
        ckpt = load_checkpoint(last_path, map_location="cpu", required=RESUME_KEYS)
        done = ckpt["epoch"]
        if not isinstance(done, int) or done < 0:
            raise ValueError(f"{last_path}: bad epoch {done!r}")
        if done > tc.epochs:
            raise ValueError(f"training.epochs: {tc.epochs}, but {last_path} already holds {done} epochs")
    seed_all(tc.seed)
    train_loader, test_loader, info = build_loaders(cfg, device=device, rank=dctx.rank, world_size=dctx.world_size)
    n_data = int(info["num_classes"])
    if cfg.model.num_classes and cfg.model.num_classes < n_data:
        raise ValueError(f"model.num_classes: {cfg.model.num_classes}, but {cfg.data.dataset} has {n_data} classes "
                         f"(labels 0..{n_data - 1})")
    builder = model_builder or build_model
    model = builder(cfg, info)
    if not isinstance(model, nn.Module):
        raise ValueError(f"the model builder returned a {type(model).__name__}, not a torch.nn.Module")
    params = flops = None
    try:
        from osep_nas.complexity import count_flops, count_params

        params = count_params(model)
        flops = count_flops(model, info["input_size"])
    except Exception as exc:  # complexity is informative only
        log.warning("could not count params/FLOPs: %s", exc)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=oc.lr, momentum=oc.momentum, weight_decay=oc.weight_decay,
                                nesterov=oc.nesterov)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp) if cuda else torch.amp.GradScaler("cpu", enabled=False)
    schedule = LRSchedule(oc, tc.epochs)
    start_epoch, best_top1, best_epoch = 0, -1.0, 0
    wall_before: Optional[float] = 0.0  # seconds of earlier runs of a resumed training (None: not recorded)
    if ckpt is not None:
        wall = ckpt.get("wall_s")  # absent in checkpoints written before it was kept
        wall_before = float(wall) if isinstance(wall, (int, float)) and 0 <= wall < float("inf") else None
        load_model_state(model, ckpt["model"], source=str(last_path))
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ValueError(f"{last_path}: optimizer state does not fit this model ({exc})") from None
        if use_amp and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch = int(ckpt["epoch"])
        best_top1 = float(ckpt.get("best_top1", -1.0))
        best_epoch = int(ckpt.get("best_epoch", 0))
        old_cfg = ckpt.get("config")
        if isinstance(old_cfg, dict):
            changed = [k for k in config_diff(old_cfg, config_to_dict(cfg))
                       if k not in ("training.epochs", "training.resume", "training.out", "training.log_every",
                                    "training.log_steps", "training.tensorboard", "data.root", "data.workers")]
            if changed and rank0:
                log.warning("resuming with a config that differs from the checkpoint's in: %s", ", ".join(changed))
    if dctx.enabled:
        if tc.sync_bn and cuda:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif tc.sync_bn:
            from osep_nas.sync_batchnorm import convert_sync_batchnorm

            model = convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[dctx.local_rank] if cuda else None)
    raw = unwrap(model)
    # RNG: restored from the checkpoint, else one stream per rank
    if ckpt is not None:
        states = ckpt.get("rng_per_rank")
        rng = states[dctx.rank] if isinstance(states, list) and len(states) == dctx.world_size else ckpt["rng"]
        restore_rng_state(rng)
    elif dctx.world_size > 1:
        seed_all(derive_seed(tc.seed, dctx.rank, 0xD0))

    # ---- from here on OUT is written (rank 0)
    if rank0:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"training.out: cannot create {out}: {exc.strerror or exc}") from None
        atomic_write_text(out / "config.yaml", config_to_yaml(cfg))
        trim_metrics(out / "metrics.jsonl", start_epoch)  # a fresh start drops a killed run's lines
        trim_metrics(out / "steps.jsonl", start_epoch)
    writer = None
    if rank0 and cfg.training.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"), purge_step=start_epoch + 1 if ckpt is not None else None)
        except ImportError as exc:  # pragma: no cover - tensorboard is a dependency
            log.warning("TensorBoard unavailable (%s); no tb/ scalars", exc)
    show = (sys.stderr.isatty() if progress is None else progress) and rank0
    genotype_obj = getattr(raw, "genotype", None)
    genotype_text = str(genotype_obj) if genotype_obj is not None else cfg.model.genotype
    criterion = nn.CrossEntropyLoss(label_smoothing=oc.label_smoothing)
    step_log = out / "steps.jsonl" if tc.log_steps and rank0 else None
    last_record: Optional[Dict[str, Any]] = None
    end_epoch = tc.epochs if stop_after is None else min(tc.epochs, max(stop_after, start_epoch))
    if rank0:
        log.info("training %s on %s (%d train / %d test images) for epochs %d..%d on %s x%d; params %s, FLOPs %s",
                 type(raw).__name__, info["dataset"], info["train_size"], info["test_size"], start_epoch + 1,
                 tc.epochs, device, dctx.world_size, params, flops)
    try:
        for epoch in range(start_epoch, end_epoch):
            record = _run_epoch(cfg, model, raw, optimizer, scaler, schedule, criterion, train_loader, test_loader,
                                device, dctx, epoch, use_amp, channels_last, show, step_log)
            if record["test_top1"] is not None and record["test_top1"] > best_top1:
                best_top1, best_epoch, is_best = record["test_top1"], epoch + 1, True
            else:
                is_best = False
            rng_states = dctx.gather(capture_rng_state())
            state = {
                "model": raw.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": {**schedule.state_dict(), "epoch": epoch + 1},
                "scaler": scaler.state_dict() if use_amp else {},
                "rng": rng_states[0], "rng_per_rank": rng_states if dctx.world_size > 1 else None,
                "loader": train_loader.state_dict(), "epoch": epoch + 1,
                "best_top1": best_top1, "best_epoch": best_epoch,
                "config": config_to_dict(cfg), "genotype": genotype_text,
                "wall_s": None if wall_before is None else wall_before + time.time() - t0,
            }
            if rank0:
                append_jsonl(out / "metrics.jsonl", record)
                if writer is not None:
                    for key, value in record.items():
                        if key != "epoch" and value is not None:
                            writer.add_scalar(key.replace("_", "/", 1) if key.startswith(("train_", "test_"))
                                              else key, value, epoch + 1)
                    writer.flush()
                if is_best:
                    save_checkpoint(out / "best.pt", state)
                save_checkpoint(last_path, state)
                log.info("epoch %d/%d: train loss %.4f top-1 %.2f | test loss %s top-1 %s top-5 %s | lr %.5g | "
                         "%.0f img/s", epoch + 1, tc.epochs, record["train_loss"], record["train_top1"],
                         record["test_loss"], record["test_top1"], record["test_top5"], record["lr"],
                         record["images_per_s"])
            last_record = record
    finally:
        if writer is not None:
            writer.close()
    epochs_done = end_epoch
    if last_record is None and rank0 and (out / "metrics.jsonl").exists():
        lines = read_metrics(out / "metrics.jsonl").splitlines()
        last_record = json.loads(lines[-1]) if lines else None
    summary = {
        "out": str(out), "epochs": tc.epochs, "epochs_done": epochs_done, "completed": epochs_done >= tc.epochs,
        "resumed_from": start_epoch if ckpt is not None else None,
        "best_top1": best_top1 if best_top1 >= 0 else None, "best_epoch": best_epoch or None,
        "final": last_record, "params": params, "flops": flops, "dataset": info["dataset"],
        "num_classes": info["num_classes"], "device": str(device), "world_size": dctx.world_size,
        "wall_s": None if wall_before is None else round(wall_before + time.time() - t0, 3),
        "session_wall_s": round(time.time() - t0, 3),
    }
    if rank0:
        atomic_write_json(out / "summary.json", summary)
    return summary


def _run_epoch(cfg: Config, model: nn.Module, raw: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any,
               schedule: LRSchedule, criterion: nn.Module, train_loader: Any, test_loader: Any,
               device: torch.device, dctx: Dist, epoch: int, use_amp: bool, channels_last: bool,
               show: bool, step_log: Optional[Path] = None) -> Dict[str, Any]:
    tc, oc = cfg.training, cfg.optim
    # drop path ramps linearly from 0 to model.drop_path_prob over training, set per step
    # (DARTS sets it per epoch, on the same line; per step a one-epoch run uses it too)
    dp = cfg.model.drop_path_prob * epoch / tc.epochs
    has_dp = hasattr(raw, "drop_path_prob")
    model.train()
    train_loader.set_epoch(epoch)
    test_loader.set_epoch(epoch)
    steps = len(train_loader)
    if tc.max_steps_per_epoch:
        steps = min(steps, tc.max_steps_per_epoch)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    data_time = 0.0
    first_lr = None
    bar = progress_bar(steps, f"epoch {epoch + 1}/{tc.epochs}", show)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    it = iter(train_loader)
    try:
        for step in range(steps):
            td = time.perf_counter()
            try:
                x, y = next(it)
            except StopIteration:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            data_time += time.perf_counter() - td
            lr = schedule.lr_at(epoch + step / steps)
            if has_dp:
                dp = cfg.model.drop_path_prob * (epoch + step / steps) / tc.epochs
                raw.drop_path_prob = dp
            if first_lr is None:
                first_lr = lr
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                logits, aux = split_output(model(x))
                loss_main = criterion(logits, y)
                loss = loss_main
                if aux is not None:  # always in the graph so DDP sees every parameter used
                    loss = loss + tc.auxiliary_weight * criterion(aux, y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if oc.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), oc.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            n = len(y)
            loss_sum += loss_main.detach().double() * n
            correct += (logits.detach().argmax(1) == y).sum()
            seen += n
            bar.update(1)
            if (step + 1) % tc.log_every == 0 or step + 1 == steps:  # one device sync per log_every steps
                value = float(loss_main.detach())
                if not math.isfinite(value) and not use_amp:  # AMP skips inf steps itself
                    raise ValueError(f"training diverged: loss {value} at epoch {epoch + 1} step {step + 1}; "
                                     f"lower optim.lr or set optim.grad_clip")
                bar.set_postfix_str(f"loss {float(loss_sum) / max(seen, 1):.4f} lr {lr:.4g}")
                if tc.log_steps:  # every rank takes part; rank 0 writes the global batch's mean loss
                    total, count = dctx.all_sum([value * n, float(n)], device)
                    if step_log is not None:
                        append_jsonl(step_log, {"epoch": epoch + 1, "step": step + 1,
                                                "loss": total / count if count else None, "lr": lr})
    finally:
        bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_time = time.perf_counter() - start
    tl, tcorr, tn, dtime, ttime = dctx.all_sum([float(loss_sum), float(correct), float(seen), data_time, train_time],
                                              device)
    ev = evaluate(unwrap(model), test_loader, device, amp=use_amp, channels_last=channels_last)
    el, e1, e5, en = dctx.all_sum([ev["loss_sum"], ev["top1"], ev["top5"], ev["n"]], device)
    epoch_time = time.perf_counter() - start
    ws = dctx.world_size
    return {
        "epoch": epoch + 1,
        "train_loss": round(tl / tn, 6) if tn else None,
        "train_top1": pct(tcorr, tn),
        "test_loss": round(el / en, 6) if en else None,
        "test_top1": pct(e1, en),
        "test_top5": pct(e5, en),
        "lr": first_lr if first_lr is not None else schedule.lr_at(epoch),
        "images_per_s": round(tn / (ttime / ws), 2) if ttime > 0 else None,
        "data_time_share": round(dtime / ttime, 4) if ttime > 0 else None,
        "epoch_time_s": round(epoch_time, 3),
        "drop_path_prob": dp,
    }
