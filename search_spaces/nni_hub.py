"""Register the osep ops into NNI's hub op table (``nni.nas.hub.pytorch.nasnet.OPS``).

NNI's NDS-family spaces (``NDS``, ``DARTS``, ``ENAS``... in ``nni.nas.hub.pytorch``)
build their cells from that table, whose factories take ``(C, stride, affine)``.
After registration ``NDS(['osep_3x3', 'max_pool_3x3', 'skip_connect'], width=8,
num_cells=3, dataset='cifar')`` builds.  Names the hub already defines (``none``,
``sep_conv_3x3``...) are left as NNI has them.

osep plans need a fixed channel count: NDS spaces whose ``width`` is a choice pass a
mutable ``C`` and get a ValueError saying so.
"""
from __future__ import annotations

from typing import Callable, Dict, List

from torch import nn

from osep_nas.ops import OPS, OSEP_PRIMITIVES

__all__ = ["register_hub_ops", "HUB_OPS"]

#: The ops registered into NNI's hub table (the osep primitives NNI does not have).
HUB_OPS: List[str] = [op for op in OSEP_PRIMITIVES if op.startswith(("osep_", "sosep_"))]


def _factory(name: str) -> Callable[[int, int, bool], nn.Module]:
    def build(C, stride, affine):
        if isinstance(C, bool) or not isinstance(C, int):
            raise ValueError(f"op {name!r} needs a fixed channel count, got {C!r} "
                             f"(use an int width with NNI's NDS spaces)")
        return OPS[name](C, stride, affine)

    build.__name__ = f"osep_hub_{name}"
    build.__qualname__ = build.__name__
    return build


def register_hub_ops(table: Dict[str, Callable] = None) -> List[str]:
    """Add the osep ops to NNI's hub table (idempotent); returns the names it added."""
    if table is None:
        from search_spaces._nni import nas_nn  # noqa: F401  (quiet NNI import)
        from nni.nas.hub.pytorch import nasnet

        table = nasnet.OPS
    added = []
    for name in HUB_OPS:
        if name not in table:  # never replace an entry, ours or someone else's
            table[name] = _factory(name)
            added.append(name)
    return added
