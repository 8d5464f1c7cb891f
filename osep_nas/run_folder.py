"""A training run's output folder: may it be written, and its metrics logs on resume."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, List, Mapping

from osep_nas.io import atomic_write_text, read_user_bytes

__all__ = ["check_out_dir", "read_metrics", "trim_metrics", "config_diff", "MAX_METRICS_BYTES"]


def check_out_dir(out: Path, resume: bool) -> None:
    """Refuse an OUT we cannot or should not write, without creating anything."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"training.out: {out} exists and is not a folder")
    if out.exists():
        if not os.access(out, os.W_OK | os.X_OK):
            raise ValueError(f"training.out: output folder not writable: {out}")
        # a run is resumable only once its first last.pt is written; a folder killed before
        # that (config.yaml, a metrics line, no checkpoint) is started over
        if not resume and (out / "last.pt").exists():
            raise ValueError(f"training.out: {out} already holds a training run; pass --resume to continue it "
                             f"or choose another --out")
        return
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"training.out: {parent} is not a folder, cannot create {out}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"training.out: cannot create {out}: {parent} is not writable")


#: the largest metrics.jsonl a resumed run reads back (one ~300-byte line per epoch)
MAX_METRICS_BYTES = 64 << 20


def read_metrics(path: Path) -> str:
    """metrics.jsonl through the bounded reader (torn bytes replaced, not fatal)."""
    return read_user_bytes(path, MAX_METRICS_BYTES, "metrics log").decode("utf-8", errors="replace")


def trim_metrics(path: Path, epochs_done: int) -> None:
    """Keep the metrics lines of the epochs a checkpoint holds (drop later and torn lines)."""
    if not path.exists():
        return
    kept = []
    for line in read_metrics(path).splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("epoch"), int) and rec["epoch"] <= epochs_done:
            kept.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in kept))


def config_diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> List[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict) and k != "extra":
            keys += config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys
