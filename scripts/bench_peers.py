"""hjbsolve against hj_reachability (0.7.0, JAX on CPU) on 2-D problems with exact solutions, and the 2-D SL
kernel against a row-order C kernel of the same step.

Problems (T = 0.5 on the box [-2, 2]^2; errors on the window [-1, 1]^2):

    dX/ds = w(|X|) J X + u,  |u| <= 1,  V(t, x) = min over the controls of g(X_t),  J the rotation by pi/2

- ``cone``:    w = 0 (straight characteristics), g = |x|:  V = max(|x| - t, 0)  (the issue's problem)
- ``twist``:   w(r) = 1 + r^2/4 (nonlinear drift, curved characteristics), g = |x|: the same V, since the drift
  keeps |X| and the control moves it at unit speed at most
- ``cone2``, ``twist2``: g = |x|^2/2, V = max(|x| - t, 0)^2/2 (C^1: the smooth variants)

hj_reachability solves ``v_t + min_u Dv . f(x, u) = 0`` backward from t = 0 to t = -T (control_mode
"min", Ball control set, no disturbance); ``v(x, -T)`` is the V above (the script checks it against the exact
V, like hjbsolve's). Its accuracy presets ("low" ... "very_high": upwind order 1/ENO2/WENO3/WENO5 with TVD-RK
1/2/3/3, global Lax-Friedrichs, CFL 0.75) on n^2 grids form its frontier; JAX's default float32.
hjbsolve: ``solve_hjb`` (semi-Lagrangian, Taylor feet, bilinear interpolation, min over a ring of
``dirs`` directions plus the centre), on n^2 grids with ``steps`` time steps; every configuration below.

Timing: the whole solve (hjbsolve: model, tables, time loop; the peer: ``hj.solve``), JIT compilation
excluded for both (one warm-up call per configuration), best of ``--repeat`` runs; the two tools run
interleaved, one grid size at a time, so the load of the shared machine hits both alike. L1 error: the
integral of |V_h - V| over the window (cell-area weights).

Prints every run, both error-vs-time frontiers (Pareto), the time ratio at equal or lower L1 error at each
peer frontier point (target <= 1/3), hjbsolve's time outside the time loop (target <= 20 %), and the kernel
against the C row kernel (scripts/c/step_tab_2d_rows.c; targets: within 1.3x on one thread, >= 1.8x faster
with two threads than the C kernel on one).

Usage: python scripts/bench_peers.py [--quick] [--problems cone,twist] [--no-peer] [--no-kernel]
(hj_reachability: ``pip install ".[peers]"``)
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

from hjbsolve.grid import Grid
from hjbsolve.sl import ControlProblem, ball_controls, solve_hjb
from hjbsolve.sl import kernels as K

T = 0.5
BOX = 2.0
WINDOW = 1.0
PROBLEMS = {"cone": (False, "abs"), "twist": (True, "abs"), "cone2": (False, "sq"), "twist2": (True, "sq")}


def twist_rate(r2):
    return 1.0 + 0.25 * r2


def exact_value(x, g):
    d = np.maximum(np.sqrt((x ** 2).sum(-1)) - T, 0.0)
    return d if g == "abs" else 0.5 * d * d


def l1_error(V, x, g):
    """Integral of |V - V_exact| over the window [-1, 1]^2 (cell-area weights), and the max error there."""
    h = 2 * BOX / (x.shape[0] - 1)
    w = np.all(np.abs(x) <= WINDOW + 1e-9, axis=-1)
    e = np.abs(np.asarray(V, float) - exact_value(x, g))[w]
    return float(e.sum() * h * h), float(e.max())


# ------------------------------------------------------------------------------------------------ hjbsolve


def hjb_problem(twist, g, dirs):
    def a(x, u):
        if not twist:
            return np.broadcast_to(u, np.broadcast_shapes(x.shape, u.shape))
        rot = np.stack([-x[..., 1], x[..., 0]], -1) * twist_rate((x ** 2).sum(-1))[..., None]
        return rot + u

    def l(x, u):
        return np.zeros(np.broadcast_shapes(x.shape[:-1], u.shape[:-1]))

    def gfun(x):
        r2 = (x ** 2).sum(-1)
        return np.sqrt(r2) if g == "abs" else 0.5 * r2

    return ControlProblem(n=2, a=a, l=l, g=gfun, controls=ball_controls(1.0, k=2, n_radii=1, n_dirs=dirs))


def run_hjbsolve(name, n, dirs, steps, repeat):
    twist, g = PROBLEMS[name]
    prob = hjb_problem(twist, g, dirs)
    grid = Grid.from_box([[-BOX, BOX], [-BOX, BOX]], n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solve_hjb(prob, Grid.from_box([[-BOX, BOX], [-BOX, BOX]], 11), T, T / steps, output_times=[T])   # JIT
        best, res = np.inf, None
        for _ in range(repeat):
            t0 = time.perf_counter()
            r = solve_hjb(prob, grid, T, T / steps, output_times=[T])
            el = time.perf_counter() - t0
            if el < best:
                best, res = el, r
    l1, mx = l1_error(res.V[-1], grid.points(), g)
    outside = 1.0 - res.timings["plain_steps"] / res.timings["total"]
    return dict(tool="hjbsolve", n=n, setting=f"{dirs} dirs, {steps} steps", time=best, l1=l1, max=mx,
                outside=outside)


def hjb_configs(name, quick):
    """(n, dirs, steps): straight characteristics are exact in one step; curved ones need small steps."""
    twist = PROBLEMS[name][0]
    grids = (101, 201, 401) if quick else (101, 201, 401, 801)
    steps = (4, 8, 16) if twist else (2, 4, 8)
    out = []
    for n in grids:
        for dirs in ((n // 8, n // 4) if n > 401 else (n // 8, n // 4, n // 2)):
            for s in steps:
                out.append((n, max(8, dirs), s))
    return out


# ------------------------------------------------------------------------------------------------ the peer


def peer_available():
    try:
        import hj_reachability  # noqa: F401
        return True
    except ImportError:
        return False


def run_peer(name, n, accuracy, repeat):
    import jax.numpy as jnp
    import hj_reachability as hj

    twist, g = PROBLEMS[name]

    class Dyn(hj.ControlAndDisturbanceAffineDynamics):
        def __init__(self):
            super().__init__("min", "max", hj.sets.Ball(jnp.zeros(2), 1.0), hj.sets.Box(jnp.zeros(1), jnp.zeros(1)))

        def open_loop_dynamics(self, x, t):
            if not twist:
                return jnp.zeros(2)
            return twist_rate(x[0] ** 2 + x[1] ** 2) * jnp.array([-x[1], x[0]])

        def control_jacobian(self, x, t):
            return jnp.eye(2)

        def disturbance_jacobian(self, x, t):
            return jnp.zeros((2, 1))

    grid = hj.Grid.from_lattice_parameters_and_boundary_conditions(
        hj.sets.Box(np.array([-BOX, -BOX]), np.array([BOX, BOX])), (n, n))
    r2 = jnp.sum(grid.states ** 2, -1)
    v0 = jnp.sqrt(r2) if g == "abs" else 0.5 * r2
    settings = hj.SolverSettings.with_accuracy(accuracy)
    dyn = Dyn()
    times = jnp.array([0.0, -T])
    hj.solve(settings, dyn, grid, times, v0, progress_bar=False)[-1].block_until_ready()      # JIT
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        V = hj.solve(settings, dyn, grid, times, v0, progress_bar=False)[-1].block_until_ready()
        best = min(best, time.perf_counter() - t0)
    l1, mx = l1_error(np.asarray(V), np.asarray(grid.states), g)
    return dict(tool="hj_reachability", n=n, setting=accuracy, time=best, l1=l1, max=mx, outside=None)


# ------------------------------------------------------------------------------------------------ frontiers


def pareto(rows):
    """The runs no other run beats in both time and L1 error, by increasing time."""
    front, best = [], np.inf
    for r in sorted(rows, key=lambda r: (r["time"], r["l1"])):
        if r["l1"] < best:
            front.append(r)
            best = r["l1"]
    return front


def compare(name, rows):
    ours = [r for r in rows if r["tool"] == "hjbsolve"]
    peer = [r for r in rows if r["tool"] != "hjbsolve"]
    print(f"\n== {name}: error-vs-time frontiers (L1 on the window; time in s, JIT excluded)")
    for label, rs in (("hj_reachability", peer), ("hjbsolve", ours)):
        if rs:
            print(f"  {label}: " + ", ".join(f"({r['time']:.3g} s, {r['l1']:.2e})" for r in pareto(rs)))
    if not peer:
        return []
    print(f"  {'peer run':<24} {'peer s':>8} {'peer L1':>9} | {'hjbsolve run':<34} {'s':>7} {'L1':>9} "
          f"{'ratio':>6} target <= 0.33")
    ratios = []
    for p in pareto(peer):
        cand = [r for r in ours if r["l1"] <= p["l1"]]
        left = f"  {p['n']}^2 {p['setting']:<18} {p['time']:>8.3f} {p['l1']:>9.2e} |"
        if not cand:
            print(left + " not reached")
            ratios.append(np.inf)
            continue
        b = min(cand, key=lambda r: r["time"])
        ratio = b["time"] / p["time"]
        ratios.append(ratio)
        print(left + f" {b['n']}^2 {b['setting']:<27} {b['time']:>7.3f} {b['l1']:>9.2e} {ratio:>6.2f} "
              f"{'met' if ratio <= 1 / 3 else 'MISSED'}")
    return ratios


# ------------------------------------------------------------------------------------------------ kernels

C_ROWS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "c", "step_tab_2d_rows.c")


def c_row_kernel():
    """The C row kernel built with -O3 -march=native -fopenmp: (callable, note) or (None, reason)."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler found"
    lib = os.path.join(tempfile.mkdtemp(prefix="hjbsolve_peers_"), "rows.so")
    flags = ["-O3", "-march=native", "-fopenmp"]
    try:
        subprocess.run([cc, *flags, "-shared", "-fPIC", C_ROWS, "-o", lib], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        return None, f"C build failed: {e}"
    f = ctypes.CDLL(lib).step_tab_2d_rows
    dp, ip, i = ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_int), ctypes.c_int
    f.argtypes = [dp, dp, dp, i, i, i, dp, ip, i]
    f.restype = None

    def step(V, C, disp, out, arg, threads):
        J, nc, N1, N2, _ = disp.shape
        f(V.ctypes.data_as(dp), C.ctypes.data_as(dp), disp.ctypes.data_as(dp), nc, N1, N2,
          out.ctypes.data_as(dp), arg.ctypes.data_as(ip), threads)
    return step, f"{os.path.basename(cc)} {' '.join(flags)}"


