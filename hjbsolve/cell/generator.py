"""Monotone discretisation of the fast generator ``L^x v = b . D_y v + tr(A D_yy v)``, ``A = tau tau^T``.

The discrete generator is the matrix ``Q`` of a continuous-time Markov chain on the nodes of a
tensor grid (truncated box, reflecting boundary: no flux leaves the box):

    (Q v)_i = sum_j r(i -> j) (v_j - v_i),      r(i -> j) >= 0,   rows sum to zero.

**Edges.** Nearest neighbours along each axis (vector ``h_k e_k``) and, where the diffusion has
off-diagonal entries, along the cell diagonals (``d_kl = h_k e_k + s h_l e_l``, s = sign A_kl). ``A`` is
split over the edge directions as ``A = sum_k D_k e_k e_k^T + sum_{k<l} |A_kl| d_kl d_kl^T / (h_k h_l)``
with the reduced axis diffusion

    D_k = A_kk - sum_{l != k} |A_kl| h_k / h_l      (must be >= 0: monotonicity).

Each edge e of direction v_e and coefficient c_e (D_k / h_k², or |A_kl| / (h_k h_l) on a diagonal)
carries Scharfetter-Gummel (Chang-Cooper, exponentially fitted) rates

    r(i -> j) = c_e B(-w_e),     r(j -> i) = c_e B(w_e),     B(z) = z / (e^z - 1),

with c_e at the edge midpoint. Summed over an edge family with w = 0 this discretises the divergence form
``div(A grad v)``; the drift is therefore put on the axis edges as ``btilde = b - div A`` (so that
``div(A grad v) + btilde . grad v = tr(A D² v) + b . grad v``), with the axis Peclet number
``w = btilde_k h_k / D_k``; diagonal edges carry no drift (w = 0). D_k = 0 gives the upwind limit.

**Gradient drifts.** For ``b = -A grad U`` with A constant the Peclet numbers are taken exactly as
``w = -(U_j - U_i)`` on every edge (axis and diagonal): then the chain satisfies detailed balance with
``pi_i ∝ exp(-U_i)`` on every edge, so the discrete invariant law is the discrete Gibbs law exactly and
averages against it converge as fast as the (trapezoidal) quadrature does.

**Order and monotonicity.** ``(Q v)_i`` is consistent to first order in general and to second order where
the cell Peclet numbers are small (B(w) = 1 - w/2 + O(w²)). All rates are non-negative for every h as long
as D_k >= 0, i.e. ``sum_{l != k} |A_kl| h_k / h_l <= A_kk``: in 2-D, ``|A_12| <= min(A_11 h_2/h_1,
A_22 h_1/h_2)`` (diagonal dominance on a square grid). In 2-D a positive definite A always admits such a grid
aspect ratio h_1/h_2 (the range is non-empty because A_12² < A_11 A_22); when the y grid does not, assembly
stops with an error that gives the admissible range.
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
def _edges(shape, offset):
    """Directed edges (i, i + offset) of a C-ordered tensor grid for an index offset vector (entries -1, 0,
    1): the source nodes whose target lies inside the grid, and the flat index shift."""
    d = shape.size
    strides = np.ones(d, np.int64)
    for k in range(d - 2, -1, -1):
        strides[k] = strides[k + 1] * shape[k + 1]
    size = strides[0] * shape[0]
    shift = 0
    for k in range(d):
        shift += offset[k] * strides[k]
    ok = np.empty(size, np.bool_)
    for i in prange(size):
        rem = i
        good = True
        for k in range(d - 1, -1, -1):
            ik = rem % shape[k]
            rem //= shape[k]
            t = ik + offset[k]
            if t < 0 or t >= shape[k]:
                good = False
        ok[i] = good
    return np.nonzero(ok)[0], shift


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

    Edges e = (src[e] -> dst[e]) with midpoint coefficient coef[e] and Peclet number w[e]; the rates are
    ``coef B(-w)`` forward and ``coef B(w)`` backward. In 1-D the edges are (i, i + 1), i = 0 .. N - 2, in
    order. ``Q`` is a CSR matrix with ``Q @ v`` approximating ``L v`` (backward generator); the forward
    (Fokker-Planck) operator is ``Q.T``.
    """

    def __init__(self, grid: Grid, src, dst, coef, w):
        self.grid = grid
        self.src, self.dst, self.coef, self.w = src, dst, coef, w
        self._Q = None

    @property
    def Q(self) -> sp.csr_matrix:
        """The generator matrix (assembled on first use: reversible 1-D chains never need it)."""
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


