"""The search's output folder and resumable state: may OUT be used (and resumed), the
``state.json`` it keeps (validated on load), the job records of ``trials.jsonl``."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from osep_nas.config import config_to_dict, config_to_yaml
from osep_nas.genotypes import Genotype, genotype_from_dict
from osep_nas.io import atomic_write_json, atomic_write_text, read_user_text
from osep_nas.outlock import out_entries

from .evolution import TrialLog
from .search_config import RESUMABLE_CHANGES, SearchConfig

__all__ = ["STATE_FORMAT", "STATE_VERSION", "SearchState", "check_out_dir", "job_record", "parse_genotype_text"]

STATE_FORMAT = "osep-nas-search"
STATE_VERSION = 2
MAX_STATE_BYTES = 256 << 20  # a search of 100,000 jobs


def _comparable(cfg_dict: Any) -> Dict[str, Any]:
    """The config keys a resume must not change, flattened (``sec.key``); a malformed saved
    config flattens to something that simply differs."""
    flat: Dict[str, Any] = {}
    for sec, values in (cfg_dict.items() if isinstance(cfg_dict, Mapping) else []):
        if not isinstance(values, Mapping):
            flat[str(sec)] = values
            continue
        for key, value in values.items():
            if f"{sec}.{key}" not in RESUMABLE_CHANGES and sec != "output":
                flat[f"{sec}.{key}"] = value
    return json.loads(json.dumps(flat, default=str))


def _read_state(out: Path) -> Optional[Dict[str, Any]]:
    path = out / "state.json"
    if not path.is_file():
        return None
    try:
        state = json.loads(read_user_text(path, MAX_STATE_BYTES, "search state"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable search state ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: not an osep-nas search state")
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: search state version {str(state.get('version'))[:20]!r}, this osep-nas reads "
                         f"{STATE_VERSION}")
    return state


def _unstarted(out: Path, cfg: SearchConfig) -> bool:
    """OUT holds nothing but what this very search writes before its first state (its
    config.yaml, atomic-write temp files): a search killed that early starts over."""
    own = config_to_yaml(dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, out=str(out))))
    for p in out_entries(out):
        if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
            continue
        if p.name == "config.yaml" and p.is_file() and p.stat().st_size == len(own.encode()) and \
                read_user_text(p, 1 << 20, "search config") == own:
            continue
        return False
    return True


def check_out_dir(out: Path, cfg: SearchConfig, resume: bool) -> Optional[Dict[str, Any]]:
    """Decide whether OUT may be used; returns the saved state when resuming one."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} exists and is not a folder")
    busy = out.is_dir() and bool(out_entries(out))
    if not busy or (not (out / "state.json").exists() and _unstarted(out, cfg)):
        for p in (out_entries(out) if busy else []):
            p.unlink()
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


class SearchState:
    """The search's resumable state: the core, finished job records, the round in flight."""

    def __init__(self, out: Path, cfg: SearchConfig, core: TrialLog, t0: float) -> None:
        self.out, self.cfg, self.core = out, cfg, core
        self.jobs: List[Dict[str, Any]] = []   # finished job records, in finishing order
        self.round: List[Dict[str, Any]] = []  # planned jobs of the round in flight
        self.t0 = t0                           # when this invocation started
        self.wall_before: Optional[float] = 0.0  # seconds of earlier invocations (None: not recorded)

    def load(self, state: Mapping[str, Any]) -> None:
        try:
            self.core.load_state_dict(state["evolution"])
            jobs = [dict(r) for r in state["jobs"]]
            rnd = [dict(j) for j in state["round"]]
            for j in rnd:
                genotype_from_dict(j["genotype"])
                _ints(j, "job", "trial", "rung", "steps", "seed")
                j["origin"], j["parent"]  # noqa: B018 - presence
            for r in jobs:
                _ints(r, "job", "trial", "rung", "steps")
                if r["status"] not in ("ok", "failed"):
                    raise ValueError(f"job {r['job']}: status {str(r['status'])[:20]!r}")
                if r["status"] == "ok":
                    float(r["accuracy"]), _ints(r, "params", "flops")
                parse_genotype_text(r["genotype"])
                r["origin"], r["parent"], r["reason"]  # noqa: B018 - presence
            if len({r["job"] for r in jobs}) != len(jobs):
                raise ValueError("a job is recorded twice")
        except (KeyError, TypeError, IndexError, AttributeError, ValueError, OverflowError, RecursionError) as exc:
            detail = " ".join(str(exc).split())[:200] or type(exc).__name__
            if isinstance(exc, KeyError):
                detail = f"missing {detail}"
            raise ValueError(f"{self.out / 'state.json'}: malformed search state ({detail})") from None
        self.jobs, self.round = jobs, rnd
        wall = state.get("wall_s")  # absent in states written before it was kept
        self.wall_before = float(wall) if isinstance(wall, (int, float)) and 0 <= wall < float("inf") else None

    def wall_s(self) -> Optional[float]:
        """Wall-clock seconds of the search over all its invocations (None where an earlier
        one's time was not recorded), so a resumed search reports its whole time."""
        return None if self.wall_before is None else round(self.wall_before + time.time() - self.t0, 3)

    def save(self) -> None:
        atomic_write_json(self.out / "state.json", {
            "format": STATE_FORMAT, "version": STATE_VERSION, "config": config_to_dict(self.cfg),
            "evolution": self.core.state_dict(), "jobs": self.jobs, "round": self.round,
            "wall_s": self.wall_s(),
        })

    def rewrite_log(self) -> None:
        text = "".join(json.dumps(r) + "\n" for r in sorted(self.jobs, key=lambda r: r["job"]))
        atomic_write_text(self.out / "trials.jsonl", text)

    def n_started(self) -> int:
        return len(self.jobs) + sum(1 for j in self.round if not self.finished(j))

    def finished(self, job: Mapping[str, Any]) -> bool:
        return any(r["job"] == job["job"] for r in self.jobs)


def _ints(rec: Mapping[str, Any], *keys: str) -> None:
    """Each of ``keys`` holds an integer (bools and floats refused)."""
    for key in keys:
        value = rec[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} {str(value)[:20]!r} is not an integer")


def job_record(job: Mapping[str, Any], cheap: Mapping[str, Any], metrics: Optional[Mapping[str, Any]],
                reason: Optional[str]) -> Dict[str, Any]:
    rec: Dict[str, Any] = {"trial": job["trial"], "job": job["job"], "rung": job["rung"], "steps": job["steps"],
                           "status": "ok" if metrics is not None else "failed", "origin": job["origin"],
                           "parent": job["parent"]}
    m = dict(metrics or {})
    rec["accuracy"] = m.pop("accuracy", None)
    for key in ("params", "flops", "proxy_params", "proxy_flops"):
        rec[key] = cheap.get(key)
    rec["train_loss"] = m.pop("train_loss", None)
    rec["train_s"] = m.pop("train_s", None)
    for key, value in m.items():
        if key not in rec and key not in ("params", "flops"):
            rec[key] = value
    rec["reason"] = reason
    rec["genotype"] = repr(genotype_from_dict(job["genotype"]))
    return rec


def parse_genotype_text(text: str) -> Genotype:
    """A job record's genotype text -> Genotype (ValueError if malformed)."""
    from osep_nas.genotypes import parse_genotype

    return parse_genotype(text)
