"""NNI 3.0 arch-dict labels and reading an arch dict's edges (without validating them).

The labels are those of NNI's own DARTS space
(``nni.nas.hub.pytorch.DARTS.load_searched_model``)::

    {"normal/op_2_0": "sep_conv_3x3", "normal/input_2_0": [0], ...
     "reduce/op_5_1": "max_pool_3x3", "reduce/input_5_1": [1]}

where ``op_{i}_{k}`` / ``input_{i}_{k}`` is edge ``k`` (0 or 1) of the node whose state
index is ``i`` (``i = n + 2``).  This module sits below validation so that validation
can read label mappings; :mod:`osep_nas.genotypes.nni_arch` is the validated interface.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Tuple

from osep_nas.genotypes.base import CELL_TYPES, MAX_NODES, Genotype, check_cell_type, is_int, short

#: an arch label: groups (cell type, "op" | "input", state index i, edge k)
ARCH_LABEL = re.compile(r"^(normal|reduce)/(op|input)_(\d+)_(\d+)$")


def arch_label(cell_type: str, kind: str, node: int, k: int) -> str:
    """``{cell_type}/{op|input}_{i}_{k}`` for edge ``k`` of intermediate node ``node``
    (0-based), whose state index is ``i = node + 2`` (NNI's DARTS labels)."""
    check_cell_type(cell_type)
    if kind not in ("op", "input"):
        raise ValueError(f"label kind must be 'op' or 'input', got {kind!r}")
    return f"{cell_type}/{kind}_{node + 2}_{k}"


def is_arch_dict(data: Mapping[Any, Any]) -> bool:
    """Whether a mapping's keys are arch labels (``cell/...``) rather than genotype fields."""
    keys = [str(k) for k in data]
    return bool(keys) and all("/" in k for k in keys)


def read_arch(arch: Mapping[str, Any]) -> Genotype:
    """The edges of an NNI 3.0 arch dict (inputs as ``[j]`` or ``j``) as a Genotype that
    concatenates every node; the caller validates the ops.

    Keys outside ``normal/`` and ``reduce/`` (e.g. hyper-parameters a mutable evaluator
    adds) are ignored; every node must have both edges' op and input.
    """
    if not isinstance(arch, Mapping):
        raise ValueError(f"an arch dict (mapping) is needed, got {type(arch).__name__}")
    cells: Dict[str, Dict[Tuple[int, int], Dict[str, Any]]] = {c: {} for c in CELL_TYPES}
    for key, value in arch.items():
        key = str(key)
        if not key.startswith(("normal/", "reduce/")):
            continue
        m = ARCH_LABEL.match(key)
        if m is None:
            raise ValueError(f"arch key {key!r} is not a cell label like 'normal/op_2_0' or 'normal/input_2_0'")
        cell, kind, i, k = m.group(1), m.group(2), int(m.group(3)), int(m.group(4))
        if i < 2 or i > MAX_NODES + 1 or k > 1:
            raise ValueError(f"arch key {key!r}: node index must be 2..{MAX_NODES + 1} and edge index 0 or 1")
        cells[cell].setdefault((i, k), {})[kind] = value
    edges_of: Dict[str, List[Tuple[Any, Any]]] = {}
    for cell in CELL_TYPES:
        found = cells[cell]
        if not found:
            raise ValueError(f"arch has no '{cell}/...' labels")
        n_nodes = max(i for i, _ in found) - 1
        edges: List[Tuple[Any, Any]] = []
        for i in range(2, n_nodes + 2):
            for k in (0, 1):
                entry = found.get((i, k), {})
                for kind in ("op", "input"):
                    if kind not in entry:
                        raise ValueError(f"arch is missing '{cell}/{kind}_{i}_{k}'")
                j = entry["input"]
                if isinstance(j, (list, tuple)):
                    if len(j) != 1:
                        raise ValueError(f"arch '{cell}/input_{i}_{k}' must choose exactly one input, got {j!r}")
                    j = j[0]
                if not is_int(j):
                    raise ValueError(f"arch '{cell}/input_{i}_{k}' must be an input index, got {short(j)}")
                if not 0 <= j < i:
                    raise ValueError(f"arch '{cell}/input_{i}_{k}' = {j}: node {i} can only take inputs 0..{i - 1}")
                if not isinstance(entry["op"], str):
                    raise ValueError(f"arch '{cell}/op_{i}_{k}' must be an op name, got {short(entry['op'])}")
                edges.append((entry["op"], j))
        edges_of[cell] = edges
    return Genotype(
        normal=edges_of["normal"], normal_concat=list(range(2, len(edges_of["normal"]) // 2 + 2)),
        reduce=edges_of["reduce"], reduce_concat=list(range(2, len(edges_of["reduce"]) // 2 + 2)),
    )


