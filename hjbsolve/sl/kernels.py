"""Numba kernels of the semi-Lagrangian (SL) step: interpolation at the feet and min over the controls.

One step of the dynamic-programming scheme for ``∂_t V + H(x, DV, D²V) = 0`` (sup convention, t = time
remaining, V = inf of the cost) reads, at a node x and for a control u,

    S_u[V](x) = C_u(x) + sum_f w_f V(xi_f(u)),        V^{k+1}(x) = min_u S_u[V^k](x)

with the feet (Kushner / Camilli-Falcone stencil, second-order Taylor characteristics)

    xi_f = x + dt a + (dt²/2) (D_x a) a  ±  sqrt(2 n dt) (I + (dt/2) D_x a) sigma_col_r,   w_f = 1/(2n)

(one foot of weight 1 when sigma = 0). The running cost C_u is the trapezoidal rule along the step,
``dt/2 (l(x) + E l(xi))``: tabulated kernels take it expanded to second order,
``C = dt l + dt²/2 (D_x l . a + tr(sigma sigma^T D²_x l))`` (differences of the l table); the affine kernels
interpolate l0 at the feet together with V. Values at the feet are multilinear interpolants of
nodal values: non-negative weights inside the box, so the scheme is monotone; outside the box the
interpolant is extended linearly (``mode = 0``, the default: exact for data growing linearly, keeps
quadratic growth approximately, weights may be negative beyond the box) or by clamping the foot onto the
box (``mode = 1``, a homogeneous Neumann condition: monotone everywhere).

Every kernel works on a *batch* of J independent slow problems (leading axis of V and of the tables):
J = number of fast nodes for the slow step of V^eps (y frozen at y_j), J = 1 for the effective and
plain problems. Work is split over (batch, block of slow nodes) with ``prange``.

Kernels (n = slow dimension):

- ``step_tab_1d`` / ``step_tab_2d``: coefficients tabulated on (batch, control, node): a finite control set
  (tensor grid, ball, list); min over the set (error O(du²) per unit time for a grid of spacing du).
- ``step_aff_1d``: control-affine dynamics with quadratic cost in 1-D (k = 1): the SL objective is
  piecewise quadratic in u along the interpolant; minimised *exactly*, piece by piece over the cells the
  feet cross.
- ``step_aff_2d``: the same in 2-D (any k; k <= 2 has a hoisted fast path): min over a control grid, then
  local refinement of each control component by golden-section search on the piecewise-quadratic objective.

The tabulated kernels work in index space (displacements and noise widths in cells, flattened values).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: x nodes per parallel work item
BLOCK = 256
GOLDEN = 0.6180339887498949


@njit(cache=True, inline="always")
def _task_block(task, nb, N):
    """Work item ``task`` of a prange over (batch row, block of BLOCK slow nodes), nb blocks per row:
    (row j, first node i0, end i1)."""
    i0 = (task % nb) * BLOCK
    return task // nb, i0, min(i0 + BLOCK, N)


@njit(cache=True, inline="always")
def celli(t, N, mode):
    """Cell index m in [0, N-2] and local coordinate of the index-space position t = (xi - x0)/h
    (theta outside [0, 1] extrapolates linearly; mode 1 clamps t onto [0, N-1] first)."""
    if mode == 1:
        if t < 0.0:
            t = 0.0
        elif t > N - 1.0:
            t = N - 1.0
    # truncation equals floor for t >= 0, and for t < 0 both give an index clamped to 0 (then t - m = t
    # extrapolates linearly), so the cheaper int() conversion is exact here
    m = int(t)
    if m < 0:
        m = 0
    elif m > N - 2:
        m = N - 2
    return m, t - m


@njit(cache=True, inline="always")
def cell1(xi, x0, ih, N, mode):
    """:func:`celli` of the position xi on the axis x0 + i h (ih = 1/h: a multiplication is cheaper than a
    division in the inner loops)."""
    return celli((xi - x0) * ih, N, mode)


@njit(cache=True, inline="always")
def interp1(F, m, th):
    return F[m] + th * (F[m + 1] - F[m])


@njit(cache=True, inline="always")
def interp2(F, m1, t1, m2, t2):
    f00 = F[m1, m2]
    f01 = F[m1, m2 + 1]
    f10 = F[m1 + 1, m2]
    f11 = F[m1 + 1, m2 + 1]
    a = f00 + t2 * (f01 - f00)
    b = f10 + t2 * (f11 - f10)
    return a + t1 * (b - a)


# ----------------------------------------------------------------------------------------------------------
# tabulated coefficients, finite control set


@njit(cache=True, parallel=True)
def step_tab_1d(V, C, disp, noise, mode, has_noise, out, arg):
    """One SL step in 1-D with tabulated coefficients (see module docstring), in index space.

    V (J, N); C (J, nc, N) running cost of the step (dt l plus its second-order trapezoidal correction,
    prepared by the stepper); disp (J, nc, N) deterministic displacement of the foot in cells (d / h); noise
    (J, ncs, N) half-width of the two-point noise stencil in cells (ncs = 1: same for every control;
    has_noise False: one foot). Writes out (J, N) = min_u S_u[V] and arg (J, N) = index of the minimiser.
    """
    J, nc, N = disp.shape
    ncs = noise.shape[1]
    nb = (N + BLOCK - 1) // BLOCK
    for task in prange(J * nb):
        j, i0, i1 = _task_block(task, nb, N)
        Vj = V[j]
        o = out[j]
        ag = arg[j]
        for i in range(i0, i1):
            o[i] = np.inf
            ag[i] = 0
        for c in range(nc):
            Cc = C[j, c]
            Dc = disp[j, c]
            if has_noise:
                Sc = noise[j, c if ncs > 1 else 0]
                for i in range(i0, i1):
                    t = i + Dc[i]
                    s = Sc[i]
                    m, th = celli(t - s, N, mode)
                    val = interp1(Vj, m, th)
                    m, th = celli(t + s, N, mode)
                    val = Cc[i] + 0.5 * (val + interp1(Vj, m, th))
                    if val < o[i]:
                        o[i] = val
                        ag[i] = c
            else:
                for i in range(i0, i1):
                    m, th = celli(i + Dc[i], N, mode)
                    val = Cc[i] + interp1(Vj, m, th)
                    if val < o[i]:
                        o[i] = val
                        ag[i] = c


# The 2-D tabulated kernel is the hot loop of every 2-D grid-control solve, so it is tuned:
# - cell indices are unsigned (np.uint64 throughout: numba then omits the negative-index wrap-around test on
#   each of the four gathers; mixing with signed ints would silently give floats, hence the U1 constant);
# - the deterministic loop takes four controls per pass over a row (four independent gather chains in flight,
#   one load/compare/store of the running minimum per four updates, ties resolved to the lowest index as in
#   the plain loop);
# - fastmath = {"contract"} only lets LLVM fuse multiply-adds (no reassociation, NaN/inf semantics kept).
U1 = np.uint64(1)
_FM = {"contract"}


@njit(cache=True, inline="always", fastmath=_FM)
def _celli_u(t, N, mode):
    """:func:`celli` with the index as np.uint64."""
    m, th = celli(t, N, mode)
    return np.uint64(m), th


@njit(cache=True, inline="always", fastmath=_FM)
def _foot2(Vf, N1, N2, U2, pa, pb, mode):
    """Bilinear interpolant of the flattened Vf (U2 = np.uint64(N2)) at the index-space point (pa, pb)."""
    m1, t1 = _celli_u(pa, N1, mode)
    m2, t2 = _celli_u(pb, N2, mode)
    b = m1 * U2 + m2
    f00 = Vf[b]
    f01 = Vf[b + U1]
    f10 = Vf[b + U2]
    f11 = Vf[b + U2 + U1]
    a = f00 + t2 * (f01 - f00)
    c = f10 + t2 * (f11 - f10)
    return a + t1 * (c - a)


@njit(cache=True, parallel=True, fastmath=_FM)
def step_tab_2d(Vf, C, disp, noise, mode, has_noise, out, arg):
    """One SL step in 2-D with tabulated coefficients, in index space.

    Vf (J, N1 * N2) the values, flattened; C (J, nc, N1, N2) step cost; disp (J, nc, N1, N2, 2) displacement in
    cells; noise (J, ncs, N1, N2, 2, 2): column r of noise[..., :, r] is the stencil half-width vector
    sqrt(4 dt) (I + dt/2 Da) sigma_col_r in cells (4 feet of weight 1/4). out, arg (J, N1, N2): the minimum
    and the index of the (first) minimising control. C and disp must be finite (``sl.build`` checks the
    coefficients): the four-control pass assumes no NaN candidates.
    """
    J, nc, N1, N2, _ = disp.shape
    ncs = noise.shape[1]
    U2 = np.uint64(N2)
    for task in prange(J * N1):
        j = task // N1
        i1 = task % N1
        Vj = Vf[j]
        o = out[j, i1]
        ag = arg[j, i1]
        for i2 in range(N2):
            o[i2] = np.inf
            ag[i2] = 0
        ta = i1 * 1.0
        if has_noise:
            for c in range(nc):
                Cc = C[j, c, i1]
                Dc = disp[j, c, i1]
                Sc = noise[j, c if ncs > 1 else 0, i1]
                for i2 in range(N2):
                    pa = ta + Dc[i2, 0]
                    pb = i2 + Dc[i2, 1]
                    val = 0.0
                    for r in range(2):
                        sa = Sc[i2, 0, r]
                        sb = Sc[i2, 1, r]
                        val += _foot2(Vj, N1, N2, U2, pa - sa, pb - sb, mode)
                        val += _foot2(Vj, N1, N2, U2, pa + sa, pb + sb, mode)
                    val = Cc[i2] + 0.25 * val
                    if val < o[i2]:
                        o[i2] = val
                        ag[i2] = c
            continue
        c = 0
        while c + 3 < nc:
            C0, D0 = C[j, c, i1], disp[j, c, i1]
            C1, D1 = C[j, c + 1, i1], disp[j, c + 1, i1]
            C2, D2 = C[j, c + 2, i1], disp[j, c + 2, i1]
            C3, D3 = C[j, c + 3, i1], disp[j, c + 3, i1]
            for i2 in range(N2):
                v0 = C0[i2] + _foot2(Vj, N1, N2, U2, ta + D0[i2, 0], i2 + D0[i2, 1], mode)
                v1 = C1[i2] + _foot2(Vj, N1, N2, U2, ta + D1[i2, 0], i2 + D1[i2, 1], mode)
                v2 = C2[i2] + _foot2(Vj, N1, N2, U2, ta + D2[i2, 0], i2 + D2[i2, 1], mode)
                v3 = C3[i2] + _foot2(Vj, N1, N2, U2, ta + D3[i2, 0], i2 + D3[i2, 1], mode)
                k0 = c
                if v1 < v0:
                    v0 = v1
                    k0 = c + 1
                k2 = c + 2
                if v3 < v2:
                    v2 = v3
                    k2 = c + 3
                if v2 < v0:
                    v0 = v2
                    k0 = k2
                if v0 < o[i2]:
                    o[i2] = v0
                    ag[i2] = k0
            c += 4
        while c < nc:
            Cc, Dc = C[j, c, i1], disp[j, c, i1]
            for i2 in range(N2):
                val = Cc[i2] + _foot2(Vj, N1, N2, U2, ta + Dc[i2, 0], i2 + Dc[i2, 1], mode)
                if val < o[i2]:
                    o[i2] = val
                    ag[i2] = c
            c += 1


# ----------------------------------------------------------------------------------------------------------
# coefficient tables of the 2-D tabulated step, built in one pass


@njit(cache=True, inline="always")
def _d_axis(F, i, N, h):
    """d F / dx at node i of a line of N values (spacing h): central differences inside, second-order one-sided
    at the ends, 0 when N < 3 (the stencil of ``np.gradient(..., edge_order=2)``)."""
    if N < 3:
        return 0.0
    if i == 0:
        return (-1.5 * F[0] + 2.0 * F[1] - 0.5 * F[2]) / h
    if i == N - 1:
        return (0.5 * F[N - 3] - 2.0 * F[N - 2] + 1.5 * F[N - 1]) / h
    return (F[i + 1] - F[i - 1]) / (2.0 * h)


@njit(cache=True, parallel=True)
def taylor_tables_2d(A, L, h1, h2, dt, order, disp, C):
    """Deterministic feet and step costs of the 2-D tabulated step, from the drift and cost tables.

    A (J, nc, N1, N2, 2) drift a(x, u), L (J, nc, N1, N2) running cost l(x, u) on the nodes (any strides).
    Writes the displacement of the foot in cells, ``disp = (dt a + dt²/2 (D_x a) a) / h`` (order 2; ``dt a / h``
    for order 1), and the step cost ``C = dt l + dt²/2 D_x l . a`` (the trapezoidal rule ``dt/2 (l(x) + l(xi))``
    expanded to second order; ``dt l`` for order 1), D_x by second-order differences (one-sided at the box
    edges). One pass over the tables, parallel over (batch, control, row): memory and time proportional to
    the table, no temporaries.
    """
    J, nc, N1, N2, _ = A.shape
    q = 0.5 * dt * dt
    for task in prange(J * nc * N1):
        i1 = task % N1
        c = (task // N1) % nc
        j = task // (N1 * nc)
        Ar = A[j, c, i1]
        Lr = L[j, c, i1]
        for i2 in range(N2):
            a1 = Ar[i2, 0]
            a2 = Ar[i2, 1]
            d1 = dt * a1
            d2 = dt * a2
            cost = dt * Lr[i2]
            if order == 2:
                # column derivatives along x1 (rows i1 - 1, i1 + 1 of the same control), row ones along x2
                if N1 < 3:
                    g11 = g21 = gl1 = 0.0
                elif i1 == 0:
                    g11 = (-1.5 * a1 + 2.0 * A[j, c, 1, i2, 0] - 0.5 * A[j, c, 2, i2, 0]) / h1
                    g21 = (-1.5 * a2 + 2.0 * A[j, c, 1, i2, 1] - 0.5 * A[j, c, 2, i2, 1]) / h1
                    gl1 = (-1.5 * Lr[i2] + 2.0 * L[j, c, 1, i2] - 0.5 * L[j, c, 2, i2]) / h1
                elif i1 == N1 - 1:
                    g11 = (0.5 * A[j, c, N1 - 3, i2, 0] - 2.0 * A[j, c, N1 - 2, i2, 0] + 1.5 * a1) / h1
                    g21 = (0.5 * A[j, c, N1 - 3, i2, 1] - 2.0 * A[j, c, N1 - 2, i2, 1] + 1.5 * a2) / h1
                    gl1 = (0.5 * L[j, c, N1 - 3, i2] - 2.0 * L[j, c, N1 - 2, i2] + 1.5 * Lr[i2]) / h1
                else:
                    g11 = (A[j, c, i1 + 1, i2, 0] - A[j, c, i1 - 1, i2, 0]) / (2.0 * h1)
                    g21 = (A[j, c, i1 + 1, i2, 1] - A[j, c, i1 - 1, i2, 1]) / (2.0 * h1)
                    gl1 = (L[j, c, i1 + 1, i2] - L[j, c, i1 - 1, i2]) / (2.0 * h1)
                g12 = _d_axis(Ar[:, 0], i2, N2, h2)
                g22 = _d_axis(Ar[:, 1], i2, N2, h2)
                gl2 = _d_axis(Lr, i2, N2, h2)
                d1 += q * (g11 * a1 + g12 * a2)
                d2 += q * (g21 * a1 + g22 * a2)
                cost += q * (gl1 * a1 + gl2 * a2)
            disp[j, c, i1, i2, 0] = d1 / h1
            disp[j, c, i1, i2, 1] = d2 / h2
            C[j, c, i1, i2] = cost


# ----------------------------------------------------------------------------------------------------------
# control-affine, quadratic cost: a = a0 + B u, l = l0 + c/2 |u - u_ref|^2


@njit(cache=True, inline="always")
def _piece_value(F, m, xi, x0, h, N, mode):
    """Value and slope of the interpolant of F on piece m in [-1, N-1] (m = -1, N-1: outside the box)."""
    if m < 0:
        if mode == 1:
            return F[0], 0.0
        s = (F[1] - F[0]) / h
        return F[0] + s * (xi - x0), s
    if m > N - 2:
        if mode == 1:
            return F[N - 1], 0.0
        s = (F[N - 1] - F[N - 2]) / h
        return F[N - 1] + s * (xi - (x0 + (N - 1) * h)), s
    s = (F[m + 1] - F[m]) / h
    return F[m] + s * (xi - (x0 + m * h)), s


@njit(cache=True, inline="always")
def _piece_index(xi, x0, h, N):
    t = (xi - x0) / h
    m = int(np.floor(t))
    if m < -1:
        m = -1
    elif m > N - 1:
        m = N - 1
    return m


@njit(cache=True, parallel=True)
def slope_tables(F, h, mode, mn, mx):
    """Sparse tables of the slopes of each row's interpolant: F (J, N) nodal values; piece p in [-1, N-1]
    (p = -1, N-1: outside the box, slope of the extension in ``mode``) is stored at p + 1, and
    mn[j, l, p + 1], mx[j, l, p + 1] (J, L, N + 1) are the min and max slope over the pieces p ... p + 2^l - 1,
    so that the slope range over any run of pieces is two lookups (:func:`_slope_range`)."""
    J, N = F.shape
    P = N + 1
    L = mn.shape[1]
    for j in prange(J):
        for p in range(P):
            m = p - 1
            if m < 0 or m > N - 2:
                if mode == 1:
                    s = 0.0
                elif m < 0:
                    s = (F[j, 1] - F[j, 0]) / h
                else:
                    s = (F[j, N - 1] - F[j, N - 2]) / h
            else:
                s = (F[j, m + 1] - F[j, m]) / h
            mn[j, 0, p] = s
            mx[j, 0, p] = s
        for lv in range(1, L):
            w = 1 << (lv - 1)
            for p in range(P - (1 << lv) + 1):
                mn[j, lv, p] = min(mn[j, lv - 1, p], mn[j, lv - 1, p + w])
                mx[j, lv, p] = max(mx[j, lv - 1, p], mx[j, lv - 1, p + w])


def slope_levels(N: int) -> int:
    """Levels L of :func:`slope_tables` for N nodes (N + 1 pieces)."""
    return max(1, int(N + 1).bit_length())


@njit(cache=True, inline="always")
def _slope_range(mn, mx, xa, xb, x0, h, N):
    """Min and max slope of the interpolant over the positions [xa, xb] (mn, mx: one row's tables)."""
    a = _piece_index(xa, x0, h, N) + 1
    b = _piece_index(xb, x0, h, N) + 1
    if a > b:
        a, b = b, a
    n = b - a + 1
    lv = 0
    while (2 << lv) <= n:
        lv += 1
    e = b - (1 << lv) + 1
    return min(mn[lv, a], mn[lv, e]), max(mx[lv, a], mx[lv, e])


@njit(cache=True)
def exact_min_1d(F, x0, h, N, mode, base0, base1, nfeet, beta, c0, dtc, uref, ulo, uhi, mn, mx):
    """Exact minimiser over [ulo, uhi] of  c0 + dtc/2 (u - uref)^2 + mean_f F_I(base_f + beta u).

    F_I is the piecewise-linear interpolant of the nodal values F (extended as in ``mode``); nfeet is 1
    (foot base0) or 2 (feet base0, base1, weight 1/2 each). The objective is quadratic on each piece
    between the values of u where a foot crosses a node: scan the pieces in order, minimise each one in
    closed form (vertex clipped to the piece; both ends when dtc = 0).

    Bracketing (dtc > 0; mn, mx the slope tables of F, :func:`slope_tables`; empty: no bracketing): on an
    interval of u containing the minimiser, the derivative ``dtc (u - uref) + beta s`` (s the mean slope at the
    feet; one-sided at kinks) has a fixed sign outside ``[uref - max(beta s)/dtc, uref - min(beta s)/dtc]``,
    the bounds taken over the slopes the feet meet on that interval: the minimiser lies in the intersection
    (or at the end of the interval it points to, when they do not meet). Repeating with the smaller interval
    shrinks it to a few cells wherever the slopes vary little over the feet's range, so the scan no longer
    grows with the number of cells the control range spans (dt/dx); the result is the exact minimum.
    Returns (min, argmin).
    """
    w = 1.0 if nfeet == 1 else 0.5
    if dtc > 0.0 and beta != 0.0 and mn.shape[0] > 0:
        for _ in range(12):
            lo0, hi0 = _slope_range(mn, mx, base0 + beta * ulo, base0 + beta * uhi, x0, h, N)
            if nfeet == 2:
                lo1, hi1 = _slope_range(mn, mx, base1 + beta * ulo, base1 + beta * uhi, x0, h, N)
                lo0, hi0 = w * (lo0 + lo1), w * (hi0 + hi1)
            b1 = uref - beta * hi0 / dtc
            b2 = uref - beta * lo0 / dtc
            lo_b = min(b1, b2)
            hi_b = max(b1, b2)
            pad = 1e-12 * (1.0 + abs(lo_b) + abs(hi_b))
            lo_b -= pad
            hi_b += pad
            if hi_b < ulo:          # increasing on the whole interval
                uhi = ulo
                break
            if lo_b > uhi:          # decreasing on the whole interval
                ulo = uhi
                break
            nlo = max(ulo, lo_b)
            nhi = min(uhi, hi_b)
            shrunk = (nhi - nlo) < 0.5 * (uhi - ulo)
            ulo, uhi = nlo, nhi
            if not shrunk or abs(beta) * (uhi - ulo) <= 2.0 * h:
                break
    if beta == 0.0:
        u = min(max(uref, ulo), uhi)
        v = c0 + 0.5 * dtc * (u - uref) ** 2
        m0 = _piece_index(base0, x0, h, N)
        f0, s0 = _piece_value(F, m0, base0, x0, h, N, mode)
        v += w * f0
        if nfeet == 2:
            m1 = _piece_index(base1, x0, h, N)
            f1, s1 = _piece_value(F, m1, base1, x0, h, N, mode)
            v += w * f1
        return v, u
    sgn = 1 if beta > 0.0 else -1
    ua = ulo
    m0 = _piece_index(base0 + beta * ua, x0, h, N)
    m1 = _piece_index(base1 + beta * ua, x0, h, N) if nfeet == 2 else 0
    best = np.inf
    ubest = ua
    for _ in range(4 * N + 8):
        # next breakpoints of each foot
        b0 = np.inf
        nxt = m0 + 1 if sgn > 0 else m0
        if 0 <= nxt <= N - 1:
            b0 = (x0 + nxt * h - base0) / beta
        b1 = np.inf
        if nfeet == 2:
            nxt = m1 + 1 if sgn > 0 else m1
            if 0 <= nxt <= N - 1:
                b1 = (x0 + nxt * h - base1) / beta
        ub = min(uhi, min(b0, b1))
        if ub < ua:
            ub = ua
        # objective on [ua, ub]: c0 + dtc/2 (u - uref)^2 + K0 + K1 u
        um = 0.5 * (ua + ub)
        f0, s0 = _piece_value(F, m0, base0 + beta * um, x0, h, N, mode)
        K1 = w * s0 * beta
        K0 = w * (f0 - s0 * beta * um)
        if nfeet == 2:
            f1, s1 = _piece_value(F, m1, base1 + beta * um, x0, h, N, mode)
            K1 += w * s1 * beta
            K0 += w * (f1 - s1 * beta * um)
        if dtc > 0.0:
            u = uref - K1 / dtc
            u = min(max(u, ua), ub)
            v = c0 + 0.5 * dtc * (u - uref) ** 2 + K0 + K1 * u
            if v < best:
                best = v
                ubest = u
        else:
            for u in (ua, ub):
                v = c0 + K0 + K1 * u
                if v < best:
                    best = v
                    ubest = u
        if ub >= uhi:
            break
        if b0 <= ub:
            m0 += sgn
        if nfeet == 2 and b1 <= ub:
            m1 += sgn
        ua = ub
    return best, ubest


@njit(cache=True, parallel=True)
def step_aff_1d(F, c0, alpha, beta, eta, dtc, uref, ulo, uhi, x0, h, mode, out, ustar, mn, mx):
    """One SL step in 1-D for control-affine dynamics with quadratic cost, exact min over u in [ulo, uhi]
    (ulo, uhi (J, N): the control interval at each node).

    F (J, N) = V + dt/2 l0 (nodal values interpolated at the feet); c0 (J, N) = dt/2 l0 at the node;
    the feet are x + alpha + beta u ± eta (alpha, beta, eta (J, N); eta = 0: one foot); the control cost is
    dtc/2 (u - uref)^2 with dtc (J, N) = dt c. mn, mx (J, L, N + 1): the slope tables of F
    (:func:`slope_tables`, filled here). Writes out (J, N) and the minimiser ustar (J, N).
    """
    J, N = F.shape
    slope_tables(F, h, mode, mn, mx)
    nb = (N + BLOCK - 1) // BLOCK
    for task in prange(J * nb):
        j, i0, i1 = _task_block(task, nb, N)
        Fj = F[j]
        for i in range(i0, i1):
            x = x0 + i * h + alpha[j, i]
            e = eta[j, i]
            nf = 2 if e != 0.0 else 1
            v, u = exact_min_1d(Fj, x0, h, N, mode, x - e, x + e, nf, beta[j, i], c0[j, i], dtc[j, i],
                                uref[j, i], ulo[j, i], uhi[j, i], mn[j], mx[j])
            out[j, i] = v
            ustar[j, i] = u


@njit(cache=True)
def _aff2_value(Fj, Cn, c0, bn, Bn, Sn, nfeet, u, uref, dtc, x0, h, N1, N2, mode):
    """SL objective at control u for one node (Cn (k, k), bn (2,), Bn (2, k), Sn (2, 2), uref (k,))."""
    k = u.shape[0]
    q = 0.0
    for a in range(k):
        for b in range(k):
            q += (u[a] - uref[a]) * Cn[a, b] * (u[b] - uref[b])
    val = c0 + 0.5 * dtc * q
    pa = bn[0]
    pb = bn[1]
    for a in range(k):
        pa += Bn[0, a] * u[a]
        pb += Bn[1, a] * u[a]
    iha = 1.0 / h[0]
    ihb = 1.0 / h[1]
    if nfeet == 1:
        m1, t1 = cell1(pa, x0[0], iha, N1, mode)
        m2, t2 = cell1(pb, x0[1], ihb, N2, mode)
        return val + interp2(Fj, m1, t1, m2, t2)
    for r in range(2):
        for sgi in range(2):
            sg = 2.0 * sgi - 1.0
            m1, t1 = cell1(pa + sg * Sn[0, r], x0[0], iha, N1, mode)
            m2, t2 = cell1(pb + sg * Sn[1, r], x0[1], ihb, N2, mode)
            val += 0.25 * interp2(Fj, m1, t1, m2, t2)
    return val


@njit(cache=True)
def _aff2_grid(Fj, Cn, c0, bn, Bn, Sn, nfeet, uref, dtc, unodes, x0, h, N1, N2, mode):
    """Index of the best control node and its value (k <= 2: per-node data hoisted into scalars, positions
    in index space)."""
    nc, k = unodes.shape
    best = np.inf
    ib = 0
    two = k == 2
    iha, ihb = 1.0 / h[0], 1.0 / h[1]
    b0 = (bn[0] - x0[0]) * iha
    b1 = (bn[1] - x0[1]) * ihb
    B00, B10 = Bn[0, 0] * iha, Bn[1, 0] * ihb
    B01 = Bn[0, 1] * iha if two else 0.0
    B11 = Bn[1, 1] * ihb if two else 0.0
    r0 = uref[0]
    r1 = uref[1] if two else 0.0
    C00 = 0.5 * dtc * Cn[0, 0]
    C01 = dtc * Cn[0, 1] if two else 0.0
    C11 = 0.5 * dtc * Cn[1, 1] if two else 0.0
    s00, s10, s01, s11 = Sn[0, 0] * iha, Sn[1, 0] * ihb, Sn[0, 1] * iha, Sn[1, 1] * ihb
    col = 1 if two else 0          # with k = 1 the second component is read as u0 and multiplied by 0
    for c in range(nc):
        u0 = unodes[c, 0]
        u1 = unodes[c, col]
        d0 = u0 - r0
        d1 = u1 - r1
        v = c0 + C00 * d0 * d0 + C01 * d0 * d1 + C11 * d1 * d1
        pa = b0 + B00 * u0 + B01 * u1
        pb = b1 + B10 * u0 + B11 * u1
        if nfeet == 1:
            m1, t1 = celli(pa, N1, mode)
            m2, t2 = celli(pb, N2, mode)
            v += interp2(Fj, m1, t1, m2, t2)
        else:
            m1, t1 = celli(pa - s00, N1, mode)
            m2, t2 = celli(pb - s10, N2, mode)
            f = interp2(Fj, m1, t1, m2, t2)
            m1, t1 = celli(pa + s00, N1, mode)
            m2, t2 = celli(pb + s10, N2, mode)
            f += interp2(Fj, m1, t1, m2, t2)
            m1, t1 = celli(pa - s01, N1, mode)
            m2, t2 = celli(pb - s11, N2, mode)
            f += interp2(Fj, m1, t1, m2, t2)
            m1, t1 = celli(pa + s01, N1, mode)
            m2, t2 = celli(pb + s11, N2, mode)
            f += interp2(Fj, m1, t1, m2, t2)
            v += 0.25 * f
        if v < best:
            best = v
            ib = c
    return best, ib


@njit(cache=True)
def _aff2_refine(Fj, Cn, c0, bn, Bn, Sn, nfeet, uref, dtc, du, ulo, uhi, x0, h, N1, N2, mode, refine, best,
                 ub, u):
    """Golden-section refinement of each control component around ub (in place); returns the best value."""
    k = ub.shape[0]
    for sweep in range(refine):
        width = 1.0 if sweep == 0 else 0.25
        for a in range(k):
            lo = max(ub[a] - width * du[a], ulo[a])
            hi = min(ub[a] + width * du[a], uhi[a])
            for b in range(k):
                u[b] = ub[b]
            p = hi - GOLDEN * (hi - lo)
            q = lo + GOLDEN * (hi - lo)
            u[a] = p
            fp = _aff2_value(Fj, Cn, c0, bn, Bn, Sn, nfeet, u, uref, dtc, x0, h, N1, N2, mode)
            u[a] = q
            fq = _aff2_value(Fj, Cn, c0, bn, Bn, Sn, nfeet, u, uref, dtc, x0, h, N1, N2, mode)
            for _ in range(24):
                if fp <= fq:
                    hi = q
                    q = p
                    fq = fp
                    p = hi - GOLDEN * (hi - lo)
                    u[a] = p
                    fp = _aff2_value(Fj, Cn, c0, bn, Bn, Sn, nfeet, u, uref, dtc, x0, h, N1, N2, mode)
                else:
                    lo = p
                    p = q
                    fp = fq
                    q = lo + GOLDEN * (hi - lo)
                    u[a] = q
                    fq = _aff2_value(Fj, Cn, c0, bn, Bn, Sn, nfeet, u, uref, dtc, x0, h, N1, N2, mode)
            cand, fc = (p, fp) if fp <= fq else (q, fq)
            if fc < best:
                best = fc
                ub[a] = cand
    return best


@njit(cache=True, parallel=True)
def step_aff_2d(F, c0, base, bet, noise, has_noise, Cm, dtc, uref, unodes, du, ulo, uhi, x0, h, mode,
                refine, out, ustar):
    """One SL step in 2-D, control-affine with quadratic cost, min over a control grid then refinement.

    F (J, N1, N2) = V + dt/2 l0; c0 (J, N1, N2) = dt/2 l0 at the node (plus the closed-loop cost); feet
    base + bet u (± noise columns) with base (J, N1, N2, 2) = x + dt a0 + dt²/2 Da0 a0, bet (J, N1, N2, 2, k),
    noise (J, N1, N2, 2, 2); control cost dtc/2 (u - uref)^T Cm (u - uref) with Cm (J, N1, N2, k, k), uref
    (J, N1, N2, k). unodes (nc, k): the control grid (k <= 2); du (k,): its spacing; refine: golden-section
    sweeps per component (0: plain grid). Writes out (J, N1, N2) and ustar (J, N1, N2, k).
    """
    J, N1, N2 = F.shape
    nc, k = unodes.shape
    nfeet = 4 if has_noise else 1
    for task in prange(J * N1):
        j = task // N1
        i1 = task % N1
        Fj = F[j]
        u = np.empty(k)
        ub = np.empty(k)
        for i2 in range(N2):
            Cn = Cm[j, i1, i2]
            bn = base[j, i1, i2]
            Bn = bet[j, i1, i2]
            Sn = noise[j, i1, i2]
            un = uref[j, i1, i2]
            cn = c0[j, i1, i2]
            if k <= 2:
                best, ib = _aff2_grid(Fj, Cn, cn, bn, Bn, Sn, nfeet, un, dtc, unodes, x0, h, N1, N2, mode)
            else:
                best = np.inf
                ib = 0
                for c in range(nc):
                    for a in range(k):
                        u[a] = unodes[c, a]
                    v = _aff2_value(Fj, Cn, cn, bn, Bn, Sn, nfeet, u, un, dtc, x0, h, N1, N2, mode)
                    if v < best:
                        best = v
                        ib = c
            for a in range(k):
                ub[a] = unodes[ib, a]
            if refine > 0:
                best = _aff2_refine(Fj, Cn, cn, bn, Bn, Sn, nfeet, un, dtc, du, ulo, uhi, x0, h, N1, N2, mode,
                                    refine, best, ub, u)
            out[j, i1, i2] = best
            for a in range(k):
                ustar[j, i1, i2, a] = ub[a]


# ----------------------------------------------------------------------------------------------------------
# y-blind effective step with per-y feet: min_u sum_j pi_j [ ... ]


@njit(cache=True, parallel=True)
def step_blind_1d(V, pi, C, disp, noise, mode, out, arg):
    """``V^{k+1}(x_i) = min_u sum_j pi_j S_{u, y_j}[V](x_i)`` (1-D, tabulated, y-blind control).

    V (N,); pi (N, J) the weights mu_{x_i}(y_j); C, disp (J, nc, N); noise (J, ncs, N) (disp, noise in cells).
    """
    J, nc, N = disp.shape
    ncs = noise.shape[1]
    for i in prange(N):
        best = np.inf
        ib = 0
        for c in range(nc):
            cs = c if ncs > 1 else 0
            acc = 0.0
            for j in range(J):
                w = pi[i, j]
                if w == 0.0:
                    continue
                t = i + disp[j, c, i]
                s = noise[j, cs, i]
                if s != 0.0:
                    m, th = celli(t - s, N, mode)
                    val = 0.5 * interp1(V, m, th)
                    m, th = celli(t + s, N, mode)
                    val += 0.5 * interp1(V, m, th)
                else:
                    m, th = celli(t, N, mode)
                    val = interp1(V, m, th)
                acc += w * (val + C[j, c, i])
            if acc < best:
                best = acc
                ib = c
        out[i] = best
        arg[i] = ib


@njit(cache=True, parallel=True)
def average_over_y(W, pi, out):
    """out[i] = sum_j pi[i, j] W[j, i] (W (J, Nx) y-major, pi (Nx, J))."""
    J, N = W.shape
    for i in prange(N):
        acc = 0.0
        for j in range(J):
            acc += pi[i, j] * W[j, i]
        out[i] = acc


@njit(cache=True)
def all_finite(A):
    flat = A.ravel()
    for i in range(flat.size):
        if not np.isfinite(flat[i]):
            return False
    return True


# ----------------------------------------------------------------------------------------------------------
# drift affine in the control with a constant matrix, cost separable: feet computed on the fly


@njit(cache=True, parallel=True, fastmath=_FM)
def step_lin_2d(Vf, base, M, c0, c1, q, unodes, mode, out, arg):
    """One deterministic SL step in 2-D for ``a = a0(x) + B u`` (B constant) and ``l = l0(x) + q(u)``, in index
    space, over a finite control set: the tabulated step of :func:`step_tab_2d` with its tables factored,

        disp(x, u) = base(x) + M(x) u,      C(x, u) = c0(x) + q_u + c1(x) . u,

    so memory is proportional to the nodes, not to nodes x controls (base (J, N1, N2, 2) and M (J, N1, N2, 2, k)
    in cells, c0 (J, N1, N2), c1 (J, N1, N2, k), q (nc,), unodes (nc, k), k <= 2). Row order: for each row of
    nodes, the controls outside and a running minimum across the contiguous row (the row's data stay in L1).
    out, arg (J, N1, N2): the minimum and the index of the first minimising control, as :func:`step_tab_2d`.
    """
    J, N1, N2 = c0.shape
    nc, k = unodes.shape
    U2 = np.uint64(N2)
    col = 1 if k == 2 else 0
    two = 1.0 if k == 2 else 0.0
    for task in prange(J * N1):
        j = task // N1
        i1 = task % N1
        Vj = Vf[j]
        o = out[j, i1]
        ag = arg[j, i1]
        br = base[j, i1]
        Mr = M[j, i1]
        cr = c0[j, i1]
        er = c1[j, i1]
        for i2 in range(N2):
            o[i2] = np.inf
            ag[i2] = 0
        ta = i1 * 1.0
        c = 0
        while c < nc:
            # four controls per pass (the last ones repeated): four independent gather chains in flight, one
            # update of the running minimum per four candidates (ties to the lowest index, as one at a time)
            ca, cb, cc, cd = c, min(c + 1, nc - 1), min(c + 2, nc - 1), min(c + 3, nc - 1)
            ua0, ua1, qa = unodes[ca, 0], unodes[ca, col] * two, q[ca]
            ub0, ub1, qb = unodes[cb, 0], unodes[cb, col] * two, q[cb]
            uc0, uc1, qcc = unodes[cc, 0], unodes[cc, col] * two, q[cc]
            ud0, ud1, qd = unodes[cd, 0], unodes[cd, col] * two, q[cd]
            for i2 in range(N2):
                b0 = ta + br[i2, 0]
                b1 = i2 + br[i2, 1]
                m00, m01, m10, m11 = Mr[i2, 0, 0], Mr[i2, 0, col], Mr[i2, 1, 0], Mr[i2, 1, col]
                e0, e1 = er[i2, 0], er[i2, col]
                w = cr[i2]
                va = w + qa + e0 * ua0 + e1 * ua1 + _foot2(Vj, N1, N2, U2, b0 + m00 * ua0 + m01 * ua1,
                                                           b1 + m10 * ua0 + m11 * ua1, mode)
                vb = w + qb + e0 * ub0 + e1 * ub1 + _foot2(Vj, N1, N2, U2, b0 + m00 * ub0 + m01 * ub1,
                                                           b1 + m10 * ub0 + m11 * ub1, mode)
                vc = w + qcc + e0 * uc0 + e1 * uc1 + _foot2(Vj, N1, N2, U2, b0 + m00 * uc0 + m01 * uc1,
                                                            b1 + m10 * uc0 + m11 * uc1, mode)
                vd = w + qd + e0 * ud0 + e1 * ud1 + _foot2(Vj, N1, N2, U2, b0 + m00 * ud0 + m01 * ud1,
                                                           b1 + m10 * ud0 + m11 * ud1, mode)
                ka = ca
                if vb < va:
                    va = vb
                    ka = cb
                kc = cc
                if vd < vc:
                    vc = vd
                    kc = cd
                if vc < va:
                    va = vc
                    ka = kc
                if va < o[i2]:
                    o[i2] = va
                    ag[i2] = ka
            c += 4


@njit(cache=True)
def linear_deviation(A, a0, uB):
    """max |A[j, c, i, d] - a0[j, i, d] - uB[c, d]| (inf if any entry is not finite): A (J, nc, N, n) a table of
    the drift (or, with n = 1 views, of the cost) on a chunk of controls, a0 (J, N, n), uB (nc, n)."""
    J, nc, N, n = A.shape
    worst = 0.0
    for j in range(J):
        for c in range(nc):
            for i in range(N):
                for d in range(n):
                    v = A[j, c, i, d]
                    if not np.isfinite(v):
                        return np.inf
                    e = abs(v - a0[j, i, d] - uB[c, d])
                    if e > worst:
                        worst = e
    return worst
