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
(b) general G (convex or not): centred, Ghat_i = G(y_i, p0), at the nodes where every axis is
    resolved, h alpha_ik <= 2 theta nu, alpha_ik = 1.05 max_{|q|_inf <= q_box} |dG/dq_k(y_i, q)|
    (data only, see PeriodicHamiltonian); elsewhere Godunov's flux built from the formula,
        Ghat_i = ext_{q_1 in I(p-_1, p+_1)} ext_{q_2 in I(p-_2, p+_2)} G(y_i, q),
    ext = min over [p-, p+] if p- <= p+, max over [p+, p-] otherwise (Bardi-Osher); 1-D over the
    endpoints and a table of the critical points of G(y_i, .), 2-D by nested extrema
    (_godunov_2d). For a convex G in 1-D, or a separable one, this is the quadratic form's flux
    (a), so Hbar is as accurate (it was Lax-Friedrichs: 5e-2 at N = 256 in 1-D, 0.38 at N = 64
    in 2-D); for a non-separable G it is first order where not centred.
(c) control: Ghat_i = max_a { -sum_k f_k p*_k - l }, p*_k = p0_k if h |f_k(y_i, a)| <=
    2 theta nu, otherwise the upwind difference (p+_k if f_k > 0, p-_k if f_k < 0).

(d) metric, G = c(y) max_{a in B} (-a.q) (B the Euclidean ball or a polytope with 0 inside):
    the upwind control scheme with the exact sup over B on every cone of a 9-point stencil
    (_metric_eval), the speed taken at the centroid of each cone's triangle: a move is
    charged the speed of the cell it crosses, and a move along an interface gets the larger
    one. Axis and diagonal motions are exact; first order.
(e) separable G = sum_k K_k(q_k) + V(y) with a nonconvex K: Godunov's flux per axis
    (_godunov_eval; see nonconvex.py for the solver).

Every scheme is monotone. (a), (c), (d) and (b) for a convex G are convex in chi and jointly
convex in (P, chi), so the discrete Hbar_h(P) is convex in P (for (b): as long as the
gradients stay in the q_box); for a nonconvex G, Hbar need not be convex.

Order (for Hbar): nu > 0 and centred everywhere (the usual resolved case): second order,
O(h^2) (observed 2.00 in the tests). nu = 0, (a)/(c): the Godunov / upwind flux is formally
first order, but Hbar is O(h^2) in the tests here (1-D: the discrete problem is a periodic
rectangle rule for int sqrt(2 (Hbar - V)), spectrally accurate when Hbar > max V, O(h^2) at the
non-smooth limit P0 and through max_i V(y_i) on a grid that misses the maximiser of V). Where
(a)/(c) use the upwind branch, or (b) the Godunov branch of a non-separable G, the local error
is O(h). For (c) with a
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