def kernel_data(n, nc):
    """A deterministic 2-D step: V = |x|^2/2 on [-2, 2]^2, feet x + dt (-x/2 + u) for u on the unit circle."""
    rng = np.random.default_rng(0)
    h = 4.0 / (n - 1)
    ax = -2.0 + h * np.arange(n)
    X = np.stack(np.meshgrid(ax, ax, indexing="ij"), -1)
    V = np.ascontiguousarray((0.5 * (X ** 2).sum(-1))[None])
    th = 2 * np.pi * np.arange(nc) / nc
    u = np.stack([np.cos(th), np.sin(th)], -1)
    dt = 0.05
    disp = np.ascontiguousarray(dt * (-0.5 * X[None, None] + u[None, :, None, None, :]) / h)
    C = np.ascontiguousarray(dt * (0.5 * (u ** 2).sum(-1)[None, :, None, None] + 0.01 * rng.random((1, nc, n, n))))
    return V, C, disp


def best_time(f, repeat):
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def bench_kernels(repeat):
    c_step, note = c_row_kernel()
    print(f"\n== 2-D SL step, tabulated, one foot, bilinear (ns per node x control); C row kernel: {note}")
    print(f"{'nodes':>9} {'controls':>8} {'numba 1t':>9} {'C 1t':>7} {'ratio':>6} {'numba 2t':>9} {'C 2t':>7} "
          f"{'C1t/numba2t':>11}   targets: ratio <= 1.3, C1t/numba2t >= 1.8")
    for n, nc in ((101, 64), (301, 64), (401, 33)):
        V, C, disp = kernel_data(n, nc)
        Vf = V.reshape(1, -1)
        noise = np.zeros((1, 1, n, n, 2, 2))
        out, arg = np.empty_like(V), np.empty(V.shape, np.int32)
        run = lambda: K.step_tab_2d(Vf, C, disp, noise, 0, False, out, arg)
        run()
        tn = {}
        for nt in (1, 2):
            numba.set_num_threads(nt)
            tn[nt] = best_time(run, repeat)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        work = n * n * nc
        line = f"{n}^2{'':<{9 - len(str(n)) - 2}} {nc:>8} {tn[1] / work * 1e9:>9.2f}"
        if c_step is None:
            print(line + f" {'-':>7} {'-':>6} {tn[2] / work * 1e9:>9.2f}")
            continue
        oc, ac = np.empty_like(out), np.empty_like(arg)
        tc = {nt: best_time(lambda: c_step(V, C, disp, oc, ac, nt), repeat) for nt in (1, 2)}
        assert np.allclose(oc, out, rtol=1e-12, atol=1e-12), "C and numba steps differ"
        print(line + f" {tc[1] / work * 1e9:>7.2f} {tn[1] / tc[1]:>6.2f} {tn[2] / work * 1e9:>9.2f} "
              f"{tc[2] / work * 1e9:>7.2f} {tc[1] / tn[2]:>11.2f}")


