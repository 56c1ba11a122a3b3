"""Refinement studies of the value stage; prints tables (the numbers quoted in the docstrings and reports).

    python scripts/study_value.py [effective|veps|uniform|fan|extended|entropy|box|richardson|eps_rate|all]

- effective: LQ two-scale family, effective problem V(t, x): averaged-coefficient scheme (order 2 and 1) and the
  per-y (fan) scheme; dx fixed at 0.0125 and dx ~ dt^1.5.
- veps:      V^eps(t, x, y) for eps = 0.1, 0.01, 0.001 under joint refinement (dx = dt), errors and orders.
- uniform:   fixed grid, eps from 0.1 to 1e-4: error of V^eps against the Riccati V^eps, ratio to the eps = 0
             per-y scheme's error against V, and the cost per step.
- fan:       the spurious diffusion of per-y feet: measured error against (dt/2) Var_pi(a) ∫ V''.
- extended:  extended vs y-blind controls (expr family), both schemes.
- entropy:   Entropy-SGD without control, transport along -grad f_gamma.
- box:       truncation: window values when the slow box grows (linear extrapolation and clamping).
- richardson: V^eps with Richardson extrapolation in dt (LQ, x in [-2, 2], y in [-2.5, 2.5]): errors and wall
             times for eps = 1, 0.1, 0.01, 0.001 and the limit on 641 x 151 nodes with dt = 0.05; orders over
             (dt, nx) = (0.2, 101), (0.1, 285), (0.05, 801) at eps = 0.1 and 0.001.
- eps_rate:  an eps study of cases/lq.toml (241 x 101 nodes, dt = 0.05, Richardson) over eps in [1e-3, 3e-2]:
             the study's table and fitted rate against the rate of the exact |V^eps - V| (Riccati).
"""

from __future__ import annotations

import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from hjbsolve.effective import cell_stage  # noqa: E402
from hjbsolve.grid import Grid  # noqa: E402
from hjbsolve.value import value_function  # noqa: E402

warnings.simplefilter("ignore")


def _lq():
    import test_value_lq as t
    return t


def effective():
    t = _lq()
    print("LQ effective V(t, x), T = 1, error on |x| <= 1")
    print(f"{'scheme':>22} {'dt':>7} {'dx':>8} {'error':>10} {'order':>6}")
    for label, kw in (("averaged, order 2", {}), ("averaged, order 1", {"order": 1}),
                      ("per-y (fan), order 2", {"effective_scheme": "per_y"})):
        prev = None
        for dt, h in ((0.2, 0.05), (0.1, 0.05 / 2**1.5), (0.05, 0.05 / 8)):
            nx = int(round(6 / h)) + 1
            model, cell = t.setup(nx, 61, L=3.0)
            e = t.eff_error(value_function(model, cell, 0.0, 1.0, dt, **kw))
            o = "" if prev is None else f"{np.log2(prev / e):6.2f}"
            print(f"{label:>22} {dt:7.3f} {6 / (nx - 1):8.5f} {e:10.2e} {o:>6}")
            prev = e
    print("fixed dx = 0.0125 on [-3, 3] (the interpolation error dx^2/dt grows as dt shrinks)")
    model, cell = t.setup(481, 121, L=3.0)
    for dt in (0.2, 0.1, 0.05, 0.025, 0.0125):
        e = t.eff_error(value_function(model, cell, 0.0, 1.0, dt))
        ep = t.eff_error(value_function(model, cell, 0.0, 1.0, dt, effective_scheme="per_y"))
        print(f"  dt = {dt:7.4f}: averaged {e:9.2e}   per-y {ep:9.2e}")


def veps():
    t = _lq()
    print("LQ V^eps(t, x, y), T = 1, error on |x|, |y| <= 1, x in [-2.5, 2.5], y box from the Gibbs tails")
    print(f"{'eps':>7} {'dt = dx':>8} {'ny':>5} {'error':>10} {'order':>6} {'time s':>7}")
    for eps in (0.1, 0.01, 0.001):
        prev = None
        for dt, nx, ny in ((0.04, 126, 161), (0.02, 251, 161), (0.01, 501, 161), (0.005, 1001, 161)):
            model, cell = t.setup(nx, ny)
            t0 = time.perf_counter()
            e = t.eps_error(value_function(model, cell, eps, 1.0, dt), eps)
            o = "" if prev is None else f"{np.log2(prev / e):6.2f}"
            print(f"{eps:7.3f} {dt:8.3f} {ny:5d} {e:10.2e} {o:>6} {time.perf_counter() - t0:7.2f}")
            prev = e


