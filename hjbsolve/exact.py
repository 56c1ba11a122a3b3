"""Closed-form (Riccati) solutions used as references by studies and tests (docs/mathematics.md §4).

LQ two-scale family, sup convention, t = time remaining, u unconstrained (a box that the optimal
feedback does not reach on the region of interest changes nothing there):

    V^eps(t, x, y) = z^T M(t) z / 2 + c(t),   z = (x, y),
    M' = F^T M + M F - (b^2/r) M e1 e1^T M + diag(q, s),   M(0) = diag(g0, 0),
    c' = sigma^2 M11 + (tau^2/eps) M22,                     c(0) = 0,
    F = [[a11, a12], [a21/eps, a22/eps]].

Derivation: insert the quadratic ansatz into
``V_t = (a11 x + a12 y) V_x - b^2 V_x^2/(2r) + sigma^2 V_xx + q x^2/2 + s y^2/2 + (1/eps)[(a21 x + a22 y) V_y + tau^2 V_yy]``.

The limit (docs/mathematics.md §4, checked): ``V(t, x) = Pbar x^2/2 + Sbar`` with ``abar = a11 - a12 a21/a22``,
``qbar = q + s (a21/a22)^2``, ``Pbar' = 2 abar Pbar - (b^2/r) Pbar^2 + qbar``, ``Pbar(0) = g0``,
``Sbar' = sigma^2 Pbar + s tau^2/(-2 a22)``, ``Sbar(0) = 0``: from
``Hbar(x, p) = -(a11 x + a12 <y>_x) p + b^2 p^2/(2r) - sigma^2 P - q x^2/2 - s(<y>_x^2 + Var)/2``,
``<y>_x = -a21 x/a22``, ``Var = tau^2/(-a22)``.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

LQ_KEYS = ("a11", "a12", "a21", "a22", "b", "sigma", "tau", "r", "q", "s", "g0")


def _lq(p: dict):
    return tuple(float(p[k]) for k in LQ_KEYS)


def lq_riccati(p: dict, eps: float, times) -> tuple[np.ndarray, np.ndarray]:
    """M(t) (len(times), 2, 2) and c(t) for the V^eps of the LQ family (eps > 0), to rtol 1e-12."""
    a11, a12, a21, a22, b, sig, tau, r, q, s, g0 = _lq(p)
    F = np.array([[a11, a12], [a21 / eps, a22 / eps]])
    E = np.array([[1.0, 0.0], [0.0, 0.0]])
    Qc = np.diag([q, s])

    def rhs(t, w):
        M = w[:4].reshape(2, 2)
        dM = F.T @ M + M @ F - (b * b / r) * M @ E @ M + Qc
        dc = sig**2 * M[0, 0] + tau**2 / eps * M[1, 1]
        return np.concatenate([dM.ravel(), [dc]])

    w0 = np.concatenate([np.diag([g0, 0.0]).ravel(), [0.0]])
    times = np.atleast_1d(np.asarray(times, float))
    sol = solve_ivp(rhs, (0.0, float(times.max()) if times.max() > 0 else 1e-300), w0, t_eval=times,
                    method="Radau", rtol=1e-12, atol=1e-13)
    if not sol.success:  # pragma: no cover
        raise RuntimeError(sol.message)
    W = sol.y.T
    return W[:, :4].reshape(-1, 2, 2), W[:, 4]


def lq_effective(p: dict, times) -> tuple[np.ndarray, np.ndarray]:
    """Pbar(t), Sbar(t) of the limit V = Pbar x^2/2 + Sbar."""
    a11, a12, a21, a22, b, sig, tau, r, q, s, g0 = _lq(p)
    abar = a11 - a12 * a21 / a22
    qbar = q + s * (a21 / a22) ** 2

    def rhs(t, w):
        P = w[0]
        return [2 * abar * P - (b * b / r) * P * P + qbar, sig**2 * P + s * tau**2 / (-2 * a22)]

    times = np.atleast_1d(np.asarray(times, float))
    sol = solve_ivp(rhs, (0.0, float(times.max()) if times.max() > 0 else 1e-300), [g0, 0.0], t_eval=times,
                    method="Radau", rtol=1e-12, atol=1e-14)
    return sol.y[0], sol.y[1]


def lq_value(p: dict, eps: float, t: float, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """V^eps(t, x, y) on the tensor grid x (nx,) x y (ny,) (eps > 0), or V(t, x) (eps = 0)."""
    x = np.asarray(x, float)
    if eps == 0.0:
        P, S = lq_effective(p, [t])
        return P[0] * x**2 / 2 + S[0]
    M, c = lq_riccati(p, eps, [t])
    M = M[0]
    X, Y = np.meshgrid(x, np.asarray(y, float), indexing="ij")
    return 0.5 * (M[0, 0] * X**2 + 2 * M[0, 1] * X * Y + M[1, 1] * Y**2) + c[0]


def has_exact_value(family: str) -> bool:
    return family == "lq"


def exact_value(family: str, model: dict, eps: float, t: float, x_axes: list, y_axes: list | None):
    """The exact V^eps(t) (eps > 0, on x_axes x y_axes) or V(t) (eps = 0) for a family that has one (lq)."""
    if family == "lq":
        return lq_value(model, eps, t, x_axes[0], y_axes[0] if (y_axes and eps > 0) else None)
    raise ValueError(f"family {family!r} has no closed-form value")
