"""The one complexity counter: per-image counts, auxiliary exclusion, independent cross-check."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from osep_nas import OSepConv2d, count_flops, count_params


def _reference_macs(module: nn.Module, shape) -> int:
    with FlopCounterMode(display=False) as counter:
        module(torch.zeros(shape))
    return counter.get_total_flops() // 2


def test_batch_dimension_does_not_change_per_image_count():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_flops(conv, (3, 8, 8)) == count_flops(conv, (4, 3, 8, 8)) == 8 * 3 * 9 * 64
    osep = OSepConv2d(16, 16, 3)
    assert count_flops(osep, (16, 8, 8)) == count_flops(osep, (4, 16, 8, 8)) == osep.plan.params * 64


def test_osep_fast_and_reference_count_the_same_and_match_flop_counter():
    for impl in ("fast", "reference"):
        m = OSepConv2d(58, 58, 3, stride=2, impl=impl).eval()
        assert count_flops(m, (58, 16, 16)) == m.plan.flops(16, 16, stride=2)
    ref = OSepConv2d(58, 58, 3, stride=2, impl="reference").eval()
    assert count_flops(ref, (58, 16, 16)) == _reference_macs(ref, (1, 58, 16, 16))


class _WithAux(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 4, 1)
        self.auxiliary_head = nn.Linear(4, 10)

    def forward(self, x):
        y = self.body(x)
        if self.training:
            return y, self.auxiliary_head(y.mean((2, 3)))
        return y


def test_auxiliary_head_excluded_when_asked():
    m = _WithAux()
    assert count_params(m) == 4 * 3 + 4
    assert count_params(m, exclude_auxiliary=False) == 16 + 4 * 10 + 10
    assert count_flops(m, (3, 2, 2)) == 12 * 4
    assert count_flops(m, (3, 2, 2), exclude_auxiliary=False) == 12 * 4 + 40
