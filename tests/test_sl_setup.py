"""Setup of the 2-D deterministic steppers: the one-pass Taylor tables, the factored (drift affine in u) step,
and the detection of that structure; each pinned against the plain tabulated path, plus an exact solution with
curved characteristics."""

import numpy as np
import pytest

from hjbsolve.grid import Grid
from hjbsolve.sl import ControlProblem, ball_controls, solve_hjb
from hjbsolve.sl import build, kernels as K, reference
from hjbsolve.sl.steppers import LinearControlStepper, TabStepper, jacobian

BOX = [[-2.0, 2.0], [-1.5, 2.5]]


def twist(x, u):
    rot = np.stack([-x[..., 1], x[..., 0]], -1) * (1.0 + 0.25 * (x ** 2).sum(-1))[..., None]
    return rot + u


def problem(a=twist, l=None, g=None, dirs=16, radii=2):
    l = l or (lambda x, u: 0.3 * np.sin(x[..., 0]) + 0.5 * (u ** 2).sum(-1))
    g = g or (lambda x: np.sqrt((x ** 2).sum(-1) + 0.1))
    return ControlProblem(n=2, a=a, l=l, g=g, controls=ball_controls(1.0, k=2, n_radii=radii, n_dirs=dirs))


def test_taylor_tables_match_the_gradient_formula():
    grid = Grid.from_box(BOX, (23, 17))
    x = grid.points()
    u = ball_controls(1.0, 2, 2, 8)
    A = twist(x[None, None], u[None, :, None, None]) + 0.1 * x[None, None] ** 2
    L = np.sin(x[..., 0])[None, None] * (1 + (u ** 2).sum(-1))[None, :, None, None]
    dt = 0.07
    disp, C = np.empty(A.shape), np.empty(L.shape)
    K.taylor_tables_2d(A, L, grid.h[0], grid.h[1], dt, 2, disp, C)
    Da = jacobian(A, grid, 2)
    ref_disp = (dt * A + 0.5 * dt * dt * np.einsum("...de,...e->...d", Da, A)) / grid.h
    DL = jacobian(L[..., None], grid, 2)[..., 0, :]
    ref_C = dt * L + 0.5 * dt * dt * np.einsum("...e,...e->...", DL, A)
    assert np.allclose(disp, ref_disp, rtol=1e-12, atol=1e-12)
    assert np.allclose(C, ref_C, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", [0, 1])
def test_factored_step_equals_the_tabulated_step(mode):
    rng = np.random.default_rng(3)
    n1, n2, nc = 31, 27, 13
    V = rng.random((2, n1, n2))
    base = 3 * rng.standard_normal((2, n1, n2, 2))
    M = rng.standard_normal((2, n1, n2, 2, 2))
    c0 = rng.random((2, n1, n2))
    c1 = 0.1 * rng.standard_normal((2, n1, n2, 2))
    q = rng.random(nc)
    u = rng.standard_normal((nc, 2))
    disp = base[:, None] + np.einsum("jabdq,cq->jcabd", M, u)
    C = c0[:, None] + q[None, :, None, None] + np.einsum("jabq,cq->jcab", c1, u)
    Vf = V.reshape(2, -1)
    ref, ref_arg = reference.step_tab_2d(Vf, C, disp, np.zeros((2, 1, n1, n2, 2, 2)), mode, False)
    out, arg = np.empty_like(V), np.empty(V.shape, np.int32)
    K.step_lin_2d(Vf, base, M, c0, c1, q, u, mode, out, arg)
    assert np.allclose(out, ref, rtol=1e-12, atol=1e-12)
    assert (arg != ref_arg).mean() < 1e-3


def test_linear_control_structure_is_detected_and_checked_everywhere():
    grid = Grid.from_box(BOX, 21)
    u = ball_controls(1.0, 2, 2, 8)
    m = problem().to_model()
    parts = build.linear_control_parts(m, grid, None, u)
    assert parts is not None
    assert np.allclose(parts[1], np.eye(2))
    # not affine in u at a few nodes only, u x-dependent, cost not separable: all refused
    bad = [problem(a=lambda x, u: twist(x, u) + np.where(x[..., :1] > 1.9, u ** 2, 0.0)),
           problem(a=lambda x, u: twist(x, u * (1 + 0.1 * x[..., :1]))),
           problem(l=lambda x, u: (x * u).sum(-1))]
    for p in bad:
        assert build.linear_control_parts(p.to_model(), grid, None, u) is None


def test_factored_stepper_equals_the_tabulated_stepper():
    grid = Grid.from_box(BOX, (41, 37))
    m = problem().to_model()
    u = ball_controls(1.0, 2, 2, 16)
    dt = 0.05
    a0, B, l0, q = build.linear_control_parts(m, grid, None, u)
    lin = LinearControlStepper(grid, a0.reshape((1,) + grid.shape + (2,)), B, l0.reshape((1,) + grid.shape), q,
                               u, dt)
    A, S, L = build.tab_tables(m, grid, None, u)
    tab = TabStepper(grid, A, None, L, dt)
    V = np.sqrt((grid.points() ** 2).sum(-1) + 0.1)[None]
    o1, o2 = np.empty_like(V), np.empty_like(V)
    for _ in range(3):
        lin.step(V, o1)
        tab.step(V, o2)
        assert np.allclose(o1, o2, rtol=1e-12, atol=1e-12)
        V = o1.copy()
    assert abs(lin.displacement_cells() - tab.displacement_cells()) < 1e-9


def test_twist_with_ball_controls_against_the_exact_value():
    """dX = w(|X|) J X + u, |u| <= 1, g = |x|: the drift keeps |X|, so V = max(|x| - t, 0); L1 error on
    [-1, 1]^2 and its observed order under refinement of grid, directions and steps together."""
    T = 0.5
    errs = []
    for n, dirs, steps in ((51, 12, 2), (101, 25, 4), (201, 50, 8)):
        p = problem(l=lambda x, u: np.zeros(np.broadcast_shapes(x.shape[:-1], u.shape[:-1])),
                    g=lambda x: np.sqrt((x ** 2).sum(-1)), dirs=dirs, radii=1)
        grid = Grid.from_box([[-2.0, 2.0], [-2.0, 2.0]], n)
        res = solve_hjb(p, grid, T, T / steps, output_times=[T])
        x = grid.points()
        w = np.all(np.abs(x) <= 1 + 1e-9, axis=-1)
        exact = np.maximum(np.sqrt((x ** 2).sum(-1)) - T, 0.0)
        errs.append(np.abs(res.V[-1] - exact)[w].sum() * np.prod(grid.h))
    assert errs[-1] < 5e-3
    order = np.log2(errs[-2] / errs[-1])
    assert order > 1.0, errs


@pytest.mark.parametrize("mode", [0, 1])
def test_bracketed_exact_min_equals_the_full_scan(mode):
    """The 1-D exact minimisation with slope-table bracketing returns the full scan's minimum on rough,
    non-convex data, with feet far outside the box and box constraints active or not."""
    rng = np.random.default_rng(7)
    N, h, x0 = 120, 0.05, -3.0
    x = x0 + h * np.arange(N)
    for trial in range(40):
        F = (np.sin(3 * x + trial) + 0.3 * x ** 2 + (0.05 if trial % 2 else 0.5) * rng.standard_normal(N))[None]
        L = K.slope_levels(N)
        mn, mx = np.empty((1, L, N + 1)), np.empty((1, L, N + 1))
        K.slope_tables(F, h, mode, mn, mx)
        none = np.empty((0, 0))
        for _ in range(25):
            base = rng.uniform(-5, 5)
            eta = rng.uniform(0, 0.5)
            nf = 1 + (rng.random() < 0.5)
            beta = rng.choice([-1, 1]) * rng.uniform(0.01, 2.0)
            dtc = rng.uniform(0.001, 0.5)
            uref = rng.uniform(-3, 3)
            ulo, uhi = sorted(rng.uniform(-4, 4, 2))
            args = (F[0], x0, h, N, mode, base - eta, base + eta, nf, beta, 0.1, dtc, uref, ulo, uhi)
            v_full, u_full = K.exact_min_1d(*args, none, none)
            v_br, u_br = K.exact_min_1d(*args, mn[0], mx[0])
            assert v_br <= v_full + 1e-12 and abs(v_br - v_full) <= 1e-12 * (1 + abs(v_full))
            assert ulo - 1e-12 <= u_br <= uhi + 1e-12