# ------------------------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="grids up to 401^2, one repeat")
    ap.add_argument("--problems", default="cone,twist", help=f"comma list of {sorted(PROBLEMS)}")
    ap.add_argument("--no-peer", action="store_true", help="hjbsolve only")
    ap.add_argument("--no-kernel", action="store_true", help="skip the kernel comparison")
    ap.add_argument("--repeat", type=int, default=None)
    a = ap.parse_args(argv)
    repeat = a.repeat or (1 if a.quick else 3)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"numba {numba.__version__}, {numba.config.NUMBA_NUM_THREADS} threads; load average {load:.2f} "
          f"on {os.cpu_count()} cores (timings are inflated by other jobs: compare within this run)")
    peer = not a.no_peer and peer_available()
    if not a.no_peer and not peer:
        print("hj_reachability not installed (pip install \".[peers]\"): hjbsolve only")
    if peer:
        import jax
        import hj_reachability as hj
        print(f"hj_reachability {hj.__version__}, jax {jax.__version__} on {jax.devices()[0].platform}")
    summary = {}
    for name in a.problems.split(","):
        if name not in PROBLEMS:
            print(f"unknown problem {name!r}: choose from {sorted(PROBLEMS)}", file=sys.stderr)
            return 2
        rows = []
        configs = hjb_configs(name, a.quick)
        print(f"\n== {name}: runs (tool, grid, setting, time s, L1, max error, hjbsolve: share outside the time loop)")
        for n in sorted({c[0] for c in configs}):
            batch = []
            if peer and n <= 401:
                batch += [("peer", acc) for acc in ("low", "medium", "high", "very_high")]
            batch += [("ours", c) for c in configs if c[0] == n]
            # interleave: alternate the two tools within each grid size
            order = [b for pair in zip(batch[::2], batch[1::2]) for b in pair] + ([batch[-1]] if len(batch) % 2 else [])
            for kind, cfg in order:
                r = run_peer(name, n, cfg, repeat) if kind == "peer" else run_hjbsolve(name, *cfg, repeat)
                rows.append(r)
                out = "" if r["outside"] is None else f"  outside loop {100 * r['outside']:.0f} %"
                print(f"  {r['tool']:<15} {n}^2 {r['setting']:<22} {r['time']:8.3f} {r['l1']:9.2e} {r['max']:9.2e}{out}",
                      flush=True)
        summary[name] = (compare(name, rows), rows)
    print("\n== summary")
    for name, (ratios, rows) in summary.items():
        ours = [r for r in rows if r["tool"] == "hjbsolve"]
        fr = pareto(ours)
        outside = max(r["outside"] for r in fr)
        txt = ", ".join(f"{x:.2f}" if np.isfinite(x) else "not reached" for x in ratios) or "-"
        print(f"  {name}: time ratio hjbsolve / peer at equal or lower L1 (peer frontier, by time): {txt}; "
              f"time outside the loop on hjbsolve's frontier: up to {100 * outside:.0f} % (target <= 20 %)")
    if not a.no_kernel:
        bench_kernels(3 if a.quick else 5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