import math


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
# (b) general G(y, q): centred where resolved, Godunov's flux from the formula elsewhere
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
def _gen_eval(Gf, Y, chi, hbar, P, h, nu, theta, alpha, crit, ncrit, nb, R, C):
    """Residual / stencil for a general G(y, q) (convex or not), -nu Lap chi + Ghat_i - hbar:

    * centred, Ghat_i = G(y_i, p0), at the nodes where every axis is resolved,
      h alpha_ik <= 2 theta nu (monotone next to the Laplacian; second order);
    * elsewhere Godunov's flux built from the formula (Bardi-Osher, axis after axis):
      Ghat_i = ext_{q_1 in I(p-_1, p+_1)} ext_{q_2 in I(p-_2, p+_2)} G(y_i, q) (ext = min over
      [p-, p+] if p- <= p+, max over [p+, p-] otherwise); 1-D over the endpoints and the
      critical points of the table crit / ncrit (exact), 2-D nested (_godunov_2d). Monotone
      for any G; for a convex 1-D or separable G it is the quadratic form's flux, whose Hbar is
      second order (spectral on the tests); first order in general (nu = 0: everywhere).
    alpha_ik bounds |G_qk(y_i, .)| on the gradient box (data only)."""
    n = chi.shape[0]
    m = P.shape[0]
    ih = 1.0 / h
    vis = nu * ih * ih
    c = 2.0 * theta * nu * ih
    y = np.empty(m)
    q = np.empty(m)
    pm = np.empty(m)
    pp = np.empty(m)
    da = np.zeros(m)
    db = np.zeros(m)
    for i in range(n):
        ci = chi[i]
        resolved = nu > 0.0
        for k in range(m):
            y[k] = Y[i, k]
            pm[k] = P[k] + (ci - chi[nb[i, 2 * k]]) * ih
            pp[k] = P[k] + (chi[nb[i, 2 * k + 1]] - ci) * ih
            q[k] = 0.5 * (pm[k] + pp[k])
            if alpha[i, k] > c:
                resolved = False
        r = -hbar
        diag = 0.0
        if resolved:
            r += Gf(y, q)
            for k in range(m):
                g = 0.5 * _fd_grad(Gf, y, q, k)
                da[k] = g
                db[k] = g
        elif m == 1:
            v, da[0], db[0] = _godunov_1d(Gf, y, q, 0, pm[0], pp[0], crit[i], ncrit[i, 0])
            r += v
        else:
            r += _godunov_2d(Gf, y, q, pm, pp, da, db)
        for k in range(m):
            r -= nu * ih * (pp[k] - pm[k])
            diag += 2.0 * vis + (da[k] - db[k]) * ih
            C[i, 1 + 2 * k] = -vis - da[k] * ih
            C[i, 2 + 2 * k] = -vis + db[k] * ih
        C[i, 0] = diag
        R[i] = r


@njit
def _ext_sampled(Gf, y, q, k, a, b, ns):
    """ext_{t in I(a, b)} g(t), g(t) = G(y, q with q_k = t) (min over [a, b] if a <= b, max
    over [b, a] otherwise): over the endpoints and the critical points of g found as sign
    changes of g' on ns + 1 equal subintervals, refined by the Illinois method. Exact for
    convex g (g' changes sign at most once); for nonconvex g, where the samples resolve the
    critical points. Returns (value, t*, which): which = 1 (t* = a), 2 (t* = b), 3 (a = b),
    0 (interior)."""
    if a == b:
        return _g1(Gf, y, q, k, a), a, 3
    want_min = a <= b
    lo, hi = (a, b) if want_min else (b, a)
    va = _g1(Gf, y, q, k, a)
    vb = _g1(Gf, y, q, k, b)
    best, tb, which = va, a, 1
    if (vb < best) if want_min else (vb > best):
        best, tb, which = vb, b, 2
    dt = (hi - lo) / (ns + 1)
    t0 = lo
    d0 = _dgk(Gf, y, q, k, t0)
    for s in range(1, ns + 2):
        t1 = hi if s == ns + 1 else lo + s * dt
        d1 = _dgk(Gf, y, q, k, t1)
        if (d0 < 0.0 < d1) or (d0 > 0.0 > d1):
            # Illinois (regula falsi) on g' over [t0, t1]
            x0, f0, x1, f1 = t0, d0, t1, d1
            side = 0
            for _ in range(60):
                x = (x0 * f1 - x1 * f0) / (f1 - f0)
                if not (x0 < x < x1) and not (x1 < x < x0):
                    x = 0.5 * (x0 + x1)
                fx = _dgk(Gf, y, q, k, x)
                if fx == 0.0 or abs(x1 - x0) <= 1e-15 * (1.0 + abs(x)):
                    break
                if (fx < 0.0) == (f1 < 0.0):
                    x1, f1 = x, fx
                    if side == -1:
                        f0 *= 0.5
                    side = -1
                else:
                    x0, f0 = x, fx
                    if side == 1:
                        f1 *= 0.5
                    side = 1
            v = _g1(Gf, y, q, k, x)
            if (v < best) if want_min else (v > best):
                best, tb, which = v, x, 0
        t0, d0 = t1, d1
    return best, tb, which


