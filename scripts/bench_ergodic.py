"""Timings of hjbsolve.cell.ergodic (prints figures; not a test).

1. 1-D viscous cell problem, G = |q|^2/2 + cos(2 pi y), nu = 0.05, N = 400: one Hbar(P)
   (cold start, after JIT warm-up); target <= 5 ms. Also a warm-started solve and nu = 0.
2. 2-D viscous cell problem, V = cos(2 pi y1) + cos(2 pi y2) + 0.5 cos(2 pi (y1 - y2)), at
   128^2: a 64-point Hbar(P) table (8 x 8 grid of P in [-2, 2]^2, serpentine order so that
   every solve is warm-started from a neighbour); target <= 60 s.
3. 2-D nu = 0, the same non-separable V: Hbar(P) with its error estimate (grids N/4, N/2, N solved
   coarse to fine, each warm-started from the interpolated coarser corrector) at N = --N0 (256):
   seconds per P value for the three grids together, against the fine grid alone (cold start then
   warm starts from the previous P); target <= 5 s per P.
4. 3-D viscous (nu = 0.5) cell problems at 32^3 and 64^3 (GMRES, FFT preconditioner).

JIT compilation (first calls, including numba cache loading) is timed separately.

Usage: python scripts/bench_ergodic.py [--nu2d 0.5 0.05] [--N2d 128] [--repeat 50] [--N0 256]
       [--skip 1d 2d nu0 3d]
"""

import argparse
import time

import numpy as np
from numba import njit

from hjbsolve.cell.ergodic import PeriodicHamiltonian, effective_hamiltonian_table, solve_ergodic
from hjbsolve.cell.ergodic.tables import effective_hamiltonian_estimate

TWO_PI = 2.0 * np.pi


@njit
def V1(y):
    return np.cos(TWO_PI * y[0])


@njit
def V2(y):
    return np.cos(TWO_PI * y[0]) + np.cos(TWO_PI * y[1]) + 0.5 * np.cos(TWO_PI * (y[0] - y[1]))


@njit
def V3(y):
    return (np.cos(TWO_PI * y[0]) + np.cos(TWO_PI * y[1]) + np.cos(TWO_PI * y[2])
            + 0.5 * np.cos(TWO_PI * (y[0] - y[1])) + 0.5 * np.cos(TWO_PI * (y[1] - y[2])))


