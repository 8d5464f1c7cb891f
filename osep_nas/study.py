"""Studies: a grid of training runs (cells or models x seeds) with one table and plots at the end.

A study file (``examples/studies/*.yaml``) names a training recipe, the seeds and the runs;
an optional ``search`` section first runs a search (a study stage that ``strategies`` plugs
in) whose front cells, and random cells of its space, join the runs. Every run is an
ordinary :func:`osep_nas.train.train` call in ``OUT/<run>/seed<k>/``: done runs are skipped
and killed ones resume. The file format and outputs are in docs/config.md.
"""
from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from osep_nas.config import ConfigError, _f, load_config, one_line, short_repr
from osep_nas.outlock import hold_out_dir
from osep_nas.plugins import load_plugin, plugin_table
from osep_nas.study_report import write_results

RUN_KEYS = {"model", "genotype", "group", "gamma", "set", "label"}
#: the entry-point group of study stages (setup.cfg); ``search`` runs the search section
STAGE_GROUP = "osep_nas.study_stages"


@dataclass
class StudySection:
    """What to train: a recipe, seeds and named runs."""
    name: str = _f("study", "study name (titles of the table and plots)")
    recipe: str = _f("../configs/resnet_cifar10.yaml", "training recipe, relative to the study file")
    seeds: List[int] = _f([0, 1], "seeds; every run is trained once per seed")
    epochs: Optional[int] = _f(None, "training.epochs of every run (unset: the recipe's)", check="positive")
    set: List[str] = _f([], "KEY=VALUE overrides of the recipe applied to every run")
    runs: Dict[str, Any] = _f({}, "run name -> {model: NAME | genotype: NAME|TEXT|FILE, group: LABEL, "
                                  "gamma: G, set: [KEY=VALUE, ...]} (all but model/genotype optional)")
    out: str = _f("runs/study", "output folder")


@dataclass
class StudySearch:
    """An optional search before the runs; its front's cells, and random cells of its space,
    are retrained with the study's recipe beside the study's own runs."""
    config: Optional[str] = _f(None, "search config, relative to the study file (unset: no search)")
    set: List[str] = _f([], "KEY=VALUE overrides of the search config (after the study's --data)")
    front: int = _f(5, "retrain up to this many members of the front, spread evenly along #Params",
                    check="nonneg", hi=64)
    random: int = _f(3, "also retrain this many uniformly random cells of the search's space", check="nonneg",
                     hi=64)
    random_seed: int = _f(0, "seed of the random cells", check="nonneg")


@dataclass
class StudyConfig:
    study: StudySection = field(default_factory=StudySection)
    search: StudySearch = field(default_factory=StudySearch)


@dataclass
class RunSpec:
    name: str
    model: Optional[str]
    gamma: Optional[float]
    overrides: List[str]
    genotype: Optional[str] = None
    group: str = ""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "run"  # never "." or ".."


def parse_runs(runs: Dict[str, Any], allow_empty: bool = False) -> List[RunSpec]:
    """Validate the ``study.runs`` mapping (one clear ConfigError per problem)."""
    if not runs and not allow_empty:
        raise ConfigError("study.runs: a study needs at least one run (or a search section)")
    specs = []
    slugs = set()
    for name, spec in runs.items():
        path = f"study.runs.{one_line(str(name))}"  # a run name is user text: one line in messages
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: expected a mapping with a 'model' key, got {short_repr(spec)}")
        unknown = set(spec) - RUN_KEYS
        if unknown:
            first = one_line(sorted(map(str, unknown))[0])
            raise ConfigError(f"{path}.{first}: unknown key; run keys are {', '.join(sorted(RUN_KEYS))}")
        model, genotype = spec.get("model"), spec.get("genotype")
        if genotype is None and not isinstance(model, str):
            raise ConfigError(f"{path}.model: expected a model name (or a genotype), got {short_repr(model)}")
        if genotype is not None and (not isinstance(genotype, str) or not genotype.strip()):
            raise ConfigError(f"{path}.genotype: expected a genotype name, text or file, got {short_repr(genotype)}")
        if genotype is not None and model not in (None, "darts"):
            raise ConfigError(f"{path}.model: a genotype builds a DARTS network; leave model unset")
        group = spec.get("group", "")
        if not isinstance(group, str):
            raise ConfigError(f"{path}.group: expected a label, got {short_repr(group)}")
        gamma = spec.get("gamma")
        if gamma is not None and (isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or gamma < 0):
            raise ConfigError(f"{path}.gamma: expected a number >= 0 (0 = depth-wise), got {short_repr(gamma)}")
        sets = spec.get("set", [])
        if not isinstance(sets, list) or not all(isinstance(s, str) and "=" in s for s in sets):
            raise ConfigError(f"{path}.set: expected a list of KEY=VALUE strings, got {short_repr(sets)}")
        slug = _slug(str(name))
        if slug in slugs:
            raise ConfigError(f"{path}: two runs map to the same folder name {slug!r}")
        slugs.add(slug)
        specs.append(RunSpec(str(name), None if genotype is not None else model,
                             None if gamma is None else float(gamma), list(sets), genotype, one_line(group)))
    return specs


