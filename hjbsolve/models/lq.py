"""The linear-quadratic two-scale family (docs/mathematics.md §4), x, y in R:

    dX = (a11 X + a12 Y + b u) ds + sqrt(2) sigma dW1,     dY = (1/eps)(a21 X + a22 Y) ds + sqrt(2/eps) tau dW2,
    l = r u^2/2 + q x^2/2 + s y^2/2,    g = g0 x^2/2,     a22 < 0, u in [u_min, u_max].

mu_x = Normal(-a21 x / a22, tau^2 / (-a22)); potential ``U = -(a21 x y + a22 y^2 / 2) / tau^2``.
With an unbounded control set the value functions are quadratic (Riccati); a box that the optimal
feedback never reaches on the region of interest leaves them unchanged there.
"""

from __future__ import annotations

import numpy as np

from ..cell.box import gibbs_box
from ..model import AffineQuadratic, ControlSet, Model, constant_matrix


def build(p: dict, u_nodes: int = 41) -> Model:
    a11, a12, a21, a22 = (float(p[k]) for k in ("a11", "a12", "a21", "a22"))
    bu, sig, tau, r, q, s, g0 = (float(p[k]) for k in ("b", "sigma", "tau", "r", "q", "s", "g0"))
    lo, hi = p["u_box"]
    controls = ControlSet((float(lo),), (float(hi),), (u_nodes,))

    def a0(x, y):
        return a11 * x + a12 * y

    def B(x, y):
        lead = np.broadcast_shapes(x.shape[:-1], y.shape[:-1])
        return np.full(lead + (1, 1), bu)

    def l0(x, y):
        return 0.5 * q * x[..., 0] ** 2 + 0.5 * s * y[..., 0] ** 2

    def a(x, y, u):
        return a0(x, y) + bu * u

    def l(x, y, u):
        return l0(x, y) + 0.5 * r * u[..., 0] ** 2

    def b(x, y):
        return a21 * x + a22 * y

    def g(x, y):
        return np.broadcast_to(0.5 * g0 * x[..., 0] ** 2, np.broadcast_shapes(x.shape[:-1], y.shape[:-1])).copy()

    def potential(x, y):
        return -(a21 * x[..., 0] * y[..., 0] + 0.5 * a22 * y[..., 0] ** 2) / tau**2

    def y_box_hint(x_nodes):
        m = -a21 * x_nodes / a22
        sd = tau / np.sqrt(-a22)
        guess = np.array([[m.min() - 10 * sd, m.max() + 10 * sd]])
        return gibbs_box(potential, x_nodes, 1, guess)

    return Model(family="lq", n=1, m=1, controls=controls, a=a, sigma=constant_matrix(sig, 1), b=b,
                 tau=constant_matrix(tau, 1), l=l, g=g, params=dict(p), potential=potential,
                 affine=AffineQuadratic(a0, B, l0, r, (0.0,)), sigma_zero=(sig == 0.0), y_box_hint=y_box_hint)
