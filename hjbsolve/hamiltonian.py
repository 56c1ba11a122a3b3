"""The Hamiltonian averaged against a discrete invariant law, with the sup over u inside the average.

docs/mathematics.md §2-3, sup convention:

    H(x, y, p, P) = sup_u { -a(x, y, u).p - tr(sigma sigma^T(x, y, u) P) - l(x, y, u) }
    Hbar(x, p, P) = sum_j pi_j H(x, y_j, p, P)          (pi = discrete mu_x)

The maximiser u*(x, p, P; y) depends on y: it is the extended (feedback) control of the effective problem.
Two kernels, one per way of taking the sup:

- ``sup_over_grid``: a finite control set (tensor grid on a box, or any list of points); the error against
  the sup over the box is O(du^2) for smooth H (the maximiser is interior) and zero at corners.
- ``sup_affine_quadratic``: ``a = a0 + B u``, ``l = l0 + c |u - u_ref|^2 / 2`` on a box: the maximiser is
  ``u* = clip(u_ref - B^T p / c, lo, hi)`` coordinate-wise (exact; for c = 0 the bang-bang endpoint).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def sup_over_grid(pi, a, cost, p, want_arg=True):
    """Hbar(x_b, p_i) = sum_j pi_bj max_u [-a_bju . p_i - cost_bju] for a batch b of x nodes.

    pi (nb, ny), a (nb, ny, nu, n), cost (nb, ny, nu) = l + tr(sigma sigma^T P), p (np, n).
    Returns hbar (nb, np), the maximising control index (nb, np, ny) (shape (nb, np, 0) when not
    ``want_arg``), and the averaged coefficients of the maximiser, ``abar (nb, np, n) = sum_j pi_j a_j*``
    and ``cbar (nb, np) = sum_j pi_j cost_j*`` (so that hbar = -abar.p - cbar). Parallel over (b, i).
    """
    nb, ny, nu, n = a.shape
    npv = p.shape[0]
    hbar = np.empty((nb, npv))
    arg = np.empty((nb, npv, ny if want_arg else 0), np.int32)
    abar = np.zeros((nb, npv, n))
    cbar = np.zeros((nb, npv))
    for bi in prange(nb * npv):
        b = bi // npv
        i = bi % npv
        acc = 0.0
        for j in range(ny):
            w = pi[b, j]
            best = -np.inf
            ib = 0
            for k in range(nu):
                v = -cost[b, j, k]
                for d in range(n):
                    v -= a[b, j, k, d] * p[i, d]
                if v > best:
                    best = v
                    ib = k
            if want_arg:
                arg[b, i, j] = ib
            acc += w * best
            for d in range(n):
                abar[b, i, d] += w * a[b, j, ib, d]
            cbar[b, i] += w * cost[b, j, ib]
        hbar[b, i] = acc
    return hbar, arg, abar, cbar


@njit(cache=True, parallel=True)
def sup_affine_quadratic(pi, a0, B, l0, trSP, c, u_ref, lo, hi, p, want_u=True):
    """Exact sup for control-affine dynamics with quadratic cost on a box (see module docstring),
    for a batch b of x nodes.

    pi (nb, ny), a0 (nb, ny, n), B (nb, ny, n, k), l0 (nb, ny), trSP (nb, ny), c >= 0, u_ref/lo/hi (k,),
    p (np, n). Returns hbar (nb, np), u* (nb, np, ny, k) (ny = 0 when not ``want_u``), and the averaged
    drift and running cost of the maximiser, ``abar (nb, np, n)``, ``lbar (nb, np)`` (trSP excluded).
    Parallel over (b, i).
    """
    nb, ny, n, k = B.shape
    npv = p.shape[0]
    hbar = np.empty((nb, npv))
    ustar = np.empty((nb, npv, ny if want_u else 0, k))
    abar = np.zeros((nb, npv, n))
    lbar = np.zeros((nb, npv))
    for bi in prange(nb * npv):
        b = bi // npv
        i = bi % npv
        acc = 0.0
        for j in range(ny):
            w = pi[b, j]
            cost = l0[b, j]
            v = -trSP[b, j] - l0[b, j]
            for d in range(n):
                v -= a0[b, j, d] * p[i, d]
                abar[b, i, d] += w * a0[b, j, d]
            for q in range(k):
                btp = 0.0
                for d in range(n):
                    btp += B[b, j, d, q] * p[i, d]
                if c > 0.0:
                    u = u_ref[q] - btp / c
                    u = min(max(u, lo[q]), hi[q])
                else:
                    u = lo[q] if btp > 0.0 else hi[q]
                if want_u:
                    ustar[b, i, j, q] = u
                cq = 0.5 * c * (u - u_ref[q]) ** 2
                v -= btp * u + cq
                cost += cq
                for d in range(n):
                    abar[b, i, d] += w * B[b, j, d, q] * u
            acc += w * v
            lbar[b, i] += w * cost
        hbar[b, i] = acc
    return hbar, ustar, abar, lbar


@njit(cache=True, parallel=True)
def sup_over_grid_1d(pi, a, cost, p, want_arg=True):
    """The same as :func:`sup_over_grid` for n = 1 and increasing p, by upper envelopes.

    For fixed (x_b, y_j), ``p -> max_u (-a_u p - cost_u)`` is the upper envelope of nu lines: it is
    computed as a discrete Legendre transform (lower convex hull of the points (a_u, cost_u), then one
    walk over the sorted slopes s = -p). Cost O(nu log nu + np) per (b, j) instead of O(nu np); the
    result is identical (up to ties, resolved to the same value). a and cost: (nb, ny, nu).
    ``want_arg=False`` skips the maximiser indices (returned array then has shape (nb, npv, 0)). Also
    returns the averaged slope and cost of the maximiser, abar (nb, np, 1) and cbar (nb, np).
    """
    nb, ny, nu = a.shape
    npv = p.size
    hbar = np.zeros((nb, npv))
    arg = np.empty((nb, npv, ny if want_arg else 0), np.int32)
    abar = np.zeros((nb, npv, 1))
    cbar = np.zeros((nb, npv))
    for b in prange(nb):
        order = np.empty(nu, np.int64)
        hull = np.empty(nu, np.int64)
        for j in range(ny):
            # insertion sort of the controls by a, ties by cost (the cheaper first)
            for k in range(nu):
                order[k] = k
            for k in range(1, nu):
                t = order[k]
                q = k - 1
                while q >= 0 and (a[b, j, order[q]] > a[b, j, t] or
                                  (a[b, j, order[q]] == a[b, j, t] and cost[b, j, order[q]] > cost[b, j, t])):
                    order[q + 1] = order[q]
                    q -= 1
                order[q + 1] = t
            # lower convex hull of (a, cost) in that order; equal a: keep the first (cheapest)
            mh = 0
            for kk in range(nu):
                k = order[kk]
                if mh > 0 and a[b, j, hull[mh - 1]] == a[b, j, k]:
                    continue
                while mh >= 2:
                    i1 = hull[mh - 2]
                    i2 = hull[mh - 1]
                    if ((cost[b, j, i2] - cost[b, j, i1]) * (a[b, j, k] - a[b, j, i1])
                            >= (cost[b, j, k] - cost[b, j, i1]) * (a[b, j, i2] - a[b, j, i1])):
                        mh -= 1
                    else:
                        break
                hull[mh] = k
                mh += 1
            # slopes s = -p increase as p decreases
            h = 0
            for ii in range(npv):
                i = npv - 1 - ii
                s = -p[i]
                while h < mh - 1:
                    k1 = hull[h]
                    k2 = hull[h + 1]
                    if cost[b, j, k2] - cost[b, j, k1] <= s * (a[b, j, k2] - a[b, j, k1]):
                        h += 1
                    else:
                        break
                k = hull[h]
                w = pi[b, j]
                hbar[b, i] += w * (s * a[b, j, k] - cost[b, j, k])
                abar[b, i, 0] += w * a[b, j, k]
                cbar[b, i] += w * cost[b, j, k]
                if want_arg:
                    arg[b, i, j] = k
    return hbar, arg, abar, cbar


def sup_inside_average(pi, a, cost, p, want_arg=True):
    """The sup over a finite control set inside the pi-average (one entry point for both kernels):
    the upper-envelope kernel when n = 1 and p increases, else the direct search. Shapes as in
    :func:`sup_over_grid`; returns (hbar, arg, abar, cbar)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    cost = np.ascontiguousarray(cost, dtype=np.float64)
    pi = np.ascontiguousarray(pi, dtype=np.float64)
    p = np.ascontiguousarray(p, dtype=np.float64)
    if a.shape[-1] == 1 and p.shape[0] > 1 and np.all(np.diff(p[:, 0]) > 0):
        return sup_over_grid_1d(pi, np.ascontiguousarray(a[..., 0]), cost, np.ascontiguousarray(p[:, 0]), want_arg)
    return sup_over_grid(pi, a, cost, p, want_arg)
