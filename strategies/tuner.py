"""The multi-objective search as an nnictl tuner: :class:`ParetoTuner`.

The same strategies as ``osep-nas search`` (classArg ``strategy``: evolution | random |
nsga2 | motpe) over the HPO-format space that ``osep-nas space`` writes, with the
``max_params`` budget checked before a trial is launched.  Trials report
``{"default": accuracy, "params": n, "flops": f}``; the tuner keeps its state in NNI's
checkpoint folder, so ``nnictl resume`` continues.  Registration and classArgs:
docs/strategies.md.
"""
from __future__ import annotations

import contextlib
import json
import logging
import numbers
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import nni
from nni.tuner import Tuner
from nni.utils import ClassArgsValidator

if TYPE_CHECKING:  # heavy modules are imported lazily: NNI's manager gives the tuner process
    # 10 seconds to connect, and torch/NNI-NAS imports alone can take that on a busy machine
    from osep_nas.genotypes import Genotype

    from .evolution import TrialLog
    from search_spaces.genotype_space import GenotypeSpace

__all__ = ["ParetoTuner", "ParetoTunerClassArgsValidator", "space_ops", "metric_record", "counting_threads",
           "DEFAULT_OBJECTIVES", "STATE_FILE"]

_logger = logging.getLogger(__name__)

STATE_FILE = "pareto_tuner_state.json"
DEFAULT_OBJECTIVES = ("accuracy:max", "params:min")


