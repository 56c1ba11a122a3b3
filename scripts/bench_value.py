"""Benchmark of the semi-Lagrangian kernels of the value stage.

Prints
  1. throughput of one 2-D SL step with bilinear interpolation (tabulated coefficients, finite control set,
     deterministic feet, trapezoidal cost) in ns per node x control update, on 1 and 2 threads, at two sizes,
     the ratio to a plain vectorised NumPy version of the same step (same run, same data, minimum and
     minimiser checked), and, when a C compiler is found, the time of the plain C loop of the same step
     (scripts/c/step_tab_2d.c, built with -O3 -march=native) as the yardstick of a compiled loop;
  2. the same for the 2-D control-affine kernel (controls on the fly, no tables per control);
  3. a 1+1-D V^eps solve (LQ family) at 401 x 201 nodes, 200 steps, 41 grid controls on 2 threads, and the
     cost per step at eps = 1e-4 against eps = 1;
  4. with --accuracy (only this table): time to accuracy of V^eps on the LQ family (Riccati solution, max error
     on |x|, |y| <= 1, x in [-2, 2], y in [-2.5, 2.5] with 151 nodes, eps = 0.1 and 1e-3): the monotone Lie
     scheme (dx = dt) against its Richardson extrapolation (dx ∝ dt^1.5), error and wall time per solve.
  JIT warm-up (first call, compile or load from the on-disk cache) is reported separately.

Usage: python scripts/bench_value.py [--quick] [--accuracy [--threads N]]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import numba
import numpy as np

from hjbsolve.effective import cell_stage
from hjbsolve.grid import Grid
from hjbsolve.models import lq
from hjbsolve.sl import kernels as K
from hjbsolve.sl import reference
from hjbsolve.value import value_function


@numba.njit(parallel=True, cache=True)
def _trivially_parallel(n, out):
    for t in numba.prange(out.size):
        acc = 0.0
        for i in range(n):
            acc += np.sqrt(i * 1.0 + t)
        out[t] = acc


def machine_parallel_speedup(repeat=3):
    """Speed-up of an embarrassingly parallel compute loop from 1 to 2 threads: what the machine offers now
    (other jobs on the same cores, or vCPUs sharing a physical core, bring it below 2)."""
    out = np.empty(64)
    _trivially_parallel(10, out)
    res = {}
    for nt in (1, 2):
        numba.set_num_threads(nt)
        res[nt] = best_time(lambda: _trivially_parallel(300_000, out), repeat)
    numba.set_num_threads(2)
    return res[1] / res[2]


def best_time(f, repeat):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts)


C_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "c", "step_tab_2d.c")


def plain_c_step(flags=("-O3", "-march=native")):
    """The plain C loop of the same step (scripts/c/step_tab_2d.c), built with the machine's C compiler;
    (callable, description) or (None, reason) when no compiler is found or the build fails."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler found"
    lib = os.path.join(tempfile.mkdtemp(prefix="hjbsolve_bench_"), "step.so")
    try:
        subprocess.run([cc, *flags, "-shared", "-fPIC", C_SOURCE, "-o", lib, "-lm"], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        return None, f"C build failed: {e}"
    f = ctypes.CDLL(lib).step_tab_2d
    dp, ip, i = ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_int), ctypes.c_int
    f.argtypes = [dp, dp, dp, i, i, i, dp, ip]
    f.restype = None

    def step(V, C, disp_cells, out, arg):
        J, nc, N1, N2, _ = disp_cells.shape
        f(V.ctypes.data_as(dp), C.ctypes.data_as(dp), disp_cells.ctypes.data_as(dp), nc, N1, N2,
          out.ctypes.data_as(dp), arg.ctypes.data_as(ip))
    return step, f"{os.path.basename(cc)} {' '.join(flags)}"


