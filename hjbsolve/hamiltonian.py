"""The Hamiltonian averaged against a discrete invariant law, with the sup over u inside the average.

MATH.md §2-3, sup convention:

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
def sup_over_grid(pi, a, l, trSP, p):
    """Hbar(p_i) = sum_j pi_j max_u [-a_ju . p_i - trSP_ju - l_ju] for each row p_i.

    pi (ny,), a (ny, nu, n), l (ny, nu), trSP (ny, nu) = tr(sigma sigma^T P), p (np, n).
    Returns hbar (np,) and the maximising control index (np, ny).
    """
    ny, nu, n = a.shape
    npv = p.shape[0]
    hbar = np.empty(npv)
    arg = np.empty((npv, ny), np.int32)
    for i in prange(npv):
        acc = 0.0
        for j in range(ny):
            best = -np.inf
            ib = 0
            for k in range(nu):
                v = -trSP[j, k] - l[j, k]
                for d in range(n):
                    v -= a[j, k, d] * p[i, d]
                if v > best:
                    best = v
                    ib = k
            arg[i, j] = ib
            acc += pi[j] * best
        hbar[i] = acc
    return hbar, arg


@njit(cache=True, parallel=True)
def sup_affine_quadratic(pi, a0, B, l0, trSP, c, u_ref, lo, hi, p):
    """Exact sup for control-affine dynamics with quadratic cost on a box (see module docstring).

    pi (ny,), a0 (ny, n), B (ny, n, k), l0 (ny,), trSP (ny,), c >= 0, u_ref/lo/hi (k,), p (np, n).
    Returns hbar (np,) and u* (np, ny, k).
    """
    ny, n, k = B.shape
    npv = p.shape[0]
    hbar = np.empty(npv)
    ustar = np.empty((npv, ny, k))
    for i in prange(npv):
        acc = 0.0
        for j in range(ny):
            v = -trSP[j] - l0[j]
            for d in range(n):
                v -= a0[j, d] * p[i, d]
            for q in range(k):
                btp = 0.0
                for d in range(n):
                    btp += B[j, d, q] * p[i, d]
                if c > 0.0:
                    u = u_ref[q] - btp / c
                    u = min(max(u, lo[q]), hi[q])
                else:
                    u = lo[q] if btp > 0.0 else hi[q]
                ustar[i, j, q] = u
                v -= btp * u + 0.5 * c * (u - u_ref[q]) ** 2
            acc += pi[j] * v
        hbar[i] = acc
    return hbar, ustar
