"""The in-process multi-objective search: ``osep-nas search`` and :func:`run_search`.

Rounds of jobs: the strategy's ask/tell core (:class:`strategies.cores.CoreSettings`) proposes genotypes of a
:class:`~search_spaces.genotype_space.GenotypeSpace`; each trains at rung 0 of the proxy
protocol (:mod:`strategies.proxy`: validation accuracy, never the test split) and the best
1/eta of each rung is promoted to eta x longer training (:mod:`strategies.fidelity`). Jobs
of a round run on every core (:mod:`strategies.workers`) and are told in job order, so the
result does not depend on the number of workers. Objectives: validation accuracy (max) and
#Params of the TARGET network (min, :mod:`search_spaces.target`), counted before training,
so ``max_params`` refuses an architecture untrained.

Outputs in ``OUT`` (every file but the append-only log is written atomically):
``config.yaml``; ``state.json`` (the source of truth, saved after every job); ``trials.jsonl``
(one line per job: trial, job, rung, steps, status, accuracy, params, flops, proxy_params,
...); at the end the report of :mod:`strategies.report` and ``summary.json``. A search
killed at any moment and resumed re-runs only the jobs of the round in flight, with the same
seeds, and ends with the same front as an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from osep_nas.config import config_to_dict, config_to_yaml
from osep_nas.genotypes import Genotype, genotype_from_dict, genotype_to_dict
from osep_nas.io import append_jsonl, atomic_write_json, atomic_write_text
from osep_nas.outlock import hold_out_dir, out_entries

from .cores import CoreSettings
from .evolution import SearchExhausted, Trial, TrialLog
from .fidelity import final_records, promotions, rung_steps
from .pareto import as_objectives
from .proxy import (ProxySetup, Trainer, TrialContext, prepare_proxy, proxy_train, torch_env,  # noqa: F401
                    trial_seed)
from .search_config import (ProxySection, SearchConfig, SearchSection,  # noqa: F401
                            OutputSection, SpaceSection, TargetSection, check_search_config, load_search_config)
from .search_state import STATE_FORMAT, SearchState, check_out_dir, job_record, parse_genotype_text
from .workers import TrialRunner, default_workers

__all__ = [
    "SearchConfig", "SearchSection", "SpaceSection", "ProxySection", "TargetSection", "OutputSection",
    "load_search_config", "run_search", "SearchResult", "TrialContext", "proxy_train", "prepare_proxy",
    "torch_env", "trial_record", "trial_seed", "STATE_FORMAT", "FRONT_COLUMNS",
]

#: what each column of the printed front means (also in --help and docs/guide.md)
FRONT_COLUMNS = (
    ("id", "trial number (its lines in trials.jsonl); * marks the knee, the best trade-off"),
    ("rung", "highest fidelity reached: rung r trained proxy.steps * eta**r steps ('steps')"),
    ("val acc %", "top-1 of the proxy network on the validation part of the training split, at that rung"),
    ("#Params", "parameters of the TARGET network built from the genotype (the objective)"),
    ("FLOPs", "multiply-adds of one image through the target network"),
    ("proxy #Params", "parameters of the small proxy network that was trained (a diagnostic)"),
)


def trial_record(trial: Trial) -> Dict[str, Any]:
    """A record of a trial told to an evolution core (the NNI strategy and the nnictl tuner
    report these): status, origin, parent, metrics, reason, genotype as the DARTS repr."""
    rec: Dict[str, Any] = {"trial": trial.index, "status": trial.status, "origin": trial.origin,
                           "parent": trial.parent}
    for key, value in trial.record.items():
        rec.setdefault(key, value)
    rec["reason"] = trial.reason
    rec["genotype"] = repr(Genotype(*trial.candidate)) if trial.candidate is not None else None
    return rec


# ----------------------------------------------------------------------------- result

@dataclass
class SearchResult:
    """What :func:`run_search` returns. ``records``: every job's ``trials.jsonl`` record;
    ``final``: one record per trial (its highest rung); ``front``: the Pareto front of
    ``final``, ascending #Params; ``knee``: the knee record (None if no success).
    ``stop_reason``: trials | budget | exhausted | stopped (``stop_after``, as a kill)."""
    out_dir: Path
    records: List[Dict[str, Any]]
    final: List[Dict[str, Any]]
    front: List[Dict[str, Any]]
    knee: Optional[Dict[str, Any]]
    stop_reason: str
    n_ok: int
    n_failed: int
    n_refused: int
    wall_s: Optional[float]  # over all invocations of a resumed search (None: an earlier one's time unknown)
    workers: int = 1
    resumed_from: int = 0
    report: Any = None

    @property
    def knee_genotype(self) -> Optional[Genotype]:
        from osep_nas.genotypes import parse_genotype

        return parse_genotype(self.knee["genotype"]) if self.knee else None


# ----------------------------------------------------------------------------- progress

class _Progress:
    """A tqdm bar over jobs on a terminal; one printed line per job otherwise."""

    def __init__(self, total: int, done: int, enabled: Optional[bool]) -> None:
        self.enabled = True if enabled is None else bool(enabled)
        self.bar = None
        if self.enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc="search", unit="job", dynamic_ncols=True,
                            file=sys.stderr)

    def job(self, rec: Mapping[str, Any], n_front: int) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            if self.bar.n + 1 > self.bar.total:
                self.bar.total = self.bar.n + 1
            if rec["status"] == "ok":
                self.bar.set_postfix_str(f"#{rec['trial']} r{rec['rung']} val {rec['accuracy']:.1f}% "
                                         f"params {rec['params']:,} front {n_front}")
            self.bar.update(1)
            return
        head = f"[job {rec['job']:>3}] #{rec['trial']:<3} r{rec['rung']} {rec['steps']:>4} steps"
        if rec["status"] == "ok":
            how = rec["origin"] + ("" if rec["parent"] is None else f" of #{rec['parent']}")
            print(f"{head}  val acc {rec['accuracy']:6.2f}%  params {rec['params']:>10,}  proxy "
                  f"{rec['proxy_params']:>6,}  {rec.get('train_s') or 0:5.1f} s  {how}  front {n_front}", flush=True)
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


def _expected_jobs(s: SearchSection) -> int:
    total, n = 0, s.trials
    for _ in range(s.rungs):
        total += n
        n //= s.eta
    return total


# ----------------------------------------------------------------------------- the loop

def default_out_dir() -> Path:
    return Path("runs") / time.strftime("search-%Y%m%d-%H%M%S")


def _make_core(cfg: SearchConfig, setup: ProxySetup) -> TrialLog:
    s = cfg.search
    return CoreSettings.of(s.strategy, s.population_size, s.sample_size, s.seed, s.max_params).make(
        setup.space, s.objectives)


def _plan_round(st: SearchState, steps: List[int], exhausted: List[bool]) -> List[Dict[str, Any]]:
    """The next round: promotions first (highest rung first), then new candidates."""
    s = st.cfg.search
    objectives = as_objectives(s.objectives)
    by_trial = {r["trial"]: r for r in st.jobs if r["rung"] == 0}
    jobs: List[Dict[str, Any]] = []
    next_job = len(st.jobs)
    for trial, rung in promotions(st.jobs, objectives, s.rungs, s.eta)[: s.round_size]:
        base = by_trial[trial]
        jobs.append({"job": next_job + len(jobs), "trial": trial, "rung": rung, "steps": steps[rung],
                     "seed": trial_seed(s.seed, trial, rung), "origin": "promotion", "parent": trial,
                     "genotype": genotype_to_dict(parse_genotype_text(base["genotype"]))})
    n_new = len(by_trial)
    while len(jobs) < s.round_size and n_new < s.trials and not exhausted[0]:
        try:
            candidate = st.core.ask()
        except SearchExhausted:
            exhausted[0] = True
            break
        trial = len(st.core.history) + sum(1 for j in jobs if j["rung"] == 0)
        jobs.append({"job": next_job + len(jobs), "trial": trial, "rung": 0, "steps": steps[0],
                     "seed": trial_seed(s.seed, trial), **st.core.proposal(candidate),
                     "genotype": genotype_to_dict(candidate)})
        n_new += 1
    return jobs


def _tell_round(st: SearchState) -> None:
    """Tell the core the round's rung-0 results, in job order."""
    done = {r["job"]: r for r in st.jobs}
    for job in sorted(st.round, key=lambda j: j["job"]):
        if job["rung"] != 0:
            continue
        rec = done[job["job"]]
        metrics = None if rec["status"] != "ok" else {"accuracy": rec["accuracy"]}
        told = st.core.tell(genotype_from_dict(job["genotype"]), metrics, reason=rec["reason"])
        if told is not None and told.index != job["trial"]:
            raise RuntimeError(f"trial numbering out of step: job {job['job']} is trial {job['trial']}, "
                               f"the core told it as {told.index}")
    st.round = []


