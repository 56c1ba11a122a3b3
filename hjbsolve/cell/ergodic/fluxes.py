r"""Monotone numerical Hamiltonians of the ergodic cell problem: residual and Jacobian stencil.

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

Why nu = 0 is first order in 2-D but not in 1-D: the per-axis upwind flux is the centred one plus
the numerical diffusion (h/2) sum_k |q_k| d_kk u. To first order in h it shifts Hbar by
(h/2) int sum_k |q_k| d_kk u d(mu) (mu the invariant measure of the flow q = Du). In 1-D,
mu = c/q and the integral is c int q' = 0 (the exact periodic quadrature above); the same holds
for separable G and whenever every component q_k keeps its sign along the flow (the one-sided
differences then telescope along it). Where a component changes sign, the flux mixes forward and
backward differences and the integral does not vanish: first order, observed ~1 on smooth
non-separable potentials (tests/test_ergodic_estimate.py: V = cos 2 pi (y1 + y2), exact by a 1-D
reduction: spectral for P on the diagonal, O(h) off it). The error estimates and Richardson values
of tables.py recover second order where the order is clean.

Discrete comparison: for any grid function psi, min_i F_i(psi) <= Hbar_h <= max_i F_i(psi)
(F_i the left-hand side); hence |Hbar_returned - Hbar_h| <= final residual.
"""

from __future__ import annotations


import numpy as np
from numba import njit

# centred differences are used up to the cell-Peclet number 2 * _THETA (< 2: strictly monotone,
# every node keeps a coupling >= (1 - _THETA) nu / h^2 to each neighbour, so the linearisations
# stay irreducible for nu > 0)
_THETA = 0.9


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
