"""Benchmark of the linear cell stage: Entropy-SGD Hbar tables, hjbsolve vs a plain NumPy/SciPy version.

    python scripts/bench_cell.py            # 200 x-nodes x 400 y-nodes x 101 p-values (issue goal: <= 2 s)

Both versions compute, for every x node, the Scharfetter-Gummel generator, its invariant law and
Hbar(x, p) = sum_j pi_j max_u [-a.p - l] with the max over a 21-node control grid, and (hjbsolve only)
the closed-form maximiser. The NumPy version assembles the generator with scipy.sparse, solves the
pinned stationary system with spsolve and takes the max over u with broadcasting. JIT warm-up is timed
separately.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from hjbsolve.effective import cell_stage
from hjbsolve.grid import Grid
from hjbsolve.models import entropy_sgd

NX, NY, NP, NU = 200, 400, 101, 21


def model():
    p = dict(dim=1, loss="double_well", gamma=0.5, beta=4.0, quadratic_a=1.0, rastrigin_A=1.0,
             control="learning_rate", control_cost=1.0, state_cost=0.0, terminal="loss", sigma=0.0,
             u_box=[0.2, 2.0], u_ref=None, mixture=None)
    return entropy_sgd.build(p, u_nodes=NU)


def numpy_version(M, xg, yg, p, u):
    """The same computation in plain NumPy/SciPy (generator, stationary solve, max over u, average)."""
    ys = yg.flat_points()
    h = yg.h[0]
    hbar = np.empty((xg.size, len(p)))
    for i, x in enumerate(xg.flat_points()):
        xb = np.broadcast_to(x, (len(ys), 1))
        U = M.potential(xb, ys)
        D = 1.0 / M.params["beta"]
        w = -(U[1:] - U[:-1])
        B = lambda z: np.where(np.abs(z) < 1e-8, 1 - z / 2, z / np.expm1(np.where(z == 0, 1, z)))
        fwd, bwd = D / h**2 * B(-w), D / h**2 * B(w)
        n = len(ys)
        Q = sp.diags([bwd, -(np.r_[fwd, 0] + np.r_[0, bwd]), fwd], [-1, 0, 1], format="lil")
        A = Q.T.tolil()
        i0 = int(np.argmin(U))
        A[i0, :] = 0
        A[i0, i0] = 1
        rhs = np.zeros(n)
        rhs[i0] = 1
        pi = spla.spsolve(A.tocsc(), rhs)
        pi /= pi.sum()
        yu = np.broadcast_to(ys[:, None, :], (n, len(u), 1))
        xu = np.broadcast_to(x, (n, len(u), 1))
        uu = np.broadcast_to(u[None], (n, len(u), 1))
        a = M.a(xu, yu, uu)[..., 0]                         # (ny, nu)
        l = M.l(xu, yu, uu)                                 # (ny, nu)
        H = (-a[None] * p[:, None, None] - l[None]).max(axis=2)   # (np, ny)
        hbar[i] = H @ pi
    return hbar


def main():
    M = model()
    xg = Grid.from_box([-2.5, 2.5], NX)
    yg = Grid.from_box(M.y_box_hint(xg.flat_points()), NY)
    p = np.linspace(-4, 4, NP)
    u = M.controls.nodes()
    small = Grid.from_box([-2.5, 2.5], 3)
    t0 = time.perf_counter()
    cell_stage(M, small, yg, p_axes=[p], exact_sup=False)
    cell_stage(M, small, yg, p_axes=[p], exact_sup=True)
    warm = time.perf_counter() - t0
    print(f"entropy_sgd double well, learning-rate control: {NX} x-nodes x {NY} y-nodes x {NP} p-values, "
          f"{len(u)} controls")
    print(f"  JIT warm-up (cached on disk after the first run): {warm:.2f} s")
    best = {}
    for name, exact in (("grid sup (21 controls)", False), ("closed-form sup", True)):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            r = cell_stage(M, xg, yg, p_axes=[p], exact_sup=exact, keep_feedback=False)
            times.append(time.perf_counter() - t0)
        best[name] = (min(times), r)
        parts = ", ".join(f"{k} {v:.3f}" for k, v in r.timings.items() if k != "cell_stage")
        print(f"  hjbsolve {name:24s}: {min(times):.3f} s  "
              f"({NX * NY * NP * (len(u) if not exact else 1) / min(times) / 1e6:.0f} M node-p-control/s; {parts})")
    t0 = time.perf_counter()
    ref = numpy_version(M, xg, yg, p, u)
    tn = time.perf_counter() - t0
    tg, rg = best["grid sup (21 controls)"]
    err = np.abs(ref - rg.hbar).max()
    print(f"  plain NumPy/SciPy, same grid sup   : {tn:.3f} s   (max difference {err:.1e})")
    print(f"  speed-up hjbsolve / NumPy          : {tn / tg:.1f}x  (goal >= 10x)")


if __name__ == "__main__":
    main()
