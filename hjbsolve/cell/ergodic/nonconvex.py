r"""Ergodic cell problems with a G that is not convex in q: scheme choice and solver.

Equation: -nu Lap chi + G(y, P + D chi) = Hbar(P) on T^m, G continuous and coercive in q but not
convex (a double well (|q|^2 - 1)^2/4 + V(y), a concave piece, ...). Hbar(P) is still unique
(Lions-Papanicolaou-Varadhan) but need not be convex in P, so a table of it gets no Legendre
transform Lbar (homogenization.py skips it with a note).

Schemes (fluxes.py), monotone, so that their limit is the viscosity solution (Barles-Souganidis):
  * 1-D general G and separable G = sum_k K_k(q_k) + V(y) (m = 1, 2): Godunov's flux built from
    the formula, ext_{q in I(p-, p+)} (min over [p-, p+] if p- <= p+, else max over [p+, p-]),
    over the endpoints and the critical points of G(y_i, .) on each axis (Osher's formula, the
    min-max flux of the literature); first order in general, exact where the solution is;
  * 2-D general G: local Lax-Friedrichs with the bound alpha_ik = 1.05 max |G_qk(y_i, q)| over the
    whole q box (not only its faces, as for a convex G); first order.
The other forms are convex by construction (control, metric) or refused (a separable G with a
plain Python V: the Godunov flux needs a numba G).

Solver: pseudo-transient continuation. Policy iteration needs a convex scheme; a nonconvex
monotone scheme F(chi) is only monotone, so Newton steps are damped by an implicit time step:

    (lambda I + J(chi)) dchi - dc 1 = -(F(chi) - c),    dchi_0 = 0,

i.e. one Newton step of backward Euler for u_t + F(u) = Hbar with time step 1/lambda (the
drift of u goes into dc; the matrix lambda I + J is an M-matrix since the scheme is monotone).
A step is accepted when it does not increase osc F (the exact backward Euler step of a monotone
scheme never does), and then lambda shrinks 4x (to 0: Newton on the ergodic system, with its
singular-safe solves); a rejected step grows lambda 8x. By discrete comparison
min F <= Hbar_h <= max F at every iterate, so the returned Hbar carries the certified bound
osc F / 2 <= tol. ``long_time_ergodic`` marches the same scheme explicitly (a slow cross-check).
"""

from __future__ import annotations

import math

import numpy as np

from hjbsolve.errors import NumericalError

from .fluxes import _gen_grad_extent
from .grid import _Singular

_SHRINK = 0.25  # lambda after an accepted step
_GROW = 8.0  # lambda after a rejected step
_LAMBDA_OFF = 1e-12  # below this (relative to Q / h) lambda is set to 0: plain Newton


def solve_nonconvex(ctx, P, nu, tol, maxiter, chi0=None, hbar0=None):
    """Solve the cell problem of a nonconvex G on the context ctx (see the module docstring).
    Returns (state, (chi, hbar, status, residual, scheme)) like solvers._solve; raises
    NumericalError with the residual history and the best certified bracket otherwise.
    maxiter bounds the steps: 20 maxiter in all."""
    from .solvers import _failure_message, _gradient_scale, _residual_floor, _State

    st = _State(ctx, P)
    st.nu = nu
    st.Q = _gradient_scale(st)
    st.rad = float(np.max(np.abs(P))) + 0.5  # grown below while the gradients leave it
    n = ctx.n
    chi = np.zeros(n) if chi0 is None else np.asarray(chi0, dtype=float).ravel().copy()
    chi -= chi[0]
    R = np.empty(n)
    C = np.empty((n, ctx.width))
    Rt = np.empty(n)
    Ct = np.empty((n, ctx.width))
    lam0 = st.Q / ctx.h
    failures = []
    for _ in range(8):  # 'general' 2-D: re-solve if the gradients leave the LF box
        sch = ctx.scheme(nu, st.rad)
        ctx.evaluate(chi, 0.0, P, sch, R, C)
        lo, hi = float(np.min(R)), float(np.max(R))
        lam = lam0
        status = f"no convergence in {20 * maxiter} steps"
        for _ in range(20 * maxiter):
            mid, res = 0.5 * (lo + hi), 0.5 * (hi - lo)
            st.hist.append(res)
            st.bracket(R)
            if not math.isfinite(res):
                status = "non-finite residual"
                break
            if res <= max(tol, _residual_floor(C, R - mid, chi, mid)):
                status = "ok"
                break
            Cs = C.copy()
            Cs[:, 0] += lam
            try:
                dchi, _ = ctx.solve(Cs, R - mid)
            except _Singular:
                lam = max(lam * _GROW, _LAMBDA_OFF * lam0)
                continue
            chit = chi + dchi
            chit -= chit[0]
            ctx.evaluate(chit, 0.0, P, sch, Rt, Ct)
            lot, hit = float(np.min(Rt)), float(np.max(Rt))
            if math.isfinite(hit - lot) and hit - lot <= (hi - lo) * (1.0 + 1e-12):
                chi, R, C, Rt, Ct = chit, Rt, Ct, R, C
                lo, hi = lot, hit
                lam = 0.0 if lam * _SHRINK < _LAMBDA_OFF * lam0 else lam * _SHRINK
                st.iterations += 1
            else:
                lam = max(lam * _GROW, _LAMBDA_OFF * lam0)
        st.stages.append((nu, "pseudo-transient", st.iterations, status))
        if status != "ok":
            failures.append(f"pseudo-transient continuation (nonconvex G): {status}")
            raise NumericalError(_failure_message(st, nu, failures))
        if ctx.ham.kind != "general":
            break
        ext = np.empty(ctx.m)
        _gen_grad_extent(chi, P, ctx.h, ctx.nb, ext)
        if float(np.max(ext)) <= st.rad:
            break
        st.rad = 1.5 * float(np.max(ext))
        ctx.ensure_convex(st.rad)
    return st, (chi, mid, "ok", res, sch)
