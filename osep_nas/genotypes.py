"""Genotypes: the DARTS cell encoding, the published cells, the osep replacement, and
safe conversion to and from text, files, NNI 3.0 arch dicts and plots.

A genotype lists, for each intermediate node of a cell, two ``(op, input)`` pairs:
``normal[2 * n]`` and ``normal[2 * n + 1]`` feed node ``n``.  Input 0 and 1 are the
outputs of the two previous cells (``c_{k-2}``, ``c_{k-1}``), input ``j >= 2`` is
intermediate node ``j - 2``; so node ``n`` may take inputs ``0 .. n + 1``.  The cell
output concatenates the states listed in ``normal_concat`` (``[2, 3, 4, 5]`` for the
standard 4-node cell).

Edge count: two edges per node is the DARTS convention and the only one this module
accepts, but the number of nodes is free: a cell is any even number >= 2 of pairs
(4 nodes -> 8 pairs, the standard space; 5 nodes -> 10 pairs...).  The two cells of
one genotype may even have different node counts; the NNI space of
``search_spaces`` uses the same count for both.

Canonical form: edge lists are ``list`` of ``(str, int)`` tuples and concat lists are
``list`` of ``int``.  Every function here returns that form, so
``parse_genotype(repr(g)) == g`` for any canonical ``g``.

Text is never evaluated: ``parse_genotype`` uses a small tokenizer and recursive
descent parser for the DARTS repr grammar (names ``Genotype`` and ``range``,
strings, integers, lists, tuples, keyword arguments), ``json`` and
``yaml.safe_load``.

NNI 3.0 arch dicts use the labels of NNI's own DARTS space
(``nni.nas.hub.pytorch.DARTS.load_searched_model``)::

    {"normal/op_2_0": "sep_conv_3x3", "normal/input_2_0": [0],
     "normal/op_2_1": "sep_conv_3x3", "normal/input_2_1": [1], ...
     "reduce/op_5_1": "max_pool_3x3", "reduce/input_5_1": [1]}

where ``op_{i}_{k}`` / ``input_{i}_{k}`` is edge ``k`` (0 or 1) of the node whose
state index is ``i`` (``i = n + 2``).
"""
from __future__ import annotations

import io
import json
import os
import re
from collections import namedtuple
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from osep_nas.ops import OPS, PRIMITIVES

__all__ = [
    "Genotype", "PRIMITIVES", "DARTS_V1", "DARTS_V2", "O_DARTS", "KNOWN_GENOTYPES",
    "OSEP_REPLACEMENT", "SOSEP_REPLACEMENT", "CELL_TYPES", "MAX_TEXT_CHARS",
    "to_osep", "parse_genotype", "validate_genotype", "genotype_to_dict", "genotype_from_dict",
    "genotype_to_yaml", "load_genotype", "save_genotype", "genotype_from_arg",
    "genotype_to_arch", "arch_to_genotype", "arch_label", "num_nodes_of", "random_genotype", "plot_cell",
]

Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")

CELL_TYPES: Tuple[str, str] = ("normal", "reduce")
FIELDS: Tuple[str, ...] = Genotype._fields

#: Text longer than this is refused before any parsing (a genotype is ~1 kB).
MAX_TEXT_CHARS = 100_000
MAX_GENOTYPE_FILE_BYTES = MAX_TEXT_CHARS * 4  # a genotype file: UTF-8 of at most MAX_TEXT_CHARS characters
_MAX_DEPTH = 16          # nesting depth of the repr grammar ( Genotype( [ ( ... ) ] ) is 3 )
_MAX_INT_DIGITS = 12
_MAX_RANGE_LEN = 4096
_MAX_NODES = 256

#: DARTS (first order), Liu et al. 2019.
DARTS_V1 = Genotype(
    normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    reduce_concat=[2, 3, 4, 5],
)

#: DARTS (second order), Liu et al. 2019: the cell o-DARTS starts from.
DARTS_V2 = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3, 4, 5],
)

OSEP_REPLACEMENT: Dict[str, str] = {
    "sep_conv_3x3": "osep_3x3", "sep_conv_5x5": "osep_5x5",
    "dil_conv_3x3": "osep_dil_3x3", "dil_conv_5x5": "osep_dil_5x5",
}
SOSEP_REPLACEMENT: Dict[str, str] = {
    "sep_conv_3x3": "sosep_3x3", "sep_conv_5x5": "sosep_5x5",
    "dil_conv_3x3": "osep_dil_3x3", "dil_conv_5x5": "osep_dil_5x5",
}