def time_on_threads(run, repeat):
    """(warm-up time of the first call, {threads: best time}) for 1 and 2 numba threads."""
    t0 = time.perf_counter()
    run()
    warm = time.perf_counter() - t0
    res = {}
    for nt in (1, 2):
        numba.set_num_threads(nt)
        res[nt] = best_time(run, repeat)
    numba.set_num_threads(2)
    return warm, res


def bench_tab2d(n, nc, repeat, c_step=None):
    rng = np.random.default_rng(0)
    x0 = np.array([-2.0, -2.0])
    h = np.array([4.0 / (n - 1)] * 2)
    X = np.stack(np.meshgrid(*[x0[d] + h[d] * np.arange(n) for d in range(2)], indexing="ij"), -1)
    V = np.ascontiguousarray((0.5 * (X**2).sum(-1))[None])
    th = 2 * np.pi * np.arange(nc) / nc
    u = np.stack([np.cos(th), np.sin(th)], -1)
    dt = 0.05
    disp = np.ascontiguousarray(dt * (-0.5 * X[None, None] + u[None, :, None, None, :]))
    C = np.ascontiguousarray(dt * (0.5 * (X**2).sum(-1)[None, None] + 0.5 * (u**2).sum(-1)[None, :, None, None]
                                   + 0.01 * rng.random((1, nc, n, n))))
    noise = np.zeros((1, 1, n, n, 2, 2))
    out = np.empty_like(V)
    arg = np.empty(V.shape, np.int32)
    disp_cells = np.ascontiguousarray(disp / h)
    Vf = V.reshape(1, -1)

    def run():
        K.step_tab_2d(Vf, C, disp_cells, noise, 0, False, out, arg)

    warm, res = time_on_threads(run, repeat)
    t_np = best_time(lambda: reference.step_tab_2d(Vf, C, disp_cells, noise, 0, False), max(1, repeat // 3))
    ref, ref_arg = reference.step_tab_2d(Vf, C, disp_cells, noise, 0, False)
    run()
    assert np.allclose(ref, out, rtol=1e-12, atol=1e-12), "numba and NumPy steps differ"
    # the argmin agrees except where two controls tie to rounding (fused multiply-adds in the kernel)
    assert (arg != ref_arg).mean() < 1e-3, "numba and NumPy minimisers differ"
    t_c = None
    if c_step is not None:
        out_c, arg_c = np.empty_like(out), np.empty_like(arg)
        t_c = best_time(lambda: c_step(V, C, disp_cells, out_c, arg_c), repeat)
        assert np.allclose(ref, out_c, rtol=1e-12, atol=1e-12), "C and NumPy steps differ"
    return warm, res, t_np, t_c, n * n * nc


def bench_aff2d(n, nu, repeat):
    x0 = np.array([-2.0, -2.0])
    h = np.array([4.0 / (n - 1)] * 2)
    X = np.stack(np.meshgrid(*[x0[d] + h[d] * np.arange(n) for d in range(2)], indexing="ij"), -1)
    V = np.ascontiguousarray((0.5 * (X**2).sum(-1))[None])
    dt = 0.05
    base = np.ascontiguousarray((X + dt * 0.5 * X)[None])
    bet = np.ascontiguousarray(np.broadcast_to(dt * np.eye(2), (1, n, n, 2, 2)))
    noise = np.zeros((1, n, n, 2, 2))
    Cm = np.ascontiguousarray(np.broadcast_to(np.eye(2), (1, n, n, 2, 2)))
    uref = np.zeros((1, n, n, 2))
    c0 = np.ascontiguousarray(0.5 * dt * 0.5 * (X**2).sum(-1)[None])
    ax = np.linspace(-3, 3, nu)
    unodes = np.ascontiguousarray(np.stack(np.meshgrid(ax, ax, indexing="ij"), -1).reshape(-1, 2))
    du = np.array([ax[1] - ax[0]] * 2)
    lo, hi = np.array([-3.0, -3.0]), np.array([3.0, 3.0])
    out = np.empty_like(V)
    us = np.empty((1, n, n, 2))
    F = V + c0

    def run():
        K.step_aff_2d(F, c0, base, bet, noise, False, Cm, dt, uref, unodes, du, lo, hi, x0, h, 0, 0, out, us)

    warm, res = time_on_threads(run, repeat)
    return warm, res, n * n * len(unodes)


def bench_veps(nx=401, ny=201, nsteps=200, nu=41):
    p = dict(a11=0.5, a12=1.0, a21=1.0, a22=-2.0, b=1.0, sigma=0.3, tau=0.5, r=1.0, q=1.0, s=0.5, g0=1.0,
             u_box=[-5.0, 5.0])
    model = lq.build(p, u_nodes=nu)
    xg = Grid.from_box([-2.5, 2.5], nx)
    yg = Grid.from_box(model.y_box_hint(xg.flat_points()), ny)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cell = cell_stage(model, xg, yg)
        T = 1.0
        dt = T / nsteps
        t0 = time.perf_counter()
        value_function(model, cell, 1.0, 2 * dt, dt, minimize="grid")          # warm-up (JIT)
        warm = time.perf_counter() - t0
        out = {}
        for eps in (1.0, 1e-4):
            t0 = time.perf_counter()
            res = value_function(model, cell, eps, T, dt, minimize="grid")
            out[eps] = (time.perf_counter() - t0, res.timings)
        t0 = time.perf_counter()
        res = value_function(model, cell, 1e-2, T, dt)
        out["exact"] = (time.perf_counter() - t0, res.timings)
    return warm, out


#: refinement paths of the time-to-accuracy table: (dt, nx) on x in [-2, 2]
LIE_PATH = ((0.04, 101), (0.02, 201), (0.01, 401), (0.005, 801), (0.0025, 1601))
RICHARDSON_PATH = ((0.2, 101), (0.1, 285), (0.05, 641))


def time_to_accuracy(eps_values=(0.1, 1e-3), ny=151):
    """Rows (eps, scheme, dt, nx, error, wall s, CPU s of all threads) of the time-to-accuracy table (docstring,
    item 4). On a machine shared with other jobs the wall time is inflated; the CPU time is the work done."""
    from hjbsolve.exact import lq_value
    p = dict(a11=0.5, a12=1.0, a21=1.0, a22=-2.0, b=1.0, sigma=0.3, tau=0.5, r=1.0, q=1.0, s=0.5, g0=1.0,
             u_box=[-10.0, 10.0])
    model = lq.build(p)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value_function(model, cell_stage(model, Grid.from_box([-2, 2], 21), Grid.from_box([-2.5, 2.5], 11)),
                       0.1, 0.2, 0.1, richardson=True)                                       # JIT warm-up
        for eps in eps_values:
            for scheme, path in (("Lie (monotone)", LIE_PATH), ("Richardson", RICHARDSON_PATH)):
                for dt, nx in path:
                    xg, yg = Grid.from_box([-2.0, 2.0], nx), Grid.from_box([-2.5, 2.5], ny)
                    cell = cell_stage(model, xg, yg)
                    t0, c0 = time.perf_counter(), time.process_time()
                    res = value_function(model, cell, eps, 1.0, dt, richardson=scheme == "Richardson")
                    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                    x, y = xg.axes[0], yg.axes[0]
                    w = np.ix_(np.abs(x) <= 1, np.abs(y) <= 1)
                    err = float(np.abs(res.V[-1] - lq_value(p, eps, 1.0, x, y))[w].max())
                    rows.append((eps, scheme, dt, nx, err, wall, cpu))
                    print(f"{eps:>6g}  {scheme:<15} {dt:>6g} {nx:>5} x {ny:<4} {err:>10.2e} {wall:>8.2f} {cpu:>8.2f}",
                          flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller repeats")
    ap.add_argument("--accuracy", action="store_true", help="only the time-to-accuracy table of V^eps")
    ap.add_argument("--threads", type=int, default=None, help="numba threads for --accuracy (default: all)")
    a = ap.parse_args(argv)
    if a.accuracy:
        if a.threads:
            numba.set_num_threads(a.threads)
        print(f"time to accuracy, V^eps on the LQ family, {numba.get_num_threads()} thread(s); machine: speed-up of "
              f"a trivially parallel loop 1 -> 2 threads now {machine_parallel_speedup():.2f}")
        print(f"{'eps':>6}  {'scheme':<15} {'dt':>6} {'nodes':>12} {'max error':>10} {'wall s':>8} {'CPU s':>8}")
        if a.threads:
            numba.set_num_threads(a.threads)
        time_to_accuracy()
        return 0
    repeat = 3 if a.quick else 7
    print(f"numba {numba.__version__}, max threads {numba.config.NUMBA_NUM_THREADS}")
    print(f"machine: speed-up of a trivially parallel loop 1 -> 2 threads: {machine_parallel_speedup():.2f} "
          "(the ceiling for the speed-ups below)")
    c_step, c_note = plain_c_step()
    print("\n2-D SL step, tabulated coefficients, bilinear interpolation (ns per node x control update)")
    print(f"plain C loop of the same step (1 thread): {c_note}")
    print(f"{'nodes':>10} {'controls':>8} {'warm-up s':>10} {'1 thread':>9} {'2 threads':>9} {'speed-up':>8} "
          f"{'NumPy':>8} {'x NumPy 1t':>10} {'x NumPy 2t':>10} {'plain C':>8}")
    for n, nc in ((101, 64), (301, 64)):
        warm, res, t_np, t_c, work = bench_tab2d(n, nc, repeat, c_step)
        ns1, ns2, nsn = (res[1] / work * 1e9, res[2] / work * 1e9, t_np / work * 1e9)
        nsc = "-" if t_c is None else f"{t_c / work * 1e9:.2f}"
        print(f"{n}x{n:<6} {nc:>8} {warm:>10.2f} {ns1:>9.2f} {ns2:>9.2f} {res[1] / res[2]:>8.2f} {nsn:>8.1f} "
              f"{t_np / res[1]:>10.1f} {t_np / res[2]:>10.1f} {nsc:>8}")
    print("\n2-D SL step, control-affine kernel (feet and costs on the fly, grid min, no refinement)")
    print(f"{'nodes':>10} {'controls':>8} {'warm-up s':>10} {'1 thread':>9} {'2 threads':>9} {'speed-up':>8}")
    for n, nu in ((101, 9), (301, 9)):
        warm, res, work = bench_aff2d(n, nu, repeat)
        print(f"{n}x{n:<6} {nu * nu:>8} {warm:>10.2f} {res[1] / work * 1e9:>9.2f} {res[2] / work * 1e9:>9.2f} "
              f"{res[1] / res[2]:>8.2f}")
    print("\n1+1-D V^eps solve, LQ, 401 x 201 nodes, 200 steps, 2 threads")
    warm, out = bench_veps()
    print(f"  JIT warm-up (2-step solve incl. compile/cache load): {warm:.2f} s")
    for key, label in ((1.0, "eps = 1,    41 grid controls"), (1e-4, "eps = 1e-4, 41 grid controls"),
                       ("exact", "eps = 1e-2, exact min     ")):
        tot, tm = out[key]
        per = tm["eps_steps"] / 200 * 1e3
        print(f"  {label}: total {tot:6.2f} s (setup {tm['eps_setup']:.2f} s, steps {tm['eps_steps']:.2f} s, "
              f"{per:.1f} ms/step)")
    r = out[1e-4][1]["eps_steps"] / out[1.0][1]["eps_steps"]
    print(f"  cost per step eps = 1e-4 / eps = 1: {r:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
