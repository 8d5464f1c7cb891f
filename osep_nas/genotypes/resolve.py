"""Genotype files and the one genotype resolver (object | name | file | text).

Every reader of a genotype given by a user (``--genotype``, ``model.genotype``, a
factory's ``genotype=``) goes through :func:`resolve_genotype`; files are read through
the bounded reader of :mod:`osep_nas.io`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Union

from osep_nas.genotypes.base import MAX_GENOTYPE_FILE_BYTES, Genotype
from osep_nas.genotypes.cells import KNOWN_GENOTYPES
from osep_nas.genotypes.text import genotype_to_yaml, parse_genotype
from osep_nas.genotypes.validation import genotype_to_dict, validate_genotype

__all__ = ["load_genotype", "save_genotype", "resolve_genotype", "genotype_from_arg", "genotype_arg_text"]


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


def resolve_genotype(genotype: Any) -> Genotype:
    """A genotype from what a user gave: an object with the genotype fields (returned as
    is), an existing file (:func:`load_genotype`), ``DARTS_V1``, ``DARTS_V2`` or ``O_DARTS``
    (any case, ``-`` for ``_``), or its text (DARTS repr, JSON or YAML, never evaluated)."""
    if hasattr(genotype, "normal") and hasattr(genotype, "reduce"):
        return genotype
    if isinstance(genotype, os.PathLike):
        return load_genotype(genotype)
    if not isinstance(genotype, str):
        raise ValueError(f"genotype must be a Genotype, a name, genotype text or a file, got {type(genotype).__name__}")
    arg = genotype.strip()
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
    return parse_genotype(genotype)


#: The command line's name for the resolver.
genotype_from_arg = resolve_genotype


def genotype_arg_text(value: str) -> str:
    """The text a ``--genotype`` argument stands for: a file's content (read through the
    bounded reader), else the argument itself; configs keep text, not paths."""
    from osep_nas.io import read_user_text

    path = Path(value).expanduser()
    if len(value) < 4096 and "\n" not in value and os.path.lexists(path):  # lexists: no OSError on long text
        return read_user_text(path, MAX_GENOTYPE_FILE_BYTES, "--genotype file").strip()
    return value