def metric_record(value: Any, metric_name: str = "accuracy") -> Dict[str, Any]:
    """A trial's final metric as a record for the evolution core.

    A number becomes ``{metric_name: value}``; a dict must hold a numeric ``"default"``, which
    becomes ``metric_name`` (unless the dict also has ``metric_name`` itself), the other keys are
    kept. Anything else raises ValueError."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return {metric_name: float(value)}
    if isinstance(value, Mapping):
        if "default" not in value:
            raise ValueError(f"a dict metric needs a 'default' key (the {metric_name}), got keys {sorted(value)}")
        default = value["default"]
        if isinstance(default, bool) or not isinstance(default, numbers.Real):
            raise ValueError(f"metric 'default' must be a number, got {default!r:.60}")
        out = {str(k): v for k, v in value.items() if k != "default"}
        out.setdefault(metric_name, float(default))
        return out
    raise ValueError(f"a final metric must be a number or a dict with 'default', got {type(value).__name__}")


@contextlib.contextmanager
def counting_threads(threads: int = 1) -> Iterator[None]:
    """Run the #Params/FLOPs counting of proposals on ``threads`` CPU threads (restored after):
    counting tiny networks on many threads is several times slower, not faster."""
    import torch

    old = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        yield
    finally:
        torch.set_num_threads(old)


def space_ops(search_space: Mapping[str, Any]) -> tuple:
    """(op candidates, num_nodes) of an osep HPO search space (checked with
    :func:`search_spaces.hpo.check_search_space`). Every edge must offer the same ops and every
    input choice all of its node's inputs (the space ``osep-nas space`` writes); ValueError
    otherwise."""
    from search_spaces.hpo import check_search_space

    summary = check_search_space(search_space)
    ops: Optional[List[str]] = None
    for key, spec in search_space.items():
        cell, name = str(key).split("/", 1)
        kind, i, _ = name.split("_")
        values = list(spec["_value"])
        if kind == "op":
            if ops is None:
                ops = values
            elif values != ops:
                raise ValueError(f"search space key {key!r} offers ops {values}, other edges {ops}; "
                                 f"ParetoTuner needs the same ops on every edge")
        elif sorted(values) != list(range(int(i))):
            raise ValueError(f"search space key {key!r} offers inputs {values}; ParetoTuner needs all of "
                             f"0..{int(i) - 1} (write the space with `osep-nas space`)")
    assert ops is not None
    return ops, int(summary["num_nodes"])


class ParetoTuner(Tuner):
    """nnictl tuner: multi-objective search over osep cell genotypes.

    classArgs (all optional):
        strategy: as ``search.strategy`` of ``osep-nas search`` (default: its default).
        population_size, sample_size, seed, max_params: see
            :class:`~strategies.evolution.ParetoEvolutionCore` (defaults: those of ``osep-nas
            search``; ``max_params`` bounds the #Params of the TARGET network, counted before a
            trial is launched; ``sample_size`` is the evolution's only).
        target: the network ``params``/``flops`` are counted on (``search_spaces.target``): a
            preset (``cifar10``, the default, or ``imagenet``) or a mapping of the ``target``
            section's keys (``model``, ``init_channels``, ``layers``, ``num_classes``,
            ``image_size``); keep it equal to the ``target`` section of the trial's config.
        objectives: list of ``"name:max|min"`` (default accuracy:max, params:min).
        metric_name: name of the trial's ``"default"`` metric (default ``accuracy``).
        exclude_none: never propose the ``none`` op (default true).
        init_channels, layers, image_size, num_classes: the trial's proxy network
            (defaults: the ``proxy`` defaults of ``osep-nas search``/``osep-nas trial``, digits
            8x8, 10 classes).
        max_attempts: duplicate/over-budget draws tolerated per proposal.
    """

    def __init__(self, population_size: Optional[int] = None, sample_size: Optional[int] = None,
                 seed: Optional[int] = None, max_params: Optional[float] = None,
                 objectives: Union[Sequence[str], Mapping[str, str], None] = None,
                 metric_name: str = "accuracy", exclude_none: bool = True, init_channels: Optional[int] = None,
                 layers: Optional[int] = None, image_size: Optional[int] = None, num_classes: int = 10,
                 max_attempts: int = 500, target: Any = None, strategy: Optional[str] = None) -> None:
        super().__init__()
        from .cores import CoreSettings
        from search_spaces.target import resolve_target
        from .pareto import as_objectives

        self.settings = CoreSettings.of(strategy, population_size, sample_size, seed, max_params)
        self.strategy, self.population_size = self.settings.strategy, self.settings.population_size
        self.sample_size, self.seed = self.settings.sample_size, self.settings.seed
        self.target = resolve_target(target)
        self.objectives = as_objectives(DEFAULT_OBJECTIVES if objectives is None else objectives)
        self.max_params = max_params
        self.metric_name = metric_name
        self.exclude_none = bool(exclude_none)
        self._proxy_args = {"init_channels": init_channels, "layers": layers, "image_size": image_size,
                            "num_classes": int(num_classes)}
        self.max_attempts = int(max_attempts)
        self.space: Optional["GenotypeSpace"] = None
        self.core: Optional["TrialLog"] = None
        self._search_space: Optional[Dict[str, Any]] = None
        self._candidates: Dict[int, "Genotype"] = {}
        self._redo: List["Genotype"] = []
        self._warned_mismatch = False

    @property
    def proxy(self) -> Dict[str, Any]:
        """The proxy network's arguments of :class:`~search_spaces.genotype_space.GenotypeSpace`;
        unset classArgs take the trial's defaults (``osep-nas trial`` without ``--config``)."""
        from .search_config import ProxySection

        a, defaults = self._proxy_args, ProxySection()
        size = int(a["image_size"] or 8)
        return {"init_channels": int(a["init_channels"] or defaults.init_channels),
                "layers": int(a["layers"] or defaults.layers), "num_classes": a["num_classes"],
                "input_size": (3, size, size), "target": self.target}

    # ------------------------------------------------------------------ tuner API
    def update_search_space(self, search_space: Dict[str, Any]) -> None:
        """Build the genotype space and the evolution from the HPO search space. Changing the
        space after results came in is refused (the population would mix two spaces)."""
        if self.core is not None and search_space == self._search_space:
            return  # e.g. the initial space again after load_checkpoint
        if self.core is not None and self.core.history:
            raise ValueError("ParetoTuner cannot change the search space once trials have finished")
        from search_spaces.genotype_space import GenotypeSpace

        ops, num_nodes = space_ops(search_space)
        self.space = GenotypeSpace(ops, num_nodes, exclude_none=self.exclude_none, distinct_inputs=False,
                                   **self.proxy)
        self.core = self.settings.make(self.space, self.objectives, self.max_attempts)
        self._search_space = dict(search_space)
        _logger.info("ParetoTuner: %s %s, objectives %s, max_params %s", self.strategy, self.space,
                     [f"{o.name}:{o.direction}" for o in self.objectives], self.max_params)

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> Dict[str, Any]:
        """The next genotype as nnictl parameters (``search_spaces.hpo.genotype_to_params``);
        raises ``nni.NoMoreTrialError`` when no new within-budget genotype can be found."""
        from search_spaces.hpo import genotype_to_params

        from .evolution import SearchExhausted

        core = self._require()
        if self._redo:
            candidate = self._redo.pop(0)
        else:
            try:
                with counting_threads():
                    candidate = core.ask()
            except SearchExhausted as exc:
                _logger.warning("ParetoTuner: %s", exc)
                raise nni.NoMoreTrialError(str(exc)) from None
        self._candidates[parameter_id] = candidate
        self.save_checkpoint()
        return genotype_to_params(candidate)

    def receive_trial_result(self, parameter_id: int, parameters: Dict[str, Any], value: Any, **kwargs: Any) -> None:
        """Tell the evolution a trial's final metric (dict with ``default``, or a float)."""
        from search_spaces.hpo import params_to_genotype

        core = self._require()
        candidate = self._candidates.pop(parameter_id, None)
        if candidate is None:
            candidate = params_to_genotype(parameters)
        try:
            metrics = metric_record(value, self.metric_name)
        except ValueError as exc:
            _logger.warning("ParetoTuner: trial %s: %s", parameter_id, exc)
            core.tell(candidate, None, reason=str(exc))
        else:
            self._check_proxy(candidate, metrics)
            try:
                trial = core.tell(candidate, metrics)
            except ValueError as exc:  # an objective is missing from the metrics
                _logger.warning("ParetoTuner: trial %s: %s", parameter_id, exc)
                trial = core.tell(candidate, None, reason=str(exc))
            if trial is not None and trial.ok:
                _logger.info("ParetoTuner: trial %s -> %s; front size %d", parameter_id,
                             {o.name: trial.record[o.name] for o in self.objectives}, len(core.front()))
        self.save_checkpoint()

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        """A failed or killed trial without result is recorded as failed (never a parent)."""
        candidate = self._candidates.get(parameter_id)
        if candidate is None or self.core is None:
            return
        if not success:
            self._candidates.pop(parameter_id, None)
            self.core.tell(candidate, None, reason="trial failed or was stopped")
            self.save_checkpoint()
        # success without a result yet: the result may still arrive (NNI can report it late)

    def import_data(self, data: List[Dict[str, Any]]) -> None:
        """Results of earlier trials (``nnictl experiment import``): told as external results."""
        from search_spaces.hpo import params_to_genotype

        core = self._require()
        for entry in data:
            try:
                core.tell(params_to_genotype(entry["parameter"]), metric_record(entry["value"], self.metric_name))
            except (KeyError, ValueError) as exc:
                _logger.warning("ParetoTuner: imported entry skipped: %s", exc)
        self.save_checkpoint()

    # ------------------------------------------------------------------ results
    def front(self) -> List[Dict[str, Any]]:
        """Records (``strategies.search.trial_record``) of the current Pareto front."""
        from .search import trial_record

        return [trial_record(t) for t in self._require().front()]

    def _check_proxy(self, candidate: "Genotype", metrics: Mapping[str, Any]) -> None:
        if self._warned_mismatch or "params" not in metrics or self.space is None:
            return
        with counting_threads():
            cheap = self.space.cheap_metrics(candidate)["params"]
        if int(metrics["params"]) != cheap:
            self._warned_mismatch = True
            _logger.warning("ParetoTuner: the trial reports %s target params, the tuner's target (%s) has %s: set "
                            "the classArgs target like the trial config's target section (max_params is checked "
                            "on the tuner's count)", metrics["params"], self.target.describe(), cheap)

    def _require(self) -> "TrialLog":
        if self.core is None:
            raise RuntimeError("ParetoTuner: no search space yet (update_search_space was not called)")
        return self.core

    # ------------------------------------------------------------------ checkpoint
    def _state_path(self) -> Optional[Path]:
        folder = self.get_checkpoint_path()
        return Path(folder) / STATE_FILE if folder else None

    def state_dict(self) -> Dict[str, Any]:
        """JSON state: the core's state and the parameter id -> candidate map."""
        core = self._require()
        return {"evolution": core.state_dict(), "search_space": self._search_space,
                "in_flight": {str(k): self.space.encode(c) for k, c in self._candidates.items()}}  # type: ignore

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; in-flight proposals are proposed again first."""
        if self.core is None:
            self.update_search_space(state["search_space"])
        core = self._require()
        core.load_state_dict(state["evolution"])
        self._candidates = {}
        self._redo = list(core.pending)

    def save_checkpoint(self) -> None:
        path = self._state_path()
        if path is None or self.core is None:
            return
        from osep_nas.io import atomic_write_json

        try:
            atomic_write_json(path, self.state_dict())
        except OSError as exc:  # a full disk must not stop the experiment
            _logger.warning("ParetoTuner: could not save %s: %s", path, exc)

    def load_checkpoint(self) -> None:
        path = self._state_path()
        if path is None or not path.is_file():
            return
        from osep_nas.io import read_user_text

        self.load_state_dict(json.loads(read_user_text(path, 256 << 20, "tuner state")))
        _logger.info("ParetoTuner: resumed from %s (%d results)", path, len(self._require().history))



class ParetoTunerClassArgsValidator(ClassArgsValidator):
    """Checks an experiment's ``tuner.classArgs`` when nnictl starts it: constructing the tuner
    raises on unknown keys and bad values, so a typo fails ``nnictl create`` at once."""

    def validate_class_args(self, **kwargs: Any) -> None:
        ParetoTuner(**kwargs)
