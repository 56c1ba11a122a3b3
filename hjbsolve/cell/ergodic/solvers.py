r"""Solvers of the ergodic cell problem.

Solver
------
Newton's method on the (N^m + 1) unknowns (chi, Hbar) with the normalisation as extra
equation. Since every scheme is convex and monotone, Newton with the (semismooth) Jacobian is
Howard's policy iteration for the ergodic problem. Pipeline of ``solve_ergodic``:
  1. warm start (tables) or large nu: Newton at the target nu directly (<= 40 iterations);
  2. otherwise / on failure: continuation in nu, nu_j = Q/4 * 4^-j (Q a gradient scale from
     G(., P)) down to max(2 nu, h Q / 4, Q / 256), Newton at each stage: the viscous
     linearisations are well mixed there (below, several wells of V only communicate through
     exponentially small transitions and the Newton systems become numerically singular);
  3. at the target: Newton (nu > 0) and, if it fails or for nu = 0, the vanishing-discount
     continuation: Newton (= policy iteration, Jacobian lambda I + J, a nonsingular M-matrix)
     on lambda Q w + F(w) = c, lambda = 1e-2, then x1e-3 (x0.1 while the policy still moves),
     stopped when the certified ergodic residual lambda Q osc(w) / 2 is <= tol. This is what
     makes the degenerate nu = 0 problem robust (several absorbing classes: |P| below the
     critical value, several maximisers of V, where the ergodic Newton system is singular).
     Policy iteration moves a kink of the corrector by one node per iteration, and when the
     discrete maxima of V nearly tie (a grid missing the maximisers) the basins reorganise
     once lambda reaches their O(h^2) gap, moving kinks across the torus: a lambda stage may
     take maxiter iterations per 50 nodes of an axis (O(N), see ``_discount``).

Known limits: metastable targets (small nu > 0 with several equal wells) may stall at a
residual ~1e-10 (the bracket in the error message then tells which tol is achievable); a
non-smooth K without dK (central differences at a kink) can make Newton oscillate.

``long_time_ergodic`` (explicit long-time marching of u_t + F(u) = 0, ~1e5-1e6 steps at
realistic N) is a slow cross-check only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hjbsolve.errors import HJBError, NumericalError

from .fluxes import _gen_grad_extent
from .forms import PeriodicHamiltonian
from .grid import _EPS, _fmt, _Singular

# solver tuning (see "Solver" in the module docstring)
_DIRECT_BUDGET = 40  # Newton iterations of a direct / warm-started attempt before the fallback
_GROWTH = 1e3  # a full step may raise the max-norm residual this much in the first 2 iterations
_GROWTH_LATE = 1.0  # afterwards: non-monotone Armijo test against the max of the last 5
_REG = 1e-9  # Jacobian-only graph Laplacian, relative to Q / h
_NU_STOP = 0.25  # nu-continuation stops at max(2 nu, _NU_STOP h Q, _NU_STOP_Q Q)
_NU_STOP_Q = 1.0 / 256
_DISC_FAC = 1e-3  # vanishing discount: lambda *= _DISC_FAC (0.1 while the policy still moves)
# a vanishing-discount stage may use maxiter Newton iterations per _MIGRATE_NODES nodes of an
# axis (policy iteration moves a kink by one node per iteration; see _discount)
_MIGRATE_NODES = 50


# ---------------------------------------------------------------------------------------------
# Newton / policy iteration
# ---------------------------------------------------------------------------------------------


@dataclass
class ErgodicResult:
    """Result of :func:`solve_ergodic`.

    hbar: the ergodic constant Hbar(P) of the discrete problem; chi: corrector, shape (N,)*m,
    chi.flat[0] = 0; y: node coordinates per axis, shape (N,) (m = 1) or (m, N);
    iterations: Newton iterations (all stages); residual_history: max-norm residuals, for
    every stage the initial one then one per iteration (continuation stages included);
    residual: final max-norm residual (a bound on |hbar - Hbar_h|); centred_fraction: share of
    (node, axis) pairs using the second-order centred branch; stages: (nu, method, iterations,
    status) of every stage solved (a direct attempt, continuation stages, the target nu by
    'newton' or by the vanishing 'discount' continuation)."""

    hbar: float
    chi: np.ndarray
    y: np.ndarray
    iterations: int
    residual_history: list
    P: np.ndarray = None
    N: int = 0
    nu: float = 0.0
    residual: float = float("nan")
    centred_fraction: float = 0.0
    stages: list = field(default_factory=list)


class _State:
    def __init__(self, ctx, P):
        self.ctx = ctx
        self.P = P
        self.hist = []
        self.iterations = 0
        self.stages = []
        self.best = (np.inf, np.nan, np.nan)  # narrowest certified bracket: (width, lo, hi)

    def bracket(self, F):
        """Record the certified bracket min F <= Hbar_h <= max F of an iterate (F = R + c)."""
        lo, hi = float(np.min(F)), float(np.max(F))
        if math.isfinite(lo) and math.isfinite(hi) and hi - lo < self.best[0]:
            self.best = (hi - lo, lo, hi)


def _residual_floor(C, R, chi, hbar):
    """Rounding level of the residual: the achievable accuracy of max|R|."""
    rowsum = float(np.max(np.abs(C).sum(axis=1)))
    return 16.0 * _EPS * (rowsum * float(np.max(np.abs(chi))) + float(np.max(np.abs(R)))
                          + abs(hbar) + 1.0)


def _newton(st, sch, chi, hbar, tol, maxiter, reg):
    """Newton (= policy iteration) on (chi, hbar) for one scheme. Returns (chi, hbar, status,
    res). The residual history (initial residual, then one entry per iteration) goes to st."""
    ctx, P = st.ctx, st.P
    n, w = ctx.n, ctx.width
    R = np.empty(n)
    C = np.empty((n, w))
    Rt = np.empty(n)
    Ct = np.empty((n, w))
    chi = chi.copy()
    ctx.evaluate(chi, hbar, P, sch, R, C)
    res = float(np.max(np.abs(R)))
    st.hist.append(res)
    if not math.isfinite(res):
        return chi, hbar, "non-finite residual", res
    if sch.nu == st.nu:
        st.bracket(R + hbar)
    recent = [res]
    for it in range(maxiter + 1):
        if res <= max(tol, _residual_floor(C, R, chi, hbar)):
            return chi, hbar, "ok", res
        if it == maxiter:
            break
        # Jacobian-only graph Laplacian, 1e-9 relative: keeps linearisations with several
        # absorbing classes solvable (the residual itself is never modified)
        Cs = C.copy()
        Cs[:, 1:] -= reg
        Cs[:, 0] += reg * (w - 1)
        try:
            dchi, dH = ctx.solve(Cs, R)
        except _Singular as exc:
            return chi, hbar, f"singular Newton system ({exc})", res
        ref = max(recent[-5:])
        lam = 1.0
        # full (policy-iteration) steps are accepted unless the residual explodes; afterwards a
        # non-monotone Armijo test on the max-norm over the last 5 iterates
        growth = _GROWTH if it < 2 else _GROWTH_LATE
        while True:
            chit = chi + lam * dchi
            chit -= chit[0]
            ht = hbar + lam * dH
            ctx.evaluate(chit, ht, P, sch, Rt, Ct)
            rest = float(np.max(np.abs(Rt)))
            if math.isfinite(rest) and rest <= growth * (1.0 - 1e-4 * lam) * ref:
                break
            lam *= 0.5
            if lam < 1e-10:
                return chi, hbar, "line search failed", res
        chi, hbar = chit, ht
        R, Rt = Rt, R
        C, Ct = Ct, C
        res = rest
        if sch.nu == st.nu:
            st.bracket(R + hbar)
        recent.append(res)
        st.hist.append(res)
        st.iterations += 1
    return chi, hbar, f"no convergence in {maxiter} iterations", res


def _gradient_scale(st):
    """Q ~ typical |G_q| at the solution: 1 + max|G_q(y, P)| + sqrt(2 osc_y G(y, P))."""
    ctx = st.ctx
    n, w = ctx.n, ctx.width
    R = np.empty(n)
    C = np.empty((n, w))
    sch = ctx.scheme(0.0, 0.0)
    if ctx.ham.kind == "general":
        sch.alpha = np.zeros((n, ctx.m))  # no LF viscosity: G(y, P) and G_q(y, P) only
    ctx.evaluate(np.zeros(n), 0.0, st.P, sch, R, C)
    osc = float(np.max(R) - np.min(R))
    return 1.0 + ctx.h * float(np.max(np.abs(C[:, 1:]))) + math.sqrt(2.0 * max(osc, 0.0))


def _discount(st, sch, chi, hbar, tol, maxiter):
    """Vanishing-discount continuation at fixed nu: Newton (= policy iteration, Jacobian
    lambda I + J: a nonsingular M-matrix whatever the chain structure) on

        lambda_j Q w_i + F_i(w) - c = 0,   w_0 = 0,    lambda_j = 1e-2 * 1e-3^j,

    i.e. the discounted problem with u = w - c / (lambda_j Q). By discrete comparison
    min F(w) <= Hbar_h <= max F(w), and F(w) = c - lambda_j Q w, so Hbar = midpoint has the
    certified ergodic residual lambda_j Q osc(w) / 2; stop once it is <= tol. Robust where the
    ergodic Newton system is (nearly) singular: nu = 0 with several absorbing classes (|P|
    below the critical value, several maximisers of V), small nu with several wells.

    Iteration budget of a lambda stage: policy iteration on a degenerate (nu = 0) problem
    moves a kink of w, i.e. reverses the policy, by one node per iteration. When the discrete
    maxima of V differ by a tiny delta (O(h^2) on a grid that misses the maximisers), every
    maximiser is an absorbing class, with w offset by delta / (lambda Q) between their basins,
    so the certified residual stays >= delta / 2 until lambda ~ delta; at the lambda stage that
    crosses this the basins reorganise and kinks travel across the torus: O(N) iterations,
    whatever the lambda schedule (the total is the distance travelled). Newton on this
    discounted convex monotone problem converges (monotonically after the first step, finitely
    many policies), so a stage may use maxiter iterations per _MIGRATE_NODES nodes of an axis.
    The max-norm residual is no progress measure there: an absorbing node whose class stops
    being optimal takes a step ~ residual / (lambda Q), and the kink it leaves has a residual
    ~ (step / h)^2 that decays as the kink travels."""
    ctx, P = st.ctx, st.P
    n, w = ctx.n, ctx.width
    R = np.empty(n)
    C = np.empty((n, w))
    chi = chi.copy()
    c = float(hbar)
    lam = 1e-2
    res = float("inf")
    budget = maxiter * max(1, -(-ctx.N // _MIGRATE_NODES))
    while True:
        lq = lam * st.Q
        for it in range(budget + 1):
            ctx.evaluate(chi, c, P, sch, R, C)
            G = R + lq * chi
            g = float(np.max(np.abs(G)))
            st.hist.append(g)
            if not math.isfinite(g):
                return chi, c, "non-finite residual (discounted problem)", res
            if g <= max(0.25 * tol, _residual_floor(C, G, chi, c)):
                break
            if it == budget:
                return chi, c, (f"no convergence in {budget} iterations (discounted problem, "
                                f"lambda = {lam:.1e})"), res
            Cs = C.copy()
            Cs[:, 0] += lq
            try:
                dchi, dc = ctx.solve(Cs, G)
            except _Singular as exc:
                return chi, c, f"singular Newton system ({exc})", res
            chi = chi + dchi
            chi -= chi[0]
            c += dc
            st.iterations += 1
        F = R + c
        st.bracket(F)
        lo, hi = float(np.min(F)), float(np.max(F))
        mid = 0.5 * (lo + hi)
        res = 0.5 * (hi - lo)
        if res <= max(tol, _residual_floor(C, F - mid, chi, mid)):
            return chi, mid, "ok", res
        if lam < 1e-17:
            return chi, mid, "vanishing discount reached lambda = 1e-17", res
        # big lambda steps while the policy settles in <= 2 iterations, small ones otherwise
        # (policy iteration moves a kink of a degenerate problem only a few nodes per step)
        lam *= _DISC_FAC if it <= 2 else 0.1


def _solve_fixed_nu(st, nu, chi, hbar, tol, maxiter, method="newton"):
    """Solve at one nu by Newton on the ergodic system or by the vanishing-discount
    continuation. 'general': if the discrete gradients leave the box [-rad, rad]^m on which the
    LF bounds alpha were computed, enlarge the box (x1.5 the extent) and re-solve."""
    ctx = st.ctx
    kind = ctx.ham.kind
    for _ in range(8):
        sch = ctx.scheme(nu, st.rad)
        if method == "newton":
            chi, hbar, status, res = _newton(st, sch, chi, hbar, tol, maxiter,
                                             _REG * st.Q / ctx.h)
        else:
            chi, hbar, status, res = _discount(st, sch, chi, hbar, tol, maxiter)
        if status != "ok" or kind != "general":
            return chi, hbar, status, res, sch
        ext = np.empty(ctx.m)
        _gen_grad_extent(chi, st.P, ctx.h, ctx.nb, ext)
        if float(np.max(ext)) <= st.rad:
            return chi, hbar, status, res, sch
        st.rad = 1.5 * float(np.max(ext))
        ctx.ensure_convex(st.rad)
    return chi, hbar, "gradient box for the Lax-Friedrichs bound did not settle", res, sch


def _solve(ctx, P, nu, tol, maxiter, chi0=None, hbar0=None):
    """Pipeline: (1) direct Newton at nu (warm start, or nu large); (2) continuation in nu
    from Q/4 down to max(2 nu, 0.25 h Q) (well-mixed chains); (3) at the target: Newton
    (nu > 0), then / or (nu = 0) the vanishing-discount continuation."""
    st = _State(ctx, P)
    st.nu = nu
    st.Q = _gradient_scale(st)
    st.rad = ctx.ham.q_box
    n = ctx.n
    warm = chi0 is not None
    chi = np.zeros(n) if chi0 is None else np.asarray(chi0, dtype=float).ravel().copy()
    if chi.shape != (n,):
        raise HJBError(f"chi0 must have {n} values (got {chi.size})")
    chi -= chi[0]
    if hbar0 is None:
        R = np.empty(n)
        C = np.empty((n, ctx.width))
        ctx.evaluate(chi, 0.0, P, ctx.scheme(nu, st.rad), R, C)
        hbar = float(np.mean(R))
    else:
        hbar = float(hbar0)
    nu_cont = 0.25 * st.Q
    failures = []

    def attempt(label, nu_, chi_, hbar_, maxit, method="newton"):
        it0 = st.iterations
        out = _solve_fixed_nu(st, nu_, chi_, hbar_, tol, maxit, method)
        st.stages.append((nu_, method, st.iterations - it0, out[2]))
        if out[2] != "ok":
            failures.append(f"{label} (nu={nu_:.3g}, {method}): {out[2]}")
        return out

    if warm or nu >= 0.25 * nu_cont:
        # a failed direct attempt falls back to the continuation: cap its cost
        out = attempt("direct" + (" from the warm start" if warm else ""), nu, chi, hbar,
                      min(maxiter, _DIRECT_BUDGET))
        if out[2] == "ok":
            return st, out
    # continuation in nu from the viscous problem (the same monotone scheme at nu_j), stopped
    # while the linearisations are still well mixed (cell Peclet ~ 4 / _NU_STOP)
    nu_j = nu_cont
    nu_stop = max(2.0 * nu, _NU_STOP * ctx.h * st.Q, _NU_STOP_Q * st.Q)
    chi_c, hbar_c = chi, hbar
    while nu_j > nu_stop:
        it0 = st.iterations
        sch = ctx.scheme(nu_j, st.rad)
        chi_n, hbar_n, status, res = _newton(st, sch, chi_c, hbar_c, max(tol, 1e-9), maxiter,
                                             _REG * st.Q / ctx.h)
        st.stages.append((nu_j, "newton", st.iterations - it0, status))
        if status != "ok":
            failures.append(f"continuation stage nu={nu_j:.3g}: {status}")
            break
        chi_c, hbar_c = chi_n, hbar_n
        nu_j /= 4.0
    if nu > 0.0:
        out = attempt("after continuation", nu, chi_c, hbar_c, maxiter)
        if out[2] == "ok":
            return st, out
    out = attempt("after continuation", nu, chi_c, hbar_c, maxiter, "discount")
    if out[2] == "ok":
        return st, out
    raise NumericalError(_failure_message(st, nu, failures))


def _failure_message(st, nu, failures):
    h = list(st.hist)
    if not h:
        hist = "(no iteration)"
    elif len(h) <= 8:
        hist = ", ".join(f"{r:.3e}" for r in h)
    else:                  # one line: the first and the last few of the iterations
        hist = (", ".join(f"{r:.3e}" for r in h[:3]) + f", ... ({len(h) - 6} more) ..., "
                + ", ".join(f"{r:.3e}" for r in h[-3:]))
    best = ""
    if math.isfinite(st.best[0]):
        best = (f". Best certified bracket (discrete comparison, at nu = {nu:.6g}): "
                f"{st.best[1]:.15g} <= Hbar_h <= {st.best[2]:.15g} (width {st.best[0]:.2e}; "
                f"rerun with tol >= {0.5 * st.best[0]:.1e} to accept it)")
    return (f"ergodic cell problem did not converge (G = {st.ctx.ham.name}, P = {_fmt(st.P)}, "
            f"N = {st.ctx.N}, m = {st.ctx.m}, nu = {nu:.6g}): " + "; ".join(failures) + best
            + f". Residual history (max-norm): [{hist}]")


def _as_P(P, m):
    P = np.atleast_1d(np.asarray(P, dtype=float)).ravel()
    if P.size == 1 and m > 1:
        raise HJBError(f"P must have m = {m} components (got {P.size})")
    if P.size != m:
        raise HJBError(f"P must have m = {m} components (got {P.size})")
    if not np.all(np.isfinite(P)):
        raise HJBError(f"P must be finite (got {P})")
    return np.ascontiguousarray(P)


def _prepare(ham, N, nu, m, offset, Pmax):
    if not isinstance(ham, PeriodicHamiltonian):
        raise HJBError("ham must be a PeriodicHamiltonian (see its constructors)")
    if m is None:
        raise HJBError("the dimension m must be given")
    m = int(m)
    nu = float(nu)
    if not (nu >= 0.0 and math.isfinite(nu)):
        raise HJBError(f"nu must be finite and >= 0 (got {nu})")
    ctx = ham._context(m, int(N), offset)
    ctx.ensure_convex(max(ham.q_box, Pmax + 2.0))
    return ctx, nu


def solve_ergodic(ham, P, N, nu, m=None, offset=0.0, tol=1e-12, maxiter=100, chi0=None,
                  hbar0=None):
    """Solve the discrete cell problem -nu Lap_h chi + Ghat(y, P + D_h chi) = Hbar on T^m.

    Parameters: ham (PeriodicHamiltonian), P (float or array of m floats), N nodes per axis
    (h = 1/N), nu >= 0, m (1 or 2; default: len(P)), offset (grid y_i = offset + i h; scalar
    or one per axis), tol (max-norm residual; the rounding floor ~16 eps (|J| |chi| + |G|)
    is used when larger), maxiter (Newton iterations per stage; a vanishing-discount stage
    may use maxiter per 50 nodes of an axis), chi0/hbar0 (warm start).

    Returns an ErgodicResult. Raises NumericalError (with the residual history) when the
    iteration does not converge, NonConvexHamiltonianError / NonPeriodicHamiltonianError on
    bad data. Scheme, order and solver: see the module docstring."""
    if m is None:
        m = np.atleast_1d(np.asarray(P)).size
    Pv = _as_P(P, int(m))
    ctx, nu = _prepare(ham, N, nu, m, offset, float(np.max(np.abs(Pv))))
    return _solve_one(ctx, Pv, nu, tol, maxiter, chi0, hbar0)


def _solve_one(ctx, P, nu, tol, maxiter, chi0, hbar0):
    if ctx.nonconvex:  # G not convex in q: its own scheme and solver (nonconvex.py)
        from .nonconvex import solve_nonconvex
        st, out = solve_nonconvex(ctx, P, nu, tol, maxiter, chi0, hbar0)
    else:
        st, out = _solve(ctx, P, nu, tol, maxiter, chi0, hbar0)
    chi, hbar, status, res, sch = out
    if not math.isfinite(hbar) or not np.all(np.isfinite(chi)):
        raise NumericalError(_failure_message(st, nu, ["non-finite solution"]))
    y = ctx.y[0].copy() if ctx.m == 1 else np.stack(ctx.y)
    R = np.empty(ctx.n)
    C = np.empty((ctx.n, ctx.width))
    ctx.evaluate(chi, hbar, P, sch, R, C)
    cf = ctx.centred_fraction(sch)
    r = ErgodicResult(hbar=float(hbar), chi=chi.reshape((ctx.N,) * ctx.m), y=y,
                      iterations=st.iterations, residual_history=list(st.hist), P=P.copy(),
                      N=ctx.N, nu=nu, residual=float(res), centred_fraction=cf,
                      stages=list(st.stages))
    return r


# ---------------------------------------------------------------------------------------------
# slow cross-check: explicit long-time marching
# ---------------------------------------------------------------------------------------------


def long_time_ergodic(ham, P, N, nu, m=None, offset=0.0, tol=1e-9, max_steps=2_000_000,
                      cfl=0.5, chi0=None):
    """Slow cross-check: march u_t + F(u) = 0 (F the same monotone scheme as solve_ergodic,
    with Hbar = 0) explicitly with dt = cfl / max_i dF_i/du_i until osc(F(u)) <= tol.

    By discrete comparison, min_i F_i(u) <= Hbar_h <= max_i F_i(u) at every step, so the
    returned bracket (lo, hi) contains the discrete ergodic constant (for 'general' G: of the
    scheme with the LF bounds on the box of solve_ergodic's first attempt). Returns (hbar_mid, lo, hi,
    steps). Needs ~1/(spectral gap * dt) steps: about 10^6 at N = 400, use small N only."""
    if m is None:
        m = np.atleast_1d(np.asarray(P)).size
    Pv = _as_P(P, int(m))
    ctx, nu = _prepare(ham, N, nu, m, offset, float(np.max(np.abs(Pv))))
    n = ctx.n
    u = np.zeros(n) if chi0 is None else np.asarray(chi0, dtype=float).ravel().copy()
    R = np.empty(n)
    C = np.empty((n, ctx.width))
    st = _State(ctx, Pv)
    Q = _gradient_scale(st)
    sch = ctx.scheme(nu, ham.q_box)
    lo, hi = -np.inf, np.inf
    dt_cap = cfl * ctx.h / Q
    for step in range(int(max_steps)):
        ctx.evaluate(u, 0.0, Pv, sch, R, C)
        lo, hi = float(np.min(R)), float(np.max(R))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise NumericalError(f"long-time marching blew up at step {step}")
        if hi - lo <= tol:
            return 0.5 * (lo + hi), lo, hi, step
        dt = min(cfl / max(float(np.max(C[:, 0])), 1e-300), dt_cap)
        u -= dt * R
        u -= u[0]
    raise NumericalError(f"long-time marching: osc F = {hi - lo:.3e} > tol after {max_steps} "
                         f"steps (bracket [{lo:.12g}, {hi:.12g}])")


def check_hamiltonian(ham, m, N, offset=0.0, Pmax=0.0):
    """The data checks of a solve without solving: periodicity of the data (with a tolerance, see
    PeriodicHamiltonian.check_periodic), finiteness on the grid of N nodes per axis and convexity
    in q on the nodes for |q| up to max(q_box, Pmax + 2). Raises the solver's errors."""
    _prepare(ham, N, 0.0, m, offset, float(Pmax))


def relax(ctx, chi, hbar, P, nu, steps=20):
    """A few explicit steps of the long-time scheme, u <- u - dt (F(u) - hbar) with
    dt = 0.5 / max_i dF_i/du_i (monotone: a contraction in max-norm), from u = chi: they damp the
    node-scale errors of an interpolated warm start (the kinks of a coarse corrector fall between
    fine nodes). 20 steps take the residual of a corrector interpolated from N/2 from ~3 to ~0.1 and
    save ~2 of ~7 Newton steps at N = 128-256 (2-D, nu = 0). Returns the relaxed chi (flat)."""
    u = np.asarray(chi, dtype=float).ravel().copy()
    R = np.empty(ctx.n)
    C = np.empty((ctx.n, 1 + 2 * ctx.m))
    sch = ctx.scheme(nu, ctx.ham.q_box)
    for _ in range(steps):
        ctx.evaluate(u, hbar, P, sch, R, C)
        dt = 0.5 / max(float(np.max(C[:, 0])), 1e-300)
        if not np.all(np.isfinite(R)):
            return np.asarray(chi, dtype=float).ravel().copy()
        u -= dt * R
    return u
