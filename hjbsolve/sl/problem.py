"""Plain (one-scale, m = 0) finite-horizon control problems solved by the same SL machinery.

    dX = a(X, u) ds + sqrt(2) sigma(X, u) dW,     V(t, x) = inf_u E[ ∫_0^t l(X_s, u_s) ds + g(X_t) ]
    ∂_t V + H(x, DV, D²V) = 0,   H(x, p, P) = sup_u { -a.p - tr(sigma sigma^T P) - l },   V(0) = g

Usage::

    from hjbsolve.sl import ControlProblem, ball_controls, solve_hjb
    prob = ControlProblem(n=2, a=lambda x, u: u, l=lambda x, u: 0.5 * (u**2).sum(-1),
                          g=lambda x: 0.5 * (x**2).sum(-1), controls=ball_controls(1.0, k=2))
    res = solve_hjb(prob, Grid.from_box([[-2, 2], [-2, 2]], 81), T=1.0, dt=0.05)

Coefficients are vectorised callables with the component axis last (``x: (..., n)``, ``u: (..., k)``).
``controls`` is a finite set of nodes (nc, k) (:func:`box_controls`, :func:`ball_controls`,
:func:`list_controls`). If the problem is control-affine with quadratic cost on a box, give ``affine``
(:class:`AffineSpec`): then 1-D problems are minimised exactly and 2-D ones by grid + golden section.
A :class:`~hjbsolve.model.Model` with ``m = 0`` can be given to :func:`hjbsolve.value.value_function`
directly; :meth:`ControlProblem.to_model` builds one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..grid import Grid
from ..model import AffineQuadratic, ControlSet, Model


@dataclass
class AffineSpec:
    """``a = a0(x) + B(x) u``, ``l = l0(x) + c |u - u_ref|^2 / 2``, u in the box [lo, hi]."""

    a0: Callable
    B: Callable
    l0: Callable
    c: float
    u_ref: tuple
    lo: tuple
    hi: tuple


@dataclass
class ControlProblem:
    """A plain control problem (see module docstring)."""

    n: int
    a: Callable
    l: Callable
    g: Callable
    controls: np.ndarray
    sigma: Callable | float | None = None
    affine: AffineSpec | None = None

    def to_model(self) -> Model:
        n = self.n
        nodes = np.asarray(self.controls, float)
        nodes = nodes[:, None] if nodes.ndim == 1 else nodes
        k = nodes.shape[1]
        sig = self.sigma
        if sig is None or np.isscalar(sig):
            val = 0.0 if sig is None else float(sig)

            def sigma(x, y, u):
                lead = np.broadcast_shapes(x.shape[:-1], u.shape[:-1])
                return np.broadcast_to(val * np.eye(n), lead + (n, n))
        else:
            def sigma(x, y, u):
                lead = np.broadcast_shapes(x.shape[:-1], y.shape[:-1], u.shape[:-1])
                return np.broadcast_to(sig(x, u), lead + (n, n))

        def lead(x, y, u=None):
            shapes = [x.shape[:-1], y.shape[:-1]] + ([u.shape[:-1]] if u is not None else [])
            return np.broadcast_shapes(*shapes)

        a = lambda x, y, u: np.broadcast_to(self.a(x, u), lead(x, y, u) + (n,))
        l = lambda x, y, u: np.broadcast_to(self.l(x, u), lead(x, y, u))
        g = lambda x, y: np.broadcast_to(self.g(x), lead(x, y))
        affine = None
        if self.affine is not None:
            sp = self.affine
            affine = AffineQuadratic(a0=lambda x, y: np.broadcast_to(sp.a0(x), lead(x, y) + (n,)),
                                     B=lambda x, y: np.broadcast_to(sp.B(x), lead(x, y) + (n, k)),
                                     l0=lambda x, y: np.broadcast_to(sp.l0(x), lead(x, y)),
                                     c=float(sp.c), u_ref=tuple(np.reshape(sp.u_ref, k)))
            box = ControlSet(tuple(np.reshape(sp.lo, k)), tuple(np.reshape(sp.hi, k)), (len(nodes),) * k)
        else:
            box = ControlSet(tuple(nodes.min(axis=0)), tuple(nodes.max(axis=0)), (len(nodes),) * k)
        zero_fast = lambda x, y: np.zeros(lead(x, y) + (0,))
        return Model(family="plain", n=n, m=0, controls=box, a=a, sigma=sigma, b=zero_fast,
                     tau=lambda x, y: np.zeros(lead(x, y) + (0, 0)), l=l, g=g, affine=affine,
                     sigma_zero=sig is None or (np.isscalar(sig) and float(sig) == 0.0))


def solve_hjb(problem: ControlProblem | Model, xgrid: Grid, T: float, dt: float, output_times=None, **kw):
    """Value function of a plain control problem on ``xgrid`` (a :class:`~hjbsolve.value.ValueResult`)."""
    from ..value import value_function
    if isinstance(problem, ControlProblem):
        model = problem.to_model()
        kw.setdefault("u_nodes", np.asarray(problem.controls, float).reshape(len(problem.controls), -1))
    else:
        model = problem
    return value_function(model, None, 0.0, T, dt, output_times=output_times, xgrid=xgrid, **kw)
