"""Unit tests of the semi-Lagrangian building blocks: fast implicit solve, exact 1-D min, hull trick,
control sets, interpolation/extrapolation."""

import numpy as np
import pytest

from hjbsolve.cell.generator import fast_generator
from hjbsolve.cell.invariant import invariant_measure
from hjbsolve.grid import Grid
from hjbsolve.sl import ball_controls, box_controls, list_controls
from hjbsolve.sl.build import pfamily_grid
from hjbsolve.sl.fast import FastSolver
from hjbsolve.sl.kernels import exact_min_1d, step_tab_1d


def _gen_1d(seed=0, n=41):
    rng = np.random.default_rng(seed)
    g = Grid.from_box([-2, 2], n)
    y = g.flat_points()
    return fast_generator(g, 0.3 + rng.random((n, 1)), drift=-2 * y + rng.normal(size=(n, 1)))


@pytest.mark.parametrize("s", [1e-3, 1.0, 1e3, 1e6, 1e10])
def test_gth_tridiagonal_solve_matches_dense(s):
    gens = [_gen_1d(k) for k in range(5)]
    fs = FastSolver(gens, s)
    rng = np.random.default_rng(1)
    W = rng.normal(size=(41, 5))
    out = np.empty_like(W)
    fs.solve(W, out)
    for i, gen in enumerate(gens):
        Q = gen.Q.toarray()
        ref = np.linalg.solve(np.eye(41) - s * Q, W[:, i])
        pi = invariant_measure(gen)
        if s < 1e6:
            assert np.allclose(out[:, i], ref, atol=1e-9 * np.abs(W).max(), rtol=1e-8)
        else:   # the dense solve loses digits there; the exact solution is pi^T W + O(1/s)
            assert np.allclose(out[:, i], pi @ W[:, i], atol=1e-4 * np.abs(W).max())
    ones = np.ones_like(W)
    fs.solve(ones, out)
    assert np.allclose(out, 1.0, atol=1e-12)


def test_gth_limit_is_average_exactly():
    gens = [_gen_1d(k) for k in range(3)]
    fs = FastSolver(gens, 1e14)
    W = np.random.default_rng(2).normal(size=(41, 3))
    out = np.empty_like(W)
    fs.solve(W, out)
    for i, gen in enumerate(gens):
        assert np.allclose(out[:, i], invariant_measure(gen) @ W[:, i], atol=1e-10)


def test_sparse_lu_fast_solve_2d():
    g = Grid.from_box([[-2, 2], [-2, 2]], 11)
    y = g.flat_points()
    gens = [fast_generator(g, 0.5, drift=-y + 0.1 * k) for k in range(2)]
    fs = FastSolver(gens, 0.7)
    W = np.random.default_rng(3).normal(size=(g.size, 2))
    out = np.empty_like(W)
    fs.solve(W, out)
    for i, gen in enumerate(gens):
        assert np.allclose(out[:, i], np.linalg.solve(np.eye(g.size) - 0.7 * gen.Q.toarray(), W[:, i]))


@pytest.mark.parametrize("mode", [0, 1])
@pytest.mark.parametrize("seed", range(6))
def test_exact_min_1d_matches_brute_force(mode, seed):
    rng = np.random.default_rng(seed)
    N, x0, h = 21, -1.0, 0.1
    F = rng.normal(size=N).cumsum() * 0.1 + np.linspace(-1, 1, N) ** 2
    base0 = rng.uniform(-1.4, 1.4)
    nfeet = 1 + seed % 2
    base1 = base0 + rng.uniform(0.0, 0.5)
    beta = rng.uniform(-0.3, 0.3)
    dtc = [0.0, 0.01, 0.1][seed % 3]
    uref, ulo, uhi = rng.uniform(-1, 1), -3.0, 2.5
    sl = np.diff(F) / h
    smin, smax = (min(sl.min(), 0.0), max(sl.max(), 0.0)) if mode == 1 else (sl.min(), sl.max())
    val, u = exact_min_1d(F, x0, h, N, mode, base0, base1, nfeet, beta, 0.2, dtc, uref, ulo, uhi, smin, smax)
    val2, _ = exact_min_1d(F, x0, h, N, mode, base0, base1, nfeet, beta, 0.2, dtc, uref, ulo, uhi)
    assert np.isclose(val, val2, rtol=0, atol=1e-12)
    us = np.linspace(ulo, uhi, 200001)

    def interp(xi):
        t = (xi - x0) / h
        if mode == 1:
            t = np.clip(t, 0, N - 1)
        m = np.clip(np.floor(t).astype(int), 0, N - 2)
        th = t - m
        return F[m] + th * (F[m + 1] - F[m])

    J = 0.2 + 0.5 * dtc * (us - uref) ** 2
    if nfeet == 1:
        J = J + interp(base0 + beta * us)
    else:
        J = J + 0.5 * (interp(base0 + beta * us) + interp(base1 + beta * us))
    assert val <= J.min() + 1e-12
    assert val >= J.min() - 1e-6
    assert ulo <= u <= uhi


def test_hull_p_family_matches_direct_search():
    rng = np.random.default_rng(4)
    J, nc, N = 7, 33, 5
    A = rng.normal(size=(J, nc, N, 1))
    L = rng.normal(size=(J, nc, N)) + A[..., 0] ** 2
    pi = rng.random((N, J))
    pi /= pi.sum(axis=1, keepdims=True)
    pg = np.linspace(-3, 3, 61)[:, None]
    Ab, Lb = np.empty((61, N, 1)), np.empty((61, N))
    pfamily_grid(A, L, pi, pg, Ab, Lb)
    H = -A[None, ..., 0] * pg[:, None, None, None, 0] - L[None]          # (np, J, nc, N)
    arg = H.argmax(axis=2)
    Aref = np.take_along_axis(A[None, ..., 0], arg[:, :, None], axis=2)[:, :, 0]   # (np, J, N)
    Lref = np.take_along_axis(L[None], arg[:, :, None], axis=2)[:, :, 0]
    assert np.allclose(Ab[..., 0], np.einsum("nj,pjn->pn", pi, Aref))
    assert np.allclose(Lb, np.einsum("nj,pjn->pn", pi, Lref))


def test_control_sets():
    b = box_controls([-1, 0], [1, 2], [3, 5])
    assert b.shape == (15, 2) and b.min(axis=0).tolist() == [-1, 0] and b.max(axis=0).tolist() == [1, 2]
    ball = ball_controls(2.0, k=2, n_radii=4, n_dirs=8)
    assert ball.shape == (1 + 32, 2)
    assert np.isclose(np.linalg.norm(ball, axis=1).max(), 2.0)
    assert ball_controls(1.0, k=1, n_radii=5).shape == (11, 1)
    assert list_controls([-1, 0, 1]).shape == (3, 1)
    with pytest.raises(ValueError):
        ball_controls(1.0, k=3)


def test_extrapolation_modes():
    # V = x on [0, 1]; foot at 1.5: linear extrapolation gives 1.5, clamping gives 1.0
    N = 11
    V = np.linspace(0, 1, N)[None].copy()
    L = np.zeros((1, 1, N))
    disp = np.full((1, 1, N), 5.0)          # in cells: 0.5 / h
    noise = np.zeros((1, 1, N))
    for mode, want in ((0, 1.5), (1, 1.0)):
        out = np.empty((1, N))
        arg = np.empty((1, N), np.int32)
        step_tab_1d(V, L, disp, noise, mode, False, out, arg)
        assert np.isclose(out[0, -1], want)
