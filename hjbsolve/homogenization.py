"""Periodic homogenization: Hbar(P) tables of nonlinear ergodic cell problems, correctors, Lbar.

    -nu Δchi(y) + G(y, P + Dchi(y)) = Hbar(P)  on T^m      (solver: :mod:`hjbsolve.cell.ergodic`)
    Lbar(q) = sup_P { -q.P - Hbar(P) }                       (sup convention, :mod:`hjbsolve.legendre`)

Hbar is convex in P; the discrete Hbar_h is convex too (the scheme's numerical Hamiltonian is), which
makes the discrete Legendre transform meaningful. For a G that is not convex in q (solved by
cell/ergodic/nonconvex.py) Hbar may be nonconvex: the Legendre transform is skipped (no lbar).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .cell.ergodic import effective_hamiltonian_table
from .legendre import default_q_axes, effective_lagrangian
from .progress import progress


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
    q_axes: list = field(default_factory=list)
    lbar: np.ndarray | None = None
    timings: dict = field(default_factory=dict)

    def hbar_grid(self) -> np.ndarray:
        """Hbar with the P axes as array axes (tensor grids), else (K,)."""
        return self.hbar.reshape([len(a) for a in self.P_axes]) if self.tensor else self.hbar


def ergodic_stage(ham, P: np.ndarray, P_axes: list, tensor: bool, m: int, N: int, nu: float,
                  offset: float = 0.0, tol: float = 1e-12, maxiter: int = 100, q_axes=None) -> ErgodicTable:
    """Solve the cell problem at every P (warm-started along the rows of P), then Lbar.

    ``offset`` is in units of h = 1/N (0.5: grid shifted by half a cell)."""
    t0 = time.perf_counter()
    h = 1.0 / N
    hb = np.empty(len(P))
    chis, res, its = [], np.empty(len(P)), np.empty(len(P), np.int64)
    # rows of a tensor grid are solved in order; each row warm-starts from its neighbour
    block = max(1, len(P) // 20)
    for s0 in progress(range(0, len(P), block), desc="cell problems", unit="block"):
        Ps = P[s0:s0 + block]
        vals, results = effective_hamiltonian_table(ham, Ps if m > 1 else Ps[:, 0], N, nu, m=m,
                                                    offset=offset * h, tol=tol, maxiter=maxiter,
                                                    return_results=True)
        hb[s0:s0 + block] = vals
        for j, r in enumerate(results):
            chis.append(r.chi)
            res[s0 + j] = r.residual
            its[s0 + j] = r.iterations
    y = results[0].y if m == 1 else results[0].y[0]
    out = ErgodicTable(m=m, nu=nu, N=N, offset=offset, P=P, P_axes=P_axes, tensor=tensor, y=np.asarray(y),
                       hbar=hb, chi=np.stack(chis), residual=res, iterations=its)
    out.timings["cell_problems"] = time.perf_counter() - t0
    if getattr(ham, "nonconvex", False):
        # G not convex in q: Hbar need not be convex in P, and the Legendre transform would only
        # see its convex hull: no Lbar is computed (stored) for such a table
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
