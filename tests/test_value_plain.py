"""Plain (m = 0) HJB problems against exact solutions: LQ (Riccati), Hopf-Lax on a ball, a finite control list."""

import numpy as np
from scipy.integrate import solve_ivp

from hjbsolve.grid import Grid
from hjbsolve.sl import AffineSpec, ControlProblem, ball_controls, box_controls, list_controls, solve_hjb

A, B, SIG, R, Q, G0 = 0.5, 1.0, 0.3, 1.0, 1.0, 1.0


def lq_exact(sig=SIG, T=1.0):
    sol = solve_ivp(lambda _, z: [2 * A * z[0] - B * B * z[0] ** 2 / R + Q, sig**2 * z[0]], [0, T], [G0, 0.0],
                    rtol=1e-12, atol=1e-12)
    return sol.y[:, -1]


def lq_problem(sig=SIG, nu=201, ubox=10.0, n=1):
    spec = AffineSpec(a0=lambda x: A * x, B=lambda x: np.broadcast_to(np.eye(n) * B, x.shape + (n,)),
                      l0=lambda x: 0.5 * Q * (x**2).sum(-1), c=R, u_ref=(0.0,) * n, lo=(-ubox,) * n, hi=(ubox,) * n)
    return ControlProblem(n=n, a=lambda x, u: A * x + B * u, l=lambda x, u: 0.5 * Q * (x**2).sum(-1) + 0.5 * R * (u**2).sum(-1),
                          g=lambda x: 0.5 * G0 * (x**2).sum(-1), controls=box_controls([-ubox] * n, [ubox] * n, nu),
                          sigma=sig, affine=spec)


def test_plain_lq_exact_min_second_order():
    """1-D LQ with noise, exact minimisation: (dt, nx) = (0.2, 121), (0.1, 341), (0.05, 961) on [-3, 3]:
    errors 2.8e-3, 6.6e-4, 1.6e-4 on |x| <= 1, order >= 1.8."""
    P, S = lq_exact()
    prob = lq_problem()
    errs = []
    for dt, nx in ((0.2, 121), (0.1, 341), (0.05, 961)):
        g = Grid.from_box([-3, 3], nx)
        x = g.axes[0]
        res = solve_hjb(prob, g, 1.0, dt)
        assert res.attrs["order_time"].startswith("2")
        errs.append(np.abs(res.V[-1] - (P * x * x / 2 + S))[np.abs(x) <= 1].max())
    orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert errs[-1] < 3e-4 and orders.min() >= 1.8, (errs, orders)


def test_control_discretisation_error_below_scheme_error():
    """Deterministic 1-D LQ at (dt, nx) = (0.05, 961). The exact minimisation has no control error. A control
    grid of spacing du adds ~du^2 b^2/(8 r) per unit time: successive grid refinements differ by a factor ~4,
    and at du = 0.025 (801 nodes on [-10, 10]) the control error, estimated as (V_401 - V_801)/3, is below the
    scheme's error (exact min vs Riccati). Grid and exact results agree up to that error."""
    P, S = lq_exact(sig=0.0)
    g = Grid.from_box([-3, 3], 961)
    x = g.axes[0]
    w = np.abs(x) <= 1
    exact_min = solve_hjb(lq_problem(sig=0.0), g, 1.0, 0.05).V[-1]
    scheme_err = np.abs(exact_min - (P * x * x / 2 + S))[w].max()
    V = {nu: solve_hjb(lq_problem(sig=0.0, nu=nu), g, 1.0, 0.05, minimize="grid").V[-1] for nu in (201, 401, 801)}
    d1 = (V[201] - V[401])[w]
    d2 = (V[401] - V[801])[w]
    assert d1.min() >= 0 and d2.min() >= 0          # a finer grid (nested nodes) never raises the min
    assert 3.0 < d1.max() / d2.max() < 5.0
    control_err = d2.max() / 3
    assert control_err < scheme_err
    assert np.abs(V[801] - exact_min)[w].max() < 2 * scheme_err