def to_osep(genotype: Genotype, spatial: bool = False) -> Genotype:
    """The paper's dsep -> osep replacement: sep_conv_K -> osep_K (sosep_K if spatial),
    dil_conv_K -> osep_dil_K; every other op is kept."""
    table = SOSEP_REPLACEMENT if spatial else OSEP_REPLACEMENT
    g = validate_genotype(genotype)
    swap = lambda edges: [(table.get(op, op), i) for op, i in edges]  # noqa: E731
    return Genotype(swap(g.normal), list(g.normal_concat), swap(g.reduce), list(g.reduce_concat))


# -- validation ----------------------------------------------------------------------
def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_edges(edges: Any, field: str) -> List[Tuple[str, int]]:
    if isinstance(edges, (str, bytes, Mapping)) or not isinstance(edges, (list, tuple)):
        raise ValueError(f"genotype field '{field}' must be a list of (op, input) pairs, got {type(edges).__name__}")
    if len(edges) == 0:
        raise ValueError(f"genotype field '{field}' is empty: a cell needs two (op, input) pairs per node")
    if len(edges) % 2:
        raise ValueError(f"genotype field '{field}' has {len(edges)} pairs: a cell needs two (op, input) pairs "
                         f"per node, so an even number >= 2 (8 for the standard 4-node cell)")
    if len(edges) > 2 * _MAX_NODES:
        raise ValueError(f"genotype field '{field}' has {len(edges)} pairs, more than {2 * _MAX_NODES}")
    out: List[Tuple[str, int]] = []
    for pos, edge in enumerate(edges):
        where = f"{field}[{pos}]"
        if isinstance(edge, Mapping):  # {"op": ..., "input": ...} (a friendly YAML form)
            if set(edge) != {"op", "input"}:
                raise ValueError(f"genotype {where}: a mapping edge needs exactly the keys 'op' and 'input', "
                                 f"got {sorted(map(str, edge))}")
            edge = (edge["op"], edge["input"])
        if isinstance(edge, (str, bytes)) or not isinstance(edge, (list, tuple)) or len(edge) != 2:
            raise ValueError(f"genotype {where} must be an (op, input) pair, got {_short(edge)}")
        op, index = edge
        if not isinstance(op, str):
            raise ValueError(f"genotype {where}: op name must be a string, got {_short(op)}")
        if op not in OPS:
            raise ValueError(f"genotype {where}: unknown op {_short(op)}; known ops: {', '.join(OPS)}")
        if not _is_int(index):
            raise ValueError(f"genotype {where} ({op}): input index must be an integer, got {_short(index)}")
        node = pos // 2
        if not 0 <= index <= node + 1:
            raise ValueError(f"genotype {where} ({op}, {index}): input index out of range, node {node} "
                             f"can only take inputs 0..{node + 1}")
        out.append((op, int(index)))
    return out


def _check_concat(concat: Any, field: str, num_nodes: int) -> List[int]:
    if isinstance(concat, range):
        if len(concat) > _MAX_RANGE_LEN:
            raise ValueError(f"genotype field '{field}' is too long")
        concat = list(concat)
    if isinstance(concat, (str, bytes, Mapping)) or not isinstance(concat, (list, tuple)):
        raise ValueError(f"genotype field '{field}' must be a list of state indices, got {type(concat).__name__}")
    if not concat:
        raise ValueError(f"genotype field '{field}' is empty")
    out: List[int] = []
    for k in concat:
        if not _is_int(k):
            raise ValueError(f"genotype field '{field}': state index must be an integer, got {_short(k)}")
        if not 0 <= k <= num_nodes + 1:
            raise ValueError(f"genotype field '{field}': state index {k} out of range 0..{num_nodes + 1} "
                             f"(a cell with {num_nodes} nodes)")
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


def num_nodes_of(genotype: Genotype, cell_type: str = "normal") -> int:
    """Number of intermediate nodes of one cell of ``genotype``."""
    _check_cell_type(cell_type)
    return len(getattr(genotype, cell_type)) // 2


def _check_cell_type(cell_type: str) -> None:
    if cell_type not in CELL_TYPES:
        raise ValueError(f"cell type must be 'normal' or 'reduce', got {cell_type!r}")


