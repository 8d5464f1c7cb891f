"""Random genotypes: the uniform sampler of the DARTS cell space."""
from __future__ import annotations

import random
from typing import Optional, Sequence

from osep_nas.genotypes.base import CELL_TYPES, MAX_NODES, Genotype
from osep_nas.genotypes.validation import validate_genotype
from osep_nas.ops import PRIMITIVES

__all__ = ["random_genotype"]


def random_genotype(op_candidates: Optional[Sequence[str]] = None, num_nodes: int = 4,
                    seed: Optional[int] = None) -> Genotype:
    """A uniformly random genotype over ``op_candidates`` (default ``PRIMITIVES``): every edge
    draws an op and an input of its node, concat lists all nodes (the search space's form)."""
    ops = list(PRIMITIVES if op_candidates is None else op_candidates)
    if not ops:
        raise ValueError("op_candidates is empty")
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or not 1 <= num_nodes <= MAX_NODES:
        raise ValueError(f"num_nodes must be an integer in 1..{MAX_NODES}, got {num_nodes!r}")
    rng = random.Random(seed)
    cells = {c: [(rng.choice(ops), rng.randrange(n + 2)) for n in range(num_nodes) for _ in (0, 1)]
             for c in CELL_TYPES}
    full = list(range(2, num_nodes + 2))
    return validate_genotype(Genotype(cells["normal"], full, cells["reduce"], list(full)))

