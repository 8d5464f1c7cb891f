"""The one genotype validator: checks a genotype and returns its canonical form, and the
plain dict form (JSON/YAML-able) that goes with it.

Canonical form: edge lists are ``list`` of ``(str, int)`` tuples and concat lists are
``list`` of ``int``, so ``parse_genotype(repr(g)) == g`` for any canonical ``g``.  A
valid genotype is buildable: every op is registered, node ``n`` takes inputs
``0 .. n + 1`` and the concat lists name intermediate nodes only.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

from osep_nas.genotypes.arch_labels import is_arch_dict, read_arch
from osep_nas.genotypes.base import FIELDS, MAX_NODES, MAX_RANGE_LEN, Genotype, is_int, short
from osep_nas.ops import OPS

__all__ = ["validate_genotype", "check_genotype", "genotype_to_dict", "genotype_from_dict"]


def _check_edges(edges: Any, field: str) -> List[Tuple[str, int]]:
    if isinstance(edges, (str, bytes, Mapping)) or not isinstance(edges, (list, tuple)):
        raise ValueError(f"genotype field '{field}' must be a list of (op, input) pairs, got {type(edges).__name__}")
    if len(edges) == 0:
        raise ValueError(f"genotype field '{field}' is empty: a cell needs two (op, input) pairs per node")
    if len(edges) % 2:
        raise ValueError(f"genotype field '{field}' has {len(edges)} pairs: a cell needs two (op, input) pairs "
                         f"per node, so an even number >= 2 (8 for the standard 4-node cell)")
    if len(edges) > 2 * MAX_NODES:
        raise ValueError(f"genotype field '{field}' has {len(edges)} pairs, more than {2 * MAX_NODES}")
    out: List[Tuple[str, int]] = []
    for pos, edge in enumerate(edges):
        where = f"{field}[{pos}]"
        if isinstance(edge, Mapping):  # {"op": ..., "input": ...} (a friendly YAML form)
            if set(edge) != {"op", "input"}:
                raise ValueError(f"genotype {where}: a mapping edge needs exactly the keys 'op' and 'input', "
                                 f"got {sorted(map(str, edge))}")
            edge = (edge["op"], edge["input"])
        if isinstance(edge, (str, bytes)) or not isinstance(edge, (list, tuple)) or len(edge) != 2:
            raise ValueError(f"genotype {where} must be an (op, input) pair, got {short(edge)}")
        op, index = edge
        if not isinstance(op, str):
            raise ValueError(f"genotype {where}: op name must be a string, got {short(op)}")
        if op not in OPS:
            raise ValueError(f"genotype {where}: unknown op {short(op)}; known ops: {', '.join(OPS)}")
        if not is_int(index):
            raise ValueError(f"genotype {where} ({op}): input index must be an integer, got {short(index)}")
        node = pos // 2
        if not 0 <= index <= node + 1:
            raise ValueError(f"genotype {where} ({op}, {index}): input index out of range, node {node} "
                             f"can only take inputs 0..{node + 1}")
        out.append((op, int(index)))
    return out


def _check_concat(concat: Any, field: str, num_nodes: int) -> List[int]:
    if isinstance(concat, range):
        if len(concat) > MAX_RANGE_LEN:
            raise ValueError(f"genotype field '{field}' is too long")
        concat = list(concat)
    if isinstance(concat, (str, bytes, Mapping)) or not isinstance(concat, (list, tuple)):
        raise ValueError(f"genotype field '{field}' must be a list of state indices, got {type(concat).__name__}")
    if not concat:
        raise ValueError(f"genotype field '{field}' is empty")
    out: List[int] = []
    for k in concat:
        if not is_int(k):
            raise ValueError(f"genotype field '{field}': state index must be an integer, got {short(k)}")
        if not 0 <= k <= num_nodes + 1:
            raise ValueError(f"genotype field '{field}': state index {k} out of range 0..{num_nodes + 1} "
                             f"(a cell with {num_nodes} nodes)")
        if k < 2:
            raise ValueError(f"genotype field '{field}': state index {k} is a cell input; only intermediate "
                             f"nodes 2..{num_nodes + 1} can be concatenated")
        if k in out:
            raise ValueError(f"genotype field '{field}': state index {k} listed twice")
        out.append(int(k))
    return out


def validate_genotype(genotype: Any) -> Genotype:
    """Check ``genotype`` and return it in canonical form (lists of ``(str, int)``, int lists).

    Accepts a :class:`Genotype`, any object with the four fields (a DARTS repository
    namedtuple, whose concat may be a ``range``) or a mapping (:func:`genotype_from_dict`);
    raises ValueError naming the first problem.
    """
    if isinstance(genotype, Mapping):
        return genotype_from_dict(genotype)
    values = {}
    for name in FIELDS:
        if not hasattr(genotype, name):
            raise ValueError(f"genotype is missing field '{name}' (needs {', '.join(FIELDS)}); got {type(genotype).__name__}")
        values[name] = getattr(genotype, name)
    normal = _check_edges(values["normal"], "normal")
    reduce = _check_edges(values["reduce"], "reduce")
    return Genotype(
        normal=normal,
        normal_concat=_check_concat(values["normal_concat"], "normal_concat", len(normal) // 2),
        reduce=reduce,
        reduce_concat=_check_concat(values["reduce_concat"], "reduce_concat", len(reduce) // 2),
    )



#: The name the networks have used; the same validator.
check_genotype = validate_genotype


def genotype_to_dict(genotype: Genotype) -> Dict[str, list]:
    """Plain JSON/YAML-able dict: ``{"normal": [[op, input], ...], "normal_concat": [...], ...}``."""
    g = validate_genotype(genotype)
    return {
        "normal": [[op, i] for op, i in g.normal],
        "normal_concat": list(g.normal_concat),
        "reduce": [[op, i] for op, i in g.reduce],
        "reduce_concat": list(g.reduce_concat),
    }


def genotype_from_dict(data: Mapping[str, Any]) -> Genotype:
    """Inverse of :func:`genotype_to_dict` (edges may also be ``{op:, input:}`` mappings).

    A mapping whose keys are NNI arch labels (``normal/op_2_0`` ...) is read as an arch dict.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"a genotype mapping is needed, got {type(data).__name__}")
    if is_arch_dict(data):
        return validate_genotype(read_arch(data))
    keys = [str(k) for k in data]
    missing = [f for f in FIELDS if f not in data]
    if missing:
        raise ValueError(f"genotype is missing field(s) {', '.join(repr(m) for m in missing)} "
                         f"(needs {', '.join(FIELDS)})")
    unknown = [k for k in keys if k not in FIELDS]
    if unknown:
        raise ValueError(f"genotype has unknown field(s) {', '.join(repr(u) for u in unknown)} "
                         f"(allowed: {', '.join(FIELDS)})")
    return validate_genotype(Genotype(**{f: data[f] for f in FIELDS}))