def load_study(path: str | Path, overrides: Sequence[str] = ()) -> StudyConfig:
    """Read and validate a study file with the project's config loader."""
    cfg = load_config(path, list(overrides), schema=StudyConfig)
    parse_runs(cfg.study.runs, allow_empty=cfg.search.config is not None)
    if not cfg.study.seeds:
        raise ConfigError("study.seeds: at least one seed is needed")
    if any(s < 0 for s in cfg.study.seeds):
        raise ConfigError(f"study.seeds: seeds must be >= 0, got {cfg.study.seeds}")
    return cfg


def data_overrides(recipe: str | Path, data: Optional[str], dataset: Optional[str] = None) -> List[str]:
    """``--data digits|DIR`` (and ``--dataset`` where the folder's kind is ambiguous) as
    overrides of the recipe (:func:`osep_nas.data_arg.resolve_data`)."""
    from osep_nas.data_arg import resolve_data

    if data is None and dataset is None:
        return []
    configured = load_config(recipe).data.dataset
    return [f"data.{k}={json.dumps(v)}" for k, v in resolve_data(data, dataset, configured).items()]


def run_overrides(study: StudySection, run: RunSpec, seed: int, out: Path, data: Sequence[str] = ()) -> List[str]:
    """The recipe overrides of one run: study-wide ones, then the data's (:func:`data_overrides`),
    then the run's, then seed/out."""
    sets = [f"model.genotype={json.dumps(run.genotype)}"] if run.genotype is not None else [f"model.name={run.model}"]
    if run.gamma is not None and run.gamma > 0:
        sets.append(f"model.gamma={run.gamma}")
    if study.epochs is not None:
        sets.append(f"training.epochs={study.epochs}")
    if isinstance(data, (str, Path)):  # a data folder, as before the data vocabulary
        data = [f"data.root={json.dumps(str(data))}"]
    sets += list(data)
    sets += list(study.set) + list(run.overrides)
    sets += [f"training.seed={seed}", f"training.out={out}"]
    return sets


def run_study(path: str | Path, overrides: Sequence[str] = (), data: Optional[str] = None,
              out: Optional[str] = None, progress: Optional[bool] = None, log=print,
              dataset: Optional[str] = None, report_only: bool = False) -> Dict[str, Any]:
    """Run (or resume) the study's search, if any, then every run once per seed (seed-major,
    so a study cut short has whole seeds), writing the CSV, table and plots of the runs done
    so far after each one (titled "partial" until all are). ``data``: ``"digits"`` or a data
    folder for every run and the search (``dataset`` where its kind is ambiguous), as
    ``--data`` of the command line. ``report_only``: train nothing, only write the results of
    the runs finished so far (a study still running elsewhere, or cut short)."""
    path = Path(path)
    cfg = load_study(path, overrides)
    study = cfg.study
    recipe = (path.parent / study.recipe).resolve()
    if not recipe.exists():
        raise FileNotFoundError(f"study.recipe: recipe file not found: {recipe}")
    data_sets = data_overrides(recipe, data, dataset)
    out_dir = Path(out or study.out)
    stage = _search_stage(cfg.search)
    static = parse_runs(study.runs, allow_empty=stage is not None)
    if stage is not None and "search" in {_slug(r.name) for r in static}:
        raise ConfigError("study.runs.search: the search writes to OUT/search; give the run another name")
    _check_runs(study, static, recipe, out_dir, data_sets)  # every config valid before anything trains
    if stage is not None:
        stage(cfg.search, path.parent, out_dir / "search", data_sets, log=log, check_only=True)
    if report_only and not out_dir.is_dir():
        raise FileNotFoundError(f"{out_dir}: no study output to report on")
    # one writer per OUT (creates it); a second study on it is refused; a report only reads runs
    with (contextlib.nullcontext() if report_only else hold_out_dir(out_dir)):
        runs = list(static)
        search_done = (out_dir / "search" / "summary.json").is_file()
        if stage is not None and (search_done or not report_only):
            found = stage(cfg.search, path.parent, out_dir / "search", data_sets, log=log, read_only=report_only)
            taken = {_slug(r.name) for r in static} | {"search"}
            for r in found:
                if _slug(r["name"]) in taken:
                    raise ConfigError(f"study.runs.{one_line(r['name'])}: the name is taken by a cell of the search")
            runs += parse_runs({r["name"]: {"genotype": r["genotype"], "group": r["group"]} for r in found},
                               allow_empty=True)
        plans = _check_runs(study, runs, recipe, out_dir, data_sets)
        results: Dict[tuple, Dict[str, Any]] = {}
        eval_params: Dict[str, Any] = {}  # one 36x20 network per cell
        rows: List[Dict[str, Any]] = []
        for i, (run, seed, run_out, sets) in enumerate(plans, 1):
            row = _train_run(run, seed, run_out, sets, recipe, f"[{i}/{len(plans)}]", progress, log,
                             train_missing=not report_only)
            if row is None:
                continue
            results[run.name, seed] = row
            if run.name not in eval_params:
                eval_params[run.name] = _eval_params(run.genotype)
            rows = [{**results[r.name, k], "run": r.name, "group": r.group, "model": r.model or "darts",
                     "gamma": "" if r.gamma is None else r.gamma, "seed": k, "eval_params": eval_params[r.name]}
                    for r in runs for k in study.seeds if (r.name, k) in results]
            partial = "" if len(rows) == len(plans) else f" (partial: {len(rows)} of {len(plans)} runs)"
            write_results(rows, out_dir, study.name + partial)
        if not rows and report_only:
            raise FileNotFoundError(f"{out_dir}: no finished run to report yet")
        if not plans:  # nothing to train (a search that named no cells): an empty table
            write_results(rows, out_dir, study.name)
    return {"out": str(out_dir), "rows": rows}


