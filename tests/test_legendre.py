"""Discrete Legendre-Fenchel transform and the effective Lagrangian (exact on the LQ family)."""

import numpy as np
import pytest

from hjbsolve.effective import cell_stage
from hjbsolve.grid import Grid
from hjbsolve.legendre import default_q_axes, effective_lagrangian, legendre_fenchel
from hjbsolve.models import lq


def brute(p_axes, f, s_axes):
    P = np.stack(np.meshgrid(*p_axes, indexing="ij"), -1).reshape(-1, len(p_axes))
    S = np.stack(np.meshgrid(*s_axes, indexing="ij"), -1).reshape(-1, len(s_axes))
    F = f.reshape(-1)
    return (S @ P.T - F[None, :]).max(axis=1).reshape([len(a) for a in s_axes])


@pytest.mark.parametrize("d", [1, 2])
def test_matches_brute_force_on_nonconvex_data(d):
    rng = np.random.default_rng(1)
    p_axes = [np.sort(rng.uniform(-2, 2, 17 + 4 * k)) for k in range(d)]
    s_axes = [np.sort(rng.uniform(-5, 5, 23 + k)) for k in range(d)]
    f = rng.normal(size=[len(a) for a in p_axes]) + sum(np.meshgrid(*[a**2 for a in p_axes], indexing="ij"))
    assert np.abs(legendre_fenchel(p_axes, f, s_axes) - brute(p_axes, f, s_axes)).max() < 1e-12
    # leading (x) axes are carried along
    f2 = np.stack([f, 2 * f])
    out = legendre_fenchel(p_axes, f2, s_axes)
    assert np.abs(out[1] - brute(p_axes, 2 * f, s_axes)).max() < 1e-12


def test_effective_lagrangian_exact_on_lq():
    """LQ: Hbar(x, p) = (b^2/2r) p^2 + beta(x) p + c(x) (u box not binding), so
    Lbar(x, q) = sup_p {-q p - Hbar} = (q + beta)^2 / (4 alpha) - c: exact where p* is a grid node,
    and below by at most alpha h^2 / 4 elsewhere."""
    prm = dict(a11=0.3, a12=1.0, a21=1.0, a22=-2.0, b=1.5, sigma=0.0, tau=0.7, r=2.0, q=1.0, s=0.5, g0=1.0,
               u_box=[-100.0, 100.0])
    model = lq.build(prm)
    xg = Grid.from_box([-1, 1], 5)
    yg = Grid.from_box(model.y_box_hint(xg.flat_points()), 401)
    p = np.linspace(-4, 4, 161)
    cell = cell_stage(model, xg, yg, p_axes=[p])
    x = xg.axes[0]
    alpha = prm["b"] ** 2 / (2 * prm["r"])
    mean = -prm["a21"] * x / prm["a22"]
    var = prm["tau"] ** 2 / -prm["a22"]
    beta = -(prm["a11"] * x + prm["a12"] * mean)
    c = -prm["q"] * x**2 / 2 - prm["s"] * (mean**2 + var) / 2
    hb = alpha * p[None] ** 2 + beta[:, None] * p[None] + c[:, None]
    assert np.abs(cell.hbar - hb).max() < 1e-10
    # q values whose maximiser p* = -(q + beta)/(2 alpha) lies on the p grid, for x = x[2]
    q_nodes = -(2 * alpha * p[40:121] + beta[2])
    lb = effective_lagrangian([p], cell.hbar[2:3], [np.sort(q_nodes)])[0]
    exact = (np.sort(q_nodes) + beta[2]) ** 2 / (4 * alpha) - c[2]
    assert np.abs(lb - exact).max() < 1e-9
    # arbitrary q: error within the O(h^2) bound
    qa = default_q_axes([p], cell.hbar, 97)[0]
    qa = qa[(qa > -3) & (qa < 3)]
    lb = effective_lagrangian([p], cell.hbar, [qa])
    exact = (qa[None] + beta[:, None]) ** 2 / (4 * alpha) - c[:, None]
    h = p[1] - p[0]
    assert np.all(lb <= exact + 1e-9) and np.all(exact - lb <= alpha * h**2 / 4 + 1e-9)
