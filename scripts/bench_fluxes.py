"""Errors and times of the metric, general (Godunov) and nonconvex cell problems (prints a
table; not a test). Exact references: tests/test_ergodic_fluxes.py (checkerboard octagon, 1-D
double well). JIT compilation is done on a small grid first and not timed.

1. Metric, checkerboard c in {1, 2}, G = c |q|_2, nu = 0: P = (cos pi/8, sin pi/8) (a tie of
   the axis and diagonal directions: first order) and P = (0.6, 0.3), at N = 64, 128, 256;
   target: error <= 1e-2 in <= 60 s per P at N <= 256.
2. General G = |q|^2/2 + cos + cos written as a formula against the quadratic form, nu = 0.
3. Nonconvex double well (q^2 - 1)^2/4 + 0.1 cos(2 pi y): 1-D at N = 200, 2-D (separable sum,
   written as a general formula) at N = 64.

Usage: python scripts/bench_fluxes.py [--Nmax 256]
"""

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hjbsolve.cell.ergodic import PeriodicHamiltonian, solve_ergodic  # noqa: E402
from tests.test_ergodic_fluxes import (G2_sep, G_dw, G_dw2, V2_sep, checker, hbar_dw,  # noqa: E402
                                       octagon)


def timed(H, P, N, m, **kw):
    t = time.perf_counter()
    r = solve_ergodic(H, P, N, 0.0, m, **kw)
    return r, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--Nmax", type=int, default=256)
    args = ap.parse_args()
    Ns = [N for N in (64, 128, 256) if N <= args.Nmax]
    print("1. metric checkerboard, G = c(y)|q|_2 (exact: octagon)")
    H = PeriodicHamiltonian.metric(checker, "l2")
    solve_ergodic(H, (0.3, 0.1), 8, 0.0, 2)
    for P in [(math.cos(math.pi / 8), math.sin(math.pi / 8)), (0.6, 0.3)]:
        for N in Ns:
            r, t = timed(H, P, N, 2)
            print(f"   P = ({P[0]:.4f}, {P[1]:.4f}) N = {N:4d}: Hbar = {r.hbar:.12f} error = "
                  f"{r.hbar - octagon(P):+.2e}  {t:6.2f} s  ({r.iterations} iterations)", flush=True)
    print("2. general G = |q|^2/2 + cos(2 pi y1) + cos(2 pi y2) vs the quadratic form, nu = 0")
    hg, hq = PeriodicHamiltonian.general(G2_sep), PeriodicHamiltonian.quadratic(V2_sep)
    solve_ergodic(hg, (0.3, 0.1), 8, 0.0, 2)
    for N in [N for N in (64, 128) if N <= args.Nmax]:
        r, t = timed(hg, (0.5, 1.0), N, 2)
        rq, tq = timed(hq, (0.5, 1.0), N, 2)
        print(f"   N = {N:4d}: general - quadratic = {r.hbar - rq.hbar:+.2e}  general {t:6.2f} s, "
              f"quadratic {tq:6.2f} s", flush=True)
    print("3. nonconvex double well (q^2 - 1)^2/4 + 0.1 cos (exact: min-max formulas)")
    h1 = PeriodicHamiltonian.general(G_dw)
    for P in (0.2, 0.55, 0.9, 1.4):
        r, t = timed(h1, P, 200, 1)
        print(f"   1-D P = {P:4.2f} N = 200: error = {r.hbar - hbar_dw(P):+.2e}  {t:6.3f} s", flush=True)
    h2 = PeriodicHamiltonian.general(G_dw2)
    solve_ergodic(h2, (0.3, 0.1), 8, 0.0, 2)
    for N in (32, 64):
        r, t = timed(h2, (0.2, 0.6), N, 2)
        ex = hbar_dw(0.2) + hbar_dw(0.6)
        print(f"   2-D P = (0.2, 0.6) N = {N}: error = {r.hbar - ex:+.2e}  {t:6.2f} s "
              f"({r.iterations} steps)", flush=True)
    print(f"(timings on a shared machine: compare ratios within one run)")


if __name__ == "__main__":
    main()
