"""The published cells (DARTS V1 and V2, o-DARTS) and the paper's dsep -> osep replacement."""
from __future__ import annotations

from typing import Dict

from osep_nas.genotypes.base import Genotype
from osep_nas.genotypes.validation import validate_genotype

__all__ = ["DARTS_V1", "DARTS_V2", "O_DARTS", "KNOWN_GENOTYPES", "OSEP_REPLACEMENT", "SOSEP_REPLACEMENT", "to_osep"]

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


#: o-DARTS: DARTS V2 with every depth separable convolution replaced by osep.
O_DARTS = to_osep(DARTS_V2)

#: Names ``genotype_from_arg`` resolves without parsing.
KNOWN_GENOTYPES: Dict[str, Genotype] = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2, "O_DARTS": O_DARTS}
