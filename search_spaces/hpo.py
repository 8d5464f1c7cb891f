"""The osep cell space in nnictl's HPO search-space format (``searchSpaceFile``).

One ``{"_type": "choice", ...}`` per edge op and per edge input of the normal and the
reduction cell, keyed with the labels of the NNI 3.0 model space (``normal/op_2_0``,
``normal/input_2_0`` ...; format in docs/strategies.md).  :func:`params_to_genotype` and
:func:`genotype_to_params` convert a tuner's parameters.  This module needs neither torch
nor NNI.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Union

from osep_nas.config import short_repr
from osep_nas.genotypes import CELL_TYPES, Genotype, arch_label, arch_to_genotype, genotype_to_arch
from osep_nas.ops import OPS
from search_spaces.presets import PRESETS, resolve_op_candidates  # noqa: F401  (PRESETS re-exported)

__all__ = ["to_nni_search_space", "params_to_genotype", "genotype_to_params", "check_search_space",
           "SpaceSummary", "space_size", "write_search_space", "PRESETS"]

MAX_FILE_BYTES = 2_000_000
_KEY = re.compile(r"^(normal|reduce)/(op|input)_(\d+)_(\d+)$")


def to_nni_search_space(op_candidates: Union[str, Sequence[str]] = "osep", num_nodes: int = 4) -> Dict[str, Any]:
    """The nnictl search space: op and input choices of every edge of both cells."""
    ops = resolve_op_candidates(op_candidates)
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or not 1 <= num_nodes <= 64:
        raise ValueError(f"num_nodes must be an integer in 1..64, got {num_nodes!r}")
    space: Dict[str, Any] = {}
    for cell in CELL_TYPES:
        for node in range(num_nodes):
            for k in (0, 1):
                space[arch_label(cell, "op", node, k)] = {"_type": "choice", "_value": list(ops)}
                space[arch_label(cell, "input", node, k)] = {"_type": "choice", "_value": list(range(node + 2))}
    return space


def params_to_genotype(params: Mapping[str, Any]) -> Genotype:
    """The genotype of a tuner's parameter dict (extra keys outside ``normal/``, ``reduce/`` ignored)."""
    return arch_to_genotype(params)


def genotype_to_params(genotype: Genotype) -> Dict[str, Any]:
    """The parameter dict of ``genotype`` (inverse of :func:`params_to_genotype`)."""
    return genotype_to_arch(genotype, input_as_list=False)


class SpaceSummary(dict):
    """What :func:`check_search_space` found: ``choices``, ``size``, ``num_nodes``, ``ops``."""

    def __str__(self) -> str:
        size = self["size"]
        shown = str(size) if size < 10 ** 7 else f"{float(size):.3g}"
        return (f"{self['choices']} choices ({self['num_nodes']} nodes per cell, {len(self['ops'])} ops), "
                f"space size {shown}")


def space_size(space: Mapping[str, Any]) -> int:
    """Number of points of an HPO search space made of choices (the product of their sizes)."""
    size = 1
    for spec in space.values():
        size *= len(spec["_value"])
    return size


