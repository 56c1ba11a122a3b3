"""Discrete Legendre-Fenchel transforms and the effective Lagrangian.

Convention (docs/mathematics.md, sup convention): ``Hbar(x, p) = sup_q { -q.p - Lbar(x, q) }``, q the averaged
velocity ``abar``. For convex, lower semicontinuous Lbar this inverts to

    Lbar(x, q) = sup_p { -q.p - Hbar(x, p) } = Hbar(x, .)^*(-q).

The discrete transform ``f*(s) = max_i (s . p_i - f_i)`` over a tensor grid of p is computed by the
linear-time algorithm (Lucet 1997): in 1-D, the lower convex hull of the points ``(p_i, f_i)``, then
one merge-walk over the sorted slopes ``s``; in several dimensions the transform factorises into 1-D
transforms along each axis. Cost O(N_p + N_s) per line. Exactness: the discrete transform equals
the continuous one wherever the maximiser p*(s) lies on the p grid; otherwise, for f with second
derivative <= C, it is below by at most ``C h_p^2 / 8`` (h_p the p spacing). Outside the range of
slopes of f on the grid the discrete transform is affine (the maximiser sits at the boundary of the
p box): choose the p box wide enough for the q values of interest.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True)
def _conjugate_line(p, f, s, out, hull):
    """out[k] = max_i (s[k] p[i] - f[i]) for sorted p (increasing) and sorted s (increasing)."""
    n = p.size
    # lower convex hull of (p_i, f_i) (monotone chain)
    m = 0
    for i in range(n):
        while m >= 2:
            i1 = hull[m - 2]
            i2 = hull[m - 1]
            # remove i2 if it lies on or above the segment i1 -> i
            if (f[i2] - f[i1]) * (p[i] - p[i1]) >= (f[i] - f[i1]) * (p[i2] - p[i1]):
                m -= 1
            else:
                break
        hull[m] = i
        m += 1
    j = 0
    for k in range(s.size):
        # advance while the next hull vertex gives a larger value (slopes of the hull increase)
        while j < m - 1:
            a = hull[j]
            b = hull[j + 1]
            if (f[b] - f[a]) <= s[k] * (p[b] - p[a]):
                j += 1
            else:
                break
        out[k] = s[k] * p[hull[j]] - f[hull[j]]


@njit(cache=True, parallel=True)
def conjugate_lines(p, F, s):
    """Row-wise transform: F (nlines, np) on the grid p -> (nlines, ns) on the sorted slopes s."""
    nl = F.shape[0]
    out = np.empty((nl, s.size))
    for r in prange(nl):
        hull = np.empty(p.size, np.int64)
        _conjugate_line(p, F[r], s, out[r], hull)
    return out


def legendre_fenchel(p_axes: list, f: np.ndarray, s_axes: list) -> np.ndarray:
    """``f*(s) = max_p (s.p - f(p))`` on a tensor grid: ``f`` has the p axes *last*
    (shape ``(..., n_p1, ..., n_pd)``); returns shape ``(..., n_s1, ..., n_sd)``.

    Each axis: ``g(s_k, rest) = max_{p_k} (s_k p_k - g(p_k, rest))`` with the other slope terms
    carried along, which is exact for separable maximisation over a tensor grid.
    """
    d = len(p_axes)
    g = np.asarray(f, float)
    # f*(s1, s2) = max_{p1} [ s1 p1 - (-h(p1, s2)) ],  h(p1, s2) = max_{p2} (s2 p2 - f(p1, p2)):
    # transform the last axis, negate, transform the next axis, ...
    for axis in range(d - 1, -1, -1):
        ax = g.ndim - d + axis
        moved = np.moveaxis(g, ax, -1)
        shp = moved.shape
        lines = np.ascontiguousarray(moved.reshape(-1, shp[-1]))
        out = conjugate_lines(np.asarray(p_axes[axis], float), lines, np.asarray(s_axes[axis], float))
        g = np.moveaxis(out.reshape(shp[:-1] + (len(s_axes[axis]),)), -1, ax)
        if axis > 0:
            g = -g
    return g


def effective_lagrangian(p_axes: list, hbar: np.ndarray, q_axes: list) -> np.ndarray:
    """``Lbar(x, q) = sup_p { -q.p - Hbar(x, p) }`` from an Hbar table with the p axes last.

    ``q_axes``: one increasing array per p axis. Returns an array with the q axes last.
    """
    s_axes = [-np.asarray(q, float)[::-1] for q in q_axes]      # s = -q, increasing
    lstar = legendre_fenchel(p_axes, hbar, s_axes)
    d = len(q_axes)
    return np.flip(lstar, axis=tuple(range(lstar.ndim - d, lstar.ndim)))


def default_q_axes(p_axes: list, hbar: np.ndarray, n: int | None = None) -> list:
    """q grids covering the slopes -dHbar/dp seen on the table (where the discrete Lbar is exact)."""
    out = []
    d = len(p_axes)
    for k, p in enumerate(p_axes):
        slopes = np.diff(hbar, axis=hbar.ndim - d + k) / np.diff(p).reshape(
            (-1,) + (1,) * (d - 1 - k))
        lo, hi = -np.nanmax(slopes), -np.nanmin(slopes)
        out.append(np.linspace(lo, hi, n or len(p)))
    return out
