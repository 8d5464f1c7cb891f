"""The DARTS genotype encoding: the namedtuple, its field names, the size limits that
every reader of genotypes enforces, and small helpers shared by the other modules.

A genotype lists, for each intermediate node of a cell, two ``(op, input)`` pairs:
``normal[2 * n]`` and ``normal[2 * n + 1]`` feed node ``n``.  Input 0 and 1 are the
outputs of the two previous cells (``c_{k-2}``, ``c_{k-1}``), input ``j >= 2`` is
intermediate node ``j - 2``; so node ``n`` may take inputs ``0 .. n + 1``.  The cell
output concatenates the states listed in ``normal_concat`` (``[2, 3, 4, 5]`` for the
standard 4-node cell).  Any even number >= 2 of pairs is a cell; the two cells of one
genotype may have different node counts.
"""
from __future__ import annotations

import numbers
from collections import namedtuple
from typing import Any, Tuple

Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")

CELL_TYPES: Tuple[str, str] = ("normal", "reduce")
FIELDS: Tuple[str, ...] = Genotype._fields

#: Text longer than this is refused before any parsing (a genotype is ~1 kB).
MAX_TEXT_CHARS = 100_000
MAX_GENOTYPE_FILE_BYTES = MAX_TEXT_CHARS * 4  # a genotype file: UTF-8 of at most MAX_TEXT_CHARS characters
MAX_DEPTH = 16           # nesting depth of the repr grammar ( Genotype( [ ( ... ) ] ) is 3 )
MAX_INT_DIGITS = 12
MAX_RANGE_LEN = 4096
MAX_NODES = 256


def is_int(x: Any) -> bool:
    """An integer that is not a bool (numpy integers count)."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def short(value: Any) -> str:
    """``value`` shortened for an error message."""
    from osep_nas.config import short_repr

    return short_repr(value, 80)


def check_cell_type(cell_type: str) -> None:
    if cell_type not in CELL_TYPES:
        raise ValueError(f"cell type must be 'normal' or 'reduce', got {cell_type!r}")


def num_nodes_of(genotype: Genotype, cell_type: str = "normal") -> int:
    """Number of intermediate nodes of one cell of ``genotype``."""
    check_cell_type(cell_type)
    return len(getattr(genotype, cell_type)) // 2
