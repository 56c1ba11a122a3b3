"""Periodic homogenization: Hbar(P) tables of nonlinear ergodic cell problems, correctors, Lbar.

    -nu Δchi(y) + G(y, P + Dchi(y)) = Hbar(P)  on T^m      (solver: :mod:`hjbsolve.cell.ergodic`)
    Lbar(q) = sup_P { -q.P - Hbar(P) }                       (sup convention, :mod:`hjbsolve.legendre`)

Hbar is convex in P; the discrete Hbar_h is convex too (the scheme's numerical Hamiltonian is), which
makes the discrete Legendre transform meaningful. For a G that is not convex in q (solved by
cell/ergodic/nonconvex.py) Hbar may be nonconvex: the Legendre transform is skipped (no lbar).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from .cell.ergodic import effective_hamiltonian_table
from .cell.ergodic.tables import HbarEstimate, estimate_table
from .errors import HJBError
from .legendre import default_q_axes, effective_lagrangian
from .progress import progress

log = logging.getLogger(__name__)


@dataclass
class ErgodicTable:
    """Hbar(P) on P nodes, with the correctors; ``P_axes`` the tensor axes when P is a tensor grid."""

    m: int
    nu: float
    N: int
    offset: float                  # node shift in units of h
    P: np.ndarray                  # (K, m) nodes
    P_axes: list                   # per-axis coordinates (tensor grid) or [values] (explicit list, m = 1)
    tensor: bool
    y: np.ndarray                  # (N,) node coordinates per axis
    hbar: np.ndarray               # (K,)
    chi: np.ndarray                # (K, N, ..., N)
    residual: np.ndarray           # (K,) final max-norm residual of each solve
    iterations: np.ndarray         # (K,)
    estimate: HbarEstimate | None = None  # error estimate from the grids N/2, N/4 (None: N % 4 != 0)
    q_axes: list = field(default_factory=list)
    lbar: np.ndarray | None = None
    note: str = ""                 # why lbar is missing (G not convex), stored as the attribute lbar_note
    timings: dict = field(default_factory=dict)

    def hbar_grid(self) -> np.ndarray:
        """Hbar with the P axes as array axes (tensor grids), else (K,)."""
        return self.hbar.reshape([len(a) for a in self.P_axes]) if self.tensor else self.hbar


def _hbar_table(ham, P, m, N, nu, offset, tol, maxiter, desc, coarse=None):
    """Hbar, correctors, residuals, iterations and nodes y on the grid N (offset in units of h);
    ``coarse``: the same on the grid N/2, whose correctors warm-start the solves."""
    hb = np.empty(len(P))
    chis, res, its = [], np.empty(len(P)), np.empty(len(P), np.int64)
    # rows of a tensor grid are solved in order; each row warm-starts from its neighbour
    block = max(1, len(P) // 20)
    for s0 in progress(range(0, len(P), block), desc=desc, unit="block"):
        Ps = P[s0:s0 + block]
        warm = None if coarse is None else (coarse[1][s0:s0 + block], coarse[0][s0:s0 + block], offset)
        vals, results = effective_hamiltonian_table(ham, Ps if m > 1 else Ps[:, 0], N, nu, m=m,
                                                    offset=offset / N, tol=tol, maxiter=maxiter,
                                                    return_results=True, coarse=warm)
        hb[s0:s0 + block] = vals
        for j, r in enumerate(results):
            chis.append(r.chi)
            res[s0 + j] = r.residual
            its[s0 + j] = r.iterations
    y = results[0].y if m == 1 else results[0].y[0]
    return hb, np.stack(chis), res, its, np.asarray(y)


# hbar_tol refinement stops before N^m passes this (2-D: N = 512; 1-D: N = 2^18)
MAX_UNKNOWNS = 2**18


def ergodic_stage(ham, P: np.ndarray, P_axes: list, tensor: bool, m: int, N: int, nu: float,
                  offset: float = 0.0, tol: float = 1e-12, maxiter: int = 100, q_axes=None,
                  hbar_tol: float = 0.0) -> ErgodicTable:
    """Solve the cell problem at every P (warm-started along the rows of P), then Lbar.

    ``offset`` is in units of h = 1/N (0.5: grid shifted by half a cell). When N is a multiple of
    4 (N >= 16), the grids N/2 and N/4 (same offset in units of h) give every Hbar(P) an error
    estimate (:func:`hjbsolve.cell.ergodic.tables.error_estimate`). ``hbar_tol > 0``: N is doubled
    (rounded up to a multiple of 4 first) until max_P estimate <= hbar_tol; if N^m would pass
    2^18 first, HJBError says so with the estimate reached."""
    t0 = time.perf_counter()
    if hbar_tol > 0.0 and (N % 4 or N < 16):
        N = max(16, -(-N // 4) * 4)
    tables = {}

    def table(Nj):
        if Nj not in tables:
            # coarse to fine: the grid Nj/2 (when it is, or will be, needed) warm-starts Nj
            half = table(Nj // 2) if Nj % 4 == 0 and Nj >= 16 else tables.get(Nj // 2)
            tables[Nj] = _hbar_table(ham, P, m, Nj, nu, offset, tol, maxiter,
                                     f"cell problems N={Nj}", coarse=half)
        return tables[Nj]

    while True:
        hb, chi, res, its, y = table(N)
        est = None
        if N % 4 == 0 and N >= 16:
            mid, coarse = table(N // 2), table(N // 4)
            est = estimate_table(hb, mid[0], coarse[0], np.maximum.reduce([res, mid[2], coarse[2]]), N)
        if hbar_tol <= 0.0 or float(np.max(est.estimate)) <= hbar_tol:
            break
        if (2 * N) ** m > MAX_UNKNOWNS:
            raise HJBError(f"Hbar error estimate {np.max(est.estimate):.2e} > tol = {hbar_tol:.2e} at N = {N}, "
                           f"and N = {2 * N} would pass {MAX_UNKNOWNS} unknowns ({est.reason()}); "
                           f"raise the tolerance or use the stored Richardson values")
        log.info("N = %d: max Hbar error estimate %.2e > %.2e; refining", N, np.max(est.estimate), hbar_tol)
        N *= 2
    out = ErgodicTable(m=m, nu=nu, N=N, offset=offset, P=P, P_axes=P_axes, tensor=tensor, y=y,
                       hbar=hb, chi=chi, residual=res, iterations=its, estimate=est)
    out.timings["cell_problems"] = time.perf_counter() - t0
    if getattr(ham, "nonconvex", False):
        # G not convex in q: Hbar need not be convex in P, and the Legendre transform would only
        # see its convex hull: no Lbar is computed (stored) for such a table
        out.note = ("G is not convex in q: Hbar need not be convex in P, and the Legendre transform "
                    "(Lbar) is skipped")
        return out
    if tensor and all(len(a) >= 3 for a in P_axes):
        grid_h = out.hbar_grid()
        out.q_axes = q_axes if q_axes is not None else default_q_axes(P_axes, grid_h)
        out.lbar = effective_lagrangian(P_axes, grid_h, out.q_axes)
    elif m == 1 and len(np.unique(np.asarray(P, float).ravel())) >= 3:
        # an explicit list of P values in 1-D is a (non-uniform) axis once sorted: the transform needs only
        # the points (P_i, Hbar(P_i)), through their lower convex hull
        Pv = np.asarray(P, float).ravel()
        Pu, first = np.unique(Pv, return_index=True)
        hb_sorted = np.asarray(hb, float).ravel()[first]
        out.q_axes = q_axes if q_axes is not None else default_q_axes([Pu], hb_sorted)
        out.lbar = effective_lagrangian([Pu], hb_sorted, out.q_axes)
    return out
