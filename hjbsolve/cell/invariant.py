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
import warnings

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..errors import NumericalError
from .generator import Generator, fast_generator

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


#: estimated mass of mu_x beyond a face of the y box above which a warning is given
CUT_MASS_WARN = 1e-6
#: ... and above which the box (or the fast drift) is refused: the law is not confined
CUT_MASS_FAIL = 0.05


class BoxWarning(UserWarning):
    """The y box cuts off a visible part of the fast invariant law."""


def cut_mass(pi: np.ndarray, shape: tuple[int, ...]) -> dict[str, float]:
    """Estimated mass of the continuous law *beyond* each face of the box, keyed like 'y1 low'.

    Along every grid line normal to a face the tail is taken exponential from the last two nodes
    (p_face, p_in): its mass beyond the face is ``p_face / log(p_in / p_face)`` (exact for an exponential
    tail, the Mills-ratio value for a Gaussian one), independent of the spacing. Where the law does not
    decay toward the face (p_in <= p_face) the estimate is infinite.
    """
    p = np.asarray(pi, float).reshape(shape)
    out = {}
    for k in range(len(shape)):
        name = f"y{k + 1}" if len(shape) > 1 else "y"
        for side, (i_face, i_in) in (("low", (0, 1)), ("high", (-1, -2))):
            face = np.take(p, i_face, axis=k).ravel()
            inner = np.take(p, i_in, axis=k).ravel()
            live = face > 0
            if not live.any():
                out[f"{name} {side}"] = 0.0
                continue
            face, inner = face[live], inner[live]
            if np.any(inner <= face):
                out[f"{name} {side}"] = float("inf")
                continue
            out[f"{name} {side}"] = float(np.sum(face / np.log(inner / face)))
    return out


def check_truncation(pis, ygrid, where: str) -> dict[str, float]:
    """Warn (BoxWarning, naming the side) when the y box cuts off more than CUT_MASS_WARN of some mu_x, and
    raise NumericalError when more than CUT_MASS_FAIL (or mass piles up on a face): then the fast process
    is not confined by its drift within the box and the averages mean nothing. pis: laws (rows). Returns
    the worst estimate per side."""
    worst: dict[str, float] = {}
    face: dict[str, float] = {}
    for row in np.atleast_2d(pis):
        for side, mass in cut_mass(row, ygrid.shape).items():
            worst[side] = max(worst.get(side, 0.0), mass)
        for side, mass in boundary_mass(row, ygrid.shape).items():
            face[side] = max(face.get(side, 0.0), mass)
    for side, mass in worst.items():
        what = ("does not decay toward that face" if mass == float("inf") else f"has mass about {mass:.1e} beyond it")
        if (mass == float("inf") and face[side] > 1e-3) or (mass != float("inf") and mass > CUT_MASS_FAIL):
            raise NumericalError(
                f"{where}: the fast invariant law is not confined by the y box {ygrid.describe()}: it {what} on the "
                f"{side} side ({face[side]:.1e} on the face nodes). Check that the fast drift b is confining, or "
                "enlarge grid.y.box on that side")
        if mass > CUT_MASS_WARN and face[side] > 1e-300:
            warnings.warn(f"{where}: the y box {ygrid.describe()} cuts off part of mu_x on its {side} side: the law "
                          f"{what} ({face[side]:.1e} on the face nodes; tolerance {CUT_MASS_WARN:g}): enlarge "
                          "grid.y.box on that side", BoxWarning, stacklevel=3)
    return worst


def check_finite(name: str, values: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
    """NumericalError naming the coefficient and the first (x, y) where ``values`` is not finite."""
    bad = ~np.isfinite(values)
    if bad.any():
        idx = np.argwhere(bad)[0]
        j = int(idx[0]) if values.ndim > 0 else 0
        raise NumericalError(f"coefficient {name} is {values[tuple(idx)]} at x = {np.round(x, 6).tolist()}, "
                             f"y = {np.round(y[min(j, len(y) - 1)], 6).tolist()}")


def fast_law(model, x: np.ndarray, ygrid, generator: bool = True) -> tuple[Generator | None, np.ndarray]:
    """The discrete fast generator Q_x and its invariant law pi_x at the slow point x (the one place where
    the cell stage and the value stage build them). Uses the model's potential when it has one (gradient
    drift, constant diffusion: exact discrete Gibbs law), else its drift b. ``generator=False``: the law
    only (with a potential the generator is then not assembled at all; None is returned in its place)."""
    ys = ygrid.flat_points()
    xb = np.broadcast_to(np.asarray(x, float), (len(ys), model.n))
    A = model.fast_diffusion(xb, ys)
    check_finite("tau", A, x, ys)
    if model.potential is not None:
        U = model.potential(xb, ys)
        check_finite("potential", U, x, ys)
        if not generator:
            return None, _normalise_log(-np.asarray(U, float).ravel())
        gen = fast_generator(ygrid, A, potential=U)
        return gen, invariant_measure(gen, potential=U)
    b = model.b(xb, ys)
    check_finite("b", b, x, ys)
    gen = fast_generator(ygrid, A, drift=b)
    return gen, invariant_measure(gen)