def _one_line(a) -> str:
    """A small array on one line (error messages are one line)."""
    return np.array2string(np.asarray(a, float), precision=4, separator=", ", max_line_width=10**6).replace("\n", "")


def _as_matrix(diffusion, n: int, m: int) -> np.ndarray:
    """``tau tau^T`` as (n, m, m): accepts (n, m, m), (m, m), a diagonal (n, m) / (m,) or a scalar."""
    a = np.asarray(diffusion, float)
    if a.ndim >= 2 and a.shape[-2:] == (m, m) and not (m == 1 and a.ndim == 2 and a.shape[0] == n):
        return np.ascontiguousarray(np.broadcast_to(a, (n, m, m)))
    diag = np.broadcast_to(a, (n, m)) if a.ndim <= 2 else a.reshape(n, m)
    out = np.zeros((n, m, m))
    idx = np.arange(m)
    out[:, idx, idx] = diag
    return out


def _divergence(A: np.ndarray, grid: Grid) -> np.ndarray:
    """``(div A)_l = sum_k d_k A_kl`` at the nodes (second-order differences; zero for constant A)."""
    n, m = grid.size, grid.ndim
    if np.all(A == A[:1]):                      # constant diffusion (the common case): no correction
        return np.zeros((n, m))
    Ag = A.reshape(tuple(grid.n) + (m, m))
    div = np.zeros(tuple(grid.n) + (m,))
    for k in range(m):
        if grid.n[k] >= 3:
            div += np.gradient(Ag[..., k, :], grid.h[k], axis=k, edge_order=2)
    return div.reshape(n, m)


