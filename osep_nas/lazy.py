"""Package attributes loaded on first use (PEP 562): ``import <package>`` stays light (no
torch/NNI import) for the command line and nnictl's tuner process, which must start fast."""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, Mapping


def lazy_getattr(package: str, table: Mapping[str, str], namespace: Dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``table[name]`` (a module path) on first use of
    ``name`` and caches the value in ``namespace`` (the package's ``globals()``)."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
