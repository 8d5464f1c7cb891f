"""Params-aware one-shot search: DARTS whose architecture loss pays for the expected #Params.

:class:`ParamsPenalizedDarts` is NNI 3.0's DARTS with ``lam * E_alpha[#Params] /
params_scale`` added to the architecture loss, the expectation taken over the TARGET
network and differentiable in the architecture weights (NNI's own ``penalty=`` has no
gradient).  :func:`derive_genotype` caps the skips per cell; :func:`sweep` runs one search
per lambda, a front from one-shot search.  Details: docs/strategies.md.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from search_spaces._nni import nas_nn  # noqa: F401  (NNI's import-time warnings on recent torch, silenced)
from nni.nas.execution import ExecutionEngine
from nni.nas.oneshot.pytorch.profiler import ExpectationProfilerPenalty
from nni.nas.space import RawFormatModelSpace
from nni.nas.strategy import DARTS

from osep_nas import count_flops, count_params
from osep_nas.genotypes import CELL_TYPES, Genotype, arch_label, genotype_to_arch, validate_genotype

from .tuner import counting_threads

__all__ = ["ParamsPenalizedDarts", "ExpectedParamsPenalty", "derive_genotype", "count_skips", "sweep",
           "SweepPoint", "digits_evaluator", "tiny_space"]

_logger = logging.getLogger(__name__)

Probs = Mapping[str, Mapping[Any, Any]]


def _float(v: Any) -> float:
    return float(v.detach()) if isinstance(v, torch.Tensor) else float(v)


def count_skips(genotype: Genotype, cell: str = "normal") -> int:
    """Number of ``skip_connect`` edges in one cell of a genotype."""
    return sum(op == "skip_connect" for op, _ in getattr(genotype, cell))


def derive_genotype(probs: Probs, max_skips: Optional[int] = 2, skip_cells: Sequence[str] = ("normal",),
                    exclude_none: bool = True) -> Genotype:
    """The genotype of per-label choice probabilities (``arch_probs`` tensors or
    ``export_probs`` floats; labels ``{cell}/op_{i}_{k}`` and ``{cell}/input_{i}_{k}``).

    Every edge takes its most probable op (``none`` left out when ``exclude_none`` and another op
    exists) and its most probable input; then in each cell of ``skip_cells`` only the
    ``max_skips`` skip edges with the highest skip probability keep ``skip_connect``, the others
    take their best op that is neither ``skip_connect`` nor ``none`` (see docs/strategies.md)."""
    if max_skips is not None and (isinstance(max_skips, bool) or not isinstance(max_skips, int) or max_skips < 0):
        raise ValueError(f"max_skips must be a non-negative integer or None, got {max_skips!r}")
    for cell in skip_cells:
        if cell not in CELL_TYPES:
            raise ValueError(f"skip_cells: unknown cell {cell!r} (normal, reduce)")
    cells: Dict[str, List[Tuple[str, int]]] = {}
    for cell in CELL_TYPES:
        n_nodes = 0
        while arch_label(cell, "op", n_nodes, 0) in probs:
            n_nodes += 1
        if n_nodes == 0:
            raise ValueError(f"no '{cell}/op_2_0' probabilities: not a DARTS cell space")
        edges: List[Tuple[str, int]] = []
        skip_rank: List[Tuple[float, int]] = []
        alternatives: Dict[int, str] = {}
        for node in range(n_nodes):
            for k in (0, 1):
                op_p = {str(o): _float(p) for o, p in probs[arch_label(cell, "op", node, k)].items()}
                in_p = {int(j[0] if isinstance(j, (list, tuple)) else j): _float(p)
                        for j, p in probs[arch_label(cell, "input", node, k)].items()}
                allowed = {o: p for o, p in op_p.items() if not (exclude_none and o == "none")} or op_p
                op = max(allowed, key=lambda o: (allowed[o], o))
                j = max(in_p, key=lambda i: (in_p[i], -i))
                pos = len(edges)
                edges.append((op, j))
                if op == "skip_connect":
                    skip_rank.append((op_p[op], pos))
                    others = {o: p for o, p in op_p.items() if o not in ("skip_connect", "none")}
                    if others:
                        alternatives[pos] = max(others, key=lambda o: (others[o], o))
        if cell in skip_cells and max_skips is not None and len(skip_rank) > max_skips:
            skip_rank.sort(key=lambda t: (-t[0], t[1]))
            for _, pos in skip_rank[max_skips:]:
                if pos in alternatives:
                    edges[pos] = (alternatives[pos], edges[pos][1])
        cells[cell] = edges
    concat = {c: list(range(2, len(cells[c]) // 2 + 2)) for c in CELL_TYPES}
    return validate_genotype(Genotype(cells["normal"], concat["normal"], cells["reduce"], concat["reduce"]))


def _expectation(profiler: Any, probs: Probs) -> Any:
    from search_spaces.profilers import expected_params

    return profiler(probs) if callable(profiler) and not hasattr(profiler, "expression") else \
        expected_params(profiler, probs)


class ExpectedParamsPenalty(ExpectationProfilerPenalty):
    """``loss + lam * E[#Params] / params_scale`` with the expectation taken under the
    supernet's differentiable probabilities (``probs_fn()``, i.e. ``arch_probs(supernet)``);
    the float probabilities DARTS passes in are ignored. Plugged into NNI's
    ``DartsLightningModule`` as its ``penalty``."""

    def __init__(self, profiler: Any, lam: float, params_scale: float,
                 probs_fn: Callable[[], Dict[str, Dict[Any, torch.Tensor]]]) -> None:
        """``profiler``: an NNI expression profiler, or a callable ``probs -> E[#Params]``
        (:class:`~search_spaces.target.TargetParamsExpectation`)."""
        super().__init__(profiler, baseline=params_scale, scale=lam)
        self.lam = float(lam)
        self.params_scale = float(params_scale)
        self._probs_fn = probs_fn  # a plain callable: the supernet must not become a submodule

    def forward(self, loss: torch.Tensor, sample: Any) -> Tuple[torch.Tensor, dict]:
        expected = _expectation(self.profiler, self._probs_fn())
        penalty = self.lam * expected / self.params_scale
        total = loss + penalty
        return total, {"loss_original": loss.detach(), "expected_params": _float(expected),
                       "penalty": _float(penalty), "loss_final": total.detach()}


@dataclass
class SweepPoint:
    """One lambda of :func:`sweep`. Iterates (and unpacks) as ``(lam, genotype, params, skips)``:
    ``params`` is the #Params of the derived genotype's network on the searched space
    (``space.freeze``, the project's counter), ``target_params`` on the target network (the
    objective), ``skips`` its normal-cell skip_connect count after the cap; ``skips_uncapped``
    what plain argmax derivation would have kept."""
    lam: float
    genotype: Genotype
    params: int
    skips: int
    skips_uncapped: int = 0
    flops: int = 0
    expected_params: float = math.nan
    arch: Dict[str, Any] = field(default_factory=dict)
    target_params: int = 0

    def __iter__(self) -> Iterator[Any]:
        return iter((self.lam, self.genotype, self.params, self.skips))


class ParamsPenalizedDarts(DARTS):
    """NNI DARTS with the expected-#Params penalty and a skip cap (see docs/strategies.md).

    Use it like NNI's DARTS: ``NasExperiment(OSepDartsSpace(...), Classification(...),
    ParamsPenalizedDarts(lam=1.0), NasExperimentConfig("sequential", "raw"))``; afterwards
    :meth:`export_genotype` / ``export_top_models(formatter="dict")`` give the derived cell and
    :attr:`result` its :class:`SweepPoint`.

    Args:
        lam: weight of ``E[#Params] / params_scale`` in the architecture loss (0: plain DARTS).
        max_skips, skip_cells, exclude_none: derivation, see :func:`derive_genotype`.
        params_scale: normaliser of the expected #Params (default: its value under uniform
            choices).
        target: the network whose #Params are penalised (``search_spaces.target``: a preset
            ``cifar10`` (default) | ``imagenet``, a mapping of the target keys, a ``Target``), or
            ``None`` for the searched network itself.
        **darts_kwargs: NNI DARTS arguments (``arc_learning_rate``, ``gradient_clip_val``,
            ``warmup_epochs``, ...); ``penalty`` is not accepted (this class sets it).
    """

    def __init__(self, lam: float = 0.0, *, max_skips: Optional[int] = 2, skip_cells: Sequence[str] = ("normal",),
                 exclude_none: bool = True, params_scale: Optional[float] = None, target: Any = "cifar10",
                 **darts_kwargs: Any) -> None:
        if "penalty" in darts_kwargs:
            raise ValueError("ParamsPenalizedDarts sets the penalty itself (lam); do not pass penalty=")
        if not (isinstance(lam, (int, float)) and not isinstance(lam, bool) and math.isfinite(lam) and lam >= 0):
            raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
        if params_scale is not None and not (math.isfinite(params_scale) and params_scale > 0):
            raise ValueError(f"params_scale must be a positive number, got {params_scale!r}")
        if max_skips is not None and (isinstance(max_skips, bool) or not isinstance(max_skips, int) or max_skips < 0):
            raise ValueError(f"max_skips must be a non-negative integer or None, got {max_skips!r}")
        if any(c not in CELL_TYPES for c in skip_cells):
            raise ValueError(f"skip_cells must name cells among {CELL_TYPES}, got {list(skip_cells)}")
        super().__init__(**darts_kwargs)
        self.lam = float(lam)
        self.max_skips = max_skips
        self.skip_cells = tuple(skip_cells)
        self.exclude_none = bool(exclude_none)
        self.params_scale = params_scale
        from search_spaces.target import Target, resolve_target

        self.target = None if target is None else (target if isinstance(target, Target) else resolve_target(target))
        self.profiler: Any = None
        self._space: Any = None

    def extra_repr(self) -> str:
        return f"lam={self.lam}, max_skips={self.max_skips}, skip_cells={self.skip_cells}"

    def _initialize(self, model_space: RawFormatModelSpace, engine: ExecutionEngine) -> RawFormatModelSpace:
        from search_spaces.profilers import params_profiler

        if not isinstance(model_space, RawFormatModelSpace):
            raise TypeError("ParamsPenalizedDarts needs the 'raw' model format (NasExperimentConfig(..., 'raw'))")
        space = model_space.model_space
        self._space = space
        with counting_threads():  # before DARTS turns the space into a supernet
            if self.target is None:
                self.profiler = params_profiler(space)
            else:
                from .nni_strategy import cell_choices
                from search_spaces.target import TargetParamsExpectation

                ops, num_nodes = cell_choices(space.simplify())
                self.profiler = TargetParamsExpectation(self.target, ops, num_nodes)
            if self.params_scale is None:
                uniform = {label: {v: 1.0 / len(m.values) for v in m.values}
                           for label, m in space.simplify().items() if hasattr(m, "values")}
                self.params_scale = float(_expectation(self.profiler, uniform))
        if self.lam > 0:
            from search_spaces.profilers import arch_probs

            self.penalty = ExpectedParamsPenalty(self.profiler, self.lam, self.params_scale,
                                                 lambda: arch_probs(self.supernet))
        else:
            self.penalty = None
        return super()._initialize(model_space, engine)

    # ------------------------------------------------------------------ results
    def probs(self) -> Dict[str, Dict[Any, float]]:
        """Current choice probabilities (floats) of the supernet."""
        from search_spaces.profilers import arch_probs

        with torch.no_grad():
            return {label: {k: _float(v) for k, v in p.items()} for label, p in arch_probs(self.supernet).items()}

    def export_genotype(self, max_skips: Union[Optional[int], str] = "default") -> Genotype:
        """The derived genotype (with this strategy's skip cap, or ``max_skips`` if given)."""
        cap = self.max_skips if max_skips == "default" else max_skips
        return derive_genotype(self.probs(), cap, self.skip_cells, self.exclude_none)  # type: ignore[arg-type]

    def expected_params(self) -> float:
        """E[#Params] (of the target network, or of the searched one) under the current probabilities."""
        return float(_expectation(self.profiler, self.probs()))

    @property
    def result(self) -> SweepPoint:
        """This run's :class:`SweepPoint` (#Params and FLOPs counted on the searched space's network)."""
        g = self.export_genotype()
        arch = genotype_to_arch(g)
        net = self._space.freeze(arch)
        size = (int(getattr(net, "in_channels", 3)), int(getattr(net, "input_size", 32)),
                int(getattr(net, "input_size", 32)))
        with counting_threads():
            flops = int(count_flops(net, size))
        target_params = int(self.target.counts(g)["params"]) if self.target is not None else int(count_params(net))
        return SweepPoint(self.lam, g, int(count_params(net)), count_skips(g),
                          count_skips(self.export_genotype(None)), flops, self.expected_params(), arch, target_params)

    def list_models(self, sort: bool = True, limit: Optional[int] = 1) -> Iterator[RawFormatModelSpace]:
        """The derived architecture (NNI's DARTS export would take the raw argmax, ``none`` and
        uncapped skips included)."""
        yield self.model_space.freeze(genotype_to_arch(self.export_genotype()))


# ---------------------------------------------------------------------------------- sweep
def tiny_space(init_channels: int = 8, layers: int = 3, num_nodes: int = 4, op_candidates: Any = "osep",
               input_size: int = 8) -> nn.Module:
    """A small :class:`~search_spaces.darts_space.OSepDartsSpace` for CPU one-shot runs on digits."""
    from search_spaces.darts_space import OSepDartsSpace

    return OSepDartsSpace(op_candidates, init_channels=init_channels, layers=layers, num_nodes=num_nodes,
                          input_size=input_size)


def digits_evaluator(batches: int = 20, batch_size: int = 32, epochs: int = 1, learning_rate: float = 0.01,
                     image_size: int = 8, seed: int = 0) -> Any:
    """An NNI ``Classification`` evaluator on the embedded digits for one-shot search: the
    train split is cut in two halves, DARTS' weight batches and its architecture batches;
    ``batches`` steps per epoch, CPU, no logger or checkpoints."""
    from nni.nas.evaluator.pytorch import Classification, DataLoader
    from torch.utils.data import TensorDataset

    from osep_nas.data import load_digits_tensors

    x, y, _, _ = load_digits_tensors(image_size)
    half = len(y) // 2
    g = torch.Generator().manual_seed(seed)
    train = DataLoader(TensorDataset(x[:half], y[:half]), batch_size=batch_size, shuffle=True, generator=g)
    val = DataLoader(TensorDataset(x[half:], y[half:]), batch_size=batch_size, shuffle=True,
                     generator=torch.Generator().manual_seed(seed + 1))
    return Classification(train_dataloaders=train, val_dataloaders=val, num_classes=10, learning_rate=learning_rate,
                          max_epochs=epochs, limit_train_batches=batches, limit_val_batches=0, accelerator="cpu",
                          devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, num_sanity_val_steps=0)


def sweep(lambdas: Iterable[float], make_space: Optional[Callable[[], nn.Module]] = None,
          make_evaluator: Optional[Callable[[], Any]] = None, *, seed: int = 0, max_skips: Optional[int] = 2,
          workdir: Union[str, Path, None] = None, threads: Optional[int] = 1, **darts_kwargs: Any) -> List[SweepPoint]:
    """One :class:`ParamsPenalizedDarts` search per lambda, each on a fresh space with the same
    seed; returns one :class:`SweepPoint` (``lam, genotype, params, skips``) per lambda, in order.

    Defaults: :func:`tiny_space` (3 cells, width 8, 8x8 inputs) and :func:`digits_evaluator`;
    ``arc_learning_rate`` 0.05 unless given. ``workdir``: NNI's experiment folder (default: a
    temporary one, removed after). ``threads``: torch CPU threads during the sweep (restored)."""
    import tempfile

    from nni.nas.experiment import NasExperiment, NasExperimentConfig

    lams = [float(v) for v in lambdas]
    if not lams:
        raise ValueError("sweep needs at least one lambda")
    make_space = make_space or tiny_space
    make_evaluator = make_evaluator or (lambda: digits_evaluator(seed=seed))
    darts_kwargs.setdefault("arc_learning_rate", 0.05)
    old_threads = torch.get_num_threads()
    points: List[SweepPoint] = []
    with tempfile.TemporaryDirectory(prefix="osep-oneshot-") as tmp:
        base = Path(workdir) if workdir is not None else Path(tmp)
        try:
            if threads:
                torch.set_num_threads(threads)
            for lam in lams:
                torch.manual_seed(seed)
                space = make_space()
                strategy = ParamsPenalizedDarts(lam, max_skips=max_skips, **darts_kwargs)
                config = NasExperimentConfig("sequential", "raw")
                config.experiment_working_directory = str(base)
                exp = NasExperiment(space, make_evaluator(), strategy, config)
                try:
                    exp.run()
                finally:
                    exp.stop()
                point = strategy.result
                _logger.info("lambda %g: %d params, %d skips (%d uncapped)", lam, point.params, point.skips,
                             point.skips_uncapped)
                points.append(point)
        finally:
            torch.set_num_threads(old_threads)
    return points
