"""DARTS-style cell search spaces with osep primitives, for NNI 3.0 and for nnictl.

:mod:`~search_spaces.darts_space` (the NNI 3.0 model space), :mod:`~search_spaces.profilers`,
:mod:`~search_spaces.presets`, :mod:`~search_spaces.hpo` (the nnictl HPO format) and
:mod:`~search_spaces.nni_hub`.  Their names are attributes of this package, loaded on first
use, so ``import search_spaces`` stays light (no torch/NNI) for the command line and nnictl
trials.  Importing it registers the osep ops into NNI's hub op table (at once, or by an import
hook when NNI's hub is imported later).  Reference: docs/strategies.md.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

from osep_nas.lazy import lazy_getattr

_HUB_MODULE = "nni.nas.hub.pytorch.nasnet"

_LAZY = {
    "OSepDartsSpace": "search_spaces.darts_space",
    "OSepDartsNet": "search_spaces.darts_space",
    "PRESETS": "search_spaces.presets",
    "resolve_op_candidates": "search_spaces.presets",
    "random_genotype": "osep_nas.genotypes",
    "params_profiler": "search_spaces.profilers",
    "flops_profiler": "search_spaces.profilers",
    "paper_flops_profiler": "search_spaces.profilers",
    "expected_params": "search_spaces.profilers",
    "arch_probs": "search_spaces.profilers",
    "register_hub_ops": "search_spaces.nni_hub",
    "to_nni_search_space": "search_spaces.hpo",
    "params_to_genotype": "search_spaces.hpo",
    "genotype_to_params": "search_spaces.hpo",
    "check_search_space": "search_spaces.hpo",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


class _Loader(importlib.abc.Loader):
    """Delegates to NNI's loader, then registers the osep ops into the fresh hub table."""

    def __init__(self, loader: Any):
        self._loader = loader

    def create_module(self, spec):  # noqa: D401
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        from search_spaces.nni_hub import register_hub_ops

        register_hub_ops(module.OPS)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _HubHook(importlib.abc.MetaPathFinder):
    """Meta path finder active until NNI's hub module is imported, then it removes itself."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _HUB_MODULE:
            return None
        _remove_hook()
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _Loader(spec.loader)
        return spec


def _remove_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _HubHook)]


def _install_hub_registration() -> None:
    if _HUB_MODULE in sys.modules:
        from search_spaces.nni_hub import register_hub_ops

        register_hub_ops(sys.modules[_HUB_MODULE].OPS)
    elif not any(isinstance(f, _HubHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _HubHook())


_install_hub_registration()
