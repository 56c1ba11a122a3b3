"""Hbar(P) tables of the ergodic cell problem (warm starts along the P grid) and their error
estimates (grids N, N/2, N/4: observed order, Richardson extrapolation)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hjbsolve.errors import HJBError

from .grid import _EPS
from .solvers import _as_P, _prepare, _solve_one, relax


def effective_hamiltonian_table(ham, Ps, N, nu, m=None, offset=0.0, tol=1e-12, maxiter=100,
                                return_results=False, coarse=None):
    """Hbar(P) for every P in Ps (shape (K,) for m = 1 or (K, m)), warm-starting each solve
    from the previous P's (chi, Hbar) (order Ps so that neighbours are close), or, with
    ``coarse = (chis, hbars, offset_in_h)`` (results of the same Ps on the grid N/2, offset in
    units of its h), from the coarse corrector of the same P interpolated to this grid
    (:func:`prolong`) and relaxed by a few explicit steps (:func:`solvers.relax`). The grid data and the convexity check are computed once. Returns an
    array (K,) of Hbar (and the list of ErgodicResult if return_results)."""
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
        if coarse is not None:
            chi0 = relax(ctx, prolong(coarse[0][j], N, coarse[2]), coarse[1][j], Pv, nu)
            r = _solve_one(ctx, Pv, nu, tol, maxiter, chi0, coarse[1][j])
        elif prev is None:
            r = _solve_one(ctx, Pv, nu, tol, maxiter, None, None)
        else:
            r = _solve_one(ctx, Pv, nu, tol, maxiter, prev.chi, prev.hbar)
        out[j] = r.hbar
        prev = r
        if return_results:
            results.append(r)
    return (out, results) if return_results else out


def prolong(chi, N, offset_in_h=0.0):
    """Periodic multilinear interpolation of a corrector chi on M nodes per axis (nodes
    (s_k + i) / M, s = offset_in_h, scalar or per axis) to N nodes per axis (nodes
    (s_k + j) / N): a warm start."""
    chi = np.asarray(chi, dtype=float)
    M = chi.shape[0]
    s = np.broadcast_to(np.asarray(offset_in_h, dtype=float), (chi.ndim,))
    out = chi
    for ax in range(chi.ndim):
        x = ((s[ax] + np.arange(N)) * M / N - s[ax]) % M  # fine nodes in units of the coarse h
        i0 = np.floor(x).astype(np.int64)
        shape = [1] * chi.ndim
        shape[ax] = N
        w = (x - i0).reshape(shape)
        out = np.take(out, i0 % M, axis=ax) * (1.0 - w) + np.take(out, (i0 + 1) % M, axis=ax) * w
    return out


# ---------------------------------------------------------------------------------------------
# error estimates from a sequence of grids N/4, N/2, N
# ---------------------------------------------------------------------------------------------

# an observed order p = log2(d_coarse / d_fine) counts as clean when it is at least _MIN_ORDER;
# Richardson extrapolation then uses the nearest integer order when p <= 4 is within _ROUND_ORDER
# of it (otherwise, e.g. spectral convergence, Aitken's d_fine / (2^p - 1))
_MIN_ORDER = 0.6
_ROUND_ORDER = 0.3
# the estimate is _SAFETY times the geometric-tail value |d_fine| / (2^p - 1)
_SAFETY = 1.5
# status codes of an estimate (stored as integers, described by ESTIMATE_STATUS)
CONVERGED, CLEAN, NOT_CLEAN, NO_ESTIMATE = 0, 1, 2, 3
ESTIMATE_STATUS = {
    CONVERGED: "the three grids agree to the solver's residual (rounding level)",
    CLEAN: "clean observed order: estimate = 1.5 |d_fine| / (2^p - 1), Richardson value stored",
    NOT_CLEAN: "no clean observed order: estimate = 2 max(|d_fine|, |d_coarse|), no Richardson value",
    NO_ESTIMATE: "no estimate (N must be a multiple of 4 with N / 4 >= 4)",
}


def error_estimate(h_fine, h_mid, h_coarse, floor=0.0):
    """Error estimate of h_fine = Hbar_h on the grid N from Hbar on N/2 (h_mid) and N/4 (h_coarse).

    With d_fine = h_fine - h_mid and d_coarse = h_mid - h_coarse, the observed order is
    p = log2(d_coarse / d_fine). If Hbar_h = Hbar + C h^p + o(h^p), the error of h_fine is the
    geometric tail d_fine / (2^p - 1). Returns (estimate, order, richardson, status):

    * |d_fine|, |d_coarse| <= floor (the solvers' residuals and rounding): converged, estimate
      = floor + |d_fine|, richardson = h_fine;
    * clean order (same sign, p >= 0.6): estimate = 1.5 |d_fine| / (2^p - 1) (the factor 1.5
      covers the o(h^p) terms when the order is not yet exactly asymptotic), richardson =
      h_fine + d_fine / (2^q - 1) with q = round(p) if p <= 4 and |p - round(p)| <= 0.3, else
      q = p (Aitken's extrapolation; spectral convergence shows as a large p);
    * otherwise (oscillating or not yet decreasing differences): estimate = 2 max(|d_fine|,
      |d_coarse|), order and richardson NaN. This is a heuristic, not a bound: the
      differences say only that the grids are not yet in the asymptotic range.
    """
    d1 = h_fine - h_mid
    d2 = h_mid - h_coarse
    floor = float(floor)
    if abs(d1) <= floor and abs(d2) <= floor:
        return floor + abs(d1), np.nan, h_fine, CONVERGED
    if d1 != 0.0 and d2 / d1 > 0.0:
        p = float(np.log2(d2 / d1))
        if p >= _MIN_ORDER:
            q = float(round(p)) if p <= 4.0 and abs(p - round(p)) <= _ROUND_ORDER else p
            est = _SAFETY * abs(d1) / (2.0**p - 1.0) + floor
            return est, p, h_fine + d1 / (2.0**q - 1.0), CLEAN
    return 2.0 * max(abs(d1), abs(d2)) + floor, np.nan, np.nan, NOT_CLEAN


@dataclass
class HbarEstimate:
    """Hbar(P) on the grid N with an error estimate from the grids N/2 and N/4 (same offset in
    units of h). Arrays of shape (K,): hbar (grid N), hbar_mid (N/2), hbar_coarse (N/4),
    estimate (of |hbar - Hbar|), order (observed, NaN unless clean), richardson (extrapolated
    value, NaN unless clean), status (codes of ESTIMATE_STATUS); residual: max residual of the
    three solves per P."""

    N: int
    hbar: np.ndarray
    hbar_mid: np.ndarray
    hbar_coarse: np.ndarray
    estimate: np.ndarray
    order: np.ndarray
    richardson: np.ndarray
    status: np.ndarray
    residual: np.ndarray

    def reason(self):
        """One line saying which estimate kinds occur (for messages)."""
        kinds = np.unique(self.status)
        return "; ".join(f"{int((self.status == k).sum())} P: {ESTIMATE_STATUS[int(k)]}"
                         for k in kinds)


def estimate_table(hbar, hbar_mid, hbar_coarse, residual, N):
    """HbarEstimate from the three tables (arrays (K,)) and the per-P max solver residual."""
    K = len(hbar)
    est, order, rich, status = (np.empty(K) for _ in range(4))
    for j in range(K):
        floor = 4.0 * float(residual[j]) + 64.0 * _EPS * (1.0 + abs(float(hbar[j])))
        est[j], order[j], rich[j], status[j] = error_estimate(hbar[j], hbar_mid[j],
                                                              hbar_coarse[j], floor)
    return HbarEstimate(N=int(N), hbar=np.asarray(hbar, float), hbar_mid=np.asarray(hbar_mid, float),
                        hbar_coarse=np.asarray(hbar_coarse, float), estimate=est, order=order,
                        richardson=rich, status=status.astype(np.int64),
                        residual=np.asarray(residual, float))


def effective_hamiltonian_estimate(ham, Ps, N, nu, m=None, offset=0.0, tol=1e-12, maxiter=100):
    """Hbar(P) on the grid N (as effective_hamiltonian_table) with an error estimate from the
    grids N/2 and N/4 (offset scaled with h, so that the three grids are one family; solved
    coarse to fine, each P warm-started from its interpolated coarse corrector). N must be
    a multiple of 4 with N/4 >= 4. The coarse tables cost 1/2 + 1/4 (m = 1) or 1/4 + 1/16
    (m = 2) of the fine one. Returns an HbarEstimate (see error_estimate for the rules)."""
    N = int(N)
    if N % 4 or N // 4 < 4:
        raise HJBError(f"an error estimate needs N a multiple of 4 with N / 4 >= 4 (got N = {N})")
    hb, res = [], []
    coarse = None
    s = np.asarray(offset, dtype=float) * N  # offset in units of h (the same on the three grids)
    for Nj in (N // 4, N // 2, N):  # coarse to fine: each grid warm-starts the next
        vals, results = effective_hamiltonian_table(ham, Ps, Nj, nu, m=m, offset=s / Nj, tol=tol,
                                                    maxiter=maxiter, return_results=True,
                                                    coarse=coarse)
        coarse = ([r.chi for r in results], vals, s)
        hb.append(vals)
        res.append([r.residual for r in results])
    return estimate_table(hb[2], hb[1], hb[0], np.max(np.array(res), axis=0), N)