def run_search(config: Union[SearchConfig, Mapping[str, Any], str, Path, None] = None,
               out_dir: Union[str, Path, None] = None, resume: bool = False, progress: Optional[bool] = None, *,
               trainer: Optional[Trainer] = None, stop_after: Optional[int] = None,
               report: bool = True, print_report: bool = True) -> SearchResult:
    """Run (or resume) a search; see the module docstring.

    ``config``: a :class:`SearchConfig`, a mapping or a YAML path. ``out_dir``: default
    ``output.out`` or ``runs/search-<timestamp>``. ``progress``: per-job output (tqdm bar on a
    terminal, one line per job otherwise; ``None`` = on). ``trainer``: replaces
    :func:`~strategies.proxy.proxy_train` (one that cannot be pickled runs in this process).
    ``stop_after``: return after this many jobs of this invocation without writing the
    report, as if killed. ``report``: write the report files at the end; ``print_report``:
    print the summary line, the front table and the knee genotype.

    Bad input raises ValueError/FileNotFoundError before any file is written."""
    t0 = time.time()
    cfg = config if isinstance(config, SearchConfig) else load_search_config(config)
    check_search_config(cfg)
    if stop_after is not None and stop_after < 0:
        raise ValueError(f"stop_after must be >= 0, got {stop_after}")
    out = Path(out_dir if out_dir is not None else (cfg.output.out or default_out_dir())).expanduser()
    setup = prepare_proxy(cfg)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} exists and is not a folder")
    with hold_out_dir(out):  # one writer per OUT: a second search on it is refused while this one runs
        return _run_search(cfg, out, setup, resume, progress, trainer, stop_after, report, print_report, t0)


