r"""Nonlinear ergodic cell problems on the torus (periodic homogenization).

Equation
--------
For a constant vector ``P`` in R^m (m = 1, 2) find the ergodic constant ``Hbar(P)`` and a
periodic corrector ``chi`` on the unit torus T^m (period 1 in every axis) with

    -nu * Laplace(chi)(y) + G(y, P + D chi(y)) = Hbar(P),        nu >= 0,
    chi(node 0) = 0                                               (normalisation).

``G`` is convex in its second argument. ``Hbar`` is the effective Hamiltonian of the
homogenized problem; it is convex in ``P`` and unique, ``chi`` is unique up to a constant when
``nu > 0`` (for ``nu = 0`` it may be non-unique: only ``Hbar`` is a reliable output then).

Hamiltonians (``PeriodicHamiltonian``)
--------------------------------------
(a) separable:  G(y, q) = sum_k K_k(q_k) + V(y), K_k convex  (``PeriodicHamiltonian.quadratic``
    is the built-in K_k(s) = s^2/2 with exact flux and derivatives; ``.separable`` takes user
    K_k as numba functions K(s) -> float, derivatives exact if given, else central differences:
    give dK, a subgradient, when K has kinks);
(b) general:    G(y, q) a numba function G(y, q) -> float of two 1-D float64 arrays
    (``PeriodicHamiltonian.general``; q-derivatives by central differences, so G should be C^1
    in q; write a G with kinks in the control form (c));
(c) control:    G(y, q) = max_{a in A} { -f(y, a) . q - l(y, a) }   (sup convention; A a finite
    set, ``PeriodicHamiltonian.control``). With the sup convention ``Hbar(P)`` is minus the
    optimal long-run average of ``l + f.P`` for the controlled diffusion
    dY = f(Y, a) dt + sqrt(2 nu) dW (i.e. Hbar = max over invariant pairs of average(-f.P - l)).

V, f, l (or nothing, for (b)) are tabulated on the grid once; the kernels work on arrays.

Grid
----
N nodes per axis, h = 1/N, y_i = offset + i h (offset default 0, e.g. h/2 for a shifted grid).
``chi`` is returned with shape (N,)*m, ``chi[i0, i1]`` being the value at (y[i0], y[i1]).

Discretisation (monotone in the sense of Barles-Souganidis, 3-point / 5-point stencil)
--------------------------------------------------------------------------------------
With p-_k = P_k + (chi_i - chi_{i-e_k})/h, p+_k = P_k + (chi_{i+e_k} - chi_i)/h,
p0_k = (p-_k + p+_k)/2 and c = 2 theta nu / h, theta = 0.9 (cell-Peclet bound: a centred
difference of a term with slope s is monotone next to the nu-Laplacian iff h |s| / nu <= 2;
theta < 1 keeps it strictly monotone, every node coupled to each neighbour by at least
(1 - theta) nu / h^2, so that the linearisations stay irreducible for nu > 0):

    -nu Lap_h chi_i + Ghat_i(p-, p+) = Hbar,     Lap_h = standard 3-point (5-point) Laplacian.

(a) separable, per axis k, the max of three monotone convex pieces (this is the control form
    (c) for the Legendre representation K(s) = sup_a {-a s - L(a)}, with the controls
    |a| <= c differenced centrally and the others upwind):
        Ghat_k = max{ K_c(p0_k),  K(min(p+_k, s-)) - c max(p+_k - s-, 0),
                                  K(max(p-_k, s+)) + c min(p-_k - s+, 0) }
    where K'(s-) = -c, K'(s+) = c and K_c = K on [s-, s+], extended linearly with slopes -+c
    outside (so |K_c'| <= c). Wherever the solution is resolved (h |K'(p0)| < 2 theta nu with
    a margin) the centred value K(p0) wins: the scheme is the centred scheme there and falls
    back to an upwind flux node by node (and axis by axis) elsewhere, without any switching
    logic (the fallback is decided by the max, so the discrete problem is well defined, convex
    and monotone in chi). nu = 0: c = 0, s+- = q* = argmin K and Ghat_k is the exact Godunov
    flux max{K(max(p-, q*)), K(min(p+, q*))}.
(b) general G: local Lax-Friedrichs with the minimal added viscosity,
        Ghat_i = G(y_i, p0) - sum_k max(0, alpha_ik - c) (p+_k - p-_k)/2,
    alpha_ik = 1.05 max_{|q|_inf <= q_box} |dG/dq_k(y_i, q)| (data only, see
    PeriodicHamiltonian). Centred (second order) at nodes/axes with h alpha_ik <= 2 theta nu,
    otherwise numerical viscosity: monotone, first order there, error O(alpha h) (nu = 0:
    plain local LF, first order).
(c) control: Ghat_i = max_a { -sum_k f_k p*_k - l }, p*_k = p0_k if h |f_k(y_i, a)| <=
    2 theta nu, otherwise the upwind difference (p+_k if f_k > 0, p-_k if f_k < 0).

Every scheme is monotone and convex in chi, and jointly convex in (P, chi), so the discrete
Hbar_h(P) is convex in P (for (b): as long as the gradients stay in the q_box).

Order (for Hbar): nu > 0 and centred everywhere (the usual resolved case): second order,
O(h^2) (observed 2.00 in the tests). nu = 0, (a)/(c): the Godunov / upwind flux is formally
first order, but Hbar is O(h^2) in the tests here (1-D: the discrete problem is a periodic
rectangle rule for int sqrt(2 (Hbar - V)), spectrally accurate when Hbar > max V, O(h^2) at the
non-smooth limit P0 and through max_i V(y_i) on a grid that misses the maximiser of V). Where
(a)/(c) use the upwind branch, or (b) the LF branch, the local error is O(h). For (c) with a
finite control grid of spacing da approximating a continuous sup, add the error of the max
over A (<= da^2/8 for -f.q - l = -a.q - |a|^2/2 + V).

Discrete comparison: for any grid function psi, min_i F_i(psi) <= Hbar_h <= max_i F_i(psi)
(F_i the left-hand side); hence |Hbar_returned - Hbar_h| <= final residual.

Solver
------
Newton's method on the (N^m + 1) unknowns (chi, Hbar) with the normalisation as extra
equation. Since every scheme is convex and monotone, Newton with the (semismooth) Jacobian is
Howard's policy iteration for the ergodic problem. Pipeline of ``solve_ergodic``:
  1. warm start (tables) or large nu: Newton at the target nu directly (<= 40 iterations);
  2. otherwise / on failure: continuation in nu, nu_j = Q/4 * 4^-j (Q a gradient scale from
     G(., P)) down to max(2 nu, h Q / 4, Q / 256), Newton at each stage: the viscous
     linearisations are well mixed there (below, several wells of V only communicate through
     exponentially small transitions and the Newton systems become numerically singular);
  3. at the target: Newton (nu > 0) and, if it fails or for nu = 0, the vanishing-discount
     continuation: Newton (= policy iteration, Jacobian lambda I + J, a nonsingular M-matrix)
     on lambda Q w + F(w) = c, lambda = 1e-2, then x1e-3 (x0.1 while the policy still moves),
     stopped when the certified ergodic residual lambda Q osc(w) / 2 is <= tol. This is what
     makes the degenerate nu = 0 problem robust (several absorbing classes: |P| below the
     critical value, several maximisers of V, where the ergodic Newton system is singular).
     Policy iteration moves a kink of the corrector by one node per iteration, and when the
     discrete maxima of V nearly tie (a grid missing the maximisers) the basins reorganise
     once lambda reaches their O(h^2) gap, moving kinks across the torus: a lambda stage may
     take maxiter iterations per 50 nodes of an axis (O(N), see ``_discount``).
Linear systems: the system is singular in chi up to constants, so it is solved with dchi = 0
at an anchor node r in a recurrent class of the linearisation (found by following the
strongest couplings): two right-hand sides on the nonsingular Dirichlet-at-r matrix, dHbar
from the row of r; 1-D: numba Thomas elimination (periodic tridiagonal with a border), 2-D:
``scipy.sparse.linalg.splu`` (MMD on A^T + A). The linear residual of every step is checked;
when the anchored elimination is inaccurate (nearly multichain linearisations: hitting times
explode) the bordered (N^m + 1) matrix [J, -1; e_0^T, 0] is factorised by sparse LU with
partial pivoting instead. The Newton Jacobian (never the residual) carries a 1e-9 relative
graph Laplacian so that linearisations with several absorbing classes stay solvable. Steps:
full (policy-iteration) steps while the max-norm residual stays below the max of the last 5
iterates (x1e3 allowed in the first two iterations), halved otherwise. Non-convergence raises ``NumericalError`` with the residual history and the
narrowest certified bracket min F <= Hbar_h <= max F met on the way; a wrong Hbar is never
returned silently: the returned value has residual <= max(tol, rounding floor).
Known limits: metastable targets (small nu > 0 with several equal wells) may stall at a
residual ~1e-10 (the bracket in the error message then tells which tol is achievable); a
non-smooth K without dK (central differences at a kink) can make Newton oscillate.

``long_time_ergodic`` (explicit long-time marching of u_t + F(u) = 0, ~1e5-1e6 steps at
realistic N) is a slow cross-check only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from numba import njit
from numba.extending import is_jitted
from scipy.sparse.linalg import splu

from hjbsolve.errors import HJBError, NumericalError

__all__ = [
    "PeriodicHamiltonian",
    "ErgodicResult",
    "solve_ergodic",
    "effective_hamiltonian_table",
    "long_time_ergodic",
    "NonConvexHamiltonianError",
    "NonPeriodicHamiltonianError",
]

_EPS = float(np.finfo(float).eps)
# centred differences are used up to the cell-Peclet number 2 * _THETA (< 2: strictly monotone,
# every node keeps a coupling >= (1 - _THETA) nu / h^2 to each neighbour, so the linearisations
# stay irreducible for nu > 0)
_THETA = 0.9
# solver tuning (see "Solver" in the module docstring)
_DIRECT_BUDGET = 40  # Newton iterations of a direct / warm-started attempt before the fallback
_GROWTH = 1e3  # a full step may raise the max-norm residual this much in the first 2 iterations
_GROWTH_LATE = 1.0  # afterwards: non-monotone Armijo test against the max of the last 5
_REG = 1e-9  # Jacobian-only graph Laplacian, relative to Q / h
_NU_STOP = 0.25  # nu-continuation stops at max(2 nu, _NU_STOP h Q, _NU_STOP_Q Q)
_NU_STOP_Q = 1.0 / 256
_DISC_FAC = 1e-3  # vanishing discount: lambda *= _DISC_FAC (0.1 while the policy still moves)
# a vanishing-discount stage may use maxiter Newton iterations per _MIGRATE_NODES nodes of an
# axis (policy iteration moves a kink by one node per iteration; see _discount)
_MIGRATE_NODES = 50


class NonConvexHamiltonianError(HJBError):
    """G(y, .) is not convex: the message names the node y and the q where it fails."""


class NonPeriodicHamiltonianError(HJBError):
    """The data (V, G, f or l) differ at y_k = 0 and y_k = 1: not periodic on the unit box."""


# ---------------------------------------------------------------------------------------------
# grid helpers (arrays only: cached)
# ---------------------------------------------------------------------------------------------


@njit(cache=True)
def _neighbours(N, m):
    """nb[i, 2k] = index of node i - e_k, nb[i, 2k+1] = index of i + e_k (periodic, C order)."""
    n = N**m
    nb = np.empty((n, 2 * m), np.int64)
    if m == 1:
        for i in range(N):
            nb[i, 0] = (i - 1) % N
            nb[i, 1] = (i + 1) % N
    else:
        for i0 in range(N):
            for i1 in range(N):
                i = i0 * N + i1
                nb[i, 0] = ((i0 - 1) % N) * N + i1
                nb[i, 1] = ((i0 + 1) % N) * N + i1
                nb[i, 2] = i0 * N + (i1 - 1) % N
                nb[i, 3] = i0 * N + (i1 + 1) % N
    return nb


@njit(cache=True)
def _find_anchor(C, nb):
    """A node of a recurrent class of the linearisation: follow the strongest coupling."""
    n = C.shape[0]
    s = 0
    for _ in range(n + 1):
        best = 0.0
        nxt = -1
        for j in range(1, C.shape[1]):
            if C[s, j] < best:
                best = C[s, j]
                nxt = nb[s, j - 1]
        if nxt < 0:
            return s
        s = nxt
    return s


@njit(cache=True)
def _stencil_residual(C, nb, R, dchi, dH):
    """max_i |(J dchi)_i - dH + R_i| for the stencil C."""
    out = 0.0
    for i in range(C.shape[0]):
        v = C[i, 0] * dchi[i] - dH + R[i]
        for j in range(nb.shape[1]):
            v += C[i, 1 + j] * dchi[nb[i, j]]
        if not (abs(v) <= out):
            out = abs(v)
    return out


@njit(cache=True)
def _bordered_solve_1d(C, R, r, dchi):
    """Solve J dchi - dH 1 = -R (J: periodic tridiagonal stencil C) with dchi[r] = 0.

    Thomas elimination of the nodes r+1, ..., r-1 (Dirichlet at r), then the row of r gives dH.
    Returns (dH, ok); ok is False on a tiny pivot (caller falls back to sparse LU)."""
    N = R.shape[0]
    M = N - 1
    cp = np.empty(M)
    d1 = np.empty(M)
    d2 = np.empty(M)
    scale = 0.0
    for i in range(N):
        a = abs(C[i, 0]) + abs(C[i, 1]) + abs(C[i, 2])
        if a > scale:
            scale = a
    tiny = 1e-13 * scale + 1e-300
    for j in range(M):
        s = (r + 1 + j) % N
        b = C[s, 0]
        c = C[s, 2] if j < M - 1 else 0.0
        if j > 0:
            a = C[s, 1]
            den = b - a * cp[j - 1]
            x1 = -R[s] - a * d1[j - 1]
            x2 = 1.0 - a * d2[j - 1]
        else:
            den = b
            x1 = -R[s]
            x2 = 1.0
        if not (abs(den) > tiny):
            return 0.0, False
        cp[j] = c / den
        d1[j] = x1 / den
        d2[j] = x2 / den
    for j in range(M - 2, -1, -1):
        d1[j] -= cp[j] * d1[j + 1]
        d2[j] -= cp[j] * d2[j + 1]
    cu = C[r, 2]
    cl = C[r, 1]
    den = cu * d2[0] + cl * d2[M - 1] - 1.0
    if not (abs(den) > 1e-300):
        return 0.0, False
    dH = (-R[r] - cu * d1[0] - cl * d1[M - 1]) / den
    if not math.isfinite(dH):
        return 0.0, False
    dchi[r] = 0.0
    for j in range(M):
        s = (r + 1 + j) % N
        dchi[s] = d1[j] + dH * d2[j]
    return dH, True


# ---------------------------------------------------------------------------------------------
# (a) separable Hamiltonian  sum_k K_k(q_k) + V(y)
# ---------------------------------------------------------------------------------------------


@njit
def _sep_flux(Kf, dKf, k, pm, pp, c, sm, sp_, Km, Kp):
    """Monotone flux of one axis for K_k convex: max of three monotone convex pieces
    (centred K_c(p0); upwind K on slopes < -c with p+; upwind K on slopes > c with p-), where
    c = 2 nu / h, K'(sm) = -c, K'(sp_) = c (+-inf if K' never reaches +-c), Km = K(sm),
    Kp = K(sp_). Returns (value, derivative, piece) with piece 0 centred (derivative wrt p0),
    1 upwind with p+ (derivative wrt p+), 2 upwind with p- (derivative wrt p-)."""
    pc = 0.5 * (pm + pp)
    if pc > sp_:
        best = Kp + c * (pc - sp_)
        db = c
    elif pc < sm:
        best = Km - c * (pc - sm)
        db = -c
    else:
        best = Kf(k, pc)
        db = dKf(k, pc)
    piece = 0
    if sm > -np.inf:
        if pp < sm:
            v = Kf(k, pp)
            dv = dKf(k, pp)
        else:
            v = Km - c * (pp - sm)
            dv = -c
        if v > best:
            best = v
            db = dv
            piece = 1
    if sp_ < np.inf:
        if pm > sp_:
            v = Kf(k, pm)
            dv = dKf(k, pm)
        else:
            v = Kp + c * (pm - sp_)
            dv = c
        if v > best:
            best = v
            db = dv
            piece = 2
    return best, db, piece


@njit(inline="always")
def _flux_jacobian(piece, d, ih, diag, lo, up):
    """Add the derivative d of a separable flux piece to the row (diag, lower, upper) of the Jacobian:
    piece 0 centred (p- + p+)/2, piece 1 the forward difference p+, piece 2 the backward difference p-."""
    if piece == 0:
        g = 0.5 * ih * d
        return diag, lo - g, up + g
    g = ih * d
    if piece == 1:
        return diag - g, lo, up + g
    return diag + g, lo - g, up


@njit
def _sep_eval(Kf, dKf, brk, chi, hbar, P, h, nu, theta, V, nb, which, R, C):
    """Residual R_i = -nu Lap chi + sum_k Ghat_k - hbar + V and its stencil C (diag, lo_0, up_0,
    ...). brk[k] = (sm, sp, K(sm), K(sp)) for c = 2 nu / h; which[i, k] <- flux piece used."""
    n = chi.shape[0]
    m = P.shape[0]
    ih = 1.0 / h
    vis = nu * ih * ih
    c = 2.0 * theta * nu * ih
    for i in range(n):
        ci = chi[i]
        r = V[i] - hbar
        diag = 0.0
        for k in range(m):
            cl = chi[nb[i, 2 * k]]
            cu = chi[nb[i, 2 * k + 1]]
            r -= vis * ((cu - ci) - (ci - cl))
            diag += 2.0 * vis
            lo = -vis
            up = -vis
            pm = P[k] + (ci - cl) * ih
            pp = P[k] + (cu - ci) * ih
            val, d, piece = _sep_flux(Kf, dKf, k, pm, pp, c, brk[k, 0], brk[k, 1], brk[k, 2],
                                      brk[k, 3])
            r += val
            which[i, k] = piece
            diag, lo, up = _flux_jacobian(piece, d, ih, diag, lo, up)
            C[i, 1 + 2 * k] = lo
            C[i, 2 + 2 * k] = up
        C[i, 0] = diag
        R[i] = r


@njit
def _Kq(k, s):
    return 0.5 * s * s


@njit
def _dKq(k, s):
    return s


@njit(cache=True)
def _quad_eval(brk, chi, hbar, P, h, nu, theta, V, nb, which, R, C):
    """_sep_eval for K_k(s) = s^2/2 (brk = (-c, c, c^2/2, c^2/2)); arrays only, cached."""
    n = chi.shape[0]
    m = P.shape[0]
    ih = 1.0 / h
    vis = nu * ih * ih
    c = 2.0 * theta * nu * ih
    for i in range(n):
        ci = chi[i]
        r = V[i] - hbar
        diag = 0.0
        for k in range(m):
            cl = chi[nb[i, 2 * k]]
            cu = chi[nb[i, 2 * k + 1]]
            r -= vis * ((cu - ci) - (ci - cl))
            diag += 2.0 * vis
            lo = -vis
            up = -vis
            pm = P[k] + (ci - cl) * ih
            pp = P[k] + (cu - ci) * ih
            # centred piece: Huber function of p0 (|slope| <= c)
            pc = 0.5 * (pm + pp)
            if pc > c:
                best = c * pc - 0.5 * c * c
                db = c
            elif pc < -c:
                best = -c * pc - 0.5 * c * c
                db = -c
            else:
                best = 0.5 * pc * pc
                db = pc
            piece = 0
            # slopes < -c, argument p+
            if pp < -c:
                v = 0.5 * pp * pp
                dv = pp
            else:
                v = -c * pp - 0.5 * c * c
                dv = -c
            if v > best:
                best = v
                db = dv
                piece = 1
            # slopes > c, argument p-
            if pm > c:
                v = 0.5 * pm * pm
                dv = pm
            else:
                v = c * pm - 0.5 * c * c
                dv = c
            if v > best:
                best = v
                db = dv
                piece = 2
            r += best
            which[i, k] = piece
            diag, lo, up = _flux_jacobian(piece, db, ih, diag, lo, up)
            C[i, 1 + 2 * k] = lo
            C[i, 2 + 2 * k] = up
        C[i, 0] = diag
        R[i] = r


# ---------------------------------------------------------------------------------------------
# (b) general convex G(y, q)
# ---------------------------------------------------------------------------------------------


@njit
def _fd_grad(Gf, y, q, k):
    qk = q[k]
    d = 1e-6 * (1.0 + abs(qk))
    q[k] = qk + d
    gp = Gf(y, q)
    q[k] = qk - d
    gm = Gf(y, q)
    q[k] = qk
    return (gp - gm) / (2.0 * d)


@njit
def _gen_eval(Gf, Y, chi, hbar, P, h, nu, theta, alpha, nb, R, C):
    """Residual / stencil for general G: G(y, p0) - sum_k beta_ik (p+_k - p-_k)/2 - nu Lap chi,
    beta_ik = max(0, alpha_ik - 2 nu / h) (0: centred; else local Lax-Friedrichs with the
    minimal added viscosity; monotone when alpha_ik >= |G_qk(y_i, p0_i)|)."""
    n = chi.shape[0]
    m = P.shape[0]
    ih = 1.0 / h
    vis = nu * ih * ih
    c = 2.0 * theta * nu * ih
    y = np.empty(m)
    q = np.empty(m)
    dp = np.empty(m)
    for i in range(n):
        ci = chi[i]
        for k in range(m):
            y[k] = Y[i, k]
            cl = chi[nb[i, 2 * k]]
            cu = chi[nb[i, 2 * k + 1]]
            q[k] = P[k] + 0.5 * ih * (cu - cl)
            dp[k] = ((cu - ci) - (ci - cl)) * ih  # p+ - p-
        r = Gf(y, q) - hbar
        diag = 0.0
        for k in range(m):
            r -= nu * ih * dp[k]
            diag += 2.0 * vis
            g = 0.5 * ih * _fd_grad(Gf, y, q, k)
            lo = -vis - g
            up = -vis + g
            beta = alpha[i, k] - c
            if beta > 0.0:
                r -= 0.5 * beta * dp[k]
                a2 = 0.5 * beta * ih
                lo -= a2
                up -= a2
                diag += 2.0 * a2
            C[i, 1 + 2 * k] = lo
            C[i, 2 + 2 * k] = up
        C[i, 0] = diag
        R[i] = r


@njit
def _gen_alpha(Gf, Y, rad, ns, out):
    """out[i, k] = 1.05 max |G_qk(y_i, q)| over q in [-rad, rad]^m. G convex => G_qk is
    nondecreasing in q_k, so the max sits on the faces q_k = +-rad (sampled at ns points along
    the other axis for m = 2)."""
    n, m = Y.shape
    y = np.empty(m)
    q = np.empty(m)
    for i in range(n):
        for k in range(m):
            y[k] = Y[i, k]
        for k in range(m):
            best = 0.0
            for sgn in (-1.0, 1.0):
                if m == 1:
                    q[0] = sgn * rad
                    g = abs(_fd_grad(Gf, y, q, 0))
                    if g > best:
                        best = g
                else:
                    o = 1 - k
                    for j in range(ns):
                        q[k] = sgn * rad
                        q[o] = -rad + 2.0 * rad * j / (ns - 1)
                        g = abs(_fd_grad(Gf, y, q, k))
                        if g > best:
                            best = g
            out[i, k] = 1.05 * best


@njit
def _gen_grad_extent(chi, P, h, nb, out):
    """out[k] = max_i |p0_ik| (extent of the centred discrete gradients P + D0 chi)."""
    n = chi.shape[0]
    m = P.shape[0]
    for k in range(m):
        out[k] = 0.0
    for i in range(n):
        for k in range(m):
            d = abs(P[k] + 0.5 * (chi[nb[i, 2 * k + 1]] - chi[nb[i, 2 * k]]) / h)
            if d > out[k]:
                out[k] = d


@njit
def _gen_convexity(Gf, Y, qs, delta, info):
    """First (node, q-sample) where the q-Hessian of G has a negative eigenvalue (info[0:2]),
    or a non-finite value (info[3] = 1). info[2] = the eigenvalue estimate."""
    n, m = Y.shape
    y = np.empty(m)
    q = np.empty(m)
    d2 = delta * delta
    for i in range(n):
        for k in range(m):
            y[k] = Y[i, k]
        for j in range(qs.shape[0]):
            for k in range(m):
                q[k] = qs[j, k]
            g0 = Gf(y, q)
            if not math.isfinite(g0):
                info[0] = i
                info[1] = j
                info[2] = g0
                info[3] = 1.0
                return
            if m == 1:
                q[0] = qs[j, 0] + delta
                gp = Gf(y, q)
                q[0] = qs[j, 0] - delta
                gm = Gf(y, q)
                lam = (gp - 2.0 * g0 + gm) / d2
                sc = abs(gp) + 2.0 * abs(g0) + abs(gm)
            else:
                q[0] = qs[j, 0] + delta
                g10 = Gf(y, q)
                q[0] = qs[j, 0] - delta
                gm10 = Gf(y, q)
                q[0] = qs[j, 0]
                q[1] = qs[j, 1] + delta
                g01 = Gf(y, q)
                q[1] = qs[j, 1] - delta
                gm01 = Gf(y, q)
                q[0] = qs[j, 0] + delta
                q[1] = qs[j, 1] + delta
                gpp = Gf(y, q)
                q[1] = qs[j, 1] - delta
                gpm = Gf(y, q)
                q[0] = qs[j, 0] - delta
                gmm = Gf(y, q)
                q[1] = qs[j, 1] + delta
                gmp = Gf(y, q)
                h11 = (g10 - 2.0 * g0 + gm10) / d2
                h22 = (g01 - 2.0 * g0 + gm01) / d2
                h12 = (gpp - gpm - gmp + gmm) / (4.0 * d2)
                lam = 0.5 * (h11 + h22) - math.sqrt(0.25 * (h11 - h22) ** 2 + h12 * h12)
                sc = abs(g10) + abs(gm10) + abs(g01) + abs(gm01) + 4.0 * abs(g0)
                sc += abs(gpp) + abs(gpm) + abs(gmp) + abs(gmm)
            if not math.isfinite(lam):
                info[0] = i
                info[1] = j
                info[2] = lam
                info[3] = 1.0
                return
            if lam * d2 < -1e-9 * (1.0 + sc):
                info[0] = i
                info[1] = j
                info[2] = lam
                return


# ---------------------------------------------------------------------------------------------
# (c) control form  max_a { -f(y,a).q - l(y,a) }
# ---------------------------------------------------------------------------------------------


@njit(cache=True)
def _ctrl_eval(F, L, chi, hbar, P, h, nu, theta, nb, R, C, pol):
    n = chi.shape[0]
    nA = L.shape[1]
    m = P.shape[0]
    ih = 1.0 / h
    vis = nu * ih * ih
    thr = 2.0 * theta * nu * ih  # centred branch for a control/axis iff |f_k| <= 2 theta nu / h
    pm = np.empty(m)
    pp = np.empty(m)
    pc = np.empty(m)
    for i in range(n):
        ci = chi[i]
        lap = 0.0
        for k in range(m):
            cl = chi[nb[i, 2 * k]]
            cu = chi[nb[i, 2 * k + 1]]
            pm[k] = P[k] + (ci - cl) * ih
            pp[k] = P[k] + (cu - ci) * ih
            pc[k] = 0.5 * (pm[k] + pp[k])
            lap += (cu - ci) - (ci - cl)
        best = -np.inf
        ba = 0
        for a in range(nA):
            val = -L[i, a]
            for k in range(m):
                f = F[i, a, k]
                if nu > 0.0 and abs(f) <= thr:
                    val -= f * pc[k]
                elif f > 0.0:
                    val -= f * pp[k]
                else:
                    val -= f * pm[k]
            if val > best:
                best = val
                ba = a
        pol[i] = ba
        R[i] = best - vis * lap - hbar
        diag = 0.0
        for k in range(m):
            f = F[i, ba, k]
            lo = -vis
            up = -vis
            diag += 2.0 * vis
            if nu > 0.0 and abs(f) <= thr:
                lo += 0.5 * f * ih
                up -= 0.5 * f * ih
            elif f > 0.0:
                up -= f * ih
                diag += f * ih
            else:
                lo += f * ih
                diag -= f * ih
            C[i, 1 + 2 * k] = lo
            C[i, 2 + 2 * k] = up
        C[i, 0] = diag


# ---------------------------------------------------------------------------------------------
# tabulation of user functions (generic: not cached)
# ---------------------------------------------------------------------------------------------


@njit
def _tab_V(Vf, Y, out):
    m = Y.shape[1]
    for i in range(Y.shape[0]):
        y = np.empty(m)
        for k in range(m):
            y[k] = Y[i, k]
        out[i] = Vf(y)


@njit
def _tab_ctrl(ff, lf, Y, A, F, L):
    m = Y.shape[1]
    for i in range(Y.shape[0]):
        for j in range(A.shape[0]):
            y = np.empty(m)
            for k in range(m):
                y[k] = Y[i, k]
            a = A[j].copy()
            fv = ff(y, a)
            for k in range(m):
                F[i, j, k] = fv[k]
            L[i, j] = lf(y, a)


def _axis_function(funcs):
    """Wrap per-axis scalar numba functions K_k(s) into one numba function Kax(k, s)."""
    funcs = tuple(funcs)
    if len(funcs) == 1:
        f0 = funcs[0]

        @njit
        def kax1(k, s):
            return f0(s)

        return kax1
    if len(funcs) == 2:
        f0, f1 = funcs

        @njit
        def kax2(k, s):
            if k == 0:
                return f0(s)
            return f1(s)

        return kax2
    raise HJBError("separable Hamiltonian: give one K (all axes) or one K per axis (m <= 2)")


def _fd_axis_derivative(Kax):
    @njit
    def dkax(k, s):
        d = 1e-6 * (1.0 + abs(s))
        return (Kax(k, s + d) - Kax(k, s - d)) / (2.0 * d)

    return dkax


def _require_numba(fn, what):
    if not is_jitted(fn):
        raise HJBError(f"{what} must be a numba @njit function (got {fn!r})")


def _fmt(v):
    v = np.atleast_1d(np.asarray(v, dtype=float))
    if v.size == 1:
        return f"{v[0]:.6g}"
    return "(" + ", ".join(f"{x:.6g}" for x in v) + ")"


# ---------------------------------------------------------------------------------------------
# public description of G
# ---------------------------------------------------------------------------------------------


class PeriodicHamiltonian:
    """Description of a Hamiltonian G(y, q), 1-periodic in y, convex in q.

    Build with one of the constructors:

    * ``PeriodicHamiltonian.quadratic(V)``: G = |q|^2/2 + V(y) (exact Godunov flux / derivatives);
    * ``PeriodicHamiltonian.separable(K, V, dK=None, qstar=None)``: G = sum_k K_k(q_k) + V(y);
      ``K`` a numba function K(s) -> float used on every axis, or a list of one per axis;
      ``dK`` likewise (central differences if omitted; give it, a subgradient, when K has
      kinks); ``qstar`` the minimiser(s) of K_k (golden-section search if omitted);
    * ``PeriodicHamiltonian.general(G)``: G(y, q) -> float, numba, y and q 1-D float64 arrays;
      Lax-Friedrichs flux at nodes that are not centred (first order there);
    * ``PeriodicHamiltonian.control(f, l, A)``: G = max_{a in A} {-f(y,a).q - l(y,a)} (sup
      convention), f(y, a) -> 1-D array of length m, l(y, a) -> float, A an array (nA,) or
      (nA, d) of control values; upwinding of f, centred per control and axis where
      h |f_k| <= 2 nu.

    ``V(y) -> float`` (y a 1-D float64 array of length m) should be a numba function; plain
    Python callables are accepted for V only (tabulated once with a Python loop).

    ``q_box`` (default 4): half-width of the box [-q_box, q_box]^m of q values where convexity
    is sampled (enlarged to cover |P| + 2 at solve time) and, for ``general``, on which the
    local Lax-Friedrichs bounds alpha_ik = 1.05 max_box |dG/dq_k(y_i, .)| are computed. The
    box does not depend on P, so the discrete Hbar(P) is convex in P; if the discrete gradients
    P + D0 chi of a solution leave the box, it is enlarged (1.5 x their extent) and the problem
    re-solved (then the scheme depends on P: use a q_box covering all P + D chi of a table).
    """

    def __init__(self, kind, *, V=None, K=None, dK=None, qstar=None, G=None, f=None, l=None,
                 A=None, q_box=4.0, name=None):
        self.kind = kind
        self.V = V
        self.K = K
        self.dK = dK
        self.qstar = qstar
        self.G = G
        self.f = f
        self.l = l
        self.A = A
        self.q_box = float(q_box)
        self.name = name or kind
        self._contexts = {}
        self._kax = None
        self._dkax = None

    # -- constructors --------------------------------------------------------------------------
    @classmethod
    def quadratic(cls, V, *, q_box=4.0):
        """G(y, q) = |q|^2 / 2 + V(y)."""
        return cls("quadratic", V=V, q_box=q_box, name="|q|^2/2 + V")

    @classmethod
    def separable(cls, K, V, *, dK=None, qstar=None, q_box=4.0):
        """G(y, q) = sum_k K_k(q_k) + V(y) with convex scalar numba functions K_k(s)."""
        Ks = list(K) if isinstance(K, (list, tuple)) else [K]
        for fn in Ks:
            _require_numba(fn, "K")
        dKs = None
        if dK is not None:
            dKs = list(dK) if isinstance(dK, (list, tuple)) else [dK]
            for fn in dKs:
                _require_numba(fn, "dK")
            if len(dKs) != len(Ks):
                raise HJBError("separable Hamiltonian: dK must match K (one, or one per axis)")
        return cls("separable", V=V, K=Ks, dK=dKs, qstar=qstar, q_box=q_box,
                   name="sum K_k(q_k) + V")

    @classmethod
    def general(cls, G, *, q_box=4.0):
        """A general convex-in-q numba function G(y, q) -> float."""
        _require_numba(G, "G")
        return cls("general", G=G, q_box=q_box, name="general G")

    @classmethod
    def control(cls, f, l, A):
        """G(y, q) = max_{a in A} { -f(y, a).q - l(y, a) } over a finite control set A."""
        _require_numba(f, "f")
        _require_numba(l, "l")
        A = np.asarray(A, dtype=float)
        if A.ndim == 1:
            A = A[:, None]
        if A.ndim != 2 or A.shape[0] == 0:
            raise HJBError("control Hamiltonian: A must be an array (nA,) or (nA, d), nA >= 1")
        return cls("control", f=f, l=l, A=np.ascontiguousarray(A), name="max_a {-f.q - l}")

    def __repr__(self):
        return f"PeriodicHamiltonian({self.name})"

    # -- helpers -------------------------------------------------------------------------------
    def _axis_funcs(self, m):
        if self.kind == "quadratic":
            return _Kq, _dKq
        if self._kax is None or self._kax[0] != m:
            if len(self.K) not in (1, m):
                raise HJBError(f"separable Hamiltonian: {len(self.K)} functions K for m = {m}")
            kax = _axis_function(self.K)
            dkax = _axis_function(self.dK) if self.dK is not None else _fd_axis_derivative(kax)
            self._kax = (m, kax, dkax)
        return self._kax[1], self._kax[2]

    def _qstar(self, m):
        if self.kind == "quadratic":
            return np.zeros(m)
        if self.qstar is not None:
            qs = np.broadcast_to(np.asarray(self.qstar, dtype=float), (m,)).copy()
            return qs
        kax, _ = self._axis_funcs(m)
        out = np.empty(m)
        for k in range(m):
            out[k] = _golden_min(lambda s, k=k: kax(k, s), -1e3, 1e3)
        return out

    def _eval_V(self, y):
        if is_jitted(self.V) or callable(self.V):
            return float(self.V(np.ascontiguousarray(y, dtype=float)))
        raise HJBError("V must be a function V(y) -> float")

    def _context(self, m, N, offset):
        off = np.broadcast_to(np.asarray(offset, dtype=float), (m,)).copy()
        key = (m, N, tuple(off))
        ctx = self._contexts.get(key)
        if ctx is None:
            if len(self._contexts) > 16:
                self._contexts.clear()
            ctx = _Context(self, m, N, off)
            self._contexts[key] = ctx
        return ctx

    # -- checks ---------------------------------------------------------------------------------
    def check_periodic(self, m, tol=1e-9):
        """Compare the data at y_k = 0 and y_k = 1 (other coordinates at sample points).

        Raises NonPeriodicHamiltonianError naming the axis and the points."""
        ts = np.array([0.0, 0.137, 0.29, 0.5, 0.71, 0.93])
        pts = []
        for k in range(m):
            others = [np.zeros(0)] if m == 1 else [np.array([t]) for t in ts]
            for o in others:
                y0 = np.insert(o, k, 0.0) if m > 1 else np.array([0.0])
                y1 = np.insert(o, k, 1.0) if m > 1 else np.array([1.0])
                pts.append((k, y0, y1))

        def close(a, b):
            a = np.asarray(a, dtype=float)
            b = np.asarray(b, dtype=float)
            return np.all(np.abs(a - b) <= tol * (1.0 + np.abs(a) + np.abs(b)))

        if self.kind in ("quadratic", "separable"):
            for k, y0, y1 in pts:
                v0, v1 = self._eval_V(y0), self._eval_V(y1)
                if not close(v0, v1):
                    raise NonPeriodicHamiltonianError(
                        f"V is not 1-periodic along axis {k}: V(y={_fmt(y0)}) = {v0:.10g} but "
                        f"V(y={_fmt(y1)}) = {v1:.10g}")
        elif self.kind == "general":
            qs = [np.zeros(m)] + [s * np.eye(m)[j] for j in range(m) for s in (1.0, -1.7)]
            for k, y0, y1 in pts:
                for q in qs:
                    g0, g1 = float(self.G(y0, q)), float(self.G(y1, q))
                    if not close(g0, g1):
                        raise NonPeriodicHamiltonianError(
                            f"G is not 1-periodic in y along axis {k}: G(y={_fmt(y0)}, "
                            f"q={_fmt(q)}) = {g0:.10g} but G(y={_fmt(y1)}, q={_fmt(q)}) = "
                            f"{g1:.10g}")
        else:
            A = self.A
            sel = np.unique(np.linspace(0, A.shape[0] - 1, min(A.shape[0], 25)).astype(int))
            for k, y0, y1 in pts:
                for j in sel:
                    a = A[j].copy()
                    f0, f1 = np.asarray(self.f(y0, a)), np.asarray(self.f(y1, a))
                    l0, l1 = float(self.l(y0, a)), float(self.l(y1, a))
                    if not close(f0, f1) or not close(l0, l1):
                        raise NonPeriodicHamiltonianError(
                            f"f or l is not 1-periodic in y along axis {k} for control "
                            f"a={_fmt(a)}: at y={_fmt(y0)} f={_fmt(f0)}, l={l0:.10g}; at "
                            f"y={_fmt(y1)} f={_fmt(f1)}, l={l1:.10g}")

    def check_convex(self, m, Y=None, radius=None):
        """Sample second differences of G in q; raise NonConvexHamiltonianError at a failure.

        Separable: K_k on 201 points of [-radius, radius] (the same at every node y);
        general: the q-Hessian (2-D: from second and cross differences) at every node of Y
        and at 21 (1-D) or 7 x 7 (2-D) sample q values. The control form is convex by
        construction (a max of affine functions of q)."""
        R = float(radius if radius is not None else self.q_box)
        if self.kind == "control":
            return
        if self.kind in ("quadratic", "separable"):
            kax, _ = self._axis_funcs(m)
            s = np.linspace(-R, R, 201)
            d = s[1] - s[0]
            for k in range(m if self.kind == "separable" and len(self.K) > 1 else 1):
                for sv in s:
                    kp, k0, km = kax(k, sv + d), kax(k, sv), kax(k, sv - d)
                    d2 = kp - 2.0 * k0 + km
                    if not np.isfinite(d2) or d2 < -1e-9 * (1.0 + abs(kp) + 2 * abs(k0) + abs(km)):
                        ystr = "every node y" if Y is None else f"every node y, e.g. y = {_fmt(Y[0])}"
                        raise NonConvexHamiltonianError(
                            f"G is not convex in q: K_{k} has second difference {d2:.4g} < 0 at "
                            f"q_{k} = {sv:.6g} (step {d:.3g}), at {ystr}")
            return
        nq = 21 if m == 1 else 7
        g1 = np.linspace(-R, R, nq)
        if m == 1:
            qs = g1[:, None].copy()
        else:
            a, b = np.meshgrid(g1, g1, indexing="ij")
            qs = np.ascontiguousarray(np.stack([a.ravel(), b.ravel()], axis=1))
        delta = 0.25 * (g1[1] - g1[0])
        info = np.array([-1.0, -1.0, 0.0, 0.0])
        _gen_convexity(self.G, np.ascontiguousarray(Y), qs, delta, info)
        if info[0] >= 0:
            i, j = int(info[0]), int(info[1])
            if info[3] > 0:
                raise NonConvexHamiltonianError(
                    f"G is not finite at node y = {_fmt(Y[i])}, q = {_fmt(qs[j])}: {info[2]}")
            raise NonConvexHamiltonianError(
                f"G is not convex in q at node y = {_fmt(Y[i])}, q = {_fmt(qs[j])}: smallest "
                f"eigenvalue of the sampled q-Hessian is {info[2]:.4g} (step {delta:.3g})")


def _golden_min(fun, a, b, tol=1e-13):
    g = (math.sqrt(5.0) - 1.0) / 2.0
    c = b - g * (b - a)
    d = a + g * (b - a)
    fc, fd = fun(c), fun(d)
    for _ in range(200):
        if abs(b - a) <= tol * (1.0 + abs(a) + abs(b)):
            break
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = fun(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = fun(d)
    return 0.5 * (a + b)


def _slope_point(dK, q0, c):
    """A point s with dK(s) = c (dK nondecreasing, dK(q0) ~ 0), by bracketing + bisection;
    +-inf if dK stays below |c| up to |s - q0| = 1e12."""
    sgn = 1.0 if c > 0 else -1.0
    step = 1.0
    while sgn * dK(q0 + sgn * step) < abs(c):
        step *= 2.0
        if step > 1e12:
            return sgn * np.inf
    a, b = q0, q0 + sgn * step
    for _ in range(200):
        mid = 0.5 * (a + b)
        if mid == a or mid == b:
            break
        if sgn * dK(mid) < abs(c):
            a = mid
        else:
            b = mid
    return 0.5 * (a + b)


# ---------------------------------------------------------------------------------------------
# per-grid context: tabulated data, kernels, linear solver
# ---------------------------------------------------------------------------------------------


class _Singular(Exception):
    pass


class _Context:
    def __init__(self, ham, m, N, off):
        if m not in (1, 2):
            raise HJBError(f"ergodic cell problem: m must be 1 or 2 (got {m})")
        N = int(N)
        if N < 4:
            raise HJBError(f"ergodic cell problem: need N >= 4 nodes per axis (got {N})")
        self.ham = ham
        self.m = m
        self.N = N
        self.n = N**m
        self.h = 1.0 / N
        self.off = off
        self.y = [off[k] + self.h * np.arange(N) for k in range(m)]
        if m == 1:
            self.Y = self.y[0][:, None].copy()
        else:
            a, b = np.meshgrid(self.y[0], self.y[1], indexing="ij")
            self.Y = np.ascontiguousarray(np.stack([a.ravel(), b.ravel()], axis=1))
        self.nb = _neighbours(N, m)
        self._pattern = None
        self._convex_radius = -1.0
        self._brk = {}
        self._alpha = {}
        kind = ham.kind
        ham.check_periodic(m)
        if kind in ("quadratic", "separable"):
            self.V = np.empty(self.n)
            if is_jitted(ham.V):
                _tab_V(ham.V, self.Y, self.V)
            elif callable(ham.V):
                for i in range(self.n):
                    self.V[i] = float(ham.V(self.Y[i].copy()))
            else:
                raise HJBError("V must be a function V(y) -> float")
            self.kax, self.dkax = ham._axis_funcs(m)
            self.qstar = ham._qstar(m)
        elif kind == "control":
            A = ham.A
            f0 = np.asarray(ham.f(self.Y[0].copy(), A[0].copy()))
            if f0.shape != (m,):
                raise HJBError(f"control Hamiltonian: f(y, a) must return an array of length "
                               f"m = {m} (got shape {f0.shape})")
            self.F = np.empty((self.n, A.shape[0], m))
            self.L = np.empty((self.n, A.shape[0]))
            _tab_ctrl(ham.f, ham.l, self.Y, A, self.F, self.L)
            if not (np.all(np.isfinite(self.F)) and np.all(np.isfinite(self.L))):
                raise NumericalError("control Hamiltonian: f or l is not finite on the grid")
            self.pol = np.zeros(self.n, np.int64)
        if kind in ("quadratic", "separable") and not np.all(np.isfinite(self.V)):
            i = int(np.flatnonzero(~np.isfinite(self.V))[0])
            raise NumericalError(f"V is not finite at node y = {_fmt(self.Y[i])}")

    # -- checks ---------------------------------------------------------------------------------
    def ensure_convex(self, radius):
        if radius <= self._convex_radius:
            return
        self.ham.check_convex(self.m, self.Y, radius)
        self._convex_radius = radius

    # -- scheme ---------------------------------------------------------------------------------
    def breakpoints(self, nu):
        """Separable flux data per axis: (s-, s+, K(s-), K(s+)) with K_k'(s+-) = +-2 nu / h
        (s+- = +-inf if K_k' never reaches +-c; s- = s+ = q*_k for nu = 0)."""
        c = 2.0 * _THETA * nu / self.h
        key = float(c)
        brk = self._brk.get(key)
        if brk is not None:
            return brk
        brk = np.empty((self.m, 4))
        if self.ham.kind == "quadratic":
            brk[:, 0] = -c
            brk[:, 1] = c
            brk[:, 2] = 0.5 * c * c
            brk[:, 3] = 0.5 * c * c
        else:
            for k in range(self.m):
                K = lambda s, k=k: float(self.kax(k, s))
                dK = lambda s, k=k: float(self.dkax(k, s))
                q0 = float(self.qstar[k])
                if c == 0.0:
                    brk[k] = (q0, q0, K(q0), K(q0))
                    continue
                sm = _slope_point(dK, q0, -c)
                sp_ = _slope_point(dK, q0, c)
                brk[k] = (sm, sp_, K(sm) if math.isfinite(sm) else np.inf,
                          K(sp_) if math.isfinite(sp_) else np.inf)
        if len(self._brk) > 64:
            self._brk.clear()
        self._brk[key] = brk
        return brk

    def scheme(self, nu, rad=None):
        return _Scheme(self, nu, rad)

    def general_alpha(self, rad):
        key = float(rad)
        a = self._alpha.get(key)
        if a is None:
            a = np.empty((self.n, self.m))
            _gen_alpha(self.ham.G, self.Y, float(rad), 17, a)
            if not np.all(np.isfinite(a)):
                i = int(np.flatnonzero(~np.all(np.isfinite(a), axis=1))[0])
                raise NumericalError(f"dG/dq is not finite at node y = {_fmt(self.Y[i])} for "
                                     f"q in [-{rad:.3g}, {rad:.3g}]^m")
            if len(self._alpha) > 8:
                self._alpha.clear()
            self._alpha[key] = a
        return a

    def evaluate(self, chi, hbar, P, sch, R, C):
        kind = self.ham.kind
        if kind == "quadratic":
            _quad_eval(sch.brk, chi, hbar, P, self.h, sch.nu, _THETA, self.V, self.nb, sch.mask,
                       R, C)
        elif kind == "separable":
            _sep_eval(self.kax, self.dkax, sch.brk, chi, hbar, P, self.h, sch.nu, _THETA,
                      self.V, self.nb, sch.mask, R, C)
        elif kind == "general":
            _gen_eval(self.ham.G, self.Y, chi, hbar, P, self.h, sch.nu, _THETA, sch.alpha,
                      self.nb, R, C)
        else:
            _ctrl_eval(self.F, self.L, chi, hbar, P, self.h, sch.nu, _THETA, self.nb, R, C,
                       self.pol)

    def centred_fraction(self, sch):
        """Share of (node, axis) pairs using the centred (second-order) branch after the last
        evaluate()."""
        if sch.nu <= 0.0:
            return 0.0
        kind = self.ham.kind
        if kind in ("quadratic", "separable"):
            return float(np.mean(sch.mask == 0))
        if kind == "general":
            return float(np.mean(sch.alpha <= 2.0 * _THETA * sch.nu / self.h))
        f = self.F[np.arange(self.n), self.pol]
        return float(np.mean(np.abs(f) <= 2.0 * _THETA * sch.nu / self.h))

    # -- linear algebra -------------------------------------------------------------------------
    def solve(self, C, R):
        """Newton step: J dchi - dH 1 = -R, shifted so that dchi[0] = 0 (chi[0] stays 0).

        Fast path: the system is singular in chi up to constants, so it is solved with
        dchi[r] = 0 at an anchor r in a recurrent class of the linearisation (Dirichlet-at-r
        matrix, nonsingular): u, v from J_r u = -R, J_r v = 1, dH from the row of r (1-D: numba
        Thomas; 2-D: sparse LU). This is not backward stable when the linearisation is nearly
        multichain (v ~ hitting times explode); the linear residual is therefore checked and,
        if needed, the bordered (N^m + 1) system [J, -1; e_0^T, 0] is solved by sparse LU with
        partial pivoting instead."""
        n = self.n
        r = _find_anchor(C, self.nb)
        out = None
        if self.m == 1:
            dchi = np.empty(n)
            dH, ok = _bordered_solve_1d(C, R, r, dchi)
            if ok and np.all(np.isfinite(dchi)):
                out = (dchi, dH)
        if out is None:
            try:
                out = self._solve_anchored(C, R, r)
            except _Singular:
                out = None
        if out is not None:
            lin_fast = self._linres(C, R, *out)
            if lin_fast <= 1e-9 * self._linscale(C, R, *out):
                dchi, dH = out
                dchi -= dchi[0]
                return dchi, dH
        try:
            bord = self._solve_bordered(C, R)
        except _Singular:
            if out is None:
                raise
            bord = None
        if bord is None or (out is not None and lin_fast < self._linres(C, R, *bord)):
            bord = out  # the more accurate of the two; the nonlinear residual decides
        dchi, dH = bord
        dchi -= dchi[0]
        return dchi, dH

    def _linres(self, C, R, dchi, dH):
        """max-norm of J dchi - dH 1 + R (inf if not finite)."""
        lin = _stencil_residual(C, self.nb, R, dchi, dH)
        return lin if math.isfinite(lin) else np.inf

    def _linscale(self, C, R, dchi, dH):
        return float(np.max(np.abs(R))) + 1e3 * _EPS * (
            float(np.max(np.abs(C).sum(axis=1))) * float(np.max(np.abs(dchi))) + abs(dH))

    def _csc_pattern(self):
        """CSC pattern of the (n+1) x (n+1) bordered stencil matrix [J, -1; e_0^T, 0], and for
        every stored entry its position in concat(C.ravel(), -ones(n), [1])."""
        if self._pattern is None:
            n = self.n
            w = 1 + 2 * self.m
            rows = np.concatenate([np.repeat(np.arange(n), w), np.arange(n), [n]])
            cols = np.concatenate([np.concatenate([np.arange(n)[:, None], self.nb], axis=1).ravel(),
                                   np.full(n, n), [0]])
            tag = np.arange(rows.size, dtype=float) + 1.0
            A = sp.csc_matrix((tag, (rows, cols)), shape=(n + 1, n + 1))
            A.sort_indices()
            if A.nnz != rows.size:
                raise HJBError("internal: duplicate stencil entries (N too small)")
            perm = (A.data - 1.0).astype(np.int64)
            # the n x n stencil part alone (entries with row < n and col < n), same ordering
            keep = perm < n * w
            cnt = np.zeros(n + 2, np.int64)
            colidx = np.repeat(np.arange(n + 1), np.diff(A.indptr))
            np.add.at(cnt, colidx[keep] + 1, 1)
            indptr_J = np.cumsum(cnt)[: n + 1]
            self._pattern = (A.indptr.copy(), A.indices.copy(), perm,
                             indptr_J, A.indices[keep].copy(), perm[keep].copy())
        return self._pattern

    def _solve_anchored(self, C, R, r):
        n = self.n
        _, _, _, indptr, indices, perm = self._csc_pattern()
        Cd = C.copy()
        Cd[r, 0] = 1.0
        Cd[r, 1:] = 0.0
        for j in range(self.nb.shape[1]):  # drop column r from the rows of r's neighbours
            s = self.nb[r, j]
            for jj in range(self.nb.shape[1]):
                if self.nb[s, jj] == r:
                    Cd[s, 1 + jj] = 0.0
        A = sp.csc_matrix((Cd.ravel()[perm], indices, indptr), shape=(n, n))
        b = np.empty((n, 2))
        b[:, 0] = -R
        b[:, 1] = 1.0
        b[r, :] = 0.0
        try:
            lu = splu(A, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.1,
                      options=dict(SymmetricMode=True))
            x = lu.solve(b)
        except RuntimeError as exc:
            raise _Singular(str(exc)) from None
        u, v = x[:, 0], x[:, 1]
        cr = C[r, 1:]
        nbr = self.nb[r]
        den = float(np.dot(cr, v[nbr])) - 1.0
        dH = (-R[r] - float(np.dot(cr, u[nbr]))) / den
        dchi = u + dH * v
        if not (math.isfinite(dH) and np.all(np.isfinite(dchi))):
            raise _Singular("non-finite Newton step")
        return dchi, dH

    def _solve_bordered(self, C, R):
        n = self.n
        indptr, indices, perm = self._csc_pattern()[:3]
        vals = np.concatenate([C.ravel(), -np.ones(n), [1.0]])
        A = sp.csc_matrix((vals[perm], indices, indptr), shape=(n + 1, n + 1))
        b = np.zeros(n + 1)
        b[:n] = -R
        try:
            lu = splu(A, permc_spec="COLAMD")
            x = lu.solve(b)
        except RuntimeError as exc:  # singular
            raise _Singular(str(exc)) from None
        if not np.all(np.isfinite(x)):
            raise _Singular("non-finite Newton step")
        return x[:n].copy(), float(x[n])


# ---------------------------------------------------------------------------------------------
# Newton / policy iteration
# ---------------------------------------------------------------------------------------------


@dataclass
class ErgodicResult:
    """Result of :func:`solve_ergodic`.

    hbar: the ergodic constant Hbar(P) of the discrete problem; chi: corrector, shape (N,)*m,
    chi.flat[0] = 0; y: node coordinates per axis, shape (N,) (m = 1) or (m, N);
    iterations: Newton iterations (all stages); residual_history: max-norm residuals, for
    every stage the initial one then one per iteration (continuation stages included);
    residual: final max-norm residual (a bound on |hbar - Hbar_h|); centred_fraction: share of
    (node, axis) pairs using the second-order centred branch; stages: (nu, method, iterations,
    status) of every stage solved (a direct attempt, continuation stages, the target nu by
    'newton' or by the vanishing 'discount' continuation)."""

    hbar: float
    chi: np.ndarray
    y: np.ndarray
    iterations: int
    residual_history: list
    P: np.ndarray = None
    N: int = 0
    nu: float = 0.0
    residual: float = float("nan")
    centred_fraction: float = 0.0
    stages: list = field(default_factory=list)


class _Scheme:
    """Scheme data of one nu-stage: separable -> flux breakpoints (``mask`` receives the flux
    piece per node/axis, 0 = centred); general -> local LF bounds alpha (n, m) on the box
    [-rad, rad]^m (independent of P, so that Hbar_h stays convex in P)."""

    def __init__(self, ctx, nu, rad=None):
        self.nu = float(nu)
        self.mask = np.zeros((ctx.n, ctx.m), np.uint8)
        self.brk = ctx.breakpoints(nu) if ctx.ham.kind in ("quadratic", "separable") else None
        self.rad = rad
        self.alpha = ctx.general_alpha(rad) if ctx.ham.kind == "general" else None


class _State:
    def __init__(self, ctx, P):
        self.ctx = ctx
        self.P = P
        self.hist = []
        self.iterations = 0
        self.stages = []
        self.best = (np.inf, np.nan, np.nan)  # narrowest certified bracket: (width, lo, hi)

    def bracket(self, F):
        """Record the certified bracket min F <= Hbar_h <= max F of an iterate (F = R + c)."""
        lo, hi = float(np.min(F)), float(np.max(F))
        if math.isfinite(lo) and math.isfinite(hi) and hi - lo < self.best[0]:
            self.best = (hi - lo, lo, hi)


def _residual_floor(C, R, chi, hbar):
    """Rounding level of the residual: the achievable accuracy of max|R|."""
    rowsum = float(np.max(np.abs(C).sum(axis=1)))
    return 16.0 * _EPS * (rowsum * float(np.max(np.abs(chi))) + float(np.max(np.abs(R)))
                          + abs(hbar) + 1.0)


def _newton(st, sch, chi, hbar, tol, maxiter, reg):
    """Newton (= policy iteration) on (chi, hbar) for one scheme. Returns (chi, hbar, status,
    res). The residual history (initial residual, then one entry per iteration) goes to st."""
    ctx, P = st.ctx, st.P
    n, w = ctx.n, 1 + 2 * ctx.m
    R = np.empty(n)
    C = np.empty((n, w))
    Rt = np.empty(n)
    Ct = np.empty((n, w))
    chi = chi.copy()
    ctx.evaluate(chi, hbar, P, sch, R, C)
    res = float(np.max(np.abs(R)))
    st.hist.append(res)
    if not math.isfinite(res):
        return chi, hbar, "non-finite residual", res
    if sch.nu == st.nu:
        st.bracket(R + hbar)
    recent = [res]
    for it in range(maxiter + 1):
        if res <= max(tol, _residual_floor(C, R, chi, hbar)):
            return chi, hbar, "ok", res
        if it == maxiter:
            break
        # Jacobian-only graph Laplacian, 1e-9 relative: keeps linearisations with several
        # absorbing classes solvable (the residual itself is never modified)
        Cs = C.copy()
        Cs[:, 1:] -= reg
        Cs[:, 0] += reg * (w - 1)
        try:
            dchi, dH = ctx.solve(Cs, R)
        except _Singular as exc:
            return chi, hbar, f"singular Newton system ({exc})", res
        ref = max(recent[-5:])
        lam = 1.0
        # full (policy-iteration) steps are accepted unless the residual explodes; afterwards a
        # non-monotone Armijo test on the max-norm over the last 5 iterates
        growth = _GROWTH if it < 2 else _GROWTH_LATE
        while True:
            chit = chi + lam * dchi
            chit -= chit[0]
            ht = hbar + lam * dH
            ctx.evaluate(chit, ht, P, sch, Rt, Ct)
            rest = float(np.max(np.abs(Rt)))
            if math.isfinite(rest) and rest <= growth * (1.0 - 1e-4 * lam) * ref:
                break
            lam *= 0.5
            if lam < 1e-10:
                return chi, hbar, "line search failed", res
        chi, hbar = chit, ht
        R, Rt = Rt, R
        C, Ct = Ct, C
        res = rest
        if sch.nu == st.nu:
            st.bracket(R + hbar)
        recent.append(res)
        st.hist.append(res)
        st.iterations += 1
    return chi, hbar, f"no convergence in {maxiter} iterations", res


def _gradient_scale(st):
    """Q ~ typical |G_q| at the solution: 1 + max|G_q(y, P)| + sqrt(2 osc_y G(y, P))."""
    ctx = st.ctx
    n, w = ctx.n, 1 + 2 * ctx.m
    R = np.empty(n)
    C = np.empty((n, w))
    sch = ctx.scheme(0.0, 0.0)
    if ctx.ham.kind == "general":
        sch.alpha = np.zeros((n, ctx.m))  # no LF viscosity: G(y, P) and G_q(y, P) only
    ctx.evaluate(np.zeros(n), 0.0, st.P, sch, R, C)
    osc = float(np.max(R) - np.min(R))
    return 1.0 + ctx.h * float(np.max(np.abs(C[:, 1:]))) + math.sqrt(2.0 * max(osc, 0.0))


def _discount(st, sch, chi, hbar, tol, maxiter):
    """Vanishing-discount continuation at fixed nu: Newton (= policy iteration, Jacobian
    lambda I + J: a nonsingular M-matrix whatever the chain structure) on

        lambda_j Q w_i + F_i(w) - c = 0,   w_0 = 0,    lambda_j = 1e-2 * 1e-3^j,

    i.e. the discounted problem with u = w - c / (lambda_j Q). By discrete comparison
    min F(w) <= Hbar_h <= max F(w), and F(w) = c - lambda_j Q w, so Hbar = midpoint has the
    certified ergodic residual lambda_j Q osc(w) / 2; stop once it is <= tol. Robust where the
    ergodic Newton system is (nearly) singular: nu = 0 with several absorbing classes (|P|
    below the critical value, several maximisers of V), small nu with several wells.

    Iteration budget of a lambda stage: policy iteration on a degenerate (nu = 0) problem
    moves a kink of w, i.e. reverses the policy, by one node per iteration. When the discrete
    maxima of V differ by a tiny delta (O(h^2) on a grid that misses the maximisers), every
    maximiser is an absorbing class, with w offset by delta / (lambda Q) between their basins,
    so the certified residual stays >= delta / 2 until lambda ~ delta; at the lambda stage that
    crosses this the basins reorganise and kinks travel across the torus: O(N) iterations,
    whatever the lambda schedule (the total is the distance travelled). Newton on this
    discounted convex monotone problem converges (monotonically after the first step, finitely
    many policies), so a stage may use maxiter iterations per _MIGRATE_NODES nodes of an axis.
    The max-norm residual is no progress measure there: an absorbing node whose class stops
    being optimal takes a step ~ residual / (lambda Q), and the kink it leaves has a residual
    ~ (step / h)^2 that decays as the kink travels."""
    ctx, P = st.ctx, st.P
    n, w = ctx.n, 1 + 2 * ctx.m
    R = np.empty(n)
    C = np.empty((n, w))
    chi = chi.copy()
    c = float(hbar)
    lam = 1e-2
    res = float("inf")
    budget = maxiter * max(1, -(-ctx.N // _MIGRATE_NODES))
    while True:
        lq = lam * st.Q
        for it in range(budget + 1):
            ctx.evaluate(chi, c, P, sch, R, C)
            G = R + lq * chi
            g = float(np.max(np.abs(G)))
            st.hist.append(g)
            if not math.isfinite(g):
                return chi, c, "non-finite residual (discounted problem)", res
            if g <= max(0.25 * tol, _residual_floor(C, G, chi, c)):
                break
            if it == budget:
                return chi, c, (f"no convergence in {budget} iterations (discounted problem, "
                                f"lambda = {lam:.1e})"), res
            Cs = C.copy()
            Cs[:, 0] += lq
            try:
                dchi, dc = ctx.solve(Cs, G)
            except _Singular as exc:
                return chi, c, f"singular Newton system ({exc})", res
            chi = chi + dchi
            chi -= chi[0]
            c += dc
            st.iterations += 1
        F = R + c
        st.bracket(F)
        lo, hi = float(np.min(F)), float(np.max(F))
        mid = 0.5 * (lo + hi)
        res = 0.5 * (hi - lo)
        if res <= max(tol, _residual_floor(C, F - mid, chi, mid)):
            return chi, mid, "ok", res
        if lam < 1e-17:
            return chi, mid, "vanishing discount reached lambda = 1e-17", res
        # big lambda steps while the policy settles in <= 2 iterations, small ones otherwise
        # (policy iteration moves a kink of a degenerate problem only a few nodes per step)
        lam *= _DISC_FAC if it <= 2 else 0.1


def _solve_fixed_nu(st, nu, chi, hbar, tol, maxiter, method="newton"):
    """Solve at one nu by Newton on the ergodic system or by the vanishing-discount
    continuation. 'general': if the discrete gradients leave the box [-rad, rad]^m on which the
    LF bounds alpha were computed, enlarge the box (x1.5 the extent) and re-solve."""
    ctx = st.ctx
    kind = ctx.ham.kind
    for _ in range(8):
        sch = ctx.scheme(nu, st.rad)
        if method == "newton":
            chi, hbar, status, res = _newton(st, sch, chi, hbar, tol, maxiter,
                                             _REG * st.Q / ctx.h)
        else:
            chi, hbar, status, res = _discount(st, sch, chi, hbar, tol, maxiter)
        if status != "ok" or kind != "general":
            return chi, hbar, status, res, sch
        ext = np.empty(ctx.m)
        _gen_grad_extent(chi, st.P, ctx.h, ctx.nb, ext)
        if float(np.max(ext)) <= st.rad:
            return chi, hbar, status, res, sch
        st.rad = 1.5 * float(np.max(ext))
        ctx.ensure_convex(st.rad)
    return chi, hbar, "gradient box for the Lax-Friedrichs bound did not settle", res, sch


def _solve(ctx, P, nu, tol, maxiter, chi0=None, hbar0=None):
    """Pipeline: (1) direct Newton at nu (warm start, or nu large); (2) continuation in nu
    from Q/4 down to max(2 nu, 0.25 h Q) (well-mixed chains); (3) at the target: Newton
    (nu > 0), then / or (nu = 0) the vanishing-discount continuation."""
    st = _State(ctx, P)
    st.nu = nu
    st.Q = _gradient_scale(st)
    st.rad = ctx.ham.q_box
    n = ctx.n
    warm = chi0 is not None
    chi = np.zeros(n) if chi0 is None else np.asarray(chi0, dtype=float).ravel().copy()
    if chi.shape != (n,):
        raise HJBError(f"chi0 must have {n} values (got {chi.size})")
    chi -= chi[0]
    if hbar0 is None:
        R = np.empty(n)
        C = np.empty((n, 1 + 2 * ctx.m))
        ctx.evaluate(chi, 0.0, P, ctx.scheme(nu, st.rad), R, C)
        hbar = float(np.mean(R))
    else:
        hbar = float(hbar0)
    nu_cont = 0.25 * st.Q
    failures = []

    def attempt(label, nu_, chi_, hbar_, maxit, method="newton"):
        it0 = st.iterations
        out = _solve_fixed_nu(st, nu_, chi_, hbar_, tol, maxit, method)
        st.stages.append((nu_, method, st.iterations - it0, out[2]))
        if out[2] != "ok":
            failures.append(f"{label} (nu={nu_:.3g}, {method}): {out[2]}")
        return out

    if warm or nu >= 0.25 * nu_cont:
        # a failed direct attempt falls back to the continuation: cap its cost
        out = attempt("direct" + (" from the warm start" if warm else ""), nu, chi, hbar,
                      min(maxiter, _DIRECT_BUDGET))
        if out[2] == "ok":
            return st, out
    # continuation in nu from the viscous problem (the same monotone scheme at nu_j), stopped
    # while the linearisations are still well mixed (cell Peclet ~ 4 / _NU_STOP)
    nu_j = nu_cont
    nu_stop = max(2.0 * nu, _NU_STOP * ctx.h * st.Q, _NU_STOP_Q * st.Q)
    chi_c, hbar_c = chi, hbar
    while nu_j > nu_stop:
        it0 = st.iterations
        sch = ctx.scheme(nu_j, st.rad)
        chi_n, hbar_n, status, res = _newton(st, sch, chi_c, hbar_c, max(tol, 1e-9), maxiter,
                                             _REG * st.Q / ctx.h)
        st.stages.append((nu_j, "newton", st.iterations - it0, status))
        if status != "ok":
            failures.append(f"continuation stage nu={nu_j:.3g}: {status}")
            break
        chi_c, hbar_c = chi_n, hbar_n
        nu_j /= 4.0
    if nu > 0.0:
        out = attempt("after continuation", nu, chi_c, hbar_c, maxiter)
        if out[2] == "ok":
            return st, out
    out = attempt("after continuation", nu, chi_c, hbar_c, maxiter, "discount")
    if out[2] == "ok":
        return st, out
    raise NumericalError(_failure_message(st, nu, failures))


def _failure_message(st, nu, failures):
    h = list(st.hist)
    if not h:
        hist = "(no iteration)"
    elif len(h) <= 8:
        hist = ", ".join(f"{r:.3e}" for r in h)
    else:                  # one line: the first and the last few of the iterations
        hist = (", ".join(f"{r:.3e}" for r in h[:3]) + f", ... ({len(h) - 6} more) ..., "
                + ", ".join(f"{r:.3e}" for r in h[-3:]))
    best = ""
    if math.isfinite(st.best[0]):
        best = (f". Best certified bracket (discrete comparison, at nu = {nu:.6g}): "
                f"{st.best[1]:.15g} <= Hbar_h <= {st.best[2]:.15g} (width {st.best[0]:.2e}; "
                f"rerun with tol >= {0.5 * st.best[0]:.1e} to accept it)")
    return (f"ergodic cell problem did not converge (G = {st.ctx.ham.name}, P = {_fmt(st.P)}, "
            f"N = {st.ctx.N}, m = {st.ctx.m}, nu = {nu:.6g}): " + "; ".join(failures) + best
            + f". Residual history (max-norm): [{hist}]")


def _as_P(P, m):
    P = np.atleast_1d(np.asarray(P, dtype=float)).ravel()
    if P.size == 1 and m > 1:
        raise HJBError(f"P must have m = {m} components (got {P.size})")
    if P.size != m:
        raise HJBError(f"P must have m = {m} components (got {P.size})")
    if not np.all(np.isfinite(P)):
        raise HJBError(f"P must be finite (got {P})")
    return np.ascontiguousarray(P)


def _prepare(ham, N, nu, m, offset, Pmax):
    if not isinstance(ham, PeriodicHamiltonian):
        raise HJBError("ham must be a PeriodicHamiltonian (see its constructors)")
    if m is None:
        raise HJBError("the dimension m must be given")
    m = int(m)
    nu = float(nu)
    if not (nu >= 0.0 and math.isfinite(nu)):
        raise HJBError(f"nu must be finite and >= 0 (got {nu})")
    ctx = ham._context(m, int(N), offset)
    ctx.ensure_convex(max(ham.q_box, Pmax + 2.0))
    return ctx, nu


def solve_ergodic(ham, P, N, nu, m=None, offset=0.0, tol=1e-12, maxiter=100, chi0=None,
                  hbar0=None):
    """Solve the discrete cell problem -nu Lap_h chi + Ghat(y, P + D_h chi) = Hbar on T^m.

    Parameters: ham (PeriodicHamiltonian), P (float or array of m floats), N nodes per axis
    (h = 1/N), nu >= 0, m (1 or 2; default: len(P)), offset (grid y_i = offset + i h; scalar
    or one per axis), tol (max-norm residual; the rounding floor ~16 eps (|J| |chi| + |G|)
    is used when larger), maxiter (Newton iterations per stage; a vanishing-discount stage
    may use maxiter per 50 nodes of an axis), chi0/hbar0 (warm start).

    Returns an ErgodicResult. Raises NumericalError (with the residual history) when the
    iteration does not converge, NonConvexHamiltonianError / NonPeriodicHamiltonianError on
    bad data. Scheme, order and solver: see the module docstring."""
    if m is None:
        m = np.atleast_1d(np.asarray(P)).size
    Pv = _as_P(P, int(m))
    ctx, nu = _prepare(ham, N, nu, m, offset, float(np.max(np.abs(Pv))))
    return _solve_one(ctx, Pv, nu, tol, maxiter, chi0, hbar0)


def _solve_one(ctx, P, nu, tol, maxiter, chi0, hbar0):
    st, out = _solve(ctx, P, nu, tol, maxiter, chi0, hbar0)
    chi, hbar, status, res, sch = out
    if not math.isfinite(hbar) or not np.all(np.isfinite(chi)):
        raise NumericalError(_failure_message(st, nu, ["non-finite solution"]))
    y = ctx.y[0].copy() if ctx.m == 1 else np.stack(ctx.y)
    R = np.empty(ctx.n)
    C = np.empty((ctx.n, 1 + 2 * ctx.m))
    ctx.evaluate(chi, hbar, P, sch, R, C)
    cf = ctx.centred_fraction(sch)
    r = ErgodicResult(hbar=float(hbar), chi=chi.reshape((ctx.N,) * ctx.m), y=y,
                      iterations=st.iterations, residual_history=list(st.hist), P=P.copy(),
                      N=ctx.N, nu=nu, residual=float(res), centred_fraction=cf,
                      stages=list(st.stages))
    return r


def effective_hamiltonian_table(ham, Ps, N, nu, m=None, offset=0.0, tol=1e-12, maxiter=100,
                                return_results=False):
    """Hbar(P) for every P in Ps (shape (K,) for m = 1 or (K, m)), warm-starting each solve
    from the previous P's (chi, Hbar) (order Ps so that neighbours are close). The grid data
    and the convexity check are computed once. Returns an array (K,) of Hbar (and the list of
    ErgodicResult if return_results)."""
    Ps = np.asarray(Ps, dtype=float)
    if m is None:
        m = 1 if Ps.ndim == 1 else Ps.shape[1]
    m = int(m)
    if Ps.ndim == 1 and m == 1:
        Ps = Ps[:, None]
    if Ps.ndim != 2 or Ps.shape[1] != m:
        raise HJBError(f"Ps must have shape (K,) for m = 1 or (K, m) (got {Ps.shape})")
    ctx, nu = _prepare(ham, N, nu, m, offset, float(np.max(np.abs(Ps))) if Ps.size else 0.0)
    out = np.empty(Ps.shape[0])
    results = []
    prev = None
    for j, P in enumerate(Ps):
        Pv = _as_P(P, m)
        if prev is None:
            r = _solve_one(ctx, Pv, nu, tol, maxiter, None, None)
        else:
            r = _solve_one(ctx, Pv, nu, tol, maxiter, prev.chi, prev.hbar)
        out[j] = r.hbar
        prev = r
        if return_results:
            results.append(r)
    return (out, results) if return_results else out


# ---------------------------------------------------------------------------------------------
# slow cross-check: explicit long-time marching
# ---------------------------------------------------------------------------------------------


def long_time_ergodic(ham, P, N, nu, m=None, offset=0.0, tol=1e-9, max_steps=2_000_000,
                      cfl=0.5, chi0=None):
    """Slow cross-check: march u_t + F(u) = 0 (F the same monotone scheme as solve_ergodic,
    with Hbar = 0) explicitly with dt = cfl / max_i dF_i/du_i until osc(F(u)) <= tol.

    By discrete comparison, min_i F_i(u) <= Hbar_h <= max_i F_i(u) at every step, so the
    returned bracket (lo, hi) contains the discrete ergodic constant (for 'general' G: of the
    scheme with the LF bounds on the box of solve_ergodic's first attempt). Returns (hbar_mid, lo, hi,
    steps). Needs ~1/(spectral gap * dt) steps: about 10^6 at N = 400, use small N only."""
    if m is None:
        m = np.atleast_1d(np.asarray(P)).size
    Pv = _as_P(P, int(m))
    ctx, nu = _prepare(ham, N, nu, m, offset, float(np.max(np.abs(Pv))))
    n = ctx.n
    u = np.zeros(n) if chi0 is None else np.asarray(chi0, dtype=float).ravel().copy()
    R = np.empty(n)
    C = np.empty((n, 1 + 2 * ctx.m))
    st = _State(ctx, Pv)
    Q = _gradient_scale(st)
    sch = ctx.scheme(nu, ham.q_box)
    lo, hi = -np.inf, np.inf
    dt_cap = cfl * ctx.h / Q
    for step in range(int(max_steps)):
        ctx.evaluate(u, 0.0, Pv, sch, R, C)
        lo, hi = float(np.min(R)), float(np.max(R))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise NumericalError(f"long-time marching blew up at step {step}")
        if hi - lo <= tol:
            return 0.5 * (lo + hi), lo, hi, step
        dt = min(cfl / max(float(np.max(C[:, 0])), 1e-300), dt_cap)
        u -= dt * R
        u -= u[0]
    raise NumericalError(f"long-time marching: osc F = {hi - lo:.3e} > tol after {max_steps} "
                         f"steps (bracket [{lo:.12g}, {hi:.12g}])")
