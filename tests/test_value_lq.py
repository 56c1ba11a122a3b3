"""Value stage on the LQ two-scale family against the Riccati solutions.

V^eps(t, x, y) = [x y] M(t) [x y]^T / 2 + c(t) with (derived here, sup convention, t = time remaining)

    M' = A^T M + M A - (b^2/r) M e1 e1^T M + diag(q, s),   M(0) = diag(g0, 0),   A = [[a11, a12], [a21/eps, a22/eps]]
    c' = sigma^2 M11 + (tau^2/eps) M22,                     c(0) = 0

(insert V into dV/dt = (a11 x + a12 y) V_x - b^2 V_x^2/(2r) + q x^2/2 + s y^2/2 + sigma^2 V_xx
 + (1/eps)[(a21 x + a22 y) V_y + tau^2 V_yy]). The limit V = Pbar x^2/2 + Sbar: Hbar averages
 H = -(a11 x + a12 y) p + b^2 p^2/(2r) - q x^2/2 - s y^2/2 - sigma^2 P against N(-a21 x/a22, tau^2/(-a22));
 the optimal control -b p/r does not depend on y, and E[y^2] = (a21 x/a22)^2 + tau^2/(-a22) gives
 abar = a11 - a12 a21/a22, qbar = q + s (a21/a22)^2 and the constant s tau^2/(-2 a22): the docs/mathematics.md lines.
"""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from hjbsolve.effective import cell_stage
from hjbsolve.grid import Grid
from hjbsolve.models import lq
from hjbsolve.value import value_function

PARAMS = dict(a11=0.5, a12=1.0, a21=1.0, a22=-2.0, b=1.0, sigma=0.3, tau=0.5, r=1.0, q=1.0, s=0.5, g0=1.0,
              u_box=[-10.0, 10.0])
T = 1.0


def riccati(eps, t, p=PARAMS):
    a11, a12, a21, a22, b, sig, tau, r, q, s, g0 = (p[k] for k in "a11 a12 a21 a22 b sigma tau r q s g0".split())
    A = np.array([[a11, a12], [a21 / eps, a22 / eps]])
    Qc = np.diag([q, s])
    e1 = np.array([1.0, 0.0])

    def f(_, z):
        M = z[:4].reshape(2, 2)
        dM = A.T @ M + M @ A - (b * b / r) * np.outer(M @ e1, M @ e1) + Qc
        return np.concatenate([dM.ravel(), [sig**2 * M[0, 0] + tau**2 / eps * M[1, 1]]])

    z0 = np.concatenate([np.diag([g0, 0.0]).ravel(), [0.0]])
    sol = solve_ivp(f, [0, t], z0, method="Radau", rtol=1e-12, atol=1e-12)
    return sol.y[:4, -1].reshape(2, 2), sol.y[4, -1]


def limit(t, p=PARAMS):
    """docs/mathematics.md: Pbar' = 2 abar Pbar - (b^2/r) Pbar^2 + qbar, Sbar' = sigma^2 Pbar + s tau^2/(-2 a22)."""
    a11, a12, a21, a22, b, sig, tau, r, q, s, g0 = (p[k] for k in "a11 a12 a21 a22 b sigma tau r q s g0".split())
    ab = a11 - a12 * a21 / a22
    qb = q + s * (a21 / a22) ** 2
    sol = solve_ivp(lambda _, z: [2 * ab * z[0] - b * b / r * z[0] ** 2 + qb, sig**2 * z[0] + s * tau**2 / (-2 * a22)],
                    [0, t], [p["g0"], 0.0], rtol=1e-12, atol=1e-12)
    return sol.y[0, -1], sol.y[1, -1]


def exact_eps(eps, X, Y):
    M, c = riccati(eps, T)
    return 0.5 * (M[0, 0] * X * X + 2 * M[0, 1] * X * Y + M[1, 1] * Y * Y) + c


def setup(nx, ny, L=2.5):
    model = lq.build(PARAMS)
    xg = Grid.from_box([-L, L], nx)
    yg = Grid.from_box(model.y_box_hint(xg.flat_points()), ny)
    return model, cell_stage(model, xg, yg)


def eff_error(res):
    x = res.xgrid.axes[0]
    Pb, Sb = limit(T)
    return float(np.abs(res.V[-1] - (Pb * x * x / 2 + Sb))[np.abs(x) <= 1].max())


def eps_error(res, eps):
    X, Y = np.meshgrid(res.xgrid.axes[0], res.ygrid.axes[0], indexing="ij")
    w = (np.abs(X) <= 1) & (np.abs(Y) <= 1)
    return float(np.abs(res.V[-1] - exact_eps(eps, X, Y))[w].max())


def test_math_md_limit_lines_are_right():
    """The docs/mathematics.md Pbar/Sbar ODEs are the eps -> 0 limit of the Riccati system (M11 -> Pbar, c -> Sbar)."""
    Pb, Sb = limit(T)
    errs = []
    for eps in (1e-2, 1e-3, 1e-4):
        M, c = riccati(eps, T)
        errs.append(max(abs(M[0, 0] - Pb), abs(c - Sb)))
        assert abs(M[0, 1]) < 20 * eps and abs(M[1, 1]) < 20 * eps
    assert errs[2] < 1e-3 and errs[2] < errs[1] / 5 < errs[0] / 25


