"""Genotypes: the DARTS cell encoding, the published cells, the osep replacement, and
safe conversion to and from text, files, NNI 3.0 arch dicts and plots.

One module per job: ``base`` (the namedtuple and limits), ``validation`` (the one
validator and the dict form), ``cells`` (published cells, ``to_osep``), ``text``
(parsing, never evaluating code), ``resolve`` (files and the one resolver),
``arch_labels`` / ``nni_arch`` (NNI 3.0 arch dicts), ``plot`` and ``sampling``.
"""
from __future__ import annotations

from osep_nas.genotypes.arch_labels import arch_label
from osep_nas.genotypes.base import (CELL_TYPES, FIELDS, MAX_GENOTYPE_FILE_BYTES, MAX_TEXT_CHARS, Genotype,
                                     num_nodes_of)
from osep_nas.genotypes.cells import (DARTS_V1, DARTS_V2, KNOWN_GENOTYPES, O_DARTS, OSEP_REPLACEMENT,
                                      SOSEP_REPLACEMENT, to_osep)
from osep_nas.genotypes.nni_arch import arch_to_genotype, genotype_to_arch
from osep_nas.genotypes.plot import plot_cell
from osep_nas.genotypes.resolve import (genotype_arg_text, genotype_from_arg, load_genotype, resolve_genotype,
                                        save_genotype)
from osep_nas.genotypes.sampling import random_genotype
from osep_nas.genotypes.text import genotype_to_yaml, parse_genotype
from osep_nas.genotypes.validation import check_genotype, genotype_from_dict, genotype_to_dict, validate_genotype
from osep_nas.ops import PRIMITIVES

__all__ = [
    "Genotype", "PRIMITIVES", "DARTS_V1", "DARTS_V2", "O_DARTS", "KNOWN_GENOTYPES",
    "OSEP_REPLACEMENT", "SOSEP_REPLACEMENT", "CELL_TYPES", "MAX_TEXT_CHARS",
    "to_osep", "parse_genotype", "validate_genotype", "genotype_to_dict", "genotype_from_dict",
    "genotype_to_yaml", "load_genotype", "save_genotype", "genotype_from_arg",
    "genotype_to_arch", "arch_to_genotype", "arch_label", "num_nodes_of", "random_genotype", "plot_cell",
    "resolve_genotype", "check_genotype", "genotype_arg_text", "FIELDS", "MAX_GENOTYPE_FILE_BYTES",
]