def check_search_space(obj_or_path: Union[Mapping[str, Any], str, "os.PathLike[str]"]) -> SpaceSummary:
    """Validate an osep cell search space (a dict, or a JSON/YAML file); returns its summary.

    Raises ValueError naming the key for: malformed JSON, a non-mapping, a ``_type``
    other than ``choice``, an unknown op, input choices out of range, duplicates, empty
    choices, keys that are not cell labels, and missing edges.  FileNotFoundError for a
    missing file.
    """
    if isinstance(obj_or_path, Mapping):
        space: Any = obj_or_path
        where = "search space"
    elif isinstance(obj_or_path, (str, os.PathLike)):
        path = Path(obj_or_path)
        where = str(path)
        from osep_nas.io import read_user_bytes

        # regular files only (never /dev/urandom or a pipe), at most MAX_FILE_BYTES
        text = read_user_bytes(path, MAX_FILE_BYTES, "search space file").decode("utf-8", errors="replace")
        if path.suffix.lower() in (".yml", ".yaml"):
            from osep_nas.config import strict_yaml_load

            try:
                space = strict_yaml_load(text, str(path))  # no anchors/aliases: no alias bombs
            except RecursionError:
                raise ValueError(f"{path}: YAML nested too deeply") from None
        else:
            try:
                space = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: malformed JSON: {exc}") from None
            except RecursionError:
                raise ValueError(f"{path}: JSON nested too deeply") from None
    else:
        raise ValueError(f"check_search_space needs a dict or a file path, got {type(obj_or_path).__name__}")

    if not isinstance(space, Mapping):
        raise ValueError(f"{where}: must be a JSON object mapping names to choices, got {type(space).__name__}")
    if not space:
        raise ValueError(f"{where}: is empty")
    seen: Dict[str, set] = {c: set() for c in CELL_TYPES}
    ops_seen: List[str] = []
    for key, spec in space.items():
        m = _KEY.match(str(key))
        if m is None:
            raise ValueError(f"{where}: key {key!r} is not a cell label like 'normal/op_2_0' or 'reduce/input_3_1'")
        cell, kind, i, k = m.group(1), m.group(2), int(m.group(3)), int(m.group(4))
        if i < 2 or k > 1:
            raise ValueError(f"{where}: key {key!r}: node index must be >= 2 and edge index 0 or 1")
        if not isinstance(spec, Mapping) or "_type" not in spec or "_value" not in spec:
            raise ValueError(f"{where}: key {key!r} must be {{\"_type\": \"choice\", \"_value\": [...]}}, got {short_repr(spec)}")
        extra = set(spec) - {"_type", "_value"}
        if extra:
            raise ValueError(f"{where}: key {key!r} has unexpected field(s) {sorted(map(str, extra))}")
        if spec["_type"] != "choice":
            raise ValueError(f"{where}: key {key!r} has _type {spec['_type']!r}; only 'choice' is valid here")
        values = spec["_value"]
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}: key {key!r}: _value must be a non-empty list, got {short_repr(values)}")
        if kind == "op":
            for v in values:
                if not isinstance(v, str) or v not in OPS:
                    raise ValueError(f"{where}: key {key!r}: unknown op {short_repr(v, 60)}; known ops: {', '.join(OPS)}")
                if v not in ops_seen:
                    ops_seen.append(v)
        else:
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < i:
                    raise ValueError(f"{where}: key {key!r}: input choice {short_repr(v, 60)} is not an input of node {i} "
                                     f"(valid: 0..{i - 1})")
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"{where}: key {key!r}: _value lists a choice twice")
        seen[cell].add((kind, i, k))
    num_nodes = {}
    for cell in CELL_TYPES:
        if not seen[cell]:
            raise ValueError(f"{where}: has no '{cell}/...' choices")
        n = max(i for _, i, _ in seen[cell]) - 1
        for i in range(2, n + 2):
            for k in (0, 1):
                for kind in ("op", "input"):
                    if (kind, i, k) not in seen[cell]:
                        raise ValueError(f"{where}: missing key '{cell}/{kind}_{i}_{k}'")
        num_nodes[cell] = n
    if num_nodes["normal"] != num_nodes["reduce"]:
        raise ValueError(f"{where}: the normal cell has {num_nodes['normal']} nodes, the reduction cell "
                         f"{num_nodes['reduce']}; they must match")
    return SpaceSummary(choices=len(space), size=space_size(space), num_nodes=num_nodes["normal"], ops=ops_seen)


def write_search_space(path: Union[str, "os.PathLike[str]"], op_candidates: Union[str, Sequence[str]] = "osep",
                       num_nodes: int = 4) -> SpaceSummary:
    """Write the nnictl search space JSON atomically; returns its summary."""
    from osep_nas.io import atomic_write_json

    space = to_nni_search_space(op_candidates, num_nodes)
    summary = check_search_space(space)
    atomic_write_json(path, space)
    return summary
