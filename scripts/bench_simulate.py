"""Speed of the Monte Carlo kernel (hjbsolve.simulate): path-steps per second on 1 and 2 threads, and the ratio
to a NumPy version of the same scheme vectorised over the paths.

The system is the 1+1-D LQ two-scale family (slow and fast noise on) under the optimal feedback of the value
stage: per path-step, the feedback u = clip(-b D_xV / r) from D_xV interpolated bilinearly in (x, y) and
linearly in t (two time slices), the coefficient tables interpolated bilinearly, two normal deviates, the
Euler-Maruyama update and the running cost. Both versions read the same tables. JIT warm-up is reported
separately. Goals: >= 2e7 path-steps/s on one thread, >= 3x NumPy, >= 1.7x from 1 to 2 threads.

    python scripts/bench_simulate.py [--paths 20000] [--eps 0.01] [--repeat 3] [--grid 241 201 100]

Other jobs on the machine distort the thread scaling: the script prints the load average, and the CPU time
per path-step (process time) next to the wall-clock rate.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings

import numba
import numpy as np

from hjbsolve import simulate as S
from hjbsolve.case import load_case

LQ = dict(a11=0.5, a12=1.0, a21=1.0, a22=-2.0, b=1.0, sigma=0.3, tau=0.5, r=1.0, q=1.0, s=0.5, g0=1.0,
          u_box=[-10.0, 10.0])


def numpy_paths(dyn: S.Dynamics, x0, y0, n_paths, ds, nsteps, seed=0):
    """The same Euler-Maruyama scheme as the kernel (affine feedback, n = m = k = 1), vectorised over paths."""
    assert dyn.mode == S.MODE_AFFINE and dyn.n == 1 and dyn.m == 1 and dyn.k == 1
    rng = np.random.default_rng(seed)
    g = dyn.grid
    lo, h, (nx, ny) = np.asarray(g.lo), g.h, g.shape
    full = np.empty((dyn.stat.shape[0], len(dyn.cmap)))
    for c, q in enumerate(dyn.cmap):
        full[:, c] = dyn.stat[:, q] if q >= 0 else dyn.cvals[-1 - q]
    o = dyn.off
    nt = len(dyn.t_tab)
    inv_dt = 1.0 / (dyn.t_tab[1] - dyn.t_tab[0])
    x = np.full(n_paths, float(x0))
    y = np.full(n_paths, float(y0))
    cost = np.zeros(n_paths)
    eps, T = dyn.eps, dyn.T
    sqx, sqy = math.sqrt(2 * ds), math.sqrt(2 * ds / eps)
    for j in range(nsteps):
        rx, ry = (x - lo[0]) / h[0], (y - lo[1]) / h[1]
        ix = np.clip(np.floor(rx).astype(np.int64), 0, nx - 2)
        iy = np.clip(np.floor(ry).astype(np.int64), 0, ny - 2)
        fx, fy = rx - ix, ry - iy
        b0 = ix * ny + iy
        w = ((1 - fx) * (1 - fy), (1 - fx) * fy, fx * (1 - fy), fx * fy)
        rows = (b0, b0 + 1, b0 + ny, b0 + ny + 1)
        coef = sum(wk[:, None] * full[rk] for wk, rk in zip(w, rows))          # (N, Cs)
        tr = max((T - j * ds - dyn.t_tab[0]) * inv_dt, 0.0)
        kt = min(int(tr), nt - 2)
        th = min(tr - kt, 1.0)
        p = sum(wk * ((1 - th) * dyn.dyn[rk, kt] + th * dyn.dyn[rk, kt + 1]) for wk, rk in zip(w, rows))
        B = coef[:, o[1]]
        u = np.clip(dyn.u_ref[0] - B * p / dyn.c, dyn.u_lo[0], dyn.u_hi[0])
        a = coef[:, o[0]] + B * u
        cost += ds * (coef[:, o[2]] + 0.5 * dyn.c * (u - dyn.u_ref[0]) ** 2)
        xi = rng.standard_normal((2, n_paths))
        xn = x + ds * a + sqx * coef[:, o[5]] * xi[0]
        y = y + ds / eps * coef[:, o[3]] + sqy * coef[:, o[4]] * xi[1]
        x = xn
    return x, y, cost


def timed(fn, repeat):
    best_wall, best_cpu = math.inf, math.inf
    out = None
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        c1, t1 = time.process_time(), time.perf_counter()
        best_wall, best_cpu = min(best_wall, t1 - t0), min(best_cpu, c1 - c0)
    return out, best_wall, best_cpu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paths", type=int, default=20000)
    ap.add_argument("--eps", type=float, default=0.01)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--numpy-steps", type=int, default=200, help="steps of the (slower) NumPy run")
    ap.add_argument("--grid", type=int, nargs=3, default=[241, 201, 100], metavar=("NX", "NY", "NT"),
                    help="value/table grid: x nodes, y nodes, value time steps (default 241 201 100, the lq case)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", S.FastStepWarning)      # ds = eps/10 on purpose: the speed of the default rule
    nx, ny, nt = args.grid
    case = load_case({"name": "bench_sim", "family": "lq", "model": LQ,
                      "grid": {"x": {"box": [-3.0, 3.0], "n": nx}, "y": {"n": ny}},
                      "time": {"T": 1.0, "dt": 1.0 / nt}, "run": {"eps": [args.eps]}})
    t0 = time.perf_counter()
    dyn = S.prepare(case, args.eps)
    t1 = time.perf_counter()
    ds, nsteps = S.time_step(dyn.T, dyn.eps)
    N = args.paths
    print(f"1+1-D LQ two-scale system, eps = {args.eps:g}: ds = {ds:g}, {nsteps} steps, {N} paths; "
          f"tables {dyn.grid.describe()}, {len(dyn.t_tab)} value slices (affine feedback)")
    print(f"feedback tables (dense value function, V^eps with {len(dyn.t_tab)} output times): {t1 - t0:.2f} s")
    c0 = time.perf_counter()
    S.simulate(dyn, [1.0], [0.5], n_paths=4, seed=0)
    print(f"JIT warm-up (compile or load from cache): {time.perf_counter() - c0:.2f} s")
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}  (2 cores; other jobs distort the figures)")
    before = numba.get_num_threads()
    rates = {}
    for th in (1, 2):
        numba.set_num_threads(min(th, numba.config.NUMBA_NUM_THREADS))
        sim, wall, cpu = timed(lambda: S.simulate(dyn, [1.0], [0.5], n_paths=N, seed=1), args.repeat)
        rates[th] = N * nsteps / wall
        print(f"numba, {th} thread{'s' if th > 1 else ' '}: {rates[th]:.3g} path-steps/s (wall, best of "
              f"{args.repeat}); {1e9 * cpu / (N * nsteps):.1f} ns CPU per path-step")
    numba.set_num_threads(before)
    J, se = sim.total_cost()
    nn = min(N, 20000)
    (x, y, cost), wall, cpu = timed(lambda: numpy_paths(dyn, 1.0, 0.5, nn, ds, args.numpy_steps), 1)
    rate_np = nn * args.numpy_steps / wall
    print(f"NumPy, vectorised over {nn} paths: {rate_np:.3g} path-steps/s ({args.numpy_steps} steps timed)")
    print(f"ratio numba (1 thread) / NumPy: {rates[1] / rate_np:.1f}x   (goal >= 3x)")
    print(f"ratio numba 2 threads / 1 thread: {rates[2] / rates[1]:.2f}x   (goal >= 1.7x)")
    print(f"numba 1 thread: {rates[1]:.3g} path-steps/s   (goal >= 2e7)")
    # the two versions simulate the same scheme: compare the mean running cost over the NumPy horizon
    sim_short = S.simulate(dyn, [1.0], [0.5], n_paths=nn, seed=2, n_record=nsteps + 1)
    c_nb = sim_short.C[:, args.numpy_steps]
    d = c_nb.mean() - cost.mean()
    sd = math.hypot(c_nb.std() / math.sqrt(nn), cost.std() / math.sqrt(nn))
    print(f"check: mean running cost to s = {args.numpy_steps * ds:g}: numba {c_nb.mean():.5f}, NumPy {cost.mean():.5f} "
          f"(difference {d:.2g}, {abs(d) / sd:.1f} standard errors)")
    print(f"total cost J = {J:.4f} ± {1.96 * se:.4f} (95 %), V^eps(T, x0, y0) from the value stage: {sim.value_pde:.4f}")


if __name__ == "__main__":
    main()
