"""Invariant laws of the discrete fast process: ``Q^T pi = 0``, ``pi >= 0``, ``sum pi = 1``.

``pi`` is a probability vector on the nodes of the y grid (a discrete measure, not a density: the
density is ``pi / cell_volume``). Averages ``∫ phi dmu_x`` are approximated by ``sum_i pi_i phi(y_i)``.

How it is computed:
- reversible chains (gradient drift given by a potential, or any 1-D chain, which is a birth-death
  chain): by detailed balance, exactly, in log space (no overflow however deep the wells);
- otherwise: a sparse direct solve of ``Q^T pi = 0`` with one equation replaced by ``pi_{i0} = 1`` at a
  node ``i0`` of large mass, then normalisation (SuperLU, for m <= 2); for m = 3 the same pinned system
  by ILU-preconditioned GMRES (sparse LU fill-in grows like N^{4/3} there).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..errors import NumericalError
from .generator import Generator

log = logging.getLogger(__name__)


def log_gibbs_weights(potential: np.ndarray) -> np.ndarray:
    """Normalised log-probabilities ``-U - logsumexp(-U)`` of the discrete Gibbs law."""
    z = -np.asarray(potential, float)
    zmax = z.max()
    return z - (zmax + np.log(np.exp(z - zmax).sum()))


def _normalise_log(logp: np.ndarray) -> np.ndarray:
    p = np.exp(logp - logp.max())
    return p / p.sum()


def invariant_measure(gen: Generator, potential: np.ndarray | None = None) -> np.ndarray:
    """The invariant probability vector ``pi`` of the generator ``gen`` (shape ``(grid.size,)``).

    If ``potential`` is given the chain must have been assembled from it (``fast_generator(...,
    potential=U)``): then ``pi ∝ exp(-U)`` exactly. In 1-D the chain is reversible whatever the drift:
    ``log pi_{i+1} - log pi_i = w_i`` (Peclet number of edge i). Otherwise a sparse solve.
    """
    if potential is not None:
        return _normalise_log(-np.asarray(potential, float).ravel())
    if gen.grid.ndim == 1:
        return _normalise_log(np.concatenate([[0.0], np.cumsum(gen.w)]))
    return _solve_stationary(gen.Q, iterative=gen.grid.ndim >= 3)


def _solve_stationary(Q: sp.csr_matrix, iterative: bool) -> np.ndarray:
    A = Q.T.tocsr().astype(float)
    # pin at a node of large mass: first guess the node with the slowest exit rate per neighbour (the
    # drift is small there), then re-pin at the largest entry of the solution until the pin holds it
    nbrs = np.diff(Q.indptr) - 1
    i0 = int(np.argmin(-Q.diagonal() / np.maximum(nbrs, 1)))
    pi, ok = None, False
    for _ in range(4):
        pi, ok = _pinned_solve(A, i0, iterative)
        i1 = int(np.argmax(np.abs(pi))) if np.all(np.isfinite(pi)) else i0
        if ok and abs(pi[i1]) <= 1e6 * abs(pi[i0]):
            break
        i0 = i1
    if not ok or not np.all(np.isfinite(pi)):
        raise NumericalError("the stationary Fokker-Planck solve failed (GMRES did not converge or the "
                             "solution is not finite)")
    pi = np.maximum(pi, 0.0)
    s = pi.sum()
    if not s > 0:
        raise NumericalError("stationary Fokker-Planck solve gave a zero vector")
    pi /= s
    res = np.abs(A @ pi).max() / max(np.abs(Q.diagonal()).max(), 1.0)
    if res > 1e-8:
        raise NumericalError(f"stationary Fokker-Planck residual {res:.2e} too large")
    return pi


def _pinned_solve(A: sp.csr_matrix, i0: int, iterative: bool) -> tuple[np.ndarray, bool]:
    """Solve ``A pi = 0`` with row i0 replaced by ``pi_i0 = 1``; returns (pi, converged)."""
    n = A.shape[0]
    A = A.tolil()
    A[i0, :] = 0.0
    A[i0, i0] = 1.0
    A = A.tocsc()
    rhs = np.zeros(n)
    rhs[i0] = 1.0
    if not iterative:
        return spla.splu(A).solve(rhs), True
    ilu = spla.spilu(A, drop_tol=1e-8, fill_factor=30)
    M = spla.LinearOperator(A.shape, ilu.solve)
    x, info = spla.gmres(A, rhs, M=M, rtol=1e-12, atol=0.0, restart=50, maxiter=100)
    return x, info == 0


def boundary_mass(pi: np.ndarray, shape: tuple[int, ...]) -> dict[str, float]:
    """Mass of ``pi`` on each face of the box (outermost layer of nodes), keyed like 'y1 low'."""
    p = np.asarray(pi).reshape(shape)
    out = {}
    for k in range(len(shape)):
        name = f"y{k + 1}" if len(shape) > 1 else "y"
        out[f"{name} low"] = float(np.take(p, 0, axis=k).sum())
        out[f"{name} high"] = float(np.take(p, -1, axis=k).sum())
    return out