def _check_runs(study: StudySection, runs: List[RunSpec], recipe: Path, out_dir: Path,
                data_sets: Sequence[str]) -> List[tuple]:
    """(run, seed, folder, overrides) of every run and seed, seed-major; each config loaded
    (a bad one raises before anything trains)."""
    plans = []
    for seed in study.seeds:
        for run in runs:
            run_out = out_dir / _slug(run.name) / f"seed{seed}"
            sets = run_overrides(study, run, seed, run_out, data_sets)
            load_config(recipe, sets)
            plans.append((run, seed, run_out, sets))
    return plans


def _train_run(run: RunSpec, seed: int, run_out: Path, sets: List[str], recipe: Path, tag: str,
               progress: Optional[bool], log, train_missing: bool = True) -> Optional[Dict[str, Any]]:
    """Train one run (or resume it, or read it back when done): its row's measured fields;
    None for a run not done when ``train_missing`` is off."""
    summary_path = run_out / "summary.json"
    summary = _read_summary(summary_path)
    if summary is None and not train_missing:
        return None
    if summary is None:
        from osep_nas.train import train  # heavy import, only when a study trains

        resume = (run_out / "last.pt").exists()
        log(f"{tag} {run.name} seed {seed}: {'resuming' if resume else 'training'} -> {run_out}")
        summary = train(load_config(recipe, sets + [f"training.resume={'true' if resume else 'false'}"]),
                        progress=progress)
    else:
        log(f"{tag} {run.name} seed {seed}: done earlier ({summary_path})")
    final = summary.get("final") or {}
    return {"params": summary.get("params"), "flops": summary.get("flops"), "epochs": summary.get("epochs_done"),
            "final_top1": final.get("test_top1"), "best_top1": summary.get("best_top1"),
            "wall_s": summary.get("wall_s")}


def _search_stage(section: StudySearch):
    """The ``search`` study stage (``strategies.study_stage``), or None without a search section."""
    if section.config is None:
        return None
    value = plugin_table(STAGE_GROUP).get("search")
    stage = load_plugin(value) if value else None
    if stage is None:
        raise ConfigError("search.config: a study with a search needs the strategies package "
                          "(install osep-nas with its search, e.g. pip install -e .)")
    return stage


def _eval_params(genotype: Optional[str]) -> Any:
    """#Params of the genotype's DARTS CIFAR-10 evaluation network (36 ch x 20 cells, auxiliary
    head excluded), the size the paper's tables compare; "" for runs without a genotype."""
    if genotype is None:
        return ""
    from osep_nas.complexity import count_params
    from osep_nas.models import create_model, resolve_genotype

    return count_params(create_model("darts_cifar", genotype=resolve_genotype(genotype), num_classes=10))


def _read_summary(path: Path) -> Optional[Dict[str, Any]]:
    from osep_nas.io import read_user_text

    if not path.exists():
        return None
    try:
        summary = json.loads(read_user_text(path, what="run summary"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and summary.get("completed") else None
