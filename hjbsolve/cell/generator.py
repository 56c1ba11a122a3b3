"""Monotone discretisation of the fast generator ``L^x v = b . D_y v + tr(tau tau^T D_yy v)``.

The discrete generator is the matrix ``Q`` of a continuous-time Markov chain on the nodes of a
tensor grid (truncated box, reflecting boundary: no flux leaves the box):

    (Q v)_i = sum_j r(i -> j) (v_j - v_i),      r(i -> j) >= 0,   rows sum to zero.

Only nearest neighbours along each axis are connected, with Scharfetter-Gummel (Chang-Cooper,
exponentially fitted) rates. For the edge from node i to j = i + e_k, with ``D = (tau tau^T)_kk`` at the
edge midpoint and the cell Peclet number ``w = b_k h_k / D`` (drift at the midpoint),

    r(i -> j) = D / h_k^2 * B(-w),     r(j -> i) = D / h_k^2 * B(w),     B(z) = z / (e^z - 1).

For a gradient drift ``b = -(tau tau^T) grad U`` (with tau tau^T constant along the edge) the Peclet
number is taken exactly as ``w = -(U_j - U_i)``: then the chain satisfies detailed balance with
``pi_i ∝ exp(-U_i)`` on every edge, so the discrete invariant law is the discrete Gibbs law exactly and
averages against it converge as fast as the (trapezoidal) quadrature does.

Consistency: ``(Q v)_i = D B(w) (v_{i+1} - 2 v_i + v_{i-1}) / h^2 + b (v_{i+1} - v_i) / h``, first order in
general and second order where the cell Peclet number is small (B(w) = 1 - w/2 + O(w^2)). The scheme is
monotone for every h (all off-diagonal rates are non-negative). Off-diagonal diffusion (correlated fast
noise) is not supported: ``tau tau^T`` must be diagonal.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit, prange

from ..errors import NumericalError
from ..grid import Grid


@njit(cache=True, inline="always")
def bernoulli(z):
    """B(z) = z / (exp(z) - 1), with B(0) = 1; accurate for all z."""
    if abs(z) < 1e-8:
        return 1.0 - 0.5 * z
    return z / np.expm1(z)


@njit(cache=True)
def _edge_count(shape):
    total = 0
    for k in range(shape.size):
        e = 1
        for l in range(shape.size):
            e *= shape[l] - 1 if l == k else shape[l]
        total += e
    return total


@njit(cache=True)
def _peclet_numbers(shape, h, drift, diffusion, potential, use_potential):
    """Edge list (i, j) with j = i + e_k, edge diffusion D/h^2 and Peclet number w."""
    d = shape.size
    nedge = _edge_count(shape)
    src = np.empty(nedge, np.int64)
    dst = np.empty(nedge, np.int64)
    coef = np.empty(nedge)
    w = np.empty(nedge)
    strides = np.ones(d, np.int64)
    for k in range(d - 2, -1, -1):
        strides[k] = strides[k + 1] * shape[k + 1]
    size = strides[0] * shape[0]
    offset = 0
    for k in range(d):
        # nodes with index_k < n_k - 1, enumerated in C order of the reduced shape
        red = shape.copy()
        red[k] -= 1
        nred = 1
        for l in range(d):
            nred *= red[l]
        for e in prange(nred):
            # unravel e in the reduced shape, ravel in the full shape
            rem = e
            i = 0
            for l in range(d - 1, -1, -1):
                il = rem % red[l]
                rem //= red[l]
                i += il * strides[l]
            j = i + strides[k]
            dmid = 0.5 * (diffusion[i, k] + diffusion[j, k])
            src[offset + e] = i
            dst[offset + e] = j
            coef[offset + e] = dmid / (h[k] * h[k])
            if use_potential:
                w[offset + e] = -(potential[j] - potential[i])
            else:
                w[offset + e] = 0.5 * (drift[i, k] + drift[j, k]) * h[k] / dmid
        offset += nred
    return src, dst, coef, w


@njit(cache=True, parallel=True)
def _rates(coef, w):
    n = w.size
    fwd = np.empty(n)
    bwd = np.empty(n)
    for e in prange(n):
        fwd[e] = coef[e] * bernoulli(-w[e])
        bwd[e] = coef[e] * bernoulli(w[e])
    return fwd, bwd


class Generator:
    """Discrete fast generator on a grid: the sparse matrix ``Q`` and its edge data.

    ``Q`` is a CSR matrix with ``Q @ v`` approximating ``L v`` (backward generator). The forward
    (Fokker-Planck) operator is ``Q.T``.
    """

    def __init__(self, grid: Grid, src, dst, coef, w):
        self.grid = grid
        self.src, self.dst, self.coef, self.w = src, dst, coef, w
        self._Q = None

    @property
    def Q(self) -> sp.csr_matrix:
        """The generator matrix (assembled on first use: reversible chains never need it)."""
        if self._Q is None:
            fwd, bwd = _rates(self.coef, self.w)
            n = self.grid.size
            rows = np.concatenate([self.src, self.dst])
            cols = np.concatenate([self.dst, self.src])
            off = sp.csr_matrix((np.concatenate([fwd, bwd]), (rows, cols)), shape=(n, n))
            exit_rate = np.asarray(off.sum(axis=1)).ravel()
            self._Q = (off - sp.diags(exit_rate)).tocsr()
        return self._Q

    @property
    def size(self) -> int:
        return self.grid.size


def fast_generator(grid: Grid, diffusion: np.ndarray, drift: np.ndarray | None = None,
                   potential: np.ndarray | None = None) -> Generator:
    """Assemble the Scharfetter-Gummel generator of ``L v = b . Dv + sum_k D_k d_kk v`` on ``grid``.

    Parameters
    ----------
    grid : the y grid (m = grid.ndim axes).
    diffusion : array (grid.size, m) or broadcastable: the diagonal of ``tau tau^T`` at the nodes.
    drift : array (grid.size, m): the drift ``b`` at the nodes (midpoint values by averaging).
    potential : array (grid.size,): ``U`` with ``b = -(tau tau^T) grad U``; if given, the drift is not
        used and the Peclet numbers are the exact potential differences (discrete Gibbs law exact).
    """
    m, n = grid.ndim, grid.size
    diffusion = np.ascontiguousarray(np.broadcast_to(np.asarray(diffusion, float), (n, m)))
    if not np.all(diffusion > 0):
        bad = np.argwhere(~(diffusion > 0))[0]
        y = grid.flat_points()[bad[0]]
        raise NumericalError(f"fast diffusion (tau tau^T)_{bad[1] + 1}{bad[1] + 1} = {diffusion[tuple(bad)]:g} "
                             f"is not positive at y = {np.array2string(y, precision=4)}: the fast noise must be "
                             "uniformly elliptic")
    use_potential = potential is not None
    if use_potential:
        potential = np.ascontiguousarray(np.asarray(potential, float).reshape(n))
        drift_arr = np.zeros((1, m))
    else:
        if drift is None:
            raise ValueError("give the drift or the potential")
        drift_arr = np.ascontiguousarray(np.broadcast_to(np.asarray(drift, float), (n, m)))
        potential = np.zeros(1)
    src, dst, coef, w = _peclet_numbers(np.asarray(grid.n, np.int64), grid.h, drift_arr, diffusion,
                                        potential, use_potential)
    return Generator(grid, src, dst, coef, w)
