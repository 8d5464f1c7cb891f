"""Shared timing helpers of the benchmarks: warm-up excluded, median of repeats, JSON out.

Timings in one run are interleaved (every case once per round) so that a change in
machine load hits all cases alike; ratios are computed within the run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install


def common_args(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--amp", action="store_true", help="CUDA: autocast to float16")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--malloc", choices=("keep", "default"), default="keep",
                   help="keep: glibc malloc keeps freed memory, as osep-nas training does (osep_nas.allocator); "
                        "default: malloc as the process started")
    return p


def setup(args: argparse.Namespace) -> torch.device:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    if args.malloc == "keep":
        from osep_nas.allocator import keep_freed_memory

        keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    return torch.device(args.device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_cases(cases: Dict[str, Callable[[], None]], device: torch.device, repeats: int, warmup: int
               ) -> Dict[str, float]:
    """Median seconds per call of every case, rounds interleaved."""
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    sync(device)
    samples: Dict[str, List[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            samples[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def code_paths() -> str:
    """Which instruction sets the CPU code runs with (benchmarks/cpu_isa.sh restricts them)."""
    from osep_nas import allocator, kernels

    return (f"torch kernels {torch.backends.cpu.get_cpu_capability()}, oneDNN "
            f"{os.environ.get('ONEDNN_MAX_CPU_ISA', 'all')}, MKL {os.environ.get('MKL_ENABLE_INSTRUCTIONS', 'all')}, "
            f"osep kernel -march={kernels.native_arch()}; {allocator.describe()}")


def machine(device: torch.device) -> Dict[str, object]:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "platform": platform.platform(), "device": str(device),
            "code_paths": code_paths()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        info["load_avg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    return info


def write_json(path: str, payload: Dict[str, object]) -> None:
    from osep_nas.io import atomic_write_json

    atomic_write_json(path, payload)
    print(f"wrote {path}")