def uniform():
    t = _lq()
    for nx, ny, dt in ((251, 81, 0.02), (501, 121, 0.01)):
        model, cell = t.setup(nx, ny)
        r0 = value_function(model, cell, 0.0, 1.0, dt, effective_scheme="per_y")
        e0 = t.eff_error(r0)
        ea = t.eff_error(value_function(model, cell, 0.0, 1.0, dt))
        print(f"grid {nx} x {ny}, dt = {dt}: eps = 0 per-y scheme error {e0:.3e} (averaged scheme {ea:.3e})")
        print(f"{'eps':>8} {'error':>10} {'/ eps=0':>8} {'ms/step':>8}")
        for eps in (0.1, 0.03, 0.01, 0.003, 0.001, 1e-4):
            r = value_function(model, cell, eps, 1.0, dt)
            e = t.eps_error(r, eps)
            print(f"{eps:8.0e} {e:10.3e} {e / e0:8.3f} {r.timings['eps_steps'] / round(1 / dt) * 1e3:8.2f}")


def fan():
    t = _lq()
    p = t.PARAMS
    var_a = p["a12"] ** 2 * p["tau"] ** 2 / (-p["a22"])
    print("fan of per-y feet, LQ: Var_pi(a) = a12^2 tau^2/(-a22) =", var_a)
    print("predicted error at x = 0 (constant part): (dt/2) Var_pi(a) ∫_0^T Pbar")
    from scipy.integrate import solve_ivp
    a11, a12, a21, a22, b, r, q, s, g0 = (p[k] for k in "a11 a12 a21 a22 b r q s g0".split())
    ab, qb = a11 - a12 * a21 / a22, q + s * (a21 / a22) ** 2
    sol = solve_ivp(lambda _, z: [2 * ab * z[0] - b * b / r * z[0] ** 2 + qb, z[0]], [0, 1], [g0, 0], rtol=1e-12)
    intP = sol.y[1, -1]
    for dt, nx in ((0.1, 961), (0.05, 961), (0.025, 1921)):
        model, cell = t.setup(nx, 121, L=3.0)
        x = cell.xgrid.axes[0]
        i0 = np.argmin(np.abs(x))
        Pb, Sb = t.limit(1.0)
        rp = value_function(model, cell, 0.0, 1.0, dt, effective_scheme="per_y")
        ra = value_function(model, cell, 0.0, 1.0, dt)
        ep, ea = rp.V[-1][i0] - Sb, ra.V[-1][i0] - Sb
        print(f"  dt = {dt:6.3f}: per-y error {ep:9.2e}, averaged {ea:9.2e}, difference {ep - ea:9.2e}, "
              f"predicted fan {dt / 2 * var_a * intP:9.2e}")


def extended():
    import test_value_extended as t
    model, cell = t.problem.__wrapped__()
    x = cell.xgrid.axes[0]
    w = np.abs(x) <= 1
    T = t.T
    V_ext = t.P(T) * x * x / 2 - T * t.TAU**2 / (2 * t.TH)
    V_bl = t.P(T) * x * x / 2
    print("extended vs y-blind controls, exact gap T tau^2/(2 theta) =", T * t.TAU**2 / (2 * t.TH))
    for sch in ("averaged", "per_y"):
        for dt in (0.2, 0.1, 0.05):
            r = value_function(model, cell, 0.0, T, dt, effective_scheme=sch, blind=True)
            print(f"  {sch:>8} dt = {dt:5.2f}: extended error {np.abs(r.V[-1] - V_ext)[w].max():9.2e}, "
                  f"y-blind error {np.abs(r.V_blind[-1] - V_bl)[w].max():9.2e}, "
                  f"gap {np.mean((r.V_blind[-1] - r.V[-1])[w]):.4f}")


