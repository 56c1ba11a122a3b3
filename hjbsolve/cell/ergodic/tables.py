"""Hbar(P) tables of the ergodic cell problem (warm starts along the P grid)."""

from __future__ import annotations

import numpy as np

from hjbsolve.errors import HJBError

from .solvers import _as_P, _prepare, _solve_one


def effective_hamiltonian_table(ham, Ps, N, nu, m=None, offset=0.0, tol=1e-12, maxiter=100,
                                return_results=False):
    """Hbar(P) for every P in Ps (shape (K,) for m = 1 or (K, m)), warm-starting each solve
    from the previous P's (chi, Hbar) (order Ps so that neighbours are close). The grid data
    and the convexity check are computed once. Returns an array (K,) of Hbar (and the list of
    ErgodicResult if return_results)."""
    Ps = np.asarray(Ps, dtype=float)
    if m is None:
        m = 1 if Ps.ndim == 1 else Ps.shape[1]
    m = int(m)
    if Ps.ndim == 1 and m == 1:
        Ps = Ps[:, None]
    if Ps.ndim != 2 or Ps.shape[1] != m:
        raise HJBError(f"Ps must have shape (K,) for m = 1 or (K, m) (got {Ps.shape})")
    ctx, nu = _prepare(ham, N, nu, m, offset, float(np.max(np.abs(Ps))) if Ps.size else 0.0)
    out = np.empty(Ps.shape[0])
    results = []
    prev = None
    for j, P in enumerate(Ps):
        Pv = _as_P(P, m)
        if prev is None:
            r = _solve_one(ctx, Pv, nu, tol, maxiter, None, None)
        else:
            r = _solve_one(ctx, Pv, nu, tol, maxiter, prev.chi, prev.hbar)
        out[j] = r.hbar
        prev = r
        if return_results:
            results.append(r)
    return (out, results) if return_results else out
