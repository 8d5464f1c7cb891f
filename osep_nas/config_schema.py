"""Checking a mapping against a dataclass schema: strict types, ranges, choices, and
unknown keys refused with a "did you mean" suggestion; messages name the key path."""
from __future__ import annotations

import dataclasses
import difflib
import math
import reprlib
from typing import Any, Dict, List, Sequence, Tuple, Union, get_args, get_origin, get_type_hints

__all__ = ["ConfigError", "short_repr", "one_line", "sections_of", "fields_of", "suggest", "check_value",
           "build_section", "leaf_index"]


class ConfigError(ValueError):
    """A config that does not match the schema; the message names the key path."""


_REPR = reprlib.Repr()
_REPR.maxlevel = 2
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = 4
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlong = 40


def short_repr(value: Any, limit: int = 80) -> str:
    """A size-limited ``repr`` for error messages: never formats a whole huge value."""
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a repr that fails must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def one_line(text: Any, limit: int = 80) -> str:
    """User text for a one-line message: control characters escaped, at most ``limit`` characters."""
    text = text if isinstance(text, str) else short_repr(text, limit)
    if text.isprintable() and len(text) <= limit:
        return text
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def sections_of(schema: type) -> Dict[str, type]:
    hints = get_type_hints(schema)
    return {f.name: hints[f.name] for f in dataclasses.fields(schema)}


def fields_of(section_cls: type) -> Dict[str, Tuple[Any, dataclasses.Field]]:
    hints = get_type_hints(section_cls)
    return {f.name: (hints[f.name], f) for f in dataclasses.fields(section_cls)}


def suggest(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def show(value: Any) -> str:
    return short_repr(value, 60)


def check_value(path: str, typ: Any, fld: dataclasses.Field, value: Any) -> Any:
    """Validate ``value`` against ``typ`` and the field's metadata; return it normalised."""
    meta = fld.metadata
    origin = get_origin(typ)
    if origin is Union:
        args = [a for a in get_args(typ) if a is not type(None)]
        if value is None:
            return None
        typ = args[0]
        origin = get_origin(typ)
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {show(value)}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {show(value)}")
    elif typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {show(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{path}: expected a finite number, got {value}")
        value = float(value)
    elif typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {show(value)}")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{path}: expected one of {', '.join(choices)}, got {show(value)}"
                              f"{suggest(value, choices)}")
        return value
    elif origin in (list, List):
        (item,) = get_args(typ)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {show(value)}")
        return [check_value(f"{path}[{i}]", item, fld, v) for i, v in enumerate(value)]
    elif origin in (dict, Dict):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{path}: expected a mapping with string keys, got {show(value)}")
        return dict(value)
    else:  # pragma: no cover - schema bug
        raise TypeError(f"{path}: unsupported schema type {typ}")
    # numbers: range checks
    check, lo, hi = meta.get("check"), meta.get("lo"), meta.get("hi")
    if check == "positive" and not value > 0:
        raise ConfigError(f"{path}: must be > 0, got {value}")
    if check == "nonneg" and not value >= 0:
        raise ConfigError(f"{path}: must be >= 0, got {value}")
    if lo is not None and value < lo:
        raise ConfigError(f"{path}: must be >= {lo}, got {value}")
    if hi is not None and (value >= hi if meta.get("hi_open") else value > hi):
        raise ConfigError(f"{path}: must be {'<' if meta.get('hi_open') else '<='} {hi}, got {value}")
    return value


def build_section(name: str, cls: type, raw: Any, all_fields: Dict[str, List[str]]) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a mapping of keys, got {show(raw)}")
    fields = fields_of(cls)
    values = {}
    for key, value in raw.items():
        if not isinstance(key, str) or key not in fields:
            key_s = str(key)
            if key_s in all_fields:  # a real key of another section
                hint = f" (did you mean {' or '.join(all_fields[key_s])}?)"
            else:  # the nearest key of any section, this section's winning ties
                scored = [(difflib.SequenceMatcher(None, key_s, p.split(".")[1]).ratio()
                           + (0.05 if p.startswith(name + ".") else 0.0), p)
                          for ps in all_fields.values() for p in ps]
                best = max(scored) if scored else (0.0, "")
                hint = f" (did you mean {best[1]}?)" if best[0] >= 0.6 else ""
            raise ConfigError(f"{name}.{one_line(key_s)}: unknown key{hint}")
        typ, fld = fields[key]
        values[key] = check_value(f"{name}.{key}", typ, fld, value)
    return cls(**values)


def leaf_index(schema: type) -> Dict[str, List[str]]:
    """field name -> ['section.field', ...] (for aliases and suggestions)."""
    index: Dict[str, List[str]] = {}
    for sec, cls in sections_of(schema).items():
        for key in fields_of(cls):
            index.setdefault(key, []).append(f"{sec}.{key}")
    return index
