"""The multi-objective search as an NNI 3.0 multi-trial ``Strategy``.

:class:`ParetoEvolution` wraps the ask/tell core of ``search.strategy``
(:class:`strategies.cores.CoreSettings`) so that ``NasExperiment(OSepDartsSpace(...),
evaluator, ParetoEvolution(max_params=2e5))`` explores a DARTS cell space for accuracy and
#Params at once; architectures over ``max_params`` are never submitted, and
``export_top_models`` yields members of the Pareto front.  Usage and rules:
docs/strategies.md.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Dict, Hashable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from search_spaces._nni import nas_nn  # noqa: F401  (NNI's import-time warnings on recent torch, silenced)
from nni.mutable import Categorical, CategoricalMultiple, MutableAnnotation
from nni.nas.execution import ExecutionEngine
from nni.nas.execution.event import FinalMetricEvent, ModelEventType, TrainingEndEvent
from nni.nas.space import ExecutableModelSpace, ModelStatus
from nni.nas.strategy.base import Strategy, StrategyStatus
from torch import nn

from osep_nas.genotypes import Genotype, genotype_to_arch
from osep_nas.genotypes.arch_labels import ARCH_LABEL

from .cores import CoreSettings
from .evolution import SearchExhausted, Trial, TrialLog
from search_spaces.genotype_space import GenotypeSpace
from search_spaces.target import Target, resolve_target
from .pareto import Objective, as_objectives
from .tuner import DEFAULT_OBJECTIVES, counting_threads, metric_record

__all__ = ["ParetoEvolution", "ModelSpaceGenotypes", "proxy_evaluator", "metric_record", "counting_threads",
           "DEFAULT_OBJECTIVES"]

_logger = logging.getLogger(__name__)



def cell_choices(mutables: Mapping[str, Any]) -> Tuple[List[str], int]:
    """(op candidates, num_nodes) of a simplified DARTS cell space; ValueError otherwise."""
    ops: Optional[List[str]] = None
    nodes = 0
    for label, mutable in mutables.items():
        if isinstance(mutable, MutableAnnotation):
            continue
        m = ARCH_LABEL.match(str(label))
        if m is None:
            raise ValueError(f"ParetoEvolution explores DARTS cell spaces (labels like 'normal/op_2_0'); "
                             f"this space has the choice {label!r}")
        if m.group(2) == "op":
            if not isinstance(mutable, Categorical):
                raise ValueError(f"choice {label!r} is not a categorical op choice")
            values = [str(v) for v in mutable.values]
            if ops is None:
                ops = values
            elif values != ops:
                raise ValueError(f"op choice {label!r} has candidates {values}, others have {ops}; "
                                 f"every edge must offer the same ops")
        elif not isinstance(mutable, (Categorical, CategoricalMultiple)):
            raise ValueError(f"choice {label!r} is not an input choice")
        nodes = max(nodes, int(m.group(3)) - 1)
    if ops is None or nodes < 1:
        raise ValueError("the model space has no DARTS cell choices ('normal/op_2_0', ...)")
    return ops, nodes


class ModelSpaceGenotypes(GenotypeSpace):
    """The evolution's space adapter over an NNI executable DARTS cell space.

    Candidates are genotypes (what ``osep-nas search`` evolves); ops and ``num_nodes`` come
    from the space's choices (``none`` left out unless ``exclude_none=False``), every edge
    picks its input freely as the NNI space does. :meth:`cheap_metrics` counts ``params`` and
    ``flops`` on the ``target`` network (:mod:`search_spaces.target`, default the 36-channel
    20-cell CIFAR-10 network) and ``proxy_params``/``proxy_flops`` on :meth:`build`, the
    network a trial gets (``space.freeze(arch).executable_model()``). ``input_size`` (C, H, W)
    for the proxy's FLOPs defaults to the network's ``in_channels`` and ``input_size``
    attributes (:class:`~search_spaces.darts_space.OSepDartsNet` has them)."""

    def __init__(self, model_space: ExecutableModelSpace, exclude_none: bool = True,
                 input_size: Optional[Tuple[int, int, int]] = None, target: Any = None) -> None:
        ops, num_nodes = cell_choices(model_space.simplify())
        super().__init__(ops, num_nodes, exclude_none=exclude_none, distinct_inputs=False,
                         input_size=input_size or (3, 32, 32), target=target)
        self.model_space = model_space
        self._input_size_given = input_size is not None

    def arch(self, candidate: Genotype) -> Dict[str, Any]:
        """The NNI arch dict (sample) of a candidate."""
        return genotype_to_arch(candidate)

    def freeze(self, candidate: Genotype) -> ExecutableModelSpace:
        """The frozen executable model NNI trains for ``candidate``."""
        return self.model_space.freeze(self.arch(candidate))

    def build(self, candidate: Genotype) -> nn.Module:
        net = self.freeze(candidate).executable_model()
        if not isinstance(net, nn.Module):
            raise ValueError(f"the frozen model is a {type(net).__name__}, not a torch module: cannot count it")
        if not self._input_size_given and hasattr(net, "input_size"):
            self.input_size = (int(getattr(net, "in_channels", 3)), int(net.input_size), int(net.input_size))
        return net


class ParetoEvolution(Strategy):
    """NNI 3.0 strategy: multi-objective search (see docs/strategies.md).

    Args:
        strategy: as ``search.strategy`` of ``osep-nas search`` (evolution | random | nsga2 |
            motpe; default: its default), the same core (:class:`strategies.cores.CoreSettings`).
        population_size, sample_size, seed, max_params: as in
            :class:`~strategies.evolution.ParetoEvolutionCore` (defaults: those of ``osep-nas
            search``; ``max_params`` bounds the #Params of the target network, counted before
            training).
        target: the network ``params``/``flops`` are counted on (a preset ``cifar10`` |
            ``imagenet``, a mapping of the search config's ``target`` keys, or a
            :class:`~search_spaces.target.Target`); a trial's own ``params`` report does not
            replace it (it is the trained network's, kept as ``proxy_params``).
        objectives: e.g. ``["accuracy:max", "params:min"]``; names are trial metrics (the
            default metric is called ``metric_name``) or cheap metrics (``params``, ``flops``).
        metric_name: name given to the trial's float metric / the dict's ``"default"``.
        exclude_none: never propose the ``none`` op (DARTS' derivation never keeps it).
        input_size: (C, H, W) for the FLOPs count (default: read from the frozen network).
        max_attempts: duplicate/over-budget draws tolerated per proposal (then the search stops).
    """

    def __init__(self, *, population_size: Optional[int] = None, sample_size: Optional[int] = None,
                 seed: Optional[int] = None, max_params: Optional[float] = None,
                 objectives: Union[Sequence[Any], Mapping[str, str]] = DEFAULT_OBJECTIVES,
                 metric_name: str = "accuracy", exclude_none: bool = True,
                 input_size: Optional[Tuple[int, int, int]] = None, max_attempts: int = 500,
                 target: Any = None, strategy: Optional[str] = None) -> None:
        super().__init__()
        self.settings = CoreSettings.of(strategy, population_size, sample_size, seed, max_params)
        self.strategy, self.population_size = self.settings.strategy, self.settings.population_size
        self.sample_size, self.seed = self.settings.sample_size, self.settings.seed
        self.target = resolve_target(target) if not isinstance(target, Target) else target
        self.objectives: List[Objective] = as_objectives(objectives)
        if not isinstance(metric_name, str) or not metric_name:
            raise ValueError(f"metric_name must be a non-empty string, got {metric_name!r}")
        self.max_params = max_params
        self.metric_name = metric_name
        self.exclude_none = bool(exclude_none)
        self.input_size = input_size
        self.max_attempts = max_attempts

        self.adapter: Optional[ModelSpaceGenotypes] = None
        self.core: Optional[TrialLog] = None
        self._lock = threading.RLock()
        self._running: Dict[int, Tuple[ExecutableModelSpace, Genotype]] = {}
        self._raw_metrics: Dict[int, Any] = {}
        self._models: Dict[Hashable, ExecutableModelSpace] = {}
        self.stop_reason: Optional[str] = None

    def extra_repr(self) -> str:
        return (f"strategy={self.strategy}, population_size={self.population_size}, sample_size={self.sample_size}, seed={self.seed}, "
                f"max_params={self.max_params}, objectives={[f'{o.name}:{o.direction}' for o in self.objectives]}")

    # ------------------------------------------------------------------ NNI life cycle
    def _initialize(self, model_space: ExecutableModelSpace, engine: ExecutionEngine) -> ExecutableModelSpace:
        self.adapter = ModelSpaceGenotypes(model_space, self.exclude_none, self.input_size, target=self.target)
        self.core = self.settings.make(self.adapter, self.objectives, self.max_attempts)
        engine.register_model_event_callback(ModelEventType.FinalMetric, self._on_final_metric)
        engine.register_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)
        return model_space

    def _cleanup(self) -> None:
        self.engine.unregister_model_event_callback(ModelEventType.FinalMetric, self._on_final_metric)
        self.engine.unregister_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)

    def _run(self) -> None:
        core, adapter = self._require()
        redo = list(core.pending)  # proposals in flight when a checkpoint was taken
        if redo:
            _logger.info("Re-submitting %d proposal(s) pending in the loaded state.", len(redo))
        self.stop_reason = "budget"
        while self.wait_for_resource():
            with self._lock:
                if redo:
                    candidate = redo.pop(0)
                else:
                    try:
                        with counting_threads():
                            candidate = core.ask()
                    except SearchExhausted as exc:
                        _logger.warning("ParetoEvolution stops: %s", exc)
                        self.stop_reason = "exhausted"
                        break
                try:
                    model = adapter.freeze(candidate)
                except Exception as exc:  # noqa: BLE001 - a bad proposal must not end the search
                    core.tell(candidate, None, reason=f"freeze failed: {type(exc).__name__}: {exc}")
                    continue
                self._running[id(model)] = (model, candidate)
                self._models[adapter.key(candidate)] = model
            with counting_threads():
                cheap = adapter.cheap_metrics(candidate)
            _logger.info("[ParetoEvolution] submit #%d (%s params, %s FLOPs): %s", core.n_asked,
                         f"{cheap['params']:,}", f"{cheap['flops']:,}", candidate)
            self.engine.submit_models(model)
        self.engine.wait_models()

    def _require(self) -> Tuple[TrialLog, ModelSpaceGenotypes]:
        if self.core is None or self.adapter is None:
            raise RuntimeError("ParetoEvolution is not initialized (use it in a NasExperiment)")
        return self.core, self.adapter

    # ------------------------------------------------------------------ engine events
    def _on_final_metric(self, event: FinalMetricEvent) -> None:
        # the raw metric (NNI keeps only the dict's "default" in model.metrics)
        with self._lock:
            if id(event.model) in self._running:
                self._raw_metrics[id(event.model)] = event.metric

    def _on_training_end(self, event: TrainingEndEvent) -> None:
        with self._lock:
            entry = self._running.pop(id(event.model), None)
            if entry is None:
                return
            raw = self._raw_metrics.pop(id(event.model), None)
            _, candidate = entry
            core = self.core
            assert core is not None
            if event.status != ModelStatus.Trained:
                core.tell(candidate, None, reason=f"trial {getattr(event.status, 'value', event.status)}")
                return
            if raw is None:
                core.tell(candidate, None, reason="the trial reported no final metric")
                return
            try:
                trial = core.tell(candidate, metric_record(raw, self.metric_name))
            except ValueError as exc:
                trial = core.tell(candidate, None, reason=str(exc))
            if trial is not None and trial.ok:
                rec = trial.record
                _logger.info("[ParetoEvolution] trial %d: %s", trial.index,
                             ", ".join(f"{o.name}={rec[o.name]}" for o in self.objectives))

    # ------------------------------------------------------------------ results
    def records(self) -> List[Dict[str, Any]]:
        """Every told trial as a ``trials.jsonl`` record (see ``strategies.search.trial_record``)
        with its NNI ``arch`` dict."""
        from .search import trial_record

        core, adapter = self._require()
        with self._lock:
            return [{**trial_record(t), "arch": adapter.arch(t.candidate)} for t in core.history]

    def front(self) -> List[Dict[str, Any]]:
        """Records of the Pareto front (non-dominated successful trials), in telling order."""
        from .search import trial_record

        core, adapter = self._require()
        with self._lock:
            return [{**trial_record(t), "arch": adapter.arch(t.candidate)} for t in core.front()]

    def front_trials(self) -> List[Trial]:
        """The core's :class:`~strategies.evolution.Trial` objects of the front."""
        core, _ = self._require()
        with self._lock:
            return core.front()

    def list_models(self, sort: bool = True, limit: Optional[int] = None) -> Iterator[ExecutableModelSpace]:
        """``sort=True`` (what ``export_top_models`` uses): the Pareto front's models, best first
        objective first (ties: the next objectives); ``sort=False``: every model the engine ran."""
        if self._status in (StrategyStatus.INITIALIZED, StrategyStatus.EMPTY):
            raise RuntimeError("Strategy has not been run.")
        if not sort:
            yield from super().list_models(sort=False, limit=limit)
            return
        core, adapter = self._require()
        with self._lock:
            front = core.front()
            front.sort(key=lambda t: tuple(o.sign * float(t.record[o.name]) for o in self.objectives) + (t.index,))
            models = []
            for t in front[:limit]:
                key = adapter.key(t.candidate)
                model = self._models.get(key)
                if model is None:  # resumed from a state: rebuild it, with its metric
                    model = adapter.freeze(t.candidate)
                    model.metrics.final = float(t.record[self.metric_name]) if self.metric_name in t.record else None
                    model.status = ModelStatus.Trained
                    self._models[key] = model
                models.append(model)
        yield from models

    def write_report(self, out_dir: Union[str, Path], **kwargs: Any) -> Any:
        """The ``osep-nas search`` report of the trials so far (``strategies.report.write_report``:
        front table, pareto.yaml, pareto.png, knee cell plots) into ``out_dir``."""
        from .report import write_report

        kwargs.setdefault("subtitle", f"NNI ParetoEvolution ({self.strategy}), {len(self.records())} trial(s)")
        kwargs.setdefault("target", self.target.describe())
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        return write_report(out_dir, self.records(), [f"{o.name}:{o.direction}" for o in self.objectives],
                            **kwargs)

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        """The core's JSON state (history, population, pending, random state)."""
        if self.core is None:
            return {}
        with self._lock:
            return {"pareto_evolution": self.core.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore :meth:`state_dict` (after ``initialize``); pending proposals are re-submitted."""
        core, _ = self._require()
        if state_dict and "pareto_evolution" in state_dict:
            with self._lock:
                core.load_state_dict(state_dict["pareto_evolution"])



# ---------------------------------------------------------------------------------- the trial protocol for NNI
_SETUPS: Dict[str, Any] = {}


def proxy_evaluator(config: Any = None, overrides: Optional[Sequence[str]] = None) -> Any:
    """An NNI ``FunctionalEvaluator`` running the trial protocol of ``osep-nas search``
    (:func:`strategies.proxy.proxy_train` on the model NNI froze: ``proxy.steps`` SGD steps on
    the training part of the proxy data, top-1 on the validation part; the test split is never
    read). ``config``: a search config (mapping or YAML path) whose ``proxy`` section must match
    the model space's input size and classes. Reports ``{"default": accuracy, "train_loss"}``."""
    from nni.nas.evaluator import FunctionalEvaluator

    from osep_nas.config import config_to_dict

    from .search_config import load_search_config

    cfg = load_search_config(config, overrides)
    return FunctionalEvaluator(_proxy_trial, config=config_to_dict(cfg))


def _proxy_trial(model: nn.Module, config: Mapping[str, Any]) -> None:
    import hashlib
    import json

    import nni

    from .proxy import TrialContext, prepare_proxy, proxy_train, torch_env, trial_seed
    from .search_config import load_search_config

    key = json.dumps(config, sort_keys=True)
    if key not in _SETUPS:
        _SETUPS[key] = prepare_proxy(load_search_config(dict(config)))
    setup = _SETUPS[key]
    cfg = setup.cfg
    genotype = getattr(model, "genotype", None)
    ident = int(hashlib.sha256(repr(genotype).encode()).hexdigest()[:12], 16)  # same cell, same seed
    ctx = TrialContext(0, trial_seed(cfg.search.seed, ident), setup.space, cfg, setup.train_loader,
                       setup.val_loader, setup.device)
    with torch_env(cfg.proxy.threads, setup.device):
        result = proxy_train(genotype, ctx, net=model)
    nni.report_final_result({"default": result["accuracy"], "train_loss": result["train_loss"]})
