"""The fast part of the V^eps step: ``(I - (dt/eps) Q_x) V^{k+1}(x, .) = W(x, .)`` for every slow node x.

Q_x is the discrete fast generator of the cell stage (``hjbsolve.cell.generator.fast_generator``, the same
matrix whose invariant vector is mu_x). Implicit Euler in the fast time: unconditionally stable, monotone
(``(I - sQ)^{-1}`` is a non-negative matrix with unit row sums, Q being a generator), and as s = dt/eps -> inf
``(I - sQ)^{-1} -> 1 pi^T`` (pi = mu_x), so the step becomes the pi-average: asymptotic preserving.

- 1-D y: tridiagonal solve by a Thomas elimination written in the *GTH form* (Grassmann-Taksar-Heyman):
  the pivots are formed as sums of positive terms (``d_j = s up_j + e_j``, ``e_j = 1 + s lo_j e_{j-1}/d_{j-1}``)
  instead of differences, so no cancellation occurs however large s is (eps = 1e-10 is fine); the factors
  depend on (x, s) only and are computed once, each step is one forward and one backward sweep, vectorised
  over x (y-major storage) and parallel over blocks of x nodes.
- m = 2: a sparse LU of ``I - sQ_x`` per slow node (SuperLU), factorised once and reused every step.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from numba import njit, prange

from ..cell.generator import bernoulli
from .kernels import BLOCK


@njit(cache=True)
def _edge_rates_1d(coef, w, up, lo):
    for e in range(w.size):
        up[e] = coef[e] * bernoulli(-w[e])
        lo[e + 1] = coef[e] * bernoulli(w[e])


def tridiagonal_rates(gen) -> tuple[np.ndarray, np.ndarray]:
    """(up, lo) rates of a 1-D generator: up[j] = r(j -> j+1), lo[j] = r(j -> j-1) (zero at the ends).

    Taken from the generator's edge data (edge j joins nodes j and j+1 in 1-D), i.e. the entries of
    ``gen.Q`` without assembling the sparse matrix.
    """
    n = gen.size
    up = np.zeros(n)
    lo = np.zeros(n)
    if not (np.array_equal(gen.src, np.arange(n - 1)) and np.array_equal(gen.dst, np.arange(1, n))):
        Q = gen.Q
        up[:-1] = Q.diagonal(1)
        lo[1:] = Q.diagonal(-1)
        return up, lo
    _edge_rates_1d(np.ascontiguousarray(gen.coef, float), np.ascontiguousarray(gen.w, float), up, lo)
    return up, lo


@njit(cache=True, parallel=True)
def gth_factor(up, lo, s):
    """Factors of ``I - s Q`` for tridiagonal generators, one per column i: up, lo (Ny, Nx).

    Returns f (Ny, Nx) (forward multipliers), invd (Ny, Nx) (inverse pivots), g (Ny, Nx) (backward
    multipliers) of the elimination described in the module docstring.
    """
    Ny, Nx = up.shape
    f = np.zeros((Ny, Nx))
    invd = np.empty((Ny, Nx))
    g = np.empty((Ny, Nx))
    for i in prange(Nx):
        e = 1.0
        d = s * up[0, i] + e
        invd[0, i] = 1.0 / d
        g[0, i] = s * up[0, i] / d
        for j in range(1, Ny):
            slo = s * lo[j, i]
            f[j, i] = slo / d
            e = 1.0 + slo * e / d
            d = s * up[j, i] + e
            invd[j, i] = 1.0 / d
            g[j, i] = s * up[j, i] / d
    return f, invd, g


#: below this many unknowns the sweeps run on one thread (a fork/join costs more than the work)
PARALLEL_MIN = 1_000_000


def gth_solve(f, invd, g, W, out):
    """Solve ``(I - sQ) V = W`` column by column with the factors of :func:`gth_factor` (W, out (Ny, Nx))."""
    if W.size >= PARALLEL_MIN:
        _gth_solve_parallel(f, invd, g, W, out)
    else:
        _gth_solve_serial(f, invd, g, W, out)


@njit(cache=True)
def _gth_solve_serial(f, invd, g, W, out):
    _gth_sweeps(f, invd, g, W, out, 0, W.shape[1])


@njit(cache=True, parallel=True)
def _gth_solve_parallel(f, invd, g, W, out):
    Nx = W.shape[1]
    nb = (Nx + BLOCK - 1) // BLOCK
    for b in prange(nb):
        _gth_sweeps(f, invd, g, W, out, b * BLOCK, min(b * BLOCK + BLOCK, Nx))


@njit(cache=True)
def _gth_sweeps(f, invd, g, W, out, i0, i1):
    """Forward and backward sweeps for the columns i0 <= i < i1 (inner loop over x: contiguous)."""
    Ny = W.shape[0]
    for i in range(i0, i1):
        out[0, i] = W[0, i]
    for j in range(1, Ny):
        for i in range(i0, i1):
            out[j, i] = W[j, i] + f[j, i] * out[j - 1, i]
    for i in range(i0, i1):
        out[Ny - 1, i] = out[Ny - 1, i] * invd[Ny - 1, i]
    for j in range(Ny - 2, -1, -1):
        for i in range(i0, i1):
            out[j, i] = out[j, i] * invd[j, i] + g[j, i] * out[j + 1, i]


class FastSolver:
    """Implicit fast step ``V = (I - (dt/eps) Q_x)^{-1} W`` for all slow nodes; W, V stored (Ny, Nx)."""

    def __init__(self, generators: list, s: float):
        self.s = float(s)
        self.ny = generators[0].size
        self.nx = len(generators)
        self.tridiagonal = generators[0].grid.ndim == 1
        if self.tridiagonal:
            up = np.empty((self.ny, self.nx))
            lo = np.empty((self.ny, self.nx))
            for i, gen in enumerate(generators):
                up[:, i], lo[:, i] = tridiagonal_rates(gen)
            self.factors = gth_factor(up, lo, self.s)
        else:
            eye = sp.identity(self.ny, format="csc")
            self.lus = [spla.splu((eye - self.s * gen.Q).tocsc()) for gen in generators]

    def solve(self, W: np.ndarray, out: np.ndarray) -> np.ndarray:
        if self.tridiagonal:
            gth_solve(*self.factors, W, out)
        else:
            for i, lu in enumerate(self.lus):
                out[:, i] = lu.solve(np.ascontiguousarray(W[:, i]))
        return out
