"""Group counts of an osep plan: the real-valued optimum of Theorem 1 (with Algorithm 1's
masking) and the two integer choices, the exact divisor search and the paper's layout."""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

__all__ = ["real_groups", "divisor_groups", "paper_layout"]


# -- the real-valued optimum (Theorem 1 with Algorithm 1's masking) --------------
def real_groups(channels: Sequence[int], kernel_areas: Sequence[int], gamma: float) -> List[float]:
    """Real-valued optimal groups g_l = C_l / n_l, with out-of-range ones fixed and re-solved.

    Minimises sum_l a_l / g_l (a_l = C_l C_{l+1} K_l) subject to
    prod_l g_l <= C_2 ... C_N / gamma and 1 <= g_l <= min(C_l, C_{l+1}).
    """
    n = len(kernel_areas)
    a = [channels[l] * channels[l + 1] * kernel_areas[l] for l in range(n)]
    upper = [min(channels[l], channels[l + 1]) for l in range(n)]
    budget = math.prod(channels[1:n]) / gamma  # bound on the product of the groups
    fixed: Dict[int, float] = {}
    for _ in range(n + 1):
        free = [l for l in range(n) if l not in fixed]
        if not free:
            break
        rest = budget / math.prod(fixed.values()) if fixed else budget
        # all free cost terms equal s at the optimum: a_l / g_l = s
        s = (math.prod(a[l] for l in free) / max(rest, 1e-300)) ** (1.0 / len(free))
        g = {l: a[l] / s for l in free}
        changed = False
        for l in free:
            if g[l] < 1:
                fixed[l] = 1.0
                changed = True
            elif g[l] > upper[l]:
                fixed[l] = float(upper[l])
                changed = True
        if not changed:
            fixed.update(g)
            break
    return [fixed[l] for l in range(n)]


# -- integer choices -------------------------------------------------------------
def _divisors(n: int) -> List[int]:
    small = [d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def divisor_groups(channels: Sequence[int], kernel_areas: Sequence[int], gamma: float) -> List[int]:
    """Exact minimum of sum a_l / g_l over g_l | gcd(C_l, C_{l+1}) with the channel condition."""
    n = len(kernel_areas)
    # prod(n_l) >= gamma * C_1  <=>  prod(g_l) <= prod(C_1..C_N) / (gamma * C_1)
    # when C_2 ... C_N < gamma the overlap cannot be reached at all: dense groups (all 1)
    # give the most overlap there is, as Algorithm 1's masking (g_l -> 1) does
    limit = max(1.0, math.prod(channels[1:n]) / gamma * (1 + 1e-12))
    states: Dict[int, Tuple[int, Tuple[int, ...]]] = {1: (0, ())}
    for l in range(n):
        a = channels[l] * channels[l + 1] * kernel_areas[l]
        nxt: Dict[int, Tuple[int, Tuple[int, ...]]] = {}
        for prod, (cost, tup) in states.items():
            for d in _divisors(math.gcd(channels[l], channels[l + 1])):
                p = prod * d
                if p > limit:
                    break
                c = cost + a // d
                if p not in nxt or c < nxt[p][0]:
                    nxt[p] = (c, tup + (d,))
        # keep the Pareto states: a larger product is only worth keeping if it is cheaper
        pruned: Dict[int, Tuple[int, Tuple[int, ...]]] = {}
        best = None
        for p in sorted(nxt):
            c, tup = nxt[p]
            if best is None or c < best:
                pruned[p] = (c, tup)
                best = c
        states = pruned
    cost, groups = min(states.values(), key=lambda v: (v[0], math.prod(v[1])))
    return list(groups)


def paper_layout(channels: Sequence[int], alg_groups: Sequence[int],
                  connect: bool = False) -> Tuple[List[int], List[int]]:
    """Groups and held channel counts of ``rounding="paper"`` from Algorithm 1's groups g_l.

    The first convolution takes n_1 = ceil(C_1 / g_1) inputs per group and holds C_1
    rounded up to a multiple of n_1: only the groups that see a real input channel are
    built (at most g_1; a group of zero padding would compute nothing).  Every later
    convolution keeps g_l groups; internal channel counts are rounded up so that both
    neighbouring convolutions divide them, and the output is rounded up to a multiple of
    g_N (the module cuts it back to C_out).  ``connect`` additionally makes every group
    of convolution l >= 2 wide enough to read one channel of each group before it, which
    makes every output see every input (used when the plain layout would not).
    Returns (groups, held channels C'_1 .. C'_{N+1}).
    """
    n = len(alg_groups)
    first_width = -(-channels[0] // alg_groups[0])
    held = [_round_up(channels[0], first_width)]
    groups = [held[0] // first_width]
    for l in range(1, n):
        step = _lcm(groups[l - 1], alg_groups[l])
        need = max(channels[l], alg_groups[l] * groups[l - 1]) if connect else channels[l]
        held.append(_round_up(need, step))
        groups.append(alg_groups[l])
    held.append(_round_up(channels[n], groups[-1]))
    return groups, held


def _lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m