def test_plain_lq_2d_refined_min():
    """2-D LQ (a = 0.5 x + u, u in a box of R^2, noise 0.3 I): grid 11 x 11 + golden-section refinement,
    closed-loop noise; (dt, nx) = (0.2, 61), (0.1, 171): errors ~9.6e-3, 2.6e-3, order >= 1.7. The control error
    of the refined search is below the scheme's error (a plain 41 x 41 grid gives 1.5e-2, 121 x 121 3.6e-3)."""
    P, S = lq_exact()
    prob = lq_problem(nu=11, ubox=6.0, n=2)
    errs = []
    for dt, nx in ((0.2, 61), (0.1, 171)):
        g = Grid.from_box([[-2.5, 2.5]] * 2, nx)
        X = g.points()
        res = solve_hjb(prob, g, 1.0, dt, output_times=[1.0])
        w = np.all(np.abs(X) <= 1, axis=-1)
        errs.append(np.abs(res.V[-1] - (P * (X**2).sum(-1) / 2 + 2 * S))[w].max())
    assert errs[-1] < 4e-3 and np.log2(errs[0] / errs[1]) >= 1.7, errs
    # the refinement removes the control-grid error: a plain 41 x 41 grid (du = 0.3) is far worse (1.5e-2)
    res = solve_hjb(lq_problem(nu=41, ubox=6.0, n=2), g, 1.0, 0.1, output_times=[1.0], minimize="grid")
    err_grid = np.abs(res.V[-1] - (P * (X**2).sum(-1) / 2 + 2 * S))[w].max()
    assert errs[-1] < err_grid / 4, (errs, err_grid)


def hopf_lax(X, t, radius, g0=1.0):
    r = np.linalg.norm(X, axis=-1)
    s = np.minimum(g0 * r / (1 + g0 * t), radius)
    return g0 * (r - t * s) ** 2 / 2 + t * s * s / 2


def test_hopf_lax_on_a_ball():
    """a = u, l = |u|^2/2, u in the ball of radius 0.5 (binding for |x| > 1), g = |x|^2/2: V from the Hopf-Lax
    formula. The scheme is exact in time here, so the error is the control set's (directions x radii) plus the
    interpolation's: 2.9e-3 with 8 radii x 32 directions (9.5e-3 with 4 x 16), decreasing when the ball is refined."""
    T = 1.0
    g = Grid.from_box([[-1.5, 1.5]] * 2, 121)
    X = g.points()
    w = np.all(np.abs(X) <= 1.2, axis=-1)
    errs = []
    for nr, nd in ((4, 16), (8, 32)):
        prob = ControlProblem(n=2, a=lambda x, u: u + 0 * x, l=lambda x, u: 0.5 * (u**2).sum(-1) + 0 * x[..., 0],
                              g=lambda x: 0.5 * (x**2).sum(-1), controls=ball_controls(0.5, k=2, n_radii=nr, n_dirs=nd))
        res = solve_hjb(prob, g, T, 0.25, output_times=[T])
        errs.append(np.abs(res.V[-1] - hopf_lax(X, T, 0.5))[w].max())
    assert errs[1] < 4e-3 and errs[1] < errs[0] / 2.5, errs


def test_finite_control_list():
    """a = u in {-1, 0, 1}, l = 0, g = |x|: V = max(|x| - t, 0). With controls frozen over a step the
    reachable set is a lattice of step dt (no chattering within a step): error dt/2, first order."""
    prob = ControlProblem(n=1, a=lambda x, u: u + 0 * x, l=lambda x, u: 0 * u[..., 0] + 0 * x[..., 0],
                          g=lambda x: np.abs(x[..., 0]), controls=list_controls([-1, 0, 1]))
    g = Grid.from_box([-3, 3], 241)
    x = g.axes[0]
    errs = []
    for dt in (0.1, 0.05):
        res = solve_hjb(prob, g, 1.0, dt)
        errs.append(np.abs(res.V[-1] - np.maximum(np.abs(x) - 1, 0))[np.abs(x) <= 1.5].max())
        assert errs[-1] <= dt / 2 + 1e-9
    assert 0.9 <= np.log2(errs[0] / errs[1]) <= 1.1


def test_plain_lq_noise_stable_when_the_noise_spans_many_cells():
    """Regression: with noise half-widths of 40-80 cells (dx << sqrt(dt) sigma) the closed-loop gain of the
    exact affine step was taken by one-cell differences of V, which amplify its grid-scale ripples; the
    values blew up from the box edges inward (-479 at x = 4 for n = 5121). Refining dx at fixed dt must
    leave the error at the time-error level, on the window and on the whole box."""
    sig = 0.4
    P, S = lq_exact(sig)
    prob = lq_problem(sig=sig, ubox=20.0)
    errs = []
    for n in (1281, 5121):
        grid = Grid.from_box([-4.0, 4.0], n)
        res = solve_hjb(prob, grid, T=1.0, dt=0.05, output_times=[1.0])
        x = grid.axes[0]
        e = np.abs(res.V[-1] - (0.5 * P * x**2 + S))
        errs.append((e[np.abs(x) <= 1].max(), e.max()))
    assert max(w for w, _ in errs) < 5e-4, errs
    assert max(b for _, b in errs) < 5e-3, errs
