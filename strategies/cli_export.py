"""``osep-nas export``: the report of an nnictl experiment or of an ``osep-nas search`` folder.

``--experiment`` is an nnictl experiment ID, its folder or sqlite file (NNI's database read
directly and read only, so it works without the NNI manager), or a search output folder.
Each trial becomes a ``trials.jsonl`` record and the report is the main job's
(:func:`strategies.report.write_report`).  How sources are found, the record fields and the
defaults are in docs/strategies.md.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from osep_nas.io import check_user_file, read_user_text

HELP = "write the Pareto report (table, pareto.yaml/png, knee cells) of an nnictl experiment or a search folder"
DESCRIPTION = (
    "Read the results of an nnictl experiment (its ID, its folder or its db/nni.sqlite; read directly, "
    "so a stopped experiment works) or of an osep-nas search output folder, and write the same report "
    "as osep-nas search: the Pareto front table (validation accuracy, #Params and FLOPs of the target "
    "network, proxy #Params), pareto.yaml, pareto.png, knee_genotype.yaml, knee_normal.png, "
    "knee_reduce.png and trials.jsonl into --out."
)

DB_RELATIVE = Path("db") / "nni.sqlite"
MAX_DB_BYTES = 8 << 30
MAX_MANIFEST_BYTES = 16 << 20  # nnictl's experiment list
#: NNI trial states that mean "this trial did not complete normally"
_BAD_STATES = {"FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED"}
_STATE_EVENTS = {"WAITING", "RUNNING", "SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED",
                 "UNKNOWN"}


@dataclass
class Source:
    """What ``--experiment`` designates: ``kind`` "nni" (``path`` = the sqlite file) or
    "search" (``path`` = the search folder); ``name`` names the default output folder."""
    kind: str
    path: Path
    name: str
    info: Dict[str, Any] = field(default_factory=dict)


def _nni_home() -> Path:
    try:
        from nni.tools.nnictl.constants import NNI_HOME_DIR

        return Path(NNI_HOME_DIR)
    except Exception:  # noqa: BLE001 - NNI's CLI modules missing or broken: its default
        return Path.home() / "nni-experiments"


def find_source(text: str) -> Source:
    """Resolve ``--experiment`` (see docs/strategies.md); FileNotFoundError when nothing matches."""
    p = Path(text).expanduser()
    if p.is_file():
        if p.name == "trials.jsonl":
            return Source("search", p.parent, p.parent.name)
        return Source("nni", p, p.parent.parent.name if p.parent.name == "db" else p.stem)
    if p.is_dir():
        if (p / DB_RELATIVE).is_file():
            return Source("nni", p / DB_RELATIVE, p.name)
        if (p / "trials.jsonl").is_file():
            return Source("search", p, p.name)
        raise FileNotFoundError(f"--experiment: {p} holds neither db/nni.sqlite (an nnictl experiment folder) "
                                f"nor trials.jsonl (an osep-nas search folder)")
    if "/" in text or "\\" in text or text.startswith("."):
        raise FileNotFoundError(f"--experiment: no such file or folder: {p}")
    home = _nni_home()
    candidates: List[Path] = []
    manifest = home / ".experiment"
    if manifest.is_file():
        try:
            entry = json.loads(read_user_text(manifest, MAX_MANIFEST_BYTES, "nnictl experiment list")).get(text)
        except (OSError, ValueError):
            entry = None
        if isinstance(entry, dict) and entry.get("logDir"):
            candidates.append(Path(str(entry["logDir"])).expanduser() / text)
    candidates.append(home / text)
    for folder in candidates:
        if (folder / DB_RELATIVE).is_file():
            return Source("nni", folder / DB_RELATIVE, text)
    raise FileNotFoundError(f"--experiment: no experiment {text!r} (looked for {DB_RELATIVE} in "
                            f"{', '.join(str(c) for c in candidates)}); pass the experiment folder instead")


def _decode(text: Any) -> Any:
    """NNI stores metrics JSON-encoded twice (the trial dumps the value, the manager dumps the string)."""
    value = text
    for _ in range(3):
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value)
        except ValueError:
            break
    return value


def read_experiment(db_path: Union[str, Path]) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """(trial records, experiment profile) of an nnictl experiment's sqlite database.

    Records are in trial sequence order; ``status`` is "ok" for a trial with a final metric
    and a genotype that did not fail, else NNI's state in lower case (with ``reason``)."""
    db_path = check_user_file(db_path, MAX_DB_BYTES, "NNI database")  # a regular file, never a device
    from osep_nas.genotypes import Genotype
    from search_spaces.hpo import params_to_genotype

    from .tuner import metric_record

    try:
        con = sqlite3.connect(f"file:{db_path.resolve()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ValueError(f"{db_path}: cannot open the sqlite database ({exc})") from None
    try:
        try:
            events = con.execute("SELECT timestamp, trialJobId, event, data, sequenceId FROM TrialJobEvent "
                                 "ORDER BY timestamp, rowid").fetchall()
            metrics = con.execute("SELECT timestamp, trialJobId, parameterId, type, data FROM MetricData "
                                  "ORDER BY timestamp, rowid").fetchall()
            profile_row = con.execute("SELECT params FROM ExperimentProfile ORDER BY revision DESC LIMIT 1").fetchone()
        except sqlite3.Error as exc:
            raise ValueError(f"{db_path}: not an NNI experiment database ({exc})") from None
    finally:
        con.close()
    profile = _decode(profile_row[0]) if profile_row else {}
    profile = profile if isinstance(profile, dict) else {}

    trials: Dict[str, Dict[str, Any]] = {}
    for ts, job, event, data, seq in events:
        if not job or event not in _STATE_EVENTS and not data:
            continue
        t = trials.setdefault(job, {"job": job, "seq": None, "state": None, "params": None, "first": ts})
        if seq is not None:
            t["seq"] = int(seq)
        if event in _STATE_EVENTS:
            t["state"] = event
        hp = _decode(data) if data else None
        if isinstance(hp, dict) and isinstance(hp.get("parameters"), dict):
            t["params"] = hp["parameters"]
    finals: Dict[str, Any] = {}
    for _, job, _, kind, data in metrics:
        if kind == "FINAL" and job:
            finals[job] = _decode(data)

    order = sorted(trials.values(), key=lambda t: (t["seq"] if t["seq"] is not None else 10 ** 9, t["first"]))
    records: List[Dict[str, Any]] = []
    for n, t in enumerate(order):
        rec: Dict[str, Any] = {"trial": t["seq"] if t["seq"] is not None else n, "trial_id": t["job"],
                               "status": "ok", "nni_status": t["state"]}
        reason = None
        try:
            rec["genotype"] = repr(Genotype(*params_to_genotype(t["params"] or {})))
        except ValueError as exc:
            rec["genotype"] = None
            reason = f"parameters are not an osep cell genotype: {exc}"
        if t["job"] in finals:
            try:
                rec.update(metric_record(finals[t["job"]], "accuracy"))
            except ValueError as exc:
                reason = reason or str(exc)
        else:
            reason = reason or "no final metric"
        if t["state"] in _BAD_STATES:
            reason = reason or f"trial {t['state']}"
        if reason is not None:
            state = t["state"] or "UNKNOWN"
            in_flight = state in ("WAITING", "RUNNING") and t["job"] not in finals
            rec["status"] = state.lower() if state in _BAD_STATES or in_flight else "failed"
            rec["reason"] = reason
        records.append(rec)
    return records, profile


def _tuner_class_args(profile: Dict[str, Any]) -> Dict[str, Any]:
    tuner = profile.get("tuner") or profile.get("advisor") or {}
    args = tuner.get("classArgs") if isinstance(tuner, dict) else None
    return dict(args) if isinstance(args, dict) else {}


def _fill_cheap(records: List[Dict[str, Any]], profile: Dict[str, Any], target: Optional[str] = None) -> None:
    """Count ``params``/``flops`` of ok records that lack them, on the tuner's target network."""
    todo = [r for r in records if r["status"] == "ok" and ("params" not in r or "flops" not in r)]
    if not todo:
        return
    from .tuner import ParetoTuner, counting_threads

    from osep_nas.genotypes import parse_genotype

    known = {"init_channels", "layers", "image_size", "num_classes", "target"}
    args = {k: v for k, v in _tuner_class_args(profile).items() if k in known}
    if target is not None:
        args["target"] = target
    tuner = ParetoTuner(**args)
    space = profile.get("searchSpace")
    if not isinstance(space, dict):
        from search_spaces.hpo import to_nni_search_space

        space = to_nni_search_space("osep")
    tuner.update_search_space(space)
    assert tuner.space is not None
    with counting_threads():
        for rec in todo:
            cheap = tuner.space.cheap_metrics(parse_genotype(rec["genotype"]))
            for key, value in cheap.items():
                rec.setdefault(key, value)


def _search_objectives(folder: Path) -> Optional[List[str]]:
    from osep_nas.config import ConfigError, strict_yaml_load

    for name in ("summary.json", "config.yaml"):
        p = folder / name
        if not p.is_file():
            continue
        try:
            doc = strict_yaml_load(read_user_text(p, what="search file"), str(p))  # refuses alias bombs
        except (OSError, UnicodeDecodeError, RecursionError):
            continue
        except ConfigError as exc:
            if "not valid YAML" in str(exc):
                continue
            raise
        if not isinstance(doc, dict):
            continue
        objs = doc.get("objectives") or (doc.get("search") or {}).get("objectives")
        if isinstance(objs, list) and objs:
            return [str(o) for o in objs]
    return None


def export(experiment: str, out: Union[str, Path, None] = None, objectives: Optional[Sequence[str]] = None,
           plots: bool = True, target: Optional[str] = None, print_table: bool = True) -> Any:
    """Write the report of ``experiment`` (see docs/strategies.md) into ``out`` (default
    ``runs/export-<name>``); returns :class:`strategies.report.Report`."""
    from osep_nas.io import atomic_write_text

    from .fidelity import final_records
    from .report import DEFAULT_OBJECTIVES, load_trials, write_report

    src = find_source(experiment)
    if src.kind == "nni":
        records, profile = read_experiment(src.path)
        _fill_cheap(records, profile, target)
        target_text = _target_text(target if target is not None else _tuner_class_args(profile).get("target"))
        objs = list(objectives or _tuner_class_args(profile).get("objectives") or DEFAULT_OBJECTIVES)
        subtitle = (f"nnictl experiment {src.name}"
                    f"{' (' + str(profile.get('experimentName')) + ')' if profile.get('experimentName') else ''}")
    else:
        records = load_trials(src.path)
        if records and all("rung" in r and "job" in r for r in records):
            records = final_records(records)
        target_text = _search_target(src.path)
        objs = list(objectives or _search_objectives(src.path) or DEFAULT_OBJECTIVES)
        subtitle = f"osep-nas search {src.path}"
    out_dir = Path(out) if out is not None else Path("runs") / f"export-{src.name}"
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out: {out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "trials.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    ok = sum(r.get("status") == "ok" for r in records)
    if print_table:
        print(f"export: {len(records)} trial(s) ({ok} ok) from {src.kind} {src.path} -> {out_dir}")
    return write_report(out_dir, records, objs, plots=plots, print_table=print_table, target=target_text,
                        subtitle=subtitle)


def _target_text(target: Any) -> Optional[str]:
    from search_spaces.target import resolve_target

    try:
        return resolve_target(target).describe()
    except (TypeError, ValueError):
        return None


def _search_target(folder: Path) -> Optional[str]:
    p = folder / "summary.json"
    if p.is_file():
        try:
            doc = json.loads(read_user_text(p, what="search summary"))
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        if isinstance(doc, dict) and isinstance(doc.get("target"), str):
            return doc["target"][:200]
    return None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", required=True, metavar="ID|DIR",
                   help="nnictl experiment ID, experiment folder (<workdir>/<ID>), its db/nni.sqlite, or an "
                        "osep-nas search output folder")
    p.add_argument("--out", metavar="DIR", help="output folder (default: runs/export-<ID or folder name>)")
    p.add_argument("--objectives", metavar="NAME:DIR[,...]",
                   help="e.g. accuracy:max,params:min (default: the tuner's or the search's, else that)")
    p.add_argument("--target", metavar="cifar10|imagenet|MODEL",
                   help="target network on which to count #Params/FLOPs of trials that did not report them "
                        "(default: the tuner's classArgs target, else cifar10)")
    p.add_argument("--no-plots", action="store_true", help="skip pareto.png and the knee's cell plots")


def run(args: argparse.Namespace) -> int:
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()] if args.objectives else None
    if args.target is not None:
        from search_spaces.target import resolve_target

        resolve_target(args.target)  # a bad name: one line, before anything is read
    export(args.experiment, args.out, objectives, plots=not args.no_plots, target=args.target)
    return 0
