"""The linear cell stage: invariant laws mu_x and the effective quantities (docs/mathematics.md §3).

For every node x of the slow grid:

    mu_x      discrete invariant law of the fast generator L^x on the y grid (cell.generator/invariant)
    ybar(x)   = ∫ y dmu_x                          (replica mean; for Entropy-SGD <y>_x)
    abar(x)   = ∫ a(x, y, u_ref) dmu_x             (averaged slow drift at the reference control;
                                                     Entropy-SGD uncontrolled: -grad f_gamma(x))
    gbar(x)   = ∫ g(x, y) dmu_x                    (effective initial datum)
    hbar(x, p, P) = ∫ sup_u {-a.p - tr(sigma sigma^T P) - l} dmu_x     (sup inside the average)
    feedback u*(x, p, P; y)                        (the maximiser: an extended control)

Accuracy: for gradient fast drifts the discrete law is the exact discrete Gibbs law, so the averages are
trapezoidal quadratures of smooth, fast-decaying integrands (spectrally accurate); otherwise the
Scharfetter-Gummel discretisation is first order (second order at small cell Peclet numbers).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from .cell.invariant import BoxWarning, boundary_mass, check_finite, check_truncation, fast_law  # noqa: F401
from .grid import Grid
from .hamiltonian import sup_affine_quadratic, sup_inside_average
from .model import Model
from .progress import progress

log = logging.getLogger(__name__)

@dataclass
class CellResult:
    """Output of :func:`cell_stage`. Arrays carry the x grid axes first (shape ``xgrid.shape``)."""

    xgrid: Grid
    ygrid: Grid
    p: np.ndarray                  # (np, n) flat p nodes; p_axes the per-axis values
    p_axes: list
    P: np.ndarray                  # Hessian slot: (nP,) multiples of the identity, or (nP, n, n) matrices
    mu: np.ndarray                 # (nx..., ny...) probabilities
    ybar: np.ndarray               # (nx..., m)
    abar: np.ndarray               # (nx..., n)
    gbar: np.ndarray               # (nx...)
    hbar: np.ndarray | None        # (nx..., np..., [nP])
    feedback: np.ndarray | None    # (nx..., np..., [nP], ny..., k) float32
    boundary_mass: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    q_axes: list = field(default_factory=list)   # velocity grids of the effective Lagrangian
    lbar: np.ndarray | None = None               # (nx..., nq..., [nP]) Lbar(x, q) = sup_p {-q.p - Hbar}
    sup_method: str = ""                         # how the sup over u was taken


def hessian_values(values, n: int) -> np.ndarray:
    """P values as matrices (nP, n, n): a number s means s I."""
    out = []
    for v in values:
        a = np.asarray(v, float)
        out.append(a * np.eye(n) if a.ndim == 0 else a.reshape(n, n))
    return np.array(out).reshape(-1, n, n)


def _compact_P(Pv: np.ndarray) -> np.ndarray:
    """(nP,) scalars when every P is a multiple of the identity, else the matrices (nP, n, n)."""
    n = Pv.shape[-1]
    s = Pv[:, 0, 0]
    if np.allclose(Pv, s[:, None, None] * np.eye(n), rtol=0, atol=0):
        return s.copy()
    return Pv


#: coefficient values tabulated at once when computing Hbar tables (bounds the memory, ~32 MB a chunk)
CHUNK_VALUES = 4_000_000


def _hamiltonian_tables(model, xs, ys, mu, pgrid, Pv, has_P, affine, u_nodes, hbar, feedback):
    """Fill hbar (nx, np, nP) and feedback with the sup over u inside the mu_x average, chunk by chunk
    of x nodes (one tabulation and one parallel kernel call a chunk)."""
    nx, ny = mu.shape
    n, k = model.n, model.k
    nu = 1 if affine is not None else len(u_nodes)
    chunk = max(1, CHUNK_VALUES // (ny * nu * max(n, 1)))
    for s0 in progress(range(0, nx, chunk), desc="Hbar tables", unit="chunk"):
        xc = xs[s0:s0 + chunk]
        c = len(xc)
        pi = np.ascontiguousarray(mu[s0:s0 + chunk])
        for iP, Ps in enumerate(Pv):
            if affine is not None:
                X, Y = xc[:, None, :], ys[None, :, :]
                shape = (c, ny)
                a0 = np.ascontiguousarray(np.broadcast_to(affine.a0(X, Y), shape + (n,)), float)
                Bm = np.ascontiguousarray(np.broadcast_to(affine.B(X, Y), shape + (n, k)), float)
                l0 = np.ascontiguousarray(np.broadcast_to(affine.l0(X, Y), shape), float)
                for name, v in (("a", a0), ("a", Bm), ("l", l0)):
                    check_finite(name, v, xc[0], ys)
                if has_P:
                    U0 = np.broadcast_to(np.asarray(affine.u_ref, float), shape + (k,))
                    trSP = np.einsum("...ij,ij->...", model.slow_diffusion(X, Y, U0), Ps)
                else:
                    trSP = np.zeros(shape)
                h, ustar, _, _ = sup_affine_quadratic(pi, a0, Bm, l0, np.ascontiguousarray(trSP, float),
                                                      float(affine.c), np.asarray(affine.u_ref, float),
                                                      np.asarray(model.controls.lo, float),
                                                      np.asarray(model.controls.hi, float), pgrid,
                                                      feedback is not None)
                if feedback is not None:
                    feedback[s0:s0 + c, :, iP] = ustar
            else:
                X, Y, Uu = xc[:, None, None, :], ys[None, :, None, :], u_nodes[None, None, :, :]
                shape = (c, ny, len(u_nodes))
                A = np.ascontiguousarray(np.broadcast_to(model.a(X, Y, Uu), shape + (n,)), float)
                L = np.ascontiguousarray(np.broadcast_to(model.l(X, Y, Uu), shape), float)
                check_finite("a", A, xc[0], ys)
                check_finite("l", L, xc[0], ys)
                if has_P:
                    L = L + np.einsum("...ij,ij->...", model.slow_diffusion(X, Y, Uu), Ps)
                h, arg, _, _ = sup_inside_average(pi, A, L, pgrid, feedback is not None)
                if feedback is not None:
                    feedback[s0:s0 + c, :, iP] = u_nodes[arg]
            hbar[s0:s0 + c, :, iP] = h


def cell_stage(model: Model, xgrid: Grid, ygrid: Grid, p_axes: list | None = None,
               P_values: np.ndarray | None = None, u_nodes: np.ndarray | None = None,
               exact_sup: bool = True, keep_feedback: bool = True) -> CellResult:
    """Invariant laws and averaged quantities at every x node (see module docstring).

    ``p_axes``: one 1-D array of p values per slow axis (tensor p grid), or None (no Hbar table).
    ``P_values``: the Hessian slot: a list of numbers s (meaning s I) and/or n x n symmetric matrices; ignored (and
    Hbar has no P axis) when the slow noise is zero. ``u_nodes``: control nodes (nu, k) for the grid
    sup (default: the model's control grid). ``exact_sup``: use the closed-form maximiser when the
    model is control-affine with quadratic cost.
    """
    t0 = time.perf_counter()
    n, m = model.n, model.m
    xs = xgrid.flat_points()
    ys = ygrid.flat_points()
    nx, ny = len(xs), len(ys)
    has_P = P_values is not None and not model.sigma_zero
    Pv = hessian_values(P_values if has_P else [0.0], n)          # (nP, n, n)
    if p_axes is not None:
        pgrid = np.stack(np.meshgrid(*p_axes, indexing="ij"), axis=-1).reshape(-1, n)
    else:
        pgrid = np.zeros((0, n))
    npv = len(pgrid)
    affine = model.affine if (exact_sup and model.affine is not None) else None
    if u_nodes is None:
        u_nodes = model.controls.nodes()
    k = model.k
    if model.u_ref is not None:
        u_ref = np.asarray(model.u_ref, float)
    elif model.affine is not None:
        u_ref = np.asarray(model.affine.u_ref, float)
    else:
        u_ref = 0.5 * (np.asarray(model.controls.lo, float) + np.asarray(model.controls.hi, float))

    mu = np.empty((nx, ny))
    ybar = np.empty((nx, m))
    abar = np.empty((nx, n))
    gbar = np.empty(nx)
    hbar = np.empty((nx, npv, len(Pv))) if npv else None
    feedback = (np.empty((nx, npv, len(Pv), ny, k), np.float32) if (npv and keep_feedback and k) else None)
    worst = {}
    t_laws = t_means = 0.0
    for i in progress(range(nx), desc="cell problems", total=nx, unit="x"):
        ta = time.perf_counter()
        x = xs[i]
        xb = np.broadcast_to(x, (ny, n))
        _, pi = fast_law(model, x, ygrid, generator=False)
        tb = time.perf_counter()
        t_laws += tb - ta
        mu[i] = pi
        for side, mass in boundary_mass(pi, ygrid.shape).items():
            worst[side] = max(worst.get(side, 0.0), mass)
        ybar[i] = pi @ ys
        gvals = model.g(xb, ys)
        check_finite("g", gvals, x, ys)
        gbar[i] = pi @ gvals
        u0 = np.broadcast_to(u_ref, (ny, k))
        avals = model.a(xb, ys, u0)
        check_finite("a", avals, x, ys)
        abar[i] = pi @ avals
        t_means += time.perf_counter() - tb
    tb = time.perf_counter()
    if npv:
        _hamiltonian_tables(model, xs, ys, mu, pgrid, Pv, has_P, affine, u_nodes, hbar, feedback)
    t_ham = time.perf_counter() - tb
    check_truncation(mu, ygrid, "cell stage")
    shp = xgrid.shape
    pshape = tuple(len(a) for a in p_axes) if p_axes is not None else ()
    Pshape = (len(Pv),) if has_P else ()
    result = CellResult(
        xgrid=xgrid, ygrid=ygrid, p=pgrid, p_axes=list(p_axes) if p_axes is not None else [],
        P=_compact_P(Pv) if has_P else np.zeros(0),
        mu=mu.reshape(shp + ygrid.shape), ybar=ybar.reshape(shp + (m,)), abar=abar.reshape(shp + (n,)),
        gbar=gbar.reshape(shp),
        hbar=hbar.reshape(shp + pshape + Pshape) if hbar is not None else None,
        feedback=(feedback.reshape(shp + pshape + Pshape + ygrid.shape + (k,)) if feedback is not None else None),
        boundary_mass=worst,
        sup_method=("none (no control)" if k == 0 else
                    "closed form: u* = clip(u_ref - B^T p / c) (control-affine dynamics, quadratic control cost)"
                    if affine is not None else f"max over a control grid of {len(u_nodes)} nodes"),
        timings={"invariant_laws": t_laws, "averages": t_means, "hamiltonian": t_ham, "cell_stage": time.perf_counter() - t0})
    return result