def fast_generator(grid: Grid, diffusion: np.ndarray, drift: np.ndarray | None = None,
                   potential: np.ndarray | None = None) -> Generator:
    """Assemble the generator of ``L v = b . Dv + tr(A D²v)`` on ``grid`` (module docstring).

    Parameters
    ----------
    grid : the y grid (m = grid.ndim axes).
    diffusion : ``A = tau tau^T`` at the nodes: (grid.size, m, m), or its diagonal (grid.size, m), or
        anything broadcastable to those (a constant matrix, a scalar).
    drift : array (grid.size, m): the drift ``b`` at the nodes.
    potential : array (grid.size,): ``U`` with ``b = -A grad U`` and A constant; if given, the drift is not
        used and the Peclet numbers are the exact potential differences (discrete Gibbs law exact).
    """
    m, n = grid.ndim, grid.size
    A = _as_matrix(diffusion, n, m)
    if not np.all(np.isfinite(A)):
        raise NumericalError("the fast diffusion tau tau^T is not finite on the y grid")
    h = np.asarray(grid.h, float)
    diag = np.diagonal(A, axis1=1, axis2=2)
    if not np.all(diag > 0):
        bad = np.argwhere(~(diag > 0))[0]
        y = grid.flat_points()[bad[0]]
        raise NumericalError(f"fast diffusion (tau tau^T)_{bad[1] + 1}{bad[1] + 1} = {diag[tuple(bad)]:g} "
                             f"is not positive at y = {_one_line(y)}: the fast noise must be uniformly elliptic")
    if m > 1:
        lam = np.linalg.eigvalsh(0.5 * (A + np.swapaxes(A, 1, 2)))[:, 0]
        bad = lam <= 1e-12 * np.trace(A, axis1=1, axis2=2)
        if bad.any():
            i = int(np.argmax(bad))
            y = grid.flat_points()[i]
            raise NumericalError(f"fast diffusion tau tau^T = {_one_line(A[i])} is singular at y = {_one_line(y)} "
                                 f"(smallest eigenvalue {lam[i]:.3g}): the fast noise must be uniformly elliptic")
    # reduced axis diffusion D_k = A_kk - sum_l |A_kl| h_k / h_l
    D = diag.copy()
    for k in range(m):
        for l in range(m):
            if l != k:
                D[:, k] -= np.abs(A[:, k, l]) * h[k] / h[l]
    tol = 1e-12 * diag
    if np.any(D < -tol):
        i, k = np.argwhere(D < -tol)[0]
        y = grid.flat_points()[i]
        l = int(np.argmax(np.abs(A[i, k]) * (np.arange(m) != k)))
        lo, hi = abs(A[i, k, l]) / A[i, l, l], A[i, k, k] / abs(A[i, k, l])
        raise NumericalError(
            f"grid.y: the fast diffusion tau tau^T at y = {_one_line(y)} is too correlated for the y grid: the "
            f"monotone stencil needs |A_{k + 1}{l + 1}| <= A_{k + 1}{k + 1} h_{l + 1}/h_{k + 1} (A = {_one_line(A[i])}); "
            f"choose grid.y so that h_{k + 1}/h_{l + 1} lies in [{lo:.3g}, {hi:.3g}] (now {h[k] / h[l]:.3g})")
    D = np.maximum(D, 0.0)

    use_potential = potential is not None
    if use_potential:
        U = np.asarray(potential, float).reshape(n)
    else:
        if drift is None:
            raise ValueError("give the drift or the potential")
        btilde = np.broadcast_to(np.asarray(drift, float), (n, m)) - _divergence(A, grid)
    shape = np.asarray(grid.n, np.int64)
    srcs, dsts, coefs, ws = [], [], [], []
    for k in range(m):
        if m == 1:
            i = np.arange(n - 1)
            j = i + 1
        else:
            off = np.zeros(m, np.int64)
            off[k] = 1
            i, shift = _edges(shape, off)
            j = i + shift
        Dm = 0.5 * (D[i, k] + D[j, k])
        if use_potential:
            w = -(U[j] - U[i])
        else:
            bm = 0.5 * (btilde[i, k] + btilde[j, k])
            with np.errstate(divide="ignore", invalid="ignore"):
                w = np.where(Dm > 0, bm * h[k] / np.where(Dm > 0, Dm, 1.0), 0.0)
            # D_k = 0 on an edge: the upwind limit of the fitted rates, coef B(-w) -> b+ / h
            zero = Dm <= 0
            if zero.any():
                Dm = Dm.copy()
                w = w.copy()
                bz = bm[zero] * h[k]
                Dm[zero] = np.maximum(np.abs(bz), 1e-300) * 1e-8
                w[zero] = bz / Dm[zero]
            coef = Dm / h[k] ** 2
        if use_potential:
            coef = Dm / h[k] ** 2
        srcs.append(i)
        dsts.append(j)
        coefs.append(coef)
        ws.append(w)
    for k in range(m):
        for l in range(k + 1, m):
            a = A[:, k, l]
            for s in (1, -1):
                part = np.maximum(s * a, 0.0)
                if not np.any(part > 0):
                    continue
                off = np.zeros(m, np.int64)
                off[k], off[l] = 1, s
                i, shift = _edges(shape, off)
                j = i + shift
                c = 0.5 * (part[i] + part[j]) / (h[k] * h[l])
                keep = c > 0
                i, j, c = i[keep], j[keep], c[keep]
                srcs.append(i)
                dsts.append(j)
                coefs.append(c)
                ws.append(-(U[j] - U[i]) if use_potential else np.zeros(len(i)))
    return Generator(grid, np.concatenate(srcs), np.concatenate(dsts), np.concatenate(coefs),
                     np.concatenate(ws))