def test_effective_lq_error_dx_00125():
    """Averaged-coefficient scheme, dx = 0.0125 on [-3, 3], dt = 0.05: error ~1.0e-3 (bound 3e-3)."""
    model = lq.build(PARAMS)
    xg = Grid.from_box([-3, 3], 481)
    yg = Grid.from_box(model.y_box_hint(xg.flat_points()), 121)
    cell = cell_stage(model, xg, yg)
    res = value_function(model, cell, 0.0, T, 0.05)
    assert res.V.shape == (5, 481)
    assert eff_error(res) < 3e-3


def test_effective_lq_second_order_in_time():
    """dt = 0.2, 0.1, 0.05 with dx ~ dt^1.5 (interpolation error dx^2/dt ~ dt^2): observed order >= 1.7."""
    errs = []
    for dt, nx in ((0.2, 121), (0.1, 341), (0.05, 961)):
        model, cell = setup(nx, 61, L=3.0)
        errs.append(eff_error(value_function(model, cell, 0.0, T, dt)))
    orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert errs[-1] < 1e-3
    assert orders.min() >= 1.7, (errs, orders)


def test_per_y_effective_scheme_is_first_order():
    """The fan of per-y feet: error ~ C dt (C ~ 0.3 here), order ~1 with dx ~ dt."""
    errs = []
    for dt, nx in ((0.04, 126), (0.02, 251)):
        model, cell = setup(nx, 61)
        errs.append(eff_error(value_function(model, cell, 0.0, T, dt, effective_scheme="per_y")))
    order = np.log2(errs[0] / errs[1])
    assert 0.8 <= order <= 1.3, errs
    assert errs[1] < 0.5 * 0.02


@pytest.mark.parametrize("eps", [0.1, 0.01])
def test_veps_lq_accuracy_and_first_order(eps):
    """x in [-2.5, 2.5], y box from the Gibbs tails with 121 nodes; (dx, dt) = (0.04, 0.04) -> (0.02, 0.02) ->
    (0.01, 0.01): error < 5e-3 at the finest level (measured 4.4e-3 / 4.3e-3 for eps = 0.1 / 0.01) on
    |x|, |y| <= 1, observed order >= 0.9 (measured 1.0-1.1). Error model: ~0.32 dt (splitting + fan) +
    ~0.15 dx^2/dt (linear interpolation) + O(dy^2)."""
    errs = []
    for dt, nx in ((0.04, 126), (0.02, 251), (0.01, 501)):
        model, cell = setup(nx, 121)
        res = value_function(model, cell, eps, T, dt)
        errs.append(eps_error(res, eps))
    assert res.V.shape == (5, 501, 121)
    assert res.feedback.shape == (501, 121, 1)
    orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert errs[-1] < 5e-3, errs
    assert orders.min() >= 0.9, (errs, orders)


def test_uniform_accuracy_in_eps():
    """Fixed grid (251 x 81, dt = 0.02): max error over eps <= 1.2 x the eps = 0 (per-y) scheme's error vs V;
    cost per step independent of eps."""
    model, cell = setup(251, 81)
    e0 = eff_error(value_function(model, cell, 0.0, T, 0.02, effective_scheme="per_y"))
    errs, costs = [], []
    for eps in (0.1, 0.03, 0.01, 0.003, 0.001, 1e-4):
        res = value_function(model, cell, eps, T, 0.02)
        errs.append(eps_error(res, eps))
        costs.append(res.timings["eps_steps"])
    assert max(errs) <= 1.2 * e0, (errs, e0)


def test_asymptotic_preserving_limit():
    """eps = 1e-10 reproduces the eps = 0 per-y scheme (broadcast over y) to round-off."""
    model, cell = setup(101, 41)
    r0 = value_function(model, cell, 0.0, T, 0.05, effective_scheme="per_y")
    r1 = value_function(model, cell, 1e-10, T, 0.05)
    diff = np.abs(r1.V - r0.V[..., None]).max()
    assert diff < 1e-7 * np.abs(r0.V).max()


def lq_eps_study(folder: str):
    """The eps study of cases/lq.toml on 241 x 101 nodes with dt = 0.05 and Richardson extrapolation over
    eps in [1e-3, 3e-2]; returns (StudyResult, the fitted rate of the exact |V^eps - V| on |x|, |y| <= 1).
    Used by tests/test_value_richardson.py and ``scripts/study_value.py eps_rate``."""
    from pathlib import Path

    from hjbsolve.case import load_case
    from hjbsolve.exact import lq_value
    from hjbsolve.study import _set, fit_order, run_study
    case = load_case(Path(__file__).resolve().parents[1] / "hjbsolve" / "cases" / "lq.toml")
    d = case.as_dict()
    for key, value in (("run.richardson", True), ("time.dt", 0.05), ("grid.x", {"box": [-3.0, 3.0], "n": 241}),
                       ("grid.y", {"n": 101})):
        _set(d, key, value)
    case = load_case(d)
    eps = [0.03, 0.01, 0.003, 0.001]
    res = run_study(case, ["eps=" + ",".join(map(str, eps))], folder)
    xa = ya = np.linspace(-1.0, 1.0, 401)
    tf = case.time["T"]
    gap = [np.abs(lq_value(case.model, e, tf, xa, ya) - lq_value(case.model, 0.0, tf, xa)[:, None]).max() for e in eps]
    return res, fit_order(eps, gap)[0]