def _stages(r):
    return ", ".join(f"nu={nu:.3g} {meth} x{its}" for nu, meth, its, _ in r.stages)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nu2d", type=float, nargs="+", default=[0.5, 0.05])
    ap.add_argument("--N2d", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--N0", type=int, default=256, help="grid of the 2-D nu = 0 estimate timing")
    ap.add_argument("--skip", nargs="*", default=[], choices=("1d", "2d", "nu0", "3d"))
    args = ap.parse_args()

    h1 = PeriodicHamiltonian.quadratic(V1)
    h2 = PeriodicHamiltonian.quadratic(V2)

    # ---- JIT warm-up ------------------------------------------------------------------------
    t0 = time.perf_counter()
    solve_ergodic(h1, 0.3, 16, 0.05, 1)
    solve_ergodic(h1, 0.3, 16, 0.0, 1)
    t1 = time.perf_counter()
    solve_ergodic(h2, (0.3, 0.1), 8, 0.5, 2)
    t2 = time.perf_counter()
    print(f"JIT warm-up (compile or load from cache): 1-D {t1 - t0:.2f} s, 2-D {t2 - t1:.2f} s")

    if "1d" not in args.skip:
        bench_1d(h1, args)
    if "2d" not in args.skip:
        bench_2d(h2, args)
    if "nu0" not in args.skip:
        bench_2d_nu0(h2, args)
    if "3d" not in args.skip:
        bench_3d()


def bench_1d(h1, args):
    N, nu = 400, 0.05
    solve_ergodic(h1, 1.0, N, nu, 1)  # grid data for N = 400 (tabulation, convexity check)
    for P in (0.0, 1.0, 2.0):
        ts = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            r = solve_ergodic(h1, P, N, nu, 1)
            ts.append(time.perf_counter() - t)
        ts = np.array(ts) * 1e3
        print(f"1-D nu={nu} N={N} P={P}: cold solve median {np.median(ts):.2f} ms "
              f"(min {ts.min():.2f}, max {ts.max():.2f}), {r.iterations} Newton iterations "
              f"(stages {_stages(r)}), Hbar = {r.hbar:.12f}")
    r0 = solve_ergodic(h1, 1.0, N, nu, 1)
    ts = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        r = solve_ergodic(h1, 1.05, N, nu, 1, chi0=r0.chi, hbar0=r0.hbar)
        ts.append(time.perf_counter() - t)
    print(f"1-D nu={nu} N={N}: warm-started solve (P 1.0 -> 1.05) median "
          f"{np.median(ts) * 1e3:.2f} ms, {r.iterations} iterations")
    ts = []
    for _ in range(max(5, args.repeat // 5)):
        t = time.perf_counter()
        r = solve_ergodic(h1, 0.5, N, 0.0, 1)
        ts.append(time.perf_counter() - t)
    print(f"1-D nu=0 N={N} P=0.5 (degenerate: continuation in nu, then vanishing discount): "
          f"median {np.median(ts) * 1e3:.2f} ms, {r.iterations} iterations ({_stages(r)})")
    Ps = np.linspace(-3, 3, 121)
    t = time.perf_counter()
    effective_hamiltonian_table(h1, Ps, N, nu, 1)
    print(f"1-D nu={nu} N={N}: 121-point table {time.perf_counter() - t:.3f} s")



def bench_2d(h2, args):
    g = np.linspace(-2.0, 2.0, 8)
    Ps2 = np.array([(a, b) for i, a in enumerate(g) for b in (g if i % 2 == 0 else g[::-1])])
    N2 = args.N2d
    t = time.perf_counter()
    solve_ergodic(h2, (0.0, 0.0), N2, args.nu2d[0], 2)
    print(f"2-D N={N2}^2: grid setup + first solve {time.perf_counter() - t:.2f} s")
    for nu2 in args.nu2d:
        t = time.perf_counter()
        H, res = effective_hamiltonian_table(h2, Ps2, N2, nu2, 2, return_results=True)
        dt = time.perf_counter() - t
        its = [r.iterations for r in res]
        print(f"2-D nu={nu2} N={N2}^2: 64-point table {dt:.2f} s ({dt / 64 * 1e3:.0f} ms per P, "
              f"{sum(its)} Newton iterations, max {max(its)} per P); "
              f"Hbar range [{H.min():.6f}, {H.max():.6f}]")


def bench_2d_nu0(h2, args):
    Ps = np.array([[2.0, 0.3], [1.5, 1.0], [0.5, 0.2], [-1.0, 2.0]])
    N = args.N0
    t = time.perf_counter()
    est = effective_hamiltonian_estimate(h2, Ps, N, 0.0)
    dt = time.perf_counter() - t
    print(f"2-D nu=0 N={N}^2 with estimate (grids {N // 4}, {N // 2}, {N}, coarse to fine): "
          f"{dt:.1f} s for {len(Ps)} P, {dt / len(Ps):.1f} s per P")
    for P, hb, rich, e, p in zip(Ps, est.hbar, est.richardson, est.estimate, est.order):
        print(f"   P = {P}: Hbar_N = {hb:.6f}, estimate {e:.1e}, observed order {p:.2f}, "
              f"Richardson {rich:.6f}")
    t = time.perf_counter()
    effective_hamiltonian_table(h2, Ps, N, 0.0, 2)
    dt = time.perf_counter() - t
    print(f"2-D nu=0 N={N}^2, fine grid only (cold start, then warm starts from the previous P): "
          f"{dt:.1f} s, {dt / len(Ps):.1f} s per P")


def bench_3d():
    h3 = PeriodicHamiltonian.quadratic(V3)
    solve_ergodic(h3, (0.5, 1.0, -0.3), 8, 0.5, 3)
    for N in (32, 64):
        t = time.perf_counter()
        r = solve_ergodic(h3, (0.5, 1.0, -0.3), N, 0.5, 3)
        print(f"3-D nu=0.5 N={N}^3: one Hbar(P) {time.perf_counter() - t:.2f} s, {r.iterations} Newton "
              f"iterations, Hbar = {r.hbar:.10f}")


if __name__ == "__main__":
    main()
