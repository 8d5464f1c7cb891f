"""How close the integer plans are to Algorithm 1's real-valued minimum N*t.

For C_in = C_out = C in 8..512 (every integer), K in {3, 5}, gamma = 1, N = 2: the ratio
plan.params / (N*t) of the default (divisor) and the paper rounding; median, percentiles,
maximum and where the maximum is.  Not a speed benchmark; it lives here because it is a
measurement script that prints a table (run: python benchmarks/plan_quality.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from osep_nas import osep_plan  # noqa: E402


def main() -> None:
    channels = range(8, 513)
    print(f"plan.params / (N*t), C_in = C_out = C in {channels.start}..{channels.stop - 1}, gamma = 1, N = 2")
    print(f"{'K':>2} {'rounding':<9}{'median':>8}{'p75':>8}{'p90':>8}{'max':>8}{'at C':>6}{'share <= 1.10':>15}")
    for k in (3, 5):
        for rounding in ("divisor", "paper"):
            r = np.array([osep_plan(c, c, k, rounding=rounding).params / osep_plan(c, c, k).ideal_params
                          for c in channels])
            print(f"{k:>2} {rounding:<9}{np.median(r):>8.4f}{np.percentile(r, 75):>8.4f}{np.percentile(r, 90):>8.4f}"
                  f"{r.max():>8.4f}{channels.start + int(r.argmax()):>6}{(r <= 1.10).mean():>15.3f}")
    print("worst divisor cases are channel counts with a large prime factor (no divisor near the ideal group):")
    worst = sorted(channels, key=lambda c: -osep_plan(c, c, 3).params / osep_plan(c, c, 3).ideal_params)[:5]
    for c in worst:
        p = osep_plan(c, c, 3)
        print(f"  C={c}: groups {p.groups}, {p.params} vs N*t {p.ideal_params:.0f} ({p.params / p.ideal_params:.2f}x)")


if __name__ == "__main__":
    main()