#: o-DARTS: DARTS V2 with every depth separable convolution replaced by osep.
O_DARTS = to_osep(DARTS_V2)

#: Names ``genotype_from_arg`` resolves without parsing.
KNOWN_GENOTYPES: Dict[str, Genotype] = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2, "O_DARTS": O_DARTS}


def random_genotype(op_candidates: Optional[Sequence[str]] = None, num_nodes: int = 4,
                    seed: Optional[int] = None) -> Genotype:
    """A uniformly random genotype over ``op_candidates`` (default ``PRIMITIVES``): every edge
    draws an op and an input of its node, concat lists all nodes (the search space's form)."""
    import random

    ops = list(PRIMITIVES if op_candidates is None else op_candidates)
    if not ops:
        raise ValueError("op_candidates is empty")
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or not 1 <= num_nodes <= _MAX_NODES:
        raise ValueError(f"num_nodes must be an integer in 1..{_MAX_NODES}, got {num_nodes!r}")
    rng = random.Random(seed)
    cells = {c: [(rng.choice(ops), rng.randrange(n + 2)) for n in range(num_nodes) for _ in (0, 1)]
             for c in CELL_TYPES}
    full = list(range(2, num_nodes + 2))
    return validate_genotype(Genotype(cells["normal"], full, cells["reduce"], list(full)))


# -- dict / JSON / YAML ------------------------------------------------------------------
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

    A mapping whose keys are NNI arch labels (``normal/op_2_0`` ...) is read with
    :func:`arch_to_genotype`.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"a genotype mapping is needed, got {type(data).__name__}")
    keys = [str(k) for k in data]
    if keys and all("/" in k for k in keys):
        return arch_to_genotype(data)
    missing = [f for f in FIELDS if f not in data]
    if missing:
        raise ValueError(f"genotype is missing field(s) {', '.join(repr(m) for m in missing)} "
                         f"(needs {', '.join(FIELDS)})")
    unknown = [k for k in keys if k not in FIELDS]
    if unknown:
        raise ValueError(f"genotype has unknown field(s) {', '.join(repr(u) for u in unknown)} "
                         f"(allowed: {', '.join(FIELDS)})")
    return validate_genotype(Genotype(**{f: data[f] for f in FIELDS}))


def genotype_to_yaml(genotype: Genotype) -> str:
    """YAML text of a genotype, edges in flow style (``- [osep_3x3, 0]``), with a repr comment."""
    import yaml

    d = genotype_to_dict(genotype)
    body = yaml.safe_dump(d, default_flow_style=None, sort_keys=False, width=120)
    return "# osep-nas genotype (osep_nas.genotypes.load_genotype reads it)\n" + body


# -- the DARTS repr parser (no eval) -------------------------------------------------------
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<int>[+-]?[0-9]+)
  | (?P<str>'[^'\\\n]*'|"[^"\\\n]*")
  | (?P<punct>[()\[\],=])