@njit
def _godunov_2d(Gf, y, q, pm, pp, da, db):
    """Godunov's flux of a general 2-D G at one node, ext_{q1 in I(pm0, pp0)} phi(q1), phi(q1) =
    ext_{q2 in I(pm1, pp1)} G(y, q1, q2) (_ext_sampled). The outer extremum: the endpoints and
    the best of 4 interior samples refined by golden section on its bracket (exact when phi
    is unimodal on the interval, as for convex G). da[k], db[k] <- the derivatives with
    respect to pm[k], pp[k] at the chosen point (envelope theorem; clamped to the monotone
    sign, 0 at an interior extremum). Returns the value."""
    ns = 4
    a, b = pm[0], pp[0]
    want_min = a <= b
    q[0] = a
    v, t2, w2 = _ext_sampled(Gf, y, q, 1, pm[1], pp[1], ns)
    best, t1b, t2b, w1, w2b = v, a, t2, 1 if a != b else 3, w2
    if a != b:
        q[0] = b
        v, t2, w2 = _ext_sampled(Gf, y, q, 1, pm[1], pp[1], ns)
        if (v < best) if want_min else (v > best):
            best, t1b, t2b, w1, w2b = v, b, t2, 2, w2
        lo, hi = (a, b) if want_min else (b, a)
        dt = (hi - lo) / (ns + 1)
        jb = 0
        vb = 0.0
        for j in range(1, ns + 1):  # the best interior sample
            v = _g1_outer(Gf, y, q, pm, pp, ns, lo + j * dt)
            if jb == 0 or ((v < vb) if want_min else (v > vb)):
                jb, vb = j, v
        # golden section on [t_{jb-1}, t_{jb+1}] for the interior extremum
        x0, x3 = lo + (jb - 1) * dt, lo + (jb + 1) * dt
        gr = 0.6180339887498949
        x1 = x3 - gr * (x3 - x0)
        x2 = x0 + gr * (x3 - x0)
        f1 = _g1_outer(Gf, y, q, pm, pp, ns, x1)
        f2 = _g1_outer(Gf, y, q, pm, pp, ns, x2)
        for _ in range(60):
            if x3 - x0 <= 1e-14 * (1.0 + abs(x0)):
                break
            if (f1 <= f2) if want_min else (f1 >= f2):
                x3, x2, f2 = x2, x1, f1
                x1 = x3 - gr * (x3 - x0)
                f1 = _g1_outer(Gf, y, q, pm, pp, ns, x1)
            else:
                x0, x1, f1 = x1, x2, f2
                x2 = x0 + gr * (x3 - x0)
                f2 = _g1_outer(Gf, y, q, pm, pp, ns, x2)
        xm = 0.5 * (x0 + x3)
        q[0] = xm
        v, t2, w2 = _ext_sampled(Gf, y, q, 1, pm[1], pp[1], ns)
        if (v < best) if want_min else (v > best):
            best, t1b, t2b, w1, w2b = v, xm, t2, 0, w2
    q[0] = t1b
    q[1] = t2b
    for k in range(2):
        w = w1 if k == 0 else w2b
        g = _fd_grad(Gf, y, q, k) if w != 0 else 0.0
        da[k] = max(g, 0.0) if w == 1 or w == 3 else 0.0
        db[k] = min(g, 0.0) if w == 2 or w == 3 else 0.0
    return best


@njit
def _g1_outer(Gf, y, q, pm, pp, ns, t):
    """phi(t) = ext_{q2 in I(pm1, pp1)} G(y, t, q2) (the inner extremum of _godunov_2d)."""
    q[0] = t
    return _ext_sampled(Gf, y, q, 1, pm[1], pp[1], ns)[0]