def entropy():
    import test_value_entropy as t
    from scipy.integrate import solve_ivp
    from hjbsolve.models import entropy_sgd
    model = entropy_sgd.build(t.PARAMS)
    print("Entropy-SGD (double well, gamma = 0.5, beta = 4), V = f(Xbar_T), error on |x| <= 1.5")
    prev = {}
    for dt, nx in ((0.4, 101), (0.2, 281), (0.1, 801), (0.05, 2263)):
        xg = Grid.from_box([-2.5, 2.5], nx)
        yg = Grid.from_box(model.y_box_hint(xg.flat_points()), 201)
        cell = cell_stage(model, xg, yg)
        x = xg.axes[0]
        sol = solve_ivp(lambda _, z: -(z - t.replica_mean(z)) / t.GAMMA, [0, 1], x, rtol=1e-11, atol=1e-12)
        ex = t.f(sol.y[:, -1])
        w = np.abs(x) <= 1.5
        row = []
        for order in (2, 1):
            e = np.abs(value_function(model, cell, 0.0, 1.0, dt, order=order).V[-1] - ex)[w].max()
            o = f"({np.log2(prev[order] / e):.2f})" if order in prev else ""
            prev[order] = e
            row.append(f"order {order}: {e:9.2e} {o:>7}")
        print(f"  dt = {dt:5.2f}, dx = {5 / (nx - 1):.5f}: " + "   ".join(row))


def box():
    t = _lq()
    print("box enlargement, effective LQ, dx = 0.02, dt = 0.05: max change of V on |x| <= 1 vs the [-5, 5] box")
    ref = {}
    for mode in ("linear", "clamp"):
        vals = {}
        for L in (1.5, 2.0, 3.0, 5.0):
            model, cell = t.setup(int(round(2 * L / 0.02)) + 1, 61, L=L)
            r = value_function(model, cell, 0.0, 1.0, 0.05, extrapolation=mode)
            x = r.xgrid.axes[0]
            vals[L] = r.V[-1][np.abs(x) <= 1 + 1e-12]
        ref[mode] = vals
        print(f"  {mode:>7}: " + "  ".join(f"L = {L}: {np.abs(v - vals[5.0]).max():.1e}" for L, v in vals.items()
                                           if L != 5.0))


def _richardson_solve(eps, dt, nx, ny):
    from hjbsolve.models import lq
    t = _lq()
    model = lq.build(t.PARAMS)
    cell = cell_stage(model, Grid.from_box([-2.0, 2.0], nx), Grid.from_box([-2.5, 2.5], ny))
    t0 = time.perf_counter()
    res = value_function(model, cell, eps, t.T, dt, richardson=True,
                         effective_scheme="per_y" if eps == 0 else "averaged")
    wall = time.perf_counter() - t0
    return (t.eps_error(res, eps) if eps > 0 else t.eff_error(res)), wall


def richardson():
    print("641 x 151 nodes, dt = 0.05 (solves at dt and dt/2); error on |x|, |y| <= 1, wall time per eps")
    for eps in (1.0, 0.1, 0.01, 0.001, 0.0):
        err, wall = _richardson_solve(eps, 0.05, 641, 151)
        print(f"  eps = {eps:<6g} error {err:.2e}  {wall:6.2f} s")
    for eps, ny in ((0.1, 151), (0.001, 61)):
        errs = [_richardson_solve(eps, dt, nx, ny)[0] for dt, nx in ((0.2, 101), (0.1, 285), (0.05, 801))]
        orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
        print(f"  eps = {eps:g}, (dt, nx) = (0.2, 101), (0.1, 285), (0.05, 801): errors "
              f"{', '.join(f'{e:.2e}' for e in errs)}, orders {', '.join(f'{o:.2f}' for o in orders)}")


def eps_rate():
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        res, exact_rate = _lq().lq_eps_study(tmp)
    print(res.table())
    print(f"rate of the exact |V^eps - V| (Riccati) on the same window: {exact_rate:.3f}")


STUDIES = {"effective": effective, "veps": veps, "uniform": uniform, "fan": fan, "extended": extended,
           "entropy": entropy, "box": box, "richardson": richardson, "eps_rate": eps_rate}


def main(argv=None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or ["all"]
    for name in (list(STUDIES) if names == ["all"] else names):
        print(f"\n=== {name} ===")
        STUDIES[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
