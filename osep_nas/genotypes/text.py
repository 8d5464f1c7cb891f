"""Genotype text: parse the DARTS repr, JSON or YAML without evaluating code, and write YAML.

``parse_genotype`` uses a small tokenizer and recursive descent parser for the DARTS
repr grammar (names ``Genotype`` and ``range``, strings, integers, lists, tuples,
keyword arguments), ``json`` and a strict ``yaml.safe_load``.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from osep_nas.genotypes.base import (FIELDS, MAX_DEPTH, MAX_INT_DIGITS, MAX_RANGE_LEN, MAX_TEXT_CHARS, Genotype,
                                     is_int)
from osep_nas.genotypes.validation import genotype_from_dict, genotype_to_dict, validate_genotype

__all__ = ["parse_genotype", "genotype_to_yaml"]


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
        if depth > MAX_DEPTH:
            raise ValueError(f"genotype text is nested deeper than {MAX_DEPTH} levels")
        kind, tok, pos = self.peek()
        if kind == "int":
            self.i += 1
            digits = tok.lstrip("+-")
            if len(digits) > MAX_INT_DIGITS:
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
            if kwargs or not 1 <= len(args) <= 3 or not all(is_int(a) for a in args):
                raise ValueError("genotype text: range(...) takes one to three integers")
            if len(args) == 3 and args[2] == 0:
                raise ValueError("genotype text: range(...) step must not be zero")
            r = range(*args)
            if len(r) > MAX_RANGE_LEN:
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

