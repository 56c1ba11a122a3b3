r"""Per-grid context of the ergodic cell problem: tabulated data, kernel dispatch, linear solves.

Grid
----
N nodes per axis, h = 1/N, y_i = offset + i h (offset default 0, e.g. h/2 for a shifted grid).
``chi`` is returned with shape (N,)*m, ``chi[i0, i1]`` being the value at (y[i0], y[i1]).

Linear systems: the system is singular in chi up to constants, so it is solved with dchi = 0
at an anchor node r in a recurrent class of the linearisation (found by following the
strongest couplings): two right-hand sides on the nonsingular Dirichlet-at-r matrix, dHbar
from the row of r; 1-D: numba Thomas elimination (periodic tridiagonal with a border), 2-D:
``scipy.sparse.linalg.splu`` (MMD on A^T + A). The linear residual of every step is checked;
when the anchored elimination is inaccurate (nearly multichain linearisations: hitting times
explode) the bordered (N^m + 1) matrix [J, -1; e_0^T, 0] is factorised by sparse LU with
partial pivoting instead. The Newton Jacobian (never the residual) carries a 1e-9 relative
graph Laplacian so that linearisations with several absorbing classes stay solvable. Steps:
full (policy-iteration) steps while the max-norm residual stays below the max of the last 5
iterates (x1e3 allowed in the first two iterations), halved otherwise. Non-convergence raises ``NumericalError`` with the residual history and the
narrowest certified bracket min F <= Hbar_h <= max F met on the way; a wrong Hbar is never
returned silently: the returned value has residual <= max(tol, rounding floor).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from numba import njit
from numba.extending import is_jitted
from scipy.sparse.linalg import splu

from hjbsolve.errors import HJBError, NumericalError

from .fluxes import (_THETA, _critical_points, _ctrl_eval, _gen_alpha, _gen_eval,
                     _godunov_eval, _metric_eval, _quad_eval, _sep_eval, _slope_point, _tab_speed,
                     cone_points, metric_stencil, stencil_neighbours)

_EPS = float(np.finfo(float).eps)
# m = 3: GMRES iterations (no restart) before the sparse-LU fallback (see _Context._solve_krylov)
_KRYLOV_ITS = 100


# ---------------------------------------------------------------------------------------------
# grid helpers (arrays only: cached)
# ---------------------------------------------------------------------------------------------


@njit(cache=True)
def _neighbours(N, m):
    """nb[i, 2k] = index of node i - e_k, nb[i, 2k+1] = index of i + e_k (periodic, C order)."""
    n = N**m
    nb = np.empty((n, 2 * m), np.int64)
    for i in range(n):
        stride = n
        for k in range(m):
            stride //= N
            ik = (i // stride) % N
            base = i - ik * stride
            nb[i, 2 * k] = base + ((ik - 1) % N) * stride
            nb[i, 2 * k + 1] = base + ((ik + 1) % N) * stride
    return nb


@njit(cache=True)
def _find_anchor(C, nb):
    """A node of a recurrent class of the linearisation: follow the strongest coupling."""
    n = C.shape[0]
    s = 0
    for _ in range(n + 1):
        best = 0.0
        nxt = -1
        for j in range(1, C.shape[1]):
            if C[s, j] < best:
                best = C[s, j]
                nxt = nb[s, j - 1]
        if nxt < 0:
            return s
        s = nxt
    return s


@njit(cache=True)
def _stencil_residual(C, nb, R, dchi, dH):
    """max_i |(J dchi)_i - dH + R_i| for the stencil C."""
    out = 0.0
    for i in range(C.shape[0]):
        v = C[i, 0] * dchi[i] - dH + R[i]
        for j in range(nb.shape[1]):
            v += C[i, 1 + j] * dchi[nb[i, j]]
        if not (abs(v) <= out):
            out = abs(v)
    return out


@njit(cache=True)
def _bordered_solve_1d(C, R, r, dchi):
    """Solve J dchi - dH 1 = -R (J: periodic tridiagonal stencil C) with dchi[r] = 0.

    Thomas elimination of the nodes r+1, ..., r-1 (Dirichlet at r), then the row of r gives dH.
    Returns (dH, ok); ok is False on a tiny pivot (caller falls back to sparse LU)."""
    N = R.shape[0]
    M = N - 1
    cp = np.empty(M)
    d1 = np.empty(M)
    d2 = np.empty(M)
    scale = 0.0
    for i in range(N):
        a = abs(C[i, 0]) + abs(C[i, 1]) + abs(C[i, 2])
        if a > scale:
            scale = a
    tiny = 1e-13 * scale + 1e-300
    for j in range(M):
        s = (r + 1 + j) % N
        b = C[s, 0]
        c = C[s, 2] if j < M - 1 else 0.0
        if j > 0:
            a = C[s, 1]
            den = b - a * cp[j - 1]
            x1 = -R[s] - a * d1[j - 1]
            x2 = 1.0 - a * d2[j - 1]
        else:
            den = b
            x1 = -R[s]
            x2 = 1.0
        if not (abs(den) > tiny):
            return 0.0, False
        cp[j] = c / den
        d1[j] = x1 / den
        d2[j] = x2 / den
    for j in range(M - 2, -1, -1):
        d1[j] -= cp[j] * d1[j + 1]
        d2[j] -= cp[j] * d2[j + 1]
    cu = C[r, 2]
    cl = C[r, 1]
    den = cu * d2[0] + cl * d2[M - 1] - 1.0
    if not (abs(den) > 1e-300):
        return 0.0, False
    dH = (-R[r] - cu * d1[0] - cl * d1[M - 1]) / den
    if not math.isfinite(dH):
        return 0.0, False
    dchi[r] = 0.0
    for j in range(M):
        s = (r + 1 + j) % N
        dchi[s] = d1[j] + dH * d2[j]
    return dH, True


# ---------------------------------------------------------------------------------------------
# tabulation of user functions (generic: not cached)
# ---------------------------------------------------------------------------------------------


@njit
def _tab_V(Vf, Y, out):
    m = Y.shape[1]
    for i in range(Y.shape[0]):
        y = np.empty(m)
        for k in range(m):
            y[k] = Y[i, k]
        out[i] = Vf(y)


@njit
def _tab_ctrl(ff, lf, Y, A, F, L):
    m = Y.shape[1]
    for i in range(Y.shape[0]):
        for j in range(A.shape[0]):
            y = np.empty(m)
            for k in range(m):
                y[k] = Y[i, k]
            a = A[j].copy()
            fv = ff(y, a)
            for k in range(m):
                F[i, j, k] = fv[k]
            L[i, j] = lf(y, a)


def _separable_as_general(kax, V, m):
    """G(y, q) = sum_k K_k(q_k) + V(y) as one numba function (for the Godunov flux)."""

    @njit
    def G(y, q):
        s = V(y)
        for k in range(m):
            s += kax(k, q[k])
        return s

    return G


def _fmt(v):
    v = np.atleast_1d(np.asarray(v, dtype=float))
    if v.size == 1:
        return f"{v[0]:.6g}"
    return "(" + ", ".join(f"{x:.6g}" for x in v) + ")"


# ---------------------------------------------------------------------------------------------
# per-grid context: tabulated data, kernels, linear solver
# ---------------------------------------------------------------------------------------------


def _gmres(matvec, psolve, b, maxit, rtol):
    """Right-preconditioned GMRES for A x = b (matvec(x) = A x) from x0 = psolve(b) (psolve ~ A^-1): at most maxit
    iterations, no restart. Returns (x, ok), ok when ||b - A x||_2 <= rtol ||b||_2 (checked on the
    true residual)."""
    bn = float(np.linalg.norm(b))
    x0 = psolve(b)
    if not np.all(np.isfinite(x0)):
        return x0, False
    r = b - matvec(x0)
    beta = float(np.linalg.norm(r))
    if beta <= rtol * bn:
        return x0, True
    n = b.shape[0]
    V = np.empty((maxit + 1, n))
    Z = np.empty((maxit, n))
    H = np.zeros((maxit + 1, maxit))
    V[0] = r / beta
    e1 = np.zeros(maxit + 1)
    e1[0] = beta
    y = np.zeros(0)
    for j in range(maxit):
        Z[j] = psolve(V[j])
        w = matvec(Z[j])
        for _ in range(2):  # classical Gram-Schmidt, twice (stable as modified GS)
            hj = V[: j + 1] @ w
            w -= hj @ V[: j + 1]
            H[: j + 1, j] += hj
        H[j + 1, j] = float(np.linalg.norm(w))
        y, *_ = np.linalg.lstsq(H[: j + 2, : j + 1], e1[: j + 2], rcond=None)
        res = float(np.linalg.norm(H[: j + 2, : j + 1] @ y - e1[: j + 2]))
        if res <= 0.1 * rtol * bn or H[j + 1, j] == 0.0:
            break
        V[j + 1] = w / H[j + 1, j]
    x = x0 + y @ Z[: y.shape[0]]
    ok = bool(np.all(np.isfinite(x))) and float(np.linalg.norm(b - matvec(x))) <= rtol * bn
    return x, ok


class _Singular(Exception):
    pass


class _Context:
    def __init__(self, ham, m, N, off):
        if m not in (1, 2, 3):
            raise HJBError(f"ergodic cell problem: m must be 1, 2 or 3 (got {m})")
        if m == 3 and ham.kind in ("general", "metric"):
            raise HJBError(f"ergodic cell problem: the {ham.kind} form is limited to m <= 2 (its "
                           "fluxes and convexity sampling are 2-D); for m = 3 write G in the "
                           "quadratic, separable or control form")
        N = int(N)
        if N < 4:
            raise HJBError(f"ergodic cell problem: need N >= 4 nodes per axis (got {N})")
        self.ham = ham
        self.m = m
        self.N = N
        self.n = N**m
        self.h = 1.0 / N
        self.off = off
        self.y = [off[k] + self.h * np.arange(N) for k in range(m)]
        if m == 1:
            self.Y = self.y[0][:, None].copy()
        else:
            mesh = np.meshgrid(*self.y, indexing="ij")
            self.Y = np.ascontiguousarray(np.stack([a.ravel() for a in mesh], axis=1))
        self.nb = _neighbours(N, m)
        self.width = 1 + 2 * m  # columns of a stencil row C: the diagonal, then nb's columns
        self._pattern = None
        self._convex_radius = -1.0
        self._brk = {}
        self._alpha = {}
        kind = ham.kind
        # nonconvex: set by ensure_convex when G is not convex in q and the form is supported
        # (see nonconvex.py); godunov: Godunov's flux built from the formula (fluxes._godunov_eval)
        self.nonconvex = False
        self.godunov = False
        self.Gg = ham.G if kind == "general" else None
        self._crit = {}
        ham.check_periodic(m)
        if kind in ("quadratic", "separable"):
            self.V = np.empty(self.n)
            if is_jitted(ham.V):
                _tab_V(ham.V, self.Y, self.V)
            elif callable(ham.V):
                for i in range(self.n):
                    self.V[i] = float(ham.V(self.Y[i].copy()))
            else:
                raise HJBError("V must be a function V(y) -> float")
            self.kax, self.dkax = ham._axis_funcs(m)
            self.qstar = ham._qstar(m)
        elif kind == "control":
            A = ham.A
            f0 = np.asarray(ham.f(self.Y[0].copy(), A[0].copy()))
            if f0.shape != (m,):
                raise HJBError(f"control Hamiltonian: f(y, a) must return an array of length "
                               f"m = {m} (got shape {f0.shape})")
            self.F = np.empty((self.n, A.shape[0], m))
            self.L = np.empty((self.n, A.shape[0]))
            _tab_ctrl(ham.f, ham.l, self.Y, A, self.F, self.L)
            if not (np.all(np.isfinite(self.F)) and np.all(np.isfinite(self.L))):
                raise NumericalError("control Hamiltonian: f or l is not finite on the grid")
            self.pol = np.zeros(self.n, np.int64)
        elif kind == "metric":
            self._init_metric(ham)
        if kind in ("quadratic", "separable") and not np.all(np.isfinite(self.V)):
            i = int(np.flatnonzero(~np.isfinite(self.V))[0])
            raise NumericalError(f"V is not finite at node y = {_fmt(self.Y[i])}")

    def _init_metric(self, ham):
        """Metric form c(y) max_B (-a.q): the speed at the centroids of the cones' triangles
        (see fluxes._metric_eval), the cone data of B; 2-D: the 9-point stencil."""
        self.off, self.cones, cen = metric_stencil(self.m)
        self.c = np.empty((self.n, len(self.cones)))
        _tab_speed(ham.c, self.Y, cen * self.h, 0.0, self.c)
        bad = ~(np.isfinite(self.c) & (self.c >= 0.0))
        if np.any(bad):
            i = int(np.flatnonzero(np.any(bad, axis=1))[0])
            raise NumericalError(f"metric Hamiltonian: the speed c must be finite and >= 0; "
                                 f"c = {np.min(self.c[i]):.6g} near node y = {_fmt(self.Y[i])}")
        B = ham.control_set(self.m)
        if B is None:
            self.cand, self.ncand = np.zeros((1, 1, 2)), np.zeros(len(self.cones), np.int64)
        else:
            self.cand, self.ncand = cone_points(B, self.off, self.cones)
        if self.m == 2:
            self.nb = stencil_neighbours(self.N, self.off)
            self.width = 1 + self.nb.shape[1]

    # -- checks ---------------------------------------------------------------------------------
    def ensure_convex(self, radius):
        """Sample the convexity of G in q on the box of half-width radius. A nonconvex G is
        accepted where a scheme and solver for it exist (nonconvex.py: a separable G with a
        numba V, or a general G), and refused otherwise (the message says why)."""
        if radius <= self._convex_radius:
            return
        from .forms import NonConvexHamiltonianError
        try:
            self.ham.check_convex(self.m, self.Y, radius)
        except NonConvexHamiltonianError as exc:
            kind = self.ham.kind
            if "not finite" in str(exc) or self.m == 3:  # the nonconvex solver is 1-D/2-D
                raise
            if kind == "separable" and is_jitted(self.ham.V):
                self.nonconvex = self.godunov = self.ham.nonconvex = True
                key = ("separable_G", self.m)  # one numba G per Hamiltonian: compiled once
                if key not in self.ham._derived:
                    self.ham._derived[key] = _separable_as_general(self.kax, self.ham.V, self.m)
                self.Gg = self.ham._derived[key]
            elif kind == "general":
                self.nonconvex = self.ham.nonconvex = True
            else:
                raise NonConvexHamiltonianError(
                    f"{exc}; a nonconvex G is solved for hamiltonian = 'general' and for "
                    f"'separable' with a numba V, not for this form") from None
        self._convex_radius = radius

    # -- scheme ---------------------------------------------------------------------------------
    def breakpoints(self, nu):
        """Separable flux data per axis: (s-, s+, K(s-), K(s+)) with K_k'(s+-) = +-2 nu / h
        (s+- = +-inf if K_k' never reaches +-c; s- = s+ = q*_k for nu = 0)."""
        c = 2.0 * _THETA * nu / self.h
        key = float(c)
        brk = self._brk.get(key)
        if brk is not None:
            return brk
        brk = np.empty((self.m, 4))
        if self.ham.kind == "quadratic":
            brk[:, 0] = -c
            brk[:, 1] = c
            brk[:, 2] = 0.5 * c * c
            brk[:, 3] = 0.5 * c * c
        else:
            for k in range(self.m):
                K = lambda s, k=k: float(self.kax(k, s))
                dK = lambda s, k=k: float(self.dkax(k, s))
                q0 = float(self.qstar[k])
                if c == 0.0:
                    brk[k] = (q0, q0, K(q0), K(q0))
                    continue
                sm = _slope_point(dK, q0, -c)
                sp_ = _slope_point(dK, q0, c)
                brk[k] = (sm, sp_, K(sm) if math.isfinite(sm) else np.inf,
                          K(sp_) if math.isfinite(sp_) else np.inf)
        if len(self._brk) > 64:
            self._brk.clear()
        self._brk[key] = brk
        return brk

    def scheme(self, nu, rad=None):
        return _Scheme(self, nu, rad)

    def critical_points(self, rad):
        """Critical points of G(y_i, .) along every axis on [-2 rad - 1, 2 rad + 1] (for the
        1-D and separable Godunov fluxes; wider than the gradient box so that the intervals
        [p-, p+] fit). Not needed (empty) for a 2-D general G (nested extrema)."""
        key = float(rad)
        out = self._crit.get(key)
        if out is None and self.ham.kind == "general" and self.m == 2:
            out = self._crit[key] = (np.zeros((self.n, 1)), np.zeros((self.n, 2), np.int64))
        if out is None:
            R = 2.0 * float(rad) + 1.0
            sep = self.ham.kind == "separable"
            crit = np.zeros((self.n, 16 * self.m))
            ncrit = np.zeros((self.n, self.m), np.int64)
            _critical_points(self.Gg, self.Y, R, int(400 * R) + 1, sep, crit, ncrit)
            out = self._crit[key] = (crit, ncrit)
        return out

    def general_alpha(self, rad):
        key = float(rad)
        a = self._alpha.get(key)
        if a is None:
            a = np.empty((self.n, self.m))
            _gen_alpha(self.ham.G, self.Y, float(rad), 21 if self.nonconvex else 17,
                       self.nonconvex, a)
            if not np.all(np.isfinite(a)):
                i = int(np.flatnonzero(~np.all(np.isfinite(a), axis=1))[0])
                raise NumericalError(f"dG/dq is not finite at node y = {_fmt(self.Y[i])} for "
                                     f"q in [-{rad:.3g}, {rad:.3g}]^m")
            if len(self._alpha) > 8:
                self._alpha.clear()
            self._alpha[key] = a
        return a

    def evaluate(self, chi, hbar, P, sch, R, C):
        kind = self.ham.kind
        if self.godunov:
            _godunov_eval(self.Gg, self.Y, sch.crit[0], sch.crit[1], chi, hbar, P, self.h,
                          sch.nu, self.nb, R, C)
        elif kind == "quadratic":
            _quad_eval(sch.brk, chi, hbar, P, self.h, sch.nu, _THETA, self.V, self.nb, sch.mask,
                       R, C)
        elif kind == "separable":
            _sep_eval(self.kax, self.dkax, sch.brk, chi, hbar, P, self.h, sch.nu, _THETA,
                      self.V, self.nb, sch.mask, R, C)
        elif kind == "general":
            _gen_eval(self.ham.G, self.Y, chi, hbar, P, self.h, sch.nu, _THETA, sch.alpha,
                      sch.crit[0], sch.crit[1], self.nb, R, C)
        elif kind == "metric":
            _metric_eval(self.c, self.cand, self.ncand, self.ham.norm == "l2", self.cones,
                         self.off, chi, hbar, P, self.h, sch.nu, self.nb, R, C)
        else:
            _ctrl_eval(self.F, self.L, chi, hbar, P, self.h, sch.nu, _THETA, self.nb, R, C,
                       self.pol)

    def centred_fraction(self, sch):
        """Share of (node, axis) pairs using the centred (second-order) branch after the last
        evaluate()."""
        if sch.nu <= 0.0 or self.godunov:
            return 0.0
        kind = self.ham.kind
        if kind in ("quadratic", "separable"):
            return float(np.mean(sch.mask == 0))
        if kind == "general":
            return float(np.mean(sch.alpha <= 2.0 * _THETA * sch.nu / self.h))
        if kind == "metric":
            return 0.0
        f = self.F[np.arange(self.n), self.pol]
        return float(np.mean(np.abs(f) <= 2.0 * _THETA * sch.nu / self.h))

    # -- linear algebra -------------------------------------------------------------------------
    def solve(self, C, R):
        """Newton step: J dchi - dH 1 = -R, shifted so that dchi[0] = 0 (chi[0] stays 0).

        Fast path: the system is singular in chi up to constants, so it is solved with
        dchi[r] = 0 at an anchor r in a recurrent class of the linearisation (Dirichlet-at-r
        matrix, nonsingular): u, v from J_r u = -R, J_r v = 1, dH from the row of r (1-D: numba
        Thomas; 2-D: sparse LU; 3-D: preconditioned GMRES on the bordered system, _solve_krylov). This is not backward stable when the linearisation is nearly
        multichain (v ~ hitting times explode); the linear residual is therefore checked and,
        if needed, the bordered (N^m + 1) system [J, -1; e_0^T, 0] is solved by sparse LU with
        partial pivoting instead."""
        n = self.n
        r = _find_anchor(C, self.nb)
        out = None
        if self.m == 1:
            dchi = np.empty(n)
            dH, ok = _bordered_solve_1d(C, R, r, dchi)
            if ok and np.all(np.isfinite(dchi)):
                out = (dchi, dH)
        if out is None:
            try:
                out = self._solve_krylov(C, R) if self.m == 3 else self._solve_anchored(C, R, r)
            except _Singular:
                out = None
        if out is not None:
            lin_fast = self._linres(C, R, *out)
            if lin_fast <= 1e-9 * self._linscale(C, R, *out):
                dchi, dH = out
                dchi -= dchi[0]
                return dchi, dH
        try:
            bord = self._solve_bordered(C, R)
        except _Singular:
            if out is None:
                raise
            bord = None
        if bord is None or (out is not None and lin_fast < self._linres(C, R, *bord)):
            bord = out  # the more accurate of the two; the nonlinear residual decides
        dchi, dH = bord
        dchi -= dchi[0]
        return dchi, dH

    def _linres(self, C, R, dchi, dH):
        """max-norm of J dchi - dH 1 + R (inf if not finite)."""
        lin = _stencil_residual(C, self.nb, R, dchi, dH)
        return lin if math.isfinite(lin) else np.inf

    def _linscale(self, C, R, dchi, dH):
        return float(np.max(np.abs(R))) + 1e3 * _EPS * (
            float(np.max(np.abs(C).sum(axis=1))) * float(np.max(np.abs(dchi))) + abs(dH))

    def _csc_pattern(self):
        """CSC pattern of the (n+1) x (n+1) bordered stencil matrix [J, -1; e_0^T, 0], and for
        every stored entry its position in concat(C.ravel(), -ones(n), [1])."""
        if self._pattern is None:
            n = self.n
            w = self.width
            rows = np.concatenate([np.repeat(np.arange(n), w), np.arange(n), [n]])
            cols = np.concatenate([np.concatenate([np.arange(n)[:, None], self.nb], axis=1).ravel(),
                                   np.full(n, n), [0]])
            tag = np.arange(rows.size, dtype=float) + 1.0
            A = sp.csc_matrix((tag, (rows, cols)), shape=(n + 1, n + 1))
            A.sort_indices()
            if A.nnz != rows.size:
                raise HJBError("internal: duplicate stencil entries (N too small)")
            perm = (A.data - 1.0).astype(np.int64)
            # the n x n stencil part alone (entries with row < n and col < n), same ordering
            keep = perm < n * w
            cnt = np.zeros(n + 2, np.int64)
            colidx = np.repeat(np.arange(n + 1), np.diff(A.indptr))
            np.add.at(cnt, colidx[keep] + 1, 1)
            indptr_J = np.cumsum(cnt)[: n + 1]
            self._pattern = (A.indptr.copy(), A.indices.copy(), perm,
                             indptr_J, A.indices[keep].copy(), perm[keep].copy())
        return self._pattern

    def _solve_anchored(self, C, R, r):
        n = self.n
        _, _, _, indptr, indices, perm = self._csc_pattern()
        Cd = C.copy()
        Cd[r, 0] = 1.0
        Cd[r, 1:] = 0.0
        for j in range(self.nb.shape[1]):  # drop column r from the rows of r's neighbours
            s = self.nb[r, j]
            for jj in range(self.nb.shape[1]):
                if self.nb[s, jj] == r:
                    Cd[s, 1 + jj] = 0.0
        A = sp.csc_matrix((Cd.ravel()[perm], indices, indptr), shape=(n, n))
        b = np.empty((n, 2))
        b[:, 0] = -R
        b[:, 1] = 1.0
        b[r, :] = 0.0
        x = self._factored_solve(A, b)
        u, v = x[:, 0], x[:, 1]
        cr = C[r, 1:]
        nbr = self.nb[r]
        den = float(np.dot(cr, v[nbr])) - 1.0
        dH = (-R[r] - float(np.dot(cr, u[nbr]))) / den
        dchi = u + dH * v
        if not (math.isfinite(dH) and np.all(np.isfinite(dchi))):
            raise _Singular("non-finite Newton step")
        return dchi, dH

    def _factored_solve(self, A, b):
        """Solve A x = b for the anchored (Dirichlet-at-r) matrix A: sparse LU (MMD on A^T + A)."""
        try:
            lu = splu(A, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.1,
                      options=dict(SymmetricMode=True))
            return lu.solve(b)
        except RuntimeError as exc:
            raise _Singular(str(exc)) from None

    def _solve_krylov(self, C, R):
        """m = 3 (sparse LU fill is too large on 3-D grids): GMRES on the bordered system

            J dchi - dH 1 = -R,   mean(dchi) = 0,

        right-preconditioned by the same system with J replaced by its circulant average
        L = sigma I + sum_k a_k (shift_k + shift_-k - 2) (a_k the mean coupling along axis k,
        sigma the mean row sum), which FFTs invert exactly: for the Fourier mode 0,
        sigma x_0 - dH = mean(r), mean(x) = s; for the others x^_k = r^_k / L^_k. Good while
        diffusion (or the discount sigma) dominates the upwind drift in J, i.e. nu > 0 with a
        moderate cell Peclet number; raises _Singular when GMRES does not converge."""
        n, m, N = self.n, self.m, self.N
        rows = np.repeat(np.arange(n), 1 + 2 * m)
        cols = np.concatenate([np.arange(n)[:, None], self.nb], axis=1).ravel()
        J = sp.csr_matrix((C.ravel(), (rows, cols)), shape=(n, n))
        sigma = float(np.mean(C.sum(axis=1)))
        shape = (N,) * m
        sym = np.zeros(shape)
        for k in range(m):
            a = -0.5 * float(np.mean(C[:, 1 + 2 * k] + C[:, 2 + 2 * k]))
            wk = np.fft.fftfreq(N) * 2.0 * np.pi
            sym = sym + (a * (2.0 - 2.0 * np.cos(wk))).reshape([-1 if j == k else 1 for j in range(m)])
        sym = sym + sigma
        sym0 = sym.flat[0]
        sym.flat[0] = 1.0

        def matvec(x):
            out = np.empty(n + 1)
            out[:n] = J @ x[:n] - x[n]
            out[n] = float(np.mean(x[:n]))
            return out

        def psolve(rs):
            r, s = rs[:n], rs[n]
            rh = np.fft.fftn(r.reshape(shape))
            x0 = s * n                      # Fourier mode 0 of x: n mean(x)
            dH = sym0 * s - rh.flat[0].real / n
            xh = rh / sym
            xh.flat[0] = x0
            out = np.empty(n + 1)
            out[:n] = np.fft.ifftn(xh).real.ravel()
            out[n] = dH
            return out

        b = np.zeros(n + 1)
        b[:n] = -R
        x, ok = _gmres(matvec, psolve, b, _KRYLOV_ITS, 1e-12)
        if not ok:
            raise _Singular("GMRES did not converge")
        return x[:n].copy(), float(x[n])

    def _solve_bordered(self, C, R):
        n = self.n
        indptr, indices, perm = self._csc_pattern()[:3]
        vals = np.concatenate([C.ravel(), -np.ones(n), [1.0]])
        A = sp.csc_matrix((vals[perm], indices, indptr), shape=(n + 1, n + 1))
        b = np.zeros(n + 1)
        b[:n] = -R
        try:
            lu = splu(A, permc_spec="COLAMD")
            x = lu.solve(b)
        except RuntimeError as exc:  # singular
            raise _Singular(str(exc)) from None
        if not np.all(np.isfinite(x)):
            raise _Singular("non-finite Newton step")
        return x[:n].copy(), float(x[n])


class _Scheme:
    """Scheme data of one nu-stage: separable -> flux breakpoints (``mask`` receives the flux
    piece per node/axis, 0 = centred); general -> local LF bounds alpha (n, m) on the box
    [-rad, rad]^m (independent of P, so that Hbar_h stays convex in P)."""

    def __init__(self, ctx, nu, rad=None):
        self.nu = float(nu)
        self.mask = np.zeros((ctx.n, ctx.m), np.uint8)
        sep = ctx.ham.kind in ("quadratic", "separable") and not ctx.godunov
        self.brk = ctx.breakpoints(nu) if sep else None
        self.rad = rad
        self.alpha = ctx.general_alpha(rad) if ctx.ham.kind == "general" else None
        self.crit = (ctx.critical_points(rad if rad is not None else ctx.ham.q_box)
                     if ctx.godunov or ctx.ham.kind == "general" else None)
