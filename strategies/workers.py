"""Run a round of search trials on every core: one process per worker, one thread each.

``workers == 1`` runs the jobs in this process; more workers run them in a pool of spawned
processes (``spawn``: a forked child of a process that already ran OpenMP can hang). Each
worker loads the proxy data once and runs jobs seeded by their trial, never by the worker,
so results do not depend on the number of workers or on which worker ran a job. A worker
exits within a second of its parent's death (``kill -9`` of a search leaves no orphans).
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from .proxy import TrialContext, prepare_proxy, torch_env
from .search_config import load_search_config

__all__ = ["TrialRunner", "default_workers", "exit_with_parent"]

#: one finished job: (job, metrics or None, failure reason or None)
Outcome = Tuple[Dict[str, Any], Optional[Dict[str, Any]], Optional[str]]


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def exit_with_parent(poll_s: float = 0.5) -> None:
    """Start a daemon thread that ends this process when its parent dies."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


# ---------------------------------------------------------------------------------- one job

def run_job(job: Mapping[str, Any], setup: Any, trainer: Callable[..., Mapping[str, Any]]
            ) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """Train ``job["genotype"]`` for ``job["steps"]`` with ``trainer``; (metrics, None) or
    (None, one-line reason). A failing trial never ends the search."""
    import torch

    ctx = TrialContext(int(job["trial"]), int(job["seed"]), setup.space, setup.cfg, setup.train_loader,
                       setup.val_loader, setup.device, steps=int(job["steps"]), rung=int(job["rung"]))
    try:
        metrics = dict(trainer(job["genotype"], ctx))
        if not isinstance(metrics.get("accuracy"), (int, float)) or isinstance(metrics.get("accuracy"), bool):
            raise ValueError(f"the trainer returned no numeric 'accuracy' (got {sorted(metrics)})")
        return metrics, None
    except Exception as exc:  # noqa: BLE001 - one failed trial is a result, not the end of the search
        if setup.device.type == "cuda":
            torch.cuda.empty_cache()
        return None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


_WORKER: Dict[str, Any] = {}


def _init_worker(config: Mapping[str, Any], trainer: Callable[..., Mapping[str, Any]]) -> None:
    exit_with_parent()
    cfg = load_search_config(dict(config))
    setup = prepare_proxy(cfg)
    env = torch_env(cfg.proxy.threads, setup.device)
    env.__enter__()  # for the life of the worker (kept referenced: collecting it would undo the settings)
    _WORKER.update(setup=setup, trainer=trainer, env=env)


def _worker_job(job: Mapping[str, Any]) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    return run_job(job, _WORKER["setup"], _WORKER["trainer"])


# ---------------------------------------------------------------------------------- the runner

class TrialRunner:
    """Runs rounds of jobs: in this process (``workers == 1``) or in a pool of ``workers``
    spawned processes started on first use. ``config`` is the search config as a dict (what
    each worker loads); ``setup`` the in-process proxy setup."""

    def __init__(self, config: Mapping[str, Any], setup: Any, trainer: Callable[..., Mapping[str, Any]],
                 workers: int) -> None:
        self.config = dict(config)
        self.setup = setup
        self.trainer = trainer
        self.workers = int(workers)
        self._pool: Optional[cf.ProcessPoolExecutor] = None

    def run(self, jobs: List[Dict[str, Any]]) -> Iterator[Outcome]:
        """Yield each job's outcome as it finishes (in order when ``workers == 1``)."""
        if self.workers == 1 or len(jobs) <= 1 and self._pool is None:
            for job in jobs:
                yield (job, *run_job(job, self.setup, self.trainer))
            return
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(max_workers=self.workers,
                                                mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_init_worker, initargs=(self.config, self.trainer))
        futures = {self._pool.submit(_worker_job, job): job for job in jobs}
        try:
            for fut in cf.as_completed(futures):
                yield (futures[fut], *fut.result())
        finally:
            for fut in futures:
                fut.cancel()

    def close(self) -> None:
        """Stop the pool; running jobs are abandoned (a resumed search re-runs them)."""
        if self._pool is not None:
            for proc in list(getattr(self._pool, "_processes", {}).values()):
                if proc.is_alive():
                    proc.kill()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