""", re.VERBOSE)


class _Parser:
    """Recursive descent over the tokens of ``Genotype(normal=[('op', 0), ...], ...)``.

    Values: ints, strings, lists, tuples, ``range(...)`` and one ``Genotype(...)`` call.
    """

    def __init__(self, text: str):
        self.tokens: List[Tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:  # reported when the parser reaches it, so earlier errors come first
                self.tokens.append(("error", text[pos:pos + 20], pos))
                break
            kind = m.lastgroup
            if kind != "ws":
                self.tokens.append((kind, m.group(), pos))
            pos = m.end()
        self.i = 0

    def peek(self) -> Tuple[str, str, int]:
        tok = self.tokens[self.i] if self.i < len(self.tokens) else ("end", "", -1)
        if tok[0] == "error":
            raise ValueError(f"genotype text: unexpected character {tok[1][0]!r} at offset {tok[2]} (near {tok[1]!r})")
        return tok

    def take(self, value: Optional[str] = None, kind: Optional[str] = None) -> Tuple[str, str, int]:
        tok = self.peek()
        if tok[0] == "end":
            raise ValueError(f"genotype text ends too early (expected {value or kind or 'more'})")
        if (value is not None and tok[1] != value) or (kind is not None and tok[0] != kind):
            raise ValueError(f"genotype text: expected {value or kind!r} at offset {tok[2]}, got {tok[1]!r}")
        self.i += 1
        return tok

    def parse(self) -> Genotype:
        kind, name, pos = self.peek()
        if kind != "name" or name.split(".")[-1] != "Genotype":
            raise ValueError(f"genotype text must start with Genotype(...), got {name or kind!r}")
        value = self.value(0)
        if self.peek()[0] != "end":
            tok = self.peek()
            raise ValueError(f"genotype text: unexpected {tok[1]!r} at offset {tok[2]} after the Genotype(...)")
        if not isinstance(value, Genotype):
            raise ValueError("genotype text must be one Genotype(...) call")
        return value

    def value(self, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise ValueError(f"genotype text is nested deeper than {_MAX_DEPTH} levels")
        kind, tok, pos = self.peek()
        if kind == "int":
            self.i += 1
            digits = tok.lstrip("+-")
            if len(digits) > _MAX_INT_DIGITS:
                raise ValueError(f"genotype text: integer too large at offset {pos}")
            return int(tok)
        if kind == "str":
            self.i += 1
            return tok[1:-1]
        if tok == "[":
            self.i += 1
            return self.sequence("]", depth)
        if tok == "(":
            self.i += 1
            return tuple(self.sequence(")", depth))
        if kind == "name":
            return self.call(depth)
        if kind == "end":
            raise ValueError("genotype text ends too early (expected a value)")
        raise ValueError(f"genotype text: unexpected {tok!r} at offset {pos}")

    def sequence(self, close: str, depth: int) -> list:
        items = []
        while True:
            if self.peek()[1] == close:
                self.i += 1
                return items
            items.append(self.value(depth + 1))
            if self.peek()[1] == ",":
                self.i += 1
            elif self.peek()[1] != close:
                tok = self.peek()
                if tok[0] == "end":
                    raise ValueError(f"genotype text ends too early (missing {close!r})")
                raise ValueError(f"genotype text: expected ',' or {close!r} at offset {tok[2]}, got {tok[1]!r}")

    def call(self, depth: int) -> Any:
        _, name, pos = self.take(kind="name")
        short = name.split(".")[-1]
        if short not in ("Genotype", "range"):
            raise ValueError(f"genotype text: name {name!r} at offset {pos} is not allowed "
                             f"(only Genotype(...) and range(...) may appear; text is never evaluated)")
        self.take("(")
        args: List[Any] = []
        kwargs: Dict[str, Any] = {}
        while self.peek()[1] != ")":
            kind, tok, p = self.peek()
            nxt = self.tokens[self.i + 1] if self.i + 1 < len(self.tokens) else ("end", "", -1)
            if kind == "name" and nxt[1] == "=":
                self.i += 2
                if tok in kwargs:
                    raise ValueError(f"genotype text: keyword {tok!r} given twice")
                kwargs[tok] = self.value(depth + 1)
            else:
                if kwargs:
                    raise ValueError(f"genotype text: positional argument after keyword at offset {p}")
                args.append(self.value(depth + 1))
            if self.peek()[1] == ",":
                self.i += 1
            elif self.peek()[1] != ")":
                t = self.peek()
                if t[0] == "end":
                    raise ValueError(f"genotype text ends too early (missing ')' of {short}(...))")
                raise ValueError(f"genotype text: expected ',' or ')' at offset {t[2]}, got {t[1]!r}")
        self.take(")")
        if short == "range":
            if kwargs or not 1 <= len(args) <= 3 or not all(_is_int(a) for a in args):
                raise ValueError("genotype text: range(...) takes one to three integers")
            if len(args) == 3 and args[2] == 0:
                raise ValueError("genotype text: range(...) step must not be zero")
            r = range(*args)
            if len(r) > _MAX_RANGE_LEN:
                raise ValueError(f"genotype text: range(...) with {len(r)} items is too long")
            return list(r)
        if depth > 0:
            raise ValueError("genotype text: Genotype(...) must be the outermost call")
        if len(args) > len(FIELDS):
            raise ValueError(f"genotype text: Genotype(...) takes at most {len(FIELDS)} arguments, got {len(args)}")
        fields = dict(zip(FIELDS, args))
        for k, v in kwargs.items():
            if k not in FIELDS:
                raise ValueError(f"genotype text: unknown field {k!r} (allowed: {', '.join(FIELDS)})")
            if k in fields:
                raise ValueError(f"genotype text: field {k!r} given twice")
            fields[k] = v
        missing = [f for f in FIELDS if f not in fields]
        if missing:
            raise ValueError(f"genotype is missing field(s) {', '.join(repr(m) for m in missing)}")
        return Genotype(**fields)


_CALL_START = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_.]*\s*\(")


def parse_genotype(text: Union[str, bytes]) -> Genotype:
    """Parse a genotype from the DARTS repr, JSON or YAML text; never evaluates code.

    Accepted: ``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5],
    reduce=[...], reduce_concat=range(2, 6))`` (lists or tuples, ``range(...)``,
    positional or keyword fields); a JSON object or YAML mapping with those four keys
    (edges as ``[op, input]`` pairs or ``{op:, input:}`` mappings); a mapping of NNI
    arch labels.  A file path is not accepted here (see :func:`load_genotype` and
    :func:`genotype_from_arg`).

    Raises:
        ValueError: naming the problem (empty or oversized text, syntax, unknown op,
            input index out of range, missing or unknown field, wrong type...).
    """
    if isinstance(text, bytes):
        if len(text) > MAX_TEXT_CHARS * 4:
            raise ValueError(f"genotype text is too large ({len(text)} bytes; the limit is {MAX_TEXT_CHARS} characters)")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"genotype text is not UTF-8: {exc}") from None
    if not isinstance(text, str):
        raise ValueError(f"genotype text must be a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"genotype text is too large ({len(text)} characters; the limit is {MAX_TEXT_CHARS})")
    if not text.strip():
        raise ValueError("genotype text is empty")
    call = _CALL_START.match(text)
    if call:
        name = call.group(0).strip().rstrip("(").strip()
        if name.split(".")[-1] != "Genotype":
            raise ValueError(f"genotype text must be a Genotype(...) call; name {name!r:.60} is not allowed "
                             f"(text is never evaluated)")
        return validate_genotype(_Parser(text).parse())
    stripped = text.lstrip()
    data: Any
    if stripped.startswith("{") or stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            if stripped.startswith("["):
                raise ValueError(f"genotype text is not valid JSON: {exc}") from None
            data = _yaml_load(text, json_error=exc)
        except RecursionError:
            raise ValueError("genotype JSON is nested too deeply") from None
    else:
        data = _yaml_load(text)
    if not isinstance(data, Mapping):
        raise ValueError(f"genotype text is not a DARTS Genotype(...) repr nor a JSON/YAML mapping "
                         f"(it reads as {type(data).__name__}: {str(data)[:60]!r})")
    return genotype_from_dict(data)


def _yaml_load(text: str, json_error: Optional[Exception] = None) -> Any:
    from osep_nas.config import ConfigError, strict_yaml_load

    try:
        return strict_yaml_load(text, "genotype text")
    except ConfigError as exc:
        msg = str(exc)
        msg = msg[len("genotype text: "):] if msg.startswith("genotype text: ") else msg
        if json_error is not None:
            raise ValueError(f"genotype text is neither valid JSON ({json_error}) nor YAML ({msg})") from None
        raise ValueError(f"genotype text is not a Genotype(...) repr, JSON or valid YAML: {msg}") from None
    except RecursionError:
        raise ValueError("genotype YAML is nested too deeply") from None


def _short(value: Any) -> str:
    from osep_nas.config import short_repr

    return short_repr(value, 80)


# -- files and command-line arguments -----------------------------------------------------
def load_genotype(path: Union[str, "os.PathLike[str]"]) -> Genotype:
    """Read a genotype file (YAML as written by :func:`save_genotype`, JSON or the DARTS repr)."""
    from osep_nas.io import read_user_bytes

    p = Path(path)
    data = read_user_bytes(p, MAX_GENOTYPE_FILE_BYTES, "genotype file")  # regular files only, bounded
    try:
        return parse_genotype(data)
    except ValueError as exc:
        raise ValueError(f"{p}: {exc}") from None


def save_genotype(genotype: Genotype, path: Union[str, "os.PathLike[str]"]) -> None:
    """Write ``genotype`` as YAML (JSON if the name ends with .json), atomically."""
    from osep_nas.io import atomic_write_text

    p = Path(path)
    if p.suffix.lower() == ".json":
        atomic_write_text(p, json.dumps(genotype_to_dict(genotype), indent=2) + "\n")
    else:
        atomic_write_text(p, genotype_to_yaml(genotype))


_PATHLIKE_SUFFIXES = (".yml", ".yaml", ".json", ".txt", ".genotype")


def genotype_from_arg(text_or_path: Union[str, "os.PathLike[str]"]) -> Genotype:
    """Resolve a CLI argument: an existing file -> :func:`load_genotype`; ``DARTS_V1``,
    ``DARTS_V2`` or ``O_DARTS`` (any case, ``-`` for ``_``) -> that genotype; else parse it."""
    if isinstance(text_or_path, os.PathLike):
        return load_genotype(text_or_path)
    if not isinstance(text_or_path, str):
        raise ValueError(f"genotype argument must be a string, got {type(text_or_path).__name__}")
    arg = text_or_path.strip()
    if not arg:
        raise ValueError("genotype argument is empty")
    key = arg.upper().replace("-", "_")
    if key in KNOWN_GENOTYPES:
        return validate_genotype(KNOWN_GENOTYPES[key])
    one_line = len(arg) < 4096 and "\n" not in arg
    if one_line and os.path.exists(arg):
        return load_genotype(arg)
    if one_line and not any(c in arg for c in "({:"):
        if arg.lower().endswith(_PATHLIKE_SUFFIXES) or os.sep in arg or "/" in arg:
            raise FileNotFoundError(f"genotype file not found: {arg}")
        raise ValueError(f"genotype {arg!r:.60} is not an existing file, a known genotype "
                         f"({', '.join(KNOWN_GENOTYPES)}) or a Genotype(...)/JSON/YAML text")
    return parse_genotype(text_or_path)


# -- NNI 3.0 arch dicts ----------------------------------------------------------------------
_LABEL = re.compile(r"^(normal|reduce)/(op|input)_(\d+)_(\d+)$")


def arch_label(cell_type: str, kind: str, node: int, k: int) -> str:
    """``{cell_type}/{op|input}_{i}_{k}`` for edge ``k`` of intermediate node ``node``
    (0-based), whose state index is ``i = node + 2`` (NNI's DARTS labels)."""
    _check_cell_type(cell_type)
    if kind not in ("op", "input"):
        raise ValueError(f"label kind must be 'op' or 'input', got {kind!r}")
    return f"{cell_type}/{kind}_{node + 2}_{k}"


def genotype_to_arch(genotype: Genotype, input_as_list: bool = True) -> Dict[str, Any]:
    """The NNI 3.0 arch dict (sample) of ``genotype``; see the module docstring for labels.

    Inputs are ``[j]`` lists as NNI's ``InputChoice`` samples them (``input_as_list=False``
    gives plain ints, the nnictl HPO form).  The space concatenates all intermediate
    nodes, so a genotype whose concat lists differ from ``range(2, num_nodes + 2)``
    raises ValueError.
    """
    g = validate_genotype(genotype)
    arch: Dict[str, Any] = {}
    for cell in CELL_TYPES:
        edges = getattr(g, cell)
        n_nodes = len(edges) // 2
        concat = getattr(g, f"{cell}_concat")
        if sorted(concat) != list(range(2, n_nodes + 2)):
            raise ValueError(f"genotype {cell}_concat {concat} cannot be expressed as an NNI arch: the search "
                             f"space concatenates all intermediate nodes, {list(range(2, n_nodes + 2))}")
        for pos, (op, j) in enumerate(edges):
            node, k = divmod(pos, 2)
            arch[arch_label(cell, "op", node, k)] = op
            arch[arch_label(cell, "input", node, k)] = [j] if input_as_list else j
    return arch


def arch_to_genotype(arch: Mapping[str, Any]) -> Genotype:
    """The genotype of an NNI 3.0 arch dict (inputs as ``[j]`` or ``j``).

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
        m = _LABEL.match(key)
        if m is None:
            raise ValueError(f"arch key {key!r} is not a cell label like 'normal/op_2_0' or 'normal/input_2_0'")
        cell, kind, i, k = m.group(1), m.group(2), int(m.group(3)), int(m.group(4))
        if i < 2 or i > _MAX_NODES + 1 or k > 1:
            raise ValueError(f"arch key {key!r}: node index must be 2..{_MAX_NODES + 1} and edge index 0 or 1")
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
                if not _is_int(j):
                    raise ValueError(f"arch '{cell}/input_{i}_{k}' must be an input index, got {_short(j)}")
                if not 0 <= j < i:
                    raise ValueError(f"arch '{cell}/input_{i}_{k}' = {j}: node {i} can only take inputs 0..{i - 1}")
                if not isinstance(entry["op"], str):
                    raise ValueError(f"arch '{cell}/op_{i}_{k}' must be an op name, got {_short(entry['op'])}")
                edges.append((entry["op"], j))
        edges_of[cell] = edges
    return validate_genotype(Genotype(
        normal=edges_of["normal"], normal_concat=list(range(2, len(edges_of["normal"]) // 2 + 2)),
        reduce=edges_of["reduce"], reduce_concat=list(range(2, len(edges_of["reduce"]) // 2 + 2)),
    ))


# -- plotting -------------------------------------------------------------------------------
_COLORS = {"input": "#a8e6a1", "node": "#9ecbff", "output": "#ffe08a"}
_OUT = "c_{k}"


def _cell_graph(genotype: Genotype, cell_type: str):
    """networkx DiGraph of one cell; edge attribute ``ops`` lists the op names (two edges
    from the same input merge into one arrow carrying both names)."""
    import networkx as nx

    g = validate_genotype(genotype)
    edges = getattr(g, cell_type)
    concat = getattr(g, f"{cell_type}_concat")
    n_nodes = len(edges) // 2
    names = ["c_{k-2}", "c_{k-1}"] + [str(n) for n in range(n_nodes)]
    graph = nx.DiGraph()
    for idx, name in enumerate(names):
        graph.add_node(name, kind="input" if idx < 2 else "node")
    graph.add_node(_OUT, kind="output")
    for pos, (op, j) in enumerate(edges):
        dst, src = names[pos // 2 + 2], names[j]
        if graph.has_edge(src, dst):
            graph[src][dst]["ops"].append(op)
        else:
            graph.add_edge(src, dst, ops=[op])
    for k in concat:
        graph.add_edge(names[k], _OUT, ops=[])
    return graph, names


def _layout(graph, names: List[str]) -> Dict[str, Tuple[float, float]]:
    """Left-to-right layered layout: x = longest path from the inputs; within a layer the
    nodes are ordered by the mean height of their predecessors (fewer crossings)."""
    depth: Dict[str, int] = {names[0]: 0, names[1]: 0}
    for name in names[2:]:
        depth[name] = 1 + max(depth[p] for p in graph.predecessors(name))
    depth[_OUT] = max(depth.values()) + 1
    pos: Dict[str, Tuple[float, float]] = {names[0]: (0.0, 1.0), names[1]: (0.0, -1.0)}
    for x in range(1, depth[_OUT] + 1):
        members = [n for n in names[2:] + [_OUT] if depth[n] == x]
        members.sort(key=lambda n: -sum(pos[p][1] for p in graph.predecessors(n) if p in pos)
                     / max(1, sum(1 for p in graph.predecessors(n) if p in pos)))
        m = len(members)
        for r, name in enumerate(members):
            pos[name] = (2.8 * x, 1.1 * ((m - 1) / 2.0 - r))
    return pos


def _place_labels(segments, nodes, box_of, node_half):
    """Greedy label placement along straight edges: for each edge pick the point (among
    fractions of its length) whose label box overlaps the node discs and the labels placed
    so far the least, preferring the middle of the edge."""
    placed: List[Tuple[float, float, float, float]] = []  # centre x, centre y, half width, half height
    out = []

    def overlap(a, b) -> float:
        dx = min(a[0] + a[2], b[0] + b[2]) - max(a[0] - a[2], b[0] - b[2])
        dy = min(a[1] + a[3], b[1] + b[3]) - max(a[1] - a[3], b[1] - b[3])
        return dx * dy if dx > 0 and dy > 0 else 0.0

    node_boxes = [(x, y, node_half[0], node_half[1]) for x, y in nodes]
    for (x0, y0), (x1, y1), text in segments:
        hw, hh = box_of(text)
        best, best_cost = None, None
        for step in range(13):
            t = 0.5 + (0.05 * ((step + 1) // 2)) * (1 if step % 2 else -1)
            c = (x0 + t * (x1 - x0), y0 + t * (y1 - y0), hw, hh)
            cost = sum(overlap(c, b) for b in placed) * 4 + sum(overlap(c, b) for b in node_boxes) + abs(t - 0.5) * 1e-3
            if best_cost is None or cost < best_cost - 1e-12:
                best, best_cost = c, cost
        placed.append(best)
        out.append(((best[0], best[1]), text))
    return out


def plot_cell(genotype: Genotype, cell_type: str, path: Union[str, "os.PathLike[str]"],
              title: Optional[str] = None) -> Path:
    """Draw one cell (``"normal"`` or ``"reduce"``) to ``path`` (.png, .svg or .pdf), atomically.

    Inputs ``c_{k-2}``, ``c_{k-1}`` (green), intermediate nodes ``0..n-1`` (blue) and the
    output ``c_{k}`` (yellow, fed by the concatenated nodes through dashed arrows), laid
    out left to right, op edges labelled with their op names.  Uses matplotlib's Agg
    canvas directly (no pyplot, no global backend change).
    """
    import networkx as nx
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from osep_nas.io import atomic_write_bytes

    _check_cell_type(cell_type)
    p = Path(path)
    fmt = p.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg", "pdf"):
        raise ValueError(f"plot path must end with .png, .svg or .pdf, got {p.name!r}")
    graph, names = _cell_graph(genotype, cell_type)
    pos = _layout(graph, names)
    xs = [x for x, _ in pos.values()]
    ys = [y for _, y in pos.values()]
    span_x, span_y = max(xs) - min(xs), max(ys) - min(ys)
    width = max(7.0, 1.15 * span_x + 2.5)
    height = max(4.0, 1.25 * span_y + 2.2)
    fig = Figure(figsize=(width, height), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_axis_off()
    node_size = 1500  # points^2: a disc of about 0.54 inch
    axes_w, axes_h = width * 0.86, height * 0.78  # inches the data roughly spans
    per_in_x = (span_x * 1.16 + 1e-9) / axes_w
    per_in_y = (max(span_y, 1.0) * 1.3) / axes_h
    op_edges = [(u, v) for u, v, d in graph.edges(data=True) if d["ops"]]
    nx.draw_networkx_edges(graph, pos, ax=ax, edgelist=op_edges, arrows=True, arrowstyle="-|>", arrowsize=15,
                           width=1.4, edge_color="#444444", node_size=node_size)
    y_out = pos[_OUT][1]
    for u, v, d in graph.edges(data=True):
        if d["ops"]:
            continue
        (x0, y0), (x1, y1) = pos[u], pos[v]
        blocked = any(x0 < pos[n][0] < x1 and abs(y0 + (y1 - y0) * (pos[n][0] - x0) / (x1 - x0) - pos[n][1]) < 0.45
                      for n in graph.nodes if n not in (u, v))
        bend = (-0.15 if y0 > y_out else 0.15) if abs(y0 - y_out) > 1e-9 else 0.0
        if blocked:
            bend = -0.3 if y0 >= y_out else 0.3
        nx.draw_networkx_edges(graph, pos, ax=ax, edgelist=[(u, v)], arrows=True, arrowstyle="-|>",
                               arrowsize=13, width=1.1, edge_color="#9a9a9a", style="dashed",
                               node_size=node_size, connectionstyle=f"arc3,rad={bend}")
    kinds = nx.get_node_attributes(graph, "kind")
    order = list(graph.nodes)
    nx.draw_networkx_nodes(graph, pos, ax=ax, nodelist=order, node_size=node_size,
                           node_color=[_COLORS[kinds[n]] for n in order], edgecolors="#333333", linewidths=1.2)
    labels = {n: (f"${n}$" if n.startswith("c_") else n) for n in order}
    nx.draw_networkx_labels(graph, pos, ax=ax, labels=labels, font_size=13, font_weight="bold")
    segments = [(pos[u], pos[v], "\n".join(graph[u][v]["ops"])) for u, v in op_edges]

    def box_of(text: str) -> Tuple[float, float]:
        lines = text.split("\n")
        w_in = 0.075 * max(len(line) for line in lines) + 0.1
        h_in = 0.16 * len(lines) + 0.08
        return w_in / 2 * per_in_x, h_in / 2 * per_in_y

    node_half = (0.27 * per_in_x, 0.27 * per_in_y)
    for (x, y), text in _place_labels(segments, [pos[n] for n in order], box_of, node_half):
        ax.text(x, y, text, fontsize=9, ha="center", va="center", zorder=5,
                bbox=dict(boxstyle="round,pad=0.25", fc="white", ec="#aaaaaa", alpha=0.95))
    ax.set_title(title or f"{cell_type} cell", fontsize=14)
    ax.margins(0.08, 0.15)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    atomic_write_bytes(p, buf.getvalue())
    return p
