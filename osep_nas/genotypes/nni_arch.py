"""Genotype <-> NNI 3.0 arch dict (the sample of NNI's DARTS space), both validated.

See :mod:`osep_nas.genotypes.arch_labels` for the label format.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

from osep_nas.genotypes.arch_labels import arch_label, read_arch
from osep_nas.genotypes.base import CELL_TYPES, Genotype
from osep_nas.genotypes.validation import validate_genotype

__all__ = ["arch_label", "genotype_to_arch", "arch_to_genotype"]


def genotype_to_arch(genotype: Genotype, input_as_list: bool = True) -> Dict[str, Any]:
    """The NNI 3.0 arch dict (sample) of ``genotype``; see arch_labels for the labels.

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
    return validate_genotype(read_arch(arch))
