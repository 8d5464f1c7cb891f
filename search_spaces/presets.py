"""Named op candidate sets of the osep cell spaces (light: no torch-heavy or NNI imports
beyond the op registry)."""
from __future__ import annotations

from typing import Dict, List, Sequence, Union

from osep_nas.ops import DARTS_PRIMITIVES, OSEP_PRIMITIVES, check_op

__all__ = ["PRESETS", "resolve_op_candidates"]

#: ``darts``: DARTS' eight primitives; ``osep``: the osep search set (default);
#: ``darts+osep``: their union, DARTS' first.
PRESETS: Dict[str, List[str]] = {
    "darts": list(DARTS_PRIMITIVES),
    "osep": list(OSEP_PRIMITIVES),
    "darts+osep": list(DARTS_PRIMITIVES) + [op for op in OSEP_PRIMITIVES if op not in DARTS_PRIMITIVES],
}


def resolve_op_candidates(op_candidates: Union[str, Sequence[str]]) -> List[str]:
    """A preset name (``osep``, ``darts``, ``darts+osep``) or a list of registered op names -> list."""
    if isinstance(op_candidates, str):
        if op_candidates not in PRESETS:
            raise ValueError(f"unknown op preset {op_candidates!r}; presets: {', '.join(PRESETS)} "
                             f"(or pass a list of op names)")
        return list(PRESETS[op_candidates])
    try:
        ops = list(op_candidates)
    except TypeError:
        raise ValueError(f"op_candidates must be a preset name or a list of op names, got {op_candidates!r}") from None
    if not ops:
        raise ValueError("op_candidates is empty")
    for op in ops:
        if not isinstance(op, str):
            raise ValueError(f"op_candidates must hold op names (strings), got {op!r}")
        check_op(op)
    if len(set(ops)) != len(ops):
        raise ValueError(f"op_candidates lists an op twice: {ops}")
    return ops