def _run_search(cfg: SearchConfig, out: Path, setup: ProxySetup, resume: bool, progress: Optional[bool],
                trainer: Optional[Trainer], stop_after: Optional[int], report: bool, print_report: bool,
                t0: float) -> SearchResult:
    core = _make_core(cfg, setup)
    st = SearchState(out, cfg, core, t0)
    state = check_out_dir(out, cfg, resume)
    if state is not None:
        st.load(state)
        for p in out_entries(out):  # temp files of writes a kill cut short (this process holds OUT)
            if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, out=str(out)))
    st.cfg = cfg
    atomic_write_text(out / "config.yaml", config_to_yaml(cfg))
    st.save()
    st.rewrite_log()  # after a kill the log may lack the last finished job; the state has it
    resumed_from = len(st.jobs)

    s = cfg.search
    workers = s.workers or default_workers()
    steps = rung_steps(cfg.proxy.steps, s.rungs, s.eta)
    objectives = as_objectives(s.objectives)
    budget_s = None if s.budget_minutes is None else 60.0 * s.budget_minutes
    bar = _Progress(_expected_jobs(s), min(resumed_from, _expected_jobs(s)), progress)
    n_val = int(setup.info["test_size"])
    if workers > 1 and trainer is not None and not _picklable(trainer):
        bar.note("the trainer cannot be sent to worker processes (a lambda or local function): trials run in "
                 "this process")
        workers = 1
    bar.note(f"search: {s.strategy}, {s.trials} trials, {workers} worker(s) x {cfg.proxy.threads} thread(s), "
             f"rungs {'/'.join(map(str, steps))} steps (top 1/{s.eta} promoted), objectives "
             f"{', '.join(s.objectives)} on target {setup.space.target.describe()}; scored on {n_val} validation "
             f"images held out of {setup.info['dataset']}'s training split (the test split is never read)")
    if resumed_from:
        bar.note(f"resuming {out}: {resumed_from} job(s) done")
    runner = TrialRunner(config_to_dict(cfg), setup, trainer or proxy_train, workers)
    stop_reason, ran, exhausted = "trials", 0, [False]
    try:
        with torch_env(cfg.proxy.threads, setup.device):
            while True:
                if not st.round:
                    if budget_s is not None and time.time() - t0 >= budget_s:
                        stop_reason = "budget"
                        bar.note(f"budget of {s.budget_minutes:g} min reached after {len(st.jobs)} job(s)")
                        break
                    st.round = _plan_round(st, steps, exhausted)
                    if not st.round:
                        stop_reason = "exhausted" if exhausted[0] else "trials"
                        if exhausted[0]:
                            bar.note("search space exhausted: no new candidate within the attempt limit")
                        break
                    st.save()  # the planned round survives a kill
                todo = [dict(j, genotype=genotype_from_dict(j["genotype"])) for j in st.round if not st.finished(j)]
                if stop_after is not None:
                    todo = todo[: max(0, stop_after - ran)]
                for job, metrics, reason in runner.run(todo):
                    plain = next(j for j in st.round if j["job"] == job["job"])
                    rec = job_record(plain, setup.space.cheap_metrics(job["genotype"]), metrics, reason)
                    st.jobs.append(rec)
                    st.save()
                    append_jsonl(out / "trials.jsonl", rec)
                    ran += 1
                    bar.job(rec, len(_front_ids(st.jobs, objectives)))
                if all(st.finished(j) for j in st.round):
                    _tell_round(st)
                    st.save()
                    st.rewrite_log()
                if stop_after is not None and ran >= stop_after:
                    stop_reason = "stopped"
                    break
    finally:
        runner.close()
        bar.close()

    from .report import pareto_of, write_report

    records = sorted(st.jobs, key=lambda r: r["job"])
    final = final_records(records)
    front, knee = pareto_of(final, s.objectives)
    result = SearchResult(out_dir=out, records=records, final=final, front=front, knee=knee,
                          stop_reason=stop_reason, n_ok=sum(r["status"] == "ok" for r in records),
                          n_failed=sum(r["status"] != "ok" for r in records), n_refused=core.n_rejected,
                          wall_s=st.wall_s(), workers=workers, resumed_from=resumed_from)
    if stop_reason == "stopped":
        return result
    if print_report:
        n_trials = len(final)
        print(f"search: {n_trials} trials ({sum(r['status'] == 'ok' for r in final)} ok) in {len(records)} jobs over "
              f"rungs {'/'.join(map(str, steps))} steps, {core.n_rejected} refused over max_params, {workers} "
              f"worker(s), {_seconds(result.wall_s)}, stopped by {stop_reason}; results in {out}")
    rep = write_report(out, final, s.objectives, plots=cfg.output.plots, print_table=print_report,
                       write_files=report, target=setup.space.target.describe(),
                       subtitle=_subtitle(cfg, setup, steps))
    result.report = rep
    result.front, result.knee = rep.front, rep.knee
    summary = {
        "out": str(out), "stop_reason": stop_reason, "trials": len(final), "jobs": len(records),
        "ok": result.n_ok, "failed": result.n_failed, "refused_over_max_params": core.n_rejected,
        "duplicates_skipped": core.n_duplicates, "workers": workers, "rung_steps": steps,
        "target": setup.space.target.describe(), "eval_split": "validation",
        "front": [r["trial"] for r in rep.front], "knee": rep.knee["trial"] if rep.knee else None,
        "knee_genotype": rep.knee["genotype"] if rep.knee else None,
        "objectives": list(s.objectives), "search_wall_s": result.wall_s,
        "session_wall_s": round(time.time() - t0, 3), "resumed_from": resumed_from,
    }
    if report:
        atomic_write_json(out / "summary.json", summary)
    return result


def _seconds(wall: Optional[float]) -> str:
    return "time of earlier runs not recorded" if wall is None else f"{wall:.1f} s"


def _picklable(obj: Any) -> bool:
    import pickle

    try:
        pickle.dumps(obj)
        return True
    except Exception:  # noqa: BLE001 - pickling fails in many ways (lambdas, closures, locks)
        return False


def _front_ids(records: List[Dict[str, Any]], objectives: Any) -> List[int]:
    from .report import pareto_of

    front, _ = pareto_of(final_records(records), objectives)
    return [r["trial"] for r in front]


def _subtitle(cfg: SearchConfig, setup: ProxySetup, steps: List[int]) -> str:
    p = cfg.proxy
    size = setup.space.input_size[-1]
    return (f"{cfg.search.strategy}, proxy NetworkCIFAR C={p.init_channels} layers={p.layers} on "
            f"{cfg.data.dataset} {size}x{size}, rungs {'/'.join(map(str, steps))} steps; validation accuracy")
