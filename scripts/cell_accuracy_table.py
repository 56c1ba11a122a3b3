"""The README's accuracy table of the periodic cell problems: error, error estimate and time per P on
every exact case of tests/test_ergodic*.py (prints a Markdown table; not a test).

Each row solves the grids N/4, N/2, N (coarse to fine) and reports the largest error of Hbar_N over
its P values, the largest stored estimate, the largest error of the Richardson values (where the
observed order is clean), and the wall time per P value of the three grids together.

Usage: python scripts/cell_accuracy_table.py [--quick]   (--quick: skip the N = 256 and 64^3 rows)
"""

import argparse
import time

import numpy as np
from numba import njit

from hjbsolve.cell.ergodic import PeriodicHamiltonian
from hjbsolve.cell.ergodic.tables import effective_hamiltonian_estimate
from tests.test_ergodic import (HQ1, P_GRID, VHAT_1D, VHAT_2D_CROSS, V2cross, V2sep, hbar_exact_nu0,
                                hbar_hopf_cole)
from tests.test_ergodic_3d import P3, V3cross, vhat_3d_cross
from tests.test_ergodic_estimate import V_diag, hbar_diag


def row(name, ham, Ps, N, nu, exact, offset=0.0):
    t = time.perf_counter()
    est = effective_hamiltonian_estimate(ham, Ps, N, nu, offset=offset / N)
    dt = (time.perf_counter() - t) / len(Ps)
    err = np.abs(est.hbar - exact)
    rich = np.abs(est.richardson - exact)
    rich = f"{np.nanmax(rich):.1e}" if np.isfinite(rich).any() else "-"
    dts = f"{dt:.2f} s" if dt >= 0.1 else f"{dt * 1e3:.1f} ms"
    print(f"| {name} | {N} | {err.max():.1e} | {est.estimate.max():.1e} | {rich} | {dts} |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    # JIT warm-up
    effective_hamiltonian_estimate(HQ1, [0.5], 16, 0.0)
    print("| problem | N | max error | max estimate | max Richardson error | time per P |")
    print("|---|---|---|---|---|---|")
    ex1 = np.array([hbar_exact_nu0(P) for P in P_GRID])
    row("1-D nu = 0, shifted grid, 32 P in [0, 3]", HQ1, P_GRID, 128, 0.0, ex1, offset=0.5)
    Ps = np.linspace(0.0, 2.0, 5)
    row("1-D nu = 0.05 (Hopf-Cole), 5 P", HQ1, Ps, 256, 0.05,
        np.array([hbar_hopf_cole(P, 0.05, VHAT_1D, 64) for P in Ps]))
    Ps2 = np.array([[0.5, 0.2], [1.0, 1.6], [2.0, 0.4]])
    row("2-D separable nu = 0, shifted grid, 3 P", PeriodicHamiltonian.quadratic(V2sep), Ps2, 32, 0.0,
        np.array([hbar_exact_nu0(a) + hbar_exact_nu0(b) for a, b in Ps2]), offset=0.5)
    Psx = np.array([[0.0, 0.0], [1.0, 0.5], [-1.5, 1.0]])
    row("2-D non-separable nu = 0.5 (Hopf-Cole), 3 P", PeriodicHamiltonian.quadratic(V2cross), Psx, 64,
        0.5, np.array([hbar_hopf_cole(P, 0.5, VHAT_2D_CROSS, 8) for P in Psx]))
    Psd = np.array([[1.5, 0.2], [1.0, 0.5], [0.3, 0.1], [2.0, -0.5]])
    exd = np.array([hbar_diag(P) for P in Psd])
    hd = PeriodicHamiltonian.quadratic(V_diag)
    for N in ((128,) if args.quick else (128, 256)):
        row("2-D non-separable nu = 0, V = cos 2 pi (y1 + y2), 4 P", hd, Psd, N, 0.0, exd)
    h3 = PeriodicHamiltonian.quadratic(V3cross)
    ref3 = np.array([hbar_hopf_cole(P3, 0.5, vhat_3d_cross(), 4)])
    for N in ((32,) if args.quick else (32, 64)):
        row("3-D non-separable nu = 0.5 (Hopf-Cole), 1 P", h3, P3[None, :], N, 0.5, ref3)


if __name__ == "__main__":
    main()