@njit
def _gen_alpha(Gf, Y, rad, ns, whole, out):
    """out[i, k] = 1.05 max |G_qk(y_i, q)| over q in [-rad, rad]^m. G convex (whole False): G_qk
    is nondecreasing in q_k, so the max sits on the faces q_k = +-rad (sampled at ns points
    along the other axis for m = 2); otherwise (whole) ns points per axis over the whole box."""
    n, m = Y.shape
    y = np.empty(m)
    q = np.empty(m)
    for i in range(n):
        for k in range(m):
            y[k] = Y[i, k]
            out[i, k] = 0.0
        if whole:
            for s in range(ns ** m):
                for k in range(m):
                    q[k] = -rad + 2.0 * rad * ((s // ns ** k) % ns) / (ns - 1)
                for k in range(m):
                    out[i, k] = max(out[i, k], abs(_fd_grad(Gf, y, q, k)))
        else:
            for k in range(m):
                for sgn in (-1.0, 1.0):
                    for j in range(ns if m == 2 else 1):
                        q[k] = sgn * rad
                        if m == 2:
                            q[1 - k] = -rad + 2.0 * rad * j / (ns - 1)
                        out[i, k] = max(out[i, k], abs(_fd_grad(Gf, y, q, k)))
        for k in range(m):
            out[i, k] *= 1.05


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


# ---------------------------------------------------------------------------------------------
# (d) metric Hamiltonians  c(y) max_{a in B} (-a.q)   (Godunov / upwind, any nu >= 0)
# ---------------------------------------------------------------------------------------------


# 9-point stencil of the 2-D metric form: neighbour offsets in the column order of its
# neighbour table (the axis pairs first, so that columns 0-3 are the 5-point stencil), and the
# 8 cones between angularly consecutive neighbours (an axis and a diagonal direction)
OFFSETS9 = np.array([[-1, 0], [1, 0], [0, -1], [0, 1], [1, 1], [-1, 1], [-1, -1], [1, -1]],
                    dtype=np.int64)
CONES9 = np.array([[1, 4], [4, 3], [3, 5], [5, 0], [0, 6], [6, 2], [2, 7], [7, 1]],
                  dtype=np.int64)


@njit(cache=True)
def _metric_eval(c, cand, ncand, ball, cones, off, chi, hbar, P, h, nu, nb, R, C):
    """Residual / stencil of -nu Lap chi + Ghat_i - hbar for G = c(y) max_{a in B} (-a.q).

    Directional differences d_j = (u_i - u_{i + v_j}) / h, u = P.y + chi, along the stencil
    directions v_j (off[j]; 2 in 1-D, 8 in 2-D); in the cone a = alpha v_j + beta v_j',
    alpha, beta >= 0, between two consecutive directions -a.Du ~ alpha d_j + beta d_j', so

        Ghat_i = max{0, max over cones q, max over (alpha, beta) of c_iq (alpha d_j + beta d_j')}

    over a in B n cone: ball (B the Euclidean unit ball): the exact max of the linear form
    over the ellipse piece (|g| if the maximiser g, g.v_j = d_j, g.v_j' = d_j', lies in the
    cone, else the better ray); otherwise over the ncand[cone] points cand[cone] = (alpha,
    beta) of the vertices of the polytope B n cone. Exact for linear u (consistent), monotone
    (nonnegative weights on u_i - u_nb: the upwind control scheme with the exact sup over B);
    first order. With the diagonal directions, the axis and diagonal motions are exact (no
    transverse numerical diffusion along them). c_iq: the speed at the centroid of the cone's
    triangle (y_i, y_i + h v_j, y_i + h v_j') (1-D: the midpoint of the step), so that a move
    is charged the speed of the cell it crosses; a move along an interface belongs to the two
    cones on either side and gets the larger speed (the lower semicontinuous travel cost of
    the optimal-control value). Jacobian: the maximising cone and (alpha, beta)."""
    n = chi.shape[0]
    m = P.shape[0]
    nd = off.shape[0]
    ih = 1.0 / h
    vis = nu * ih * ih
    d = np.empty(nd)
    for i in range(n):
        ci = chi[i]
        lap = 0.0
        for k in range(m):
            lap += chi[nb[i, 2 * k]] + chi[nb[i, 2 * k + 1]] - 2.0 * ci
        for j in range(nd):
            pv = 0.0
            for k in range(m):
                pv += P[k] * off[j, k]
            d[j] = -pv - (chi[nb[i, j]] - ci) * ih
        best = 0.0
        bq = 0
        ba = 0.0
        bb = 0.0
        for q in range(cones.shape[0]):
            j = cones[q, 0]
            j2 = cones[q, 1]
            x = d[j]
            y = d[j2]
            cq = c[i, q]
            if ball:
                v0 = float(off[j, 0])
                v1 = float(off[j, 1]) if m > 1 else 0.0
                w0 = float(off[j2, 0])
                w1 = float(off[j2, 1]) if m > 1 else 0.0
                nv = math.sqrt(v0 * v0 + v1 * v1)
                nw = math.sqrt(w0 * w0 + w1 * w1)
                det = v0 * w1 - v1 * w0
                if det != 0.0:
                    g0 = (x * w1 - y * v1) / det
                    g1 = (v0 * y - w0 * x) / det
                    lam = (g0 * w1 - g1 * w0) / det
                    mu = (v0 * g1 - v1 * g0) / det
                    ng = math.sqrt(g0 * g0 + g1 * g1)
                    if lam >= 0.0 and mu >= 0.0 and cq * ng > best:
                        best, bq, ba, bb = cq * ng, q, lam / ng, mu / ng
                if cq * x / nv > best:
                    best, bq, ba, bb = cq * x / nv, q, 1.0 / nv, 0.0
                if cq * y / nw > best:
                    best, bq, ba, bb = cq * y / nw, q, 0.0, 1.0 / nw
            else:
                for r in range(ncand[q]):
                    v = cq * (cand[q, r, 0] * x + cand[q, r, 1] * y)
                    if v > best:
                        best, bq, ba, bb = v, q, cand[q, r, 0], cand[q, r, 1]
        R[i] = best - vis * lap - hbar
        for j in range(nd):
            C[i, 1 + j] = -vis if j < 2 * m else 0.0
        g = c[i, bq] * ih
        C[i, 0] = 2.0 * m * vis + g * (ba + bb)
        C[i, 1 + cones[bq, 0]] -= g * ba
        C[i, 1 + cones[bq, 1]] -= g * bb


def metric_stencil(m):
    """(offsets, cones, centroids) of the metric scheme: 1-D the two rays (as two degenerate
    cones), 2-D the 9-point stencil OFFSETS9 / CONES9; centroids (in units of h) of the
    cones' triangles (1-D: the midpoints of the steps)."""
    if m == 1:
        off, cones = np.array([[-1], [1]], dtype=np.int64), np.array([[0, 0], [1, 1]], dtype=np.int64)
        return off, cones, np.array([[-0.5], [0.5]])
    return OFFSETS9, CONES9, (OFFSETS9[CONES9[:, 0]] + OFFSETS9[CONES9[:, 1]]) / 3.0


def stencil_neighbours(N, off):
    """nb[i, j] = index of node i + off[j] on the periodic N^m grid (C order)."""
    m = off.shape[1]
    idx = np.indices((N,) * m).reshape(m, -1).T
    nb = np.empty((idx.shape[0], off.shape[0]), np.int64)
    for j, o in enumerate(off):
        t = (idx + o) % N
        nb[:, j] = t[:, 0] * N + t[:, 1] if m == 2 else t[:, 0]
    return nb


def cone_points(B, off, cones):
    """For every cone (v, w) of the stencil, the vertices of the polytope B n cone written as
    a = alpha v + beta w: the points where B's boundary meets the two rays and the vertices of
    B strictly inside the cone (0 is covered by the kernel's max with 0). B: vertices (nB, m)
    of a polytope with 0 inside. Returns (cand (ncones, r, 2), ncand (ncones,))."""
    B = np.asarray(B, dtype=float)
    m = B.shape[1]
    if m == 1:
        cand = np.zeros((2, 1, 2))
        cand[0, 0, 0] = -float(B.min())  # the ray -1 reaches a = min B
        cand[1, 0, 0] = float(B.max())
        return cand, np.array([1, 1], dtype=np.int64)
    from scipy.spatial import ConvexHull
    hull = ConvexHull(B)
    nrm, b = hull.equations[:, :2], hull.equations[:, 2]  # n.a + b <= 0 on B, b < 0
    V = B[hull.vertices]

    def reach(v):  # largest t with t v in B
        nv = nrm @ v
        return float(np.min(-b[nv > 1e-15] / nv[nv > 1e-15]))

    rows = []
    for j, j2 in cones:
        v, w = off[j].astype(float), off[j2].astype(float)
        pts = [(reach(v), 0.0), (0.0, reach(w))]
        T = np.array([v, w]).T
        for a in V:
            lam, mu = np.linalg.solve(T, a)
            if lam > 1e-12 and mu > 1e-12:
                pts.append((lam, mu))
        rows.append(pts)
    r = max(len(p) for p in rows)
    cand = np.zeros((len(rows), r, 2))
    for q, pts in enumerate(rows):
        cand[q, :len(pts)] = pts
    return cand, np.array([len(p) for p in rows], dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# (e) Godunov fluxes built from the formula (general G in 1-D, separable K; convex or not)
# ---------------------------------------------------------------------------------------------


@njit
def _g1(Gf, y, q, k, t):
    """G(y, q) with q_k = t (the other components as in q)."""
    q[k] = t
    return Gf(y, q)


@njit
def _godunov_1d(Gf, y, q, k, a, b, crit, nc):
    """Godunov's numerical Hamiltonian of t -> g(t) = G(y, q with q_k = t) (Osher's formula)

        ext_{t in I(a, b)} g(t) = min_{[a, b]} g if a <= b,  max_{[b, a]} g if a > b,

    with a = p-, b = p+: the extremum over the endpoints and the critical points of g inside
    (crit[:nc], sorted, every critical point of g on the q box). Exact for any continuous g
    whose critical points are listed (convex or not). Returns (value, dvalue/da, dvalue/db):
    the derivative g' at the chosen endpoint, attributed to a if >= 0 and to b if <= 0 (the
    sign that the monotone flux has there; 0 at an interior critical point)."""
    lo, hi = (a, b) if a <= b else (b, a)
    want_min = a <= b
    ta = a
    va = _g1(Gf, y, q, k, a)
    vb = _g1(Gf, y, q, k, b)
    best, arg = va, 1
    if (vb < best) if want_min else (vb > best):
        best, arg = vb, 2
    for j in range(nc):
        t = crit[j]
        if t <= lo:
            continue
        if t >= hi:
            break
        v = _g1(Gf, y, q, k, t)
        if (v < best) if want_min else (v > best):
            best, arg = v, 0
    da = 0.0
    db = 0.0
    if arg != 0:
        t = ta if arg == 1 else b
        d = 1e-6 * (1.0 + abs(t))
        g = (_g1(Gf, y, q, k, t + d) - _g1(Gf, y, q, k, t - d)) / (2.0 * d)
        if arg == 1 or a == b:
            da = max(g, 0.0)
        if arg == 2 or a == b:
            db = min(g, 0.0)
    return best, da, db


@njit
def _godunov_eval(Gf, Y, crit, ncrit, chi, hbar, P, h, nu, nb, R, C):
    """Residual / stencil of -nu Lap chi + Ghat_i - hbar with Godunov's flux built from the
    formula G(y, q), axis by axis (Bardi-Osher):

        Ghat_i = ext_{q_1 in I(p-_1, p+_1)} ... ext_{q_m in I(p-_m, p+_m)} G(y_i, q),

    computed for m = 1 and for G(y, q) = sum_k K_k(q_k) + V(y) (separable, where the axes
    decouple: the other components are held at 0 and the 1-D extrema add up; Gf then is the
    axis sum, crit[i] the critical points of every axis in turn, ncrit[i, k] their counts).
    Monotone for any continuous G (convex or not); the viscosity solution's scheme of the
    literature for nonconvex G in 1-D. For convex G it is max(G(max(p-, q*)), G(min(p+, q*)))
    (q* = argmin), the flux of the quadratic form: second order for Hbar where that one is."""
    n = chi.shape[0]
    m = P.shape[0]
    ih = 1.0 / h
    vis = nu * ih * ih
    y = np.empty(Y.shape[1])
    q = np.zeros(m)
    for i in range(n):
        for k in range(Y.shape[1]):
            y[k] = Y[i, k]
        ci = chi[i]
        r = -hbar
        diag = 0.0
        off = 0
        for k in range(m):
            q[:] = 0.0
            cl = chi[nb[i, 2 * k]]
            cu = chi[nb[i, 2 * k + 1]]
            r -= vis * ((cu - ci) - (ci - cl))
            pm = P[k] + (ci - cl) * ih
            pp = P[k] + (cu - ci) * ih
            nc = ncrit[i, k]
            v, da, db = _godunov_1d(Gf, y, q, k, pm, pp, crit[i, off:off + nc], nc)
            off += nc
            if k > 0:
                q[:] = 0.0
                v -= Gf(y, q)  # separable: the constant part G(y, 0) counted once
            r += v
            diag += 2.0 * vis + (da - db) * ih
            C[i, 1 + 2 * k] = -vis - da * ih
            C[i, 2 + 2 * k] = -vis + db * ih
        C[i, 0] = diag
        R[i] = r


@njit
def _critical_points(Gf, Y, rad, ns, sep, crit, ncrit):
    """The critical points of t -> G(y_i, t e_k) on [-rad, rad] (sign changes of the central
    difference of G on ns samples, refined by bisection to rounding), for every node i (sep:
    node 0 only, copied: the axis functions do not depend on y) and axis k; crit[i] holds
    them axis after axis, ncrit[i, k] their counts (at most crit.shape[1] in all)."""
    n = Y.shape[0]
    m = ncrit.shape[1]
    y = np.empty(Y.shape[1])
    q = np.zeros(m)
    cap = crit.shape[1]
    for i in range(n):
        if sep and i > 0:
            crit[i] = crit[0]
            ncrit[i] = ncrit[0]
            continue
        for k in range(Y.shape[1]):
            y[k] = Y[i, k]
        off = 0
        for k in range(m):
            q[:] = 0.0
            cnt = 0
            dt = 2.0 * rad / (ns - 1)
            t0 = -rad
            d0 = _dgk(Gf, y, q, k, t0)
            for s in range(1, ns):
                t1 = -rad + s * dt
                d1 = _dgk(Gf, y, q, k, t1)
                if (d0 < 0.0 <= d1) or (d0 > 0.0 >= d1):
                    a, b = t0, t1
                    for _ in range(80):
                        mid = 0.5 * (a + b)
                        if mid <= a or mid >= b:
                            break
                        dm = _dgk(Gf, y, q, k, mid)
                        if (dm < 0.0) == (d0 < 0.0) and dm != 0.0:
                            a = mid
                        else:
                            b = mid
                    if off + cnt < cap:
                        crit[i, off + cnt] = 0.5 * (a + b)
                        cnt += 1
                t0, d0 = t1, d1
            ncrit[i, k] = cnt
            off += cnt


@njit
def _dgk(Gf, y, q, k, t):
    """dG/dq_k at q_k = t (central difference)."""
    q[k] = t
    return _fd_grad(Gf, y, q, k)


@njit
def _tab_speed(cf, Y, shifts, r, out):
    """out[i, q] = max of c over the point y_i + shifts[q] and the 2^m points around it at
    distance r in every axis (r = 0: c at the point): the upper envelope of the speed at scale
    r. The metric scheme takes c at the centroid of each cone's triangle (r = 0); the
    periodicity check compares envelopes at a small r, so that a formula's round-off on an
    interface (sin(2 pi) = -2.4e-16) does not matter."""
    n, m = Y.shape
    y = np.empty(m)
    for i in range(n):
        for q in range(shifts.shape[0]):
            for k in range(m):
                y[k] = Y[i, k] + shifts[q, k]
            best = cf(y)
            for s in range(1 << m):
                for k in range(m):
                    y[k] = Y[i, k] + shifts[q, k] + (r if (s >> k) & 1 else -r)
                v = cf(y)
                if v > best:
                    best = v
            out[i, q] = best


def _upper_envelope_at(cf, y, r):
    """The upper envelope of c at one point y at scale r (see _tab_speed)."""
    y = np.ascontiguousarray(y, dtype=float)
    o = np.empty((1, 1))
    _tab_speed(cf, y[None, :], np.zeros((1, y.size)), float(r), o)
    return float(o[0, 0])
