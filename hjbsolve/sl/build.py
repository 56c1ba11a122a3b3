"""From a :class:`~hjbsolve.model.Model` to SL steppers: coefficient tables on the slow grid.

- :func:`per_y_stepper`: the slow step at frozen fast nodes y_j (batch J = number of y nodes): the slow
  half of the V^eps splitting, and the per-y ("fan") effective scheme.
- :func:`averaged_stepper`: the effective problem as an ordinary control problem with averaged
  coefficients (one foot per control, no fan):
    * y-blind: control u constant in y, ``abar(x, u) = sum_j pi_j a(x, y_j, u)``, likewise sigma sigma^T, l;
    * extended: the controls are the maximisers ``alpha_p(y) = argmax_u H(x, y, p)`` of the Hamiltonian,
      parametrised by p in R^n (a fine grid): ``abar(x, p) = sum_j pi_j a(x, y_j, alpha_p(y_j))``.
      Since ``-abar(x, p').p - lbar(x, p') <= Hbar(x, p)`` with equality at p' = p, the min over p realises
      ``Hbar`` (sup inside the average) exactly, with an O(dp²) deficit for a p grid of spacing dp.
      Requires sigma independent of u.
    * control-affine models whose B does not depend on y: the maximiser ``clip(u_ref - B^T p / c)`` does not
      depend on y, so the extended and the y-blind problems coincide: one averaged affine problem,
      minimised exactly (1-D) or by grid + golden section (2-D).
- :func:`fast_generators`: the discrete fast generators Q_x (exactly as in the cell stage) and their laws.
"""

from __future__ import annotations

import numpy as np

from ..cell.invariant import fast_law
from ..errors import NumericalError
from ..grid import Grid
from ..hamiltonian import sup_affine_quadratic, sup_inside_average
from ..model import Model
from . import kernels as K
from .steppers import AffineStepper1D, AffineStepper2D, LinearControlStepper, TabStepper


def _finite(name: str, arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr, float)
    if not np.all(np.isfinite(arr)):
        raise NumericalError(f"coefficient {name} is not finite on the grid (value stage)")
    return arr


def fast_generators(model: Model, xgrid: Grid, ygrid: Grid):
    """Generators Q_x and invariant laws pi (Nx, Ny) for every slow node, as in the cell stage."""
    xs, ys = xgrid.flat_points(), ygrid.flat_points()
    gens, pis = [], np.empty((len(xs), len(ys)))
    for i, x in enumerate(xs):
        gen, pis[i] = fast_law(model, x, ygrid)
        gens.append(gen)
    return gens, pis


def control_nodes(model: Model, u_nodes=None) -> np.ndarray:
    if u_nodes is not None:
        u = np.asarray(u_nodes, float)
        return u[:, None] if u.ndim == 1 else u
    return model.controls.nodes()


def _ys(model: Model, ys) -> np.ndarray:
    return np.zeros((1, 0)) if ys is None or model.m == 0 else np.asarray(ys, float).reshape(-1, model.m)


def coefficients_at(model: Model, xs: np.ndarray, ys: np.ndarray, u: np.ndarray):
    """a (J, nc, M, n), sigma (J, ncs, M, n, n), l (J, nc, M) at the points xs (M, n), fast nodes ys (J, m) and
    controls u (nc, k); ncs = 1 when sigma does not depend on the control."""
    J, nc, M, n = len(ys), len(u), len(xs), model.n
    X, Y, U = xs[None, None], ys[:, None, None], u[None, :, None]
    A = np.broadcast_to(_finite("a", model.a(X, Y, U)), (J, nc, M, n))
    L = np.broadcast_to(_finite("l", model.l(X, Y, U)), (J, nc, M))
    S = np.broadcast_to(_finite("sigma", model.sigma(X, Y, U)), (J, nc, M, n, n))
    if np.all(S == S[:, :1]):
        S = S[:, :1]
    return A, S, L


def node_chunks(N: int, bytes_per_node: int, budget: int = 64 << 20):
    """Slices of the N slow nodes whose tables take at most ``budget`` bytes (at least one node each)."""
    per = max(1, budget // max(1, bytes_per_node))
    return [slice(i, min(i + per, N)) for i in range(0, N, per)]


def tab_tables(model: Model, xgrid: Grid, ys, u: np.ndarray):
    """A (J, nc, *xshape, n), S (J, ncs, *xshape, n, n), L (J, nc, *xshape) on the nodes."""
    ys = _ys(model, ys)
    A, S, L = coefficients_at(model, xgrid.flat_points(), ys, u)
    J, nc, n, shp = len(ys), len(u), model.n, xgrid.shape
    return (A.reshape((J, nc) + shp + (n,)), S.reshape((J, S.shape[1]) + shp + (n, n)), L.reshape((J, nc) + shp))


#: table entries (batch x controls x nodes) per model call when the tables are built chunk by chunk
CHUNK = 1 << 19
#: nodes on which every control is checked by :func:`linear_control_parts`
SAMPLE = 4096


def deterministic_tab_stepper(model: Model, xgrid: Grid, ys, u: np.ndarray, dt: float, order: int = 2,
                              mode: int = 0) -> TabStepper:
    """The tabulated stepper of a 2-D problem without slow noise, its step tables built chunk by chunk of
    controls: the model is called on (J, chunk, N) points and :func:`~hjbsolve.sl.kernels.taylor_tables_2d`
    turns each chunk's drift and cost into feet (in cells) and step costs. Memory: the two step tables and one
    chunk; no drift table, no gradient temporaries."""
    xs = xgrid.flat_points()
    ys = _ys(model, ys)
    J, nc, N, n = len(ys), len(u), len(xs), model.n
    shp = xgrid.shape
    disp = np.empty((J, nc) + shp + (n,))
    C = np.empty((J, nc) + shp)
    per = max(1, CHUNK // (J * N))
    X, Y = xs[None, None], ys[:, None, None]
    h1, h2 = float(xgrid.h[0]), float(xgrid.h[1])
    for c0 in range(0, nc, per):
        U = u[None, c0:c0 + per, None]
        cc = U.shape[1]
        A = np.broadcast_to(_finite("a", model.a(X, Y, U)), (J, cc, N, n)).reshape((J, cc) + shp + (n,))
        L = np.broadcast_to(_finite("l", model.l(X, Y, U)), (J, cc, N)).reshape((J, cc) + shp)
        K.taylor_tables_2d(A, L, h1, h2, float(dt), int(order), disp[:, c0:c0 + cc], C[:, c0:c0 + cc])
    st = TabStepper.from_tables_2d(xgrid, disp, C, dt, order=order, mode=mode)
    st.u_nodes = u
    return st


def linear_control_parts(model: Model, xgrid: Grid, ys, u: np.ndarray, rtol: float = 1e-11):
    """``(a0 (J, N, n), B (n, k), l0 (J, N), q (nc,))`` when, at every node and control,
    ``a(x, y, u) = a0(x, y) + B u`` with a constant matrix B and ``l(x, y, u) = l0(x, y) + q(u)``; else None.

    B and q come from the first node (least squares over the controls). The identity is then checked, to
    ``rtol`` of the data's size, for every control on a sub-grid of about ``SAMPLE`` nodes (every s-th row and
    column, the last ones included) and for four controls (the first, the last, two inner ones) on every node:
    checking every (node, control) pair would cost more model evaluations than a dozen time steps (numpy
    calls per control against one kernel pass), and a formula that is affine in u on all of these but not
    elsewhere is contrived (a ``where`` on a region between the sampled rows, say).
    """
    xs = xgrid.flat_points()
    ys = _ys(model, ys)
    J, nc, N, n = len(ys), len(u), len(xs), model.n
    X, Y = xs[None, None], ys[:, None, None]
    Ap = np.broadcast_to(model.a(xs[None, None, :1], Y[:1], u[None, :, None]), (1, nc, 1, n))[0, :, 0]
    Lp = np.broadcast_to(model.l(xs[None, None, :1], Y[:1], u[None, :, None]), (1, nc, 1))[0, :, 0]
    du = u - u[:1]
    Bt, *_ = np.linalg.lstsq(du, Ap - Ap[:1], rcond=None)
    B = np.ascontiguousarray(Bt.T)                                                       # (n, k)
    q = Lp - Lp[0]
    a0 = np.broadcast_to(_finite("a", model.a(X, Y, u[None, :1, None])), (J, 1, N, n))[:, 0] - B @ u[0]
    l0 = np.broadcast_to(_finite("l", model.l(X, Y, u[None, :1, None])), (J, 1, N))[:, 0] - q[0]
    scale_a = 1.0 + np.abs(a0).max() + np.abs(B).sum() * np.abs(u).max()
    scale_l = 1.0 + np.abs(l0).max() + np.abs(q).max()
    a0 = np.ascontiguousarray(a0)
    stride = max(1, int(np.ceil(np.sqrt(N / SAMPLE))))
    axes = [np.unique(np.r_[np.arange(0, m, stride), m - 1]) for m in xgrid.shape]
    sub = np.ravel_multi_index(np.ix_(*axes), xgrid.shape).ravel()
    four = np.unique([0, nc // 3, (2 * nc) // 3, nc - 1])
    for nodes, controls in ((sub, np.arange(nc)), (np.arange(N), four)):
        Xs, a0s, l0s = X[:, :, nodes], np.ascontiguousarray(a0[:, nodes]), np.ascontiguousarray(l0[:, nodes])
        per = max(1, CHUNK // (J * len(nodes)))
        for c0 in range(0, len(controls), per):
            cs = controls[c0:c0 + per]
            uc = u[cs]
            A = np.broadcast_to(model.a(Xs, Y, uc[None, :, None]), (J, len(cs), len(nodes), n))
            if not K.linear_deviation(A, a0s, np.ascontiguousarray(uc @ B.T)) <= rtol * scale_a:
                _finite("a", A)
                return None
            L = np.broadcast_to(model.l(Xs, Y, uc[None, :, None]), (J, len(cs), len(nodes)))
            if not K.linear_deviation(L[..., None], l0s[..., None], np.ascontiguousarray(q[cs, None])) <= rtol * scale_l:
                _finite("l", L)
                return None
    return a0, B, l0, q


def affine_tables(model: Model, xgrid: Grid, ys):
    """a0 (J, N, n), B (J, N, n, k), l0 (J, N), sigma (J, N, n, n) at u_ref (N = flat slow nodes)."""
    return affine_at(model, xgrid.flat_points(), _ys(model, ys))


def affine_at(model: Model, xs: np.ndarray, ys: np.ndarray):
    """:func:`affine_tables` at the points xs (M, n) and fast nodes ys (J, m)."""
    aff = model.affine
    J, N, n, k = len(ys), len(xs), model.n, model.k
    X, Y = xs[None], ys[:, None]
    a0 = np.broadcast_to(_finite("a0", aff.a0(X, Y)), (J, N, n))
    B = np.broadcast_to(_finite("B", aff.B(X, Y)), (J, N, n, k))
    l0 = np.broadcast_to(_finite("l0", aff.l0(X, Y)), (J, N))
    uref = np.broadcast_to(np.asarray(aff.u_ref, float), (J, N, k))
    S = np.broadcast_to(_finite("sigma", model.sigma(X, Y, uref)), (J, N, n, n))
    return a0, B, l0, S


def _use_exact_1d(model: Model, xgrid: Grid, B: np.ndarray, order: int) -> bool:
    if order != 2:
        return True
    dB = np.gradient(B[..., 0, 0], xgrid.h[0], axis=1)
    return bool(np.abs(dB).max() <= 1e-12 * max(1.0, np.abs(B).max()))


def _affine_stepper(model: Model, xgrid: Grid, a0, B, l0, S, dt, order, mode, minimize, u_nodes, refine):
    """Affine stepper on a batch; a0 (J, N, n) ... flat slow nodes."""
    aff = model.affine
    J, n, k = a0.shape[0], model.n, model.k
    lo, hi = np.asarray(model.controls.lo, float), np.asarray(model.controls.hi, float)
    if n == 1:
        return AffineStepper1D(xgrid, a0[..., 0], B[..., 0, 0], l0, S[..., 0, 0], aff.c, aff.u_ref[0], lo[0], hi[0],
                               dt, order=order, mode=mode)
    shp = (J,) + xgrid.shape
    return AffineStepper2D(xgrid, a0.reshape(shp + (n,)), B.reshape(shp + (n, k)), l0.reshape(shp),
                           S.reshape(shp + (n, n)), aff.c, None, np.asarray(aff.u_ref, float), lo, hi,
                           control_nodes(model, u_nodes), dt, order=order, mode=mode,
                           refine=refine if minimize != "grid" else 0)


def minimisation_kind(model: Model, xgrid: Grid, minimize: str = "auto", order: int = 2) -> str:
    """'exact' (1-D affine), 'refined' (2-D affine: grid + golden section) or 'grid' (tabulated)."""
    if minimize not in ("auto", "exact", "grid", "refined"):
        raise ValueError("minimize must be 'auto', 'exact', 'refined' or 'grid'")
    aff = model.affine
    if minimize == "grid" and model.n == 1:
        return "grid"
    if aff is None or model.k == 0 or aff.c <= 0 and model.n == 2:
        return "grid"
    if model.n == 1 and model.k == 1:
        if minimize == "exact":
            return "exact"
        a0, B, l0, S = affine_tables(model, xgrid, None if model.m == 0 else np.zeros((1, model.m)))
        return "exact" if _use_exact_1d(model, xgrid, B, order) else "grid"
    if model.n == 2:
        return "refined" if minimize != "grid" else "grid-affine"
    return "grid"


def per_y_stepper(model: Model, xgrid: Grid, ys, dt: float, order: int = 2, mode: int = 0, minimize: str = "auto",
                  u_nodes=None, refine: int = 2):
    """Stepper for the slow step at every fast node y_j (ys (J, m); None for m = 0)."""
    kind = minimisation_kind(model, xgrid, minimize, order)
    if kind in ("exact", "refined", "grid-affine"):
        a0, B, l0, S = affine_tables(model, xgrid, ys)
        if kind == "exact" and not _use_exact_1d(model, xgrid, B, order) and minimize == "auto":
            kind = "grid"
        else:
            return _affine_stepper(model, xgrid, a0, B, l0, S, dt, order, mode, minimize, u_nodes, refine)
    u = control_nodes(model, u_nodes)
    if model.n == 2 and model.sigma_zero and model.k <= 2:
        parts = linear_control_parts(model, xgrid, ys, u)
        if parts is not None:
            a0, B, l0, q = parts
            J, shp = a0.shape[0], xgrid.shape
            return LinearControlStepper(xgrid, a0.reshape((J,) + shp + (2,)), B, l0.reshape((J,) + shp), q, u,
                                        dt, order=order, mode=mode)
        return deterministic_tab_stepper(model, xgrid, ys, u, dt, order, mode)
    A, S, L = tab_tables(model, xgrid, ys, u)
    st = TabStepper(xgrid, A, S, L, dt, order=order, mode=mode)
    st.u_nodes = u
    return st


# ----------------------------------------------------------------------------------------------------------
# averaged (eps = 0) problems


def _sqrt_spd(M: np.ndarray) -> np.ndarray:
    """A factor S with S S^T = M for symmetric non-negative M (..., n, n) (eigen-decomposition)."""
    w, Q = np.linalg.eigh(M)
    return Q * np.sqrt(np.maximum(w, 0.0))[..., None, :]


def y_independent(arr: np.ndarray, tol: float = 1e-12) -> bool:
    """True if arr (J, ...) is the same for every fast node j."""
    return bool(np.all(np.abs(arr - arr[:1]) <= tol * max(1.0, float(np.abs(arr).max()))))


def pfamily_affine(a0, B, l0, c, uref, lo, hi, pi, pgrid, Abar, Lbar):
    """Averaged drift and cost of the extended control alpha_p(y) = clip(uref - B(x,y)^T p / c) (c > 0),
    by the shared kernel :func:`hjbsolve.hamiltonian.sup_affine_quadratic`.

    a0 (J, N, n), B (J, N, n, k), l0 (J, N), pi (N, J), pgrid (np, n) -> Abar (np, N, n), Lbar (np, N).
    """
    J, N, n, k = B.shape
    _, _, ab, lb = sup_affine_quadratic(
        np.ascontiguousarray(pi), np.ascontiguousarray(np.transpose(a0, (1, 0, 2))),
        np.ascontiguousarray(np.transpose(B, (1, 0, 2, 3))), np.ascontiguousarray(np.transpose(l0)),
        np.zeros((N, J)), float(c), np.asarray(uref, float), np.asarray(lo, float), np.asarray(hi, float),
        np.ascontiguousarray(pgrid), False)
    Abar[...] = np.transpose(ab, (1, 0, 2))
    Lbar[...] = np.transpose(lb)


def pfamily_grid(A, L, pi, pgrid, Abar, Lbar):
    """The same with alpha_p(y_j) = argmax over the control grid of -a.p - l, by the shared kernel
    :func:`hjbsolve.hamiltonian.sup_inside_average` (upper envelopes for n = 1, direct search otherwise).

    A (J, nc, N, n), L (J, nc, N), pi (N, J), pgrid (np, n) -> Abar (np, N, n), Lbar (np, N).
    """
    _, _, ab, lb = sup_inside_average(pi, np.transpose(A, (2, 0, 1, 3)), np.transpose(L, (2, 0, 1)), pgrid,
                                      want_arg=False)
    Abar[...] = np.transpose(ab, (1, 0, 2))
    Lbar[...] = np.transpose(lb)


def extended_feedback(model: Model, xgrid: Grid, ys, p: np.ndarray, u_nodes=None) -> np.ndarray:
    """alpha_p(y) at every (x_i, y_j) for one p per slow node: p (N, n) -> (N, J, k)."""
    xs = xgrid.flat_points()
    ys = _ys(model, ys)
    N, J, n, k = len(xs), len(ys), model.n, model.k
    if model.affine is not None and model.affine.c > 0:
        aff = model.affine
        B = np.broadcast_to(aff.B(xs[:, None], ys[None]), (N, J, n, k))
        u = np.asarray(aff.u_ref) - np.einsum("ijdr,id->ijr", B, p) / aff.c
        return np.clip(u, model.controls.lo, model.controls.hi)
    u = control_nodes(model, u_nodes)
    out = np.empty((N, J, k))
    for j, y in enumerate(ys):
        X, Y, U = xs[:, None], y[None, None], u[None]
        H = -np.einsum("icd,id->ic", np.broadcast_to(model.a(X, Y, U), (N, len(u), n)), p) - model.l(X, Y, U)
        out[:, j] = u[np.argmax(H, axis=1)]
    return out


class AveragedProblem:
    """The effective problem as an ordinary control problem with averaged coefficients (see module doc).

    ``variant``: 'extended' (sup inside the average) or 'y_blind'. ``stepper`` is rebuilt by
    :meth:`widen` when the optimal p reaches the edge of the p grid.
    """

    def __init__(self, model: Model, xgrid: Grid, ys, pi: np.ndarray, dt: float, variant: str = "extended",
                 order: int = 2, mode: int = 0, minimize: str = "auto", u_nodes=None, refine: int = 2,
                 p_range=None, n_p=None):
        self.model, self.xgrid, self.ys, self.pi = model, xgrid, _ys(model, ys), np.ascontiguousarray(pi)
        self.dt, self.variant, self.order, self.mode = dt, variant, order, mode
        self.minimize, self.u_nodes, self.refine = minimize, u_nodes, refine
        n = model.n
        N = xgrid.size
        self.kind = None
        pw = self.pi.T  # (J, N)
        use_affine = (model.affine is not None and model.k > 0
                      and minimisation_kind(model, xgrid, minimize, order) != "grid")
        if use_affine:
            # averages over y of the affine parts, a chunk of slow nodes at a time (memory of one chunk)
            J, k = len(self.ys), model.k
            xs = xgrid.flat_points()
            a0b, l0b, Bb, self.Sbar = np.empty((N, n)), np.empty(N), np.empty((N, n, k)), np.empty((N, n, n))
            same = True
            for sl in node_chunks(N, 16 * J * (n + n * k + 1 + 2 * n * n)):
                a0, B, l0, S = affine_at(model, xs[sl], self.ys)
                SS = np.einsum("jndr,jner->jnde", S, S)
                self.Sbar[sl] = _sqrt_spd(np.einsum("jn,jnde->nde", pw[:, sl], SS))
                a0b[sl] = np.einsum("jn,jnd->nd", pw[:, sl], a0)
                l0b[sl] = np.einsum("jn,jn->n", pw[:, sl], l0)
                Bb[sl] = np.einsum("jn,jndk->ndk", pw[:, sl], B)      # y-blind: abar(u) = a0bar + Bbar u
                same = same and y_independent(B)
            self._aff = True
            if variant == "y_blind" or same:
                self.stepper = _affine_stepper(model, xgrid, a0b[None], Bb[None], l0b[None], self.Sbar[None], dt,
                                               order, mode, minimize, u_nodes, refine)
                self.kind = "averaged-affine"
                return
        else:
            self._aff = None
        u = control_nodes(model, u_nodes)
        self.u = u
        self.n_p = n_p or (401 if n == 1 else 41)
        self.p_range = p_range
        if self._aff is not None and variant == "extended" and model.affine.c > 0:
            # maximisers in closed form: no control tables needed
            self.kind = "averaged-p-family"
            return
        if variant == "extended" and model.k > 0:
            # the p family: tables of (y, control) at a chunk of slow nodes at a time (memory of one chunk)
            self.Sbar = np.empty((N, n, n))
            xs = xgrid.flat_points()
            J, nc = len(self.ys), len(u)
            for sl in node_chunks(N, 8 * J * nc * (n * n + n + 1)):
                _, S, _ = coefficients_at(model, xs[sl], self.ys, u)
                if S.shape[1] > 1:
                    raise NotImplementedError("the extended averaged scheme needs sigma independent of u: use "
                                              "effective_scheme='per_y'")
                SS = np.einsum("jndr,jner->jnde", S[:, 0], S[:, 0])
                self.Sbar[sl] = _sqrt_spd(np.einsum("jn,jnde->nde", pw[:, sl], SS))
            self.kind = "averaged-p-family"
            return
        A, S, L = tab_tables(model, xgrid, self.ys, u)
        J, nc = A.shape[:2]
        A = A.reshape(J, nc, N, n)
        L = L.reshape(J, nc, N)
        S = S.reshape(J, S.shape[1], N, n, n)
        if variant == "y_blind" or model.k == 0:
            Abar = np.einsum("jn,jcnd->cnd", pw, A)
            Lbar = np.einsum("jn,jcn->cn", pw, L)
            SS = np.einsum("jcndr,jcner->jcnde", S, S)
            Sbar = _sqrt_spd(np.einsum("jn,jcnde->cnde", pw, SS))
            shp = xgrid.shape
            self.stepper = TabStepper(xgrid, Abar.reshape((1, nc) + shp + (n,)),
                                      Sbar.reshape((1, Sbar.shape[0]) + shp + (n, n)),
                                      Lbar.reshape((1, nc) + shp), dt, order=order, mode=mode)
            self.kind = "averaged-grid"
            return

    def initial_p_range(self, V0: np.ndarray) -> None:
        """p box from the gradient of the initial datum, widened (rebuilt later if too small)."""
        if self.kind != "averaged-p-family" or self.p_range is not None:
            if self.kind == "averaged-p-family":
                self._build()
            return
        grads = np.gradient(V0.reshape(self.xgrid.shape), *self.xgrid.h, edge_order=2)
        grads = [grads] if self.model.n == 1 else grads
        rng = []
        for gd in grads:
            lo, hi = float(gd.min()), float(gd.max())
            c, w = 0.5 * (lo + hi), 0.5 * (hi - lo)
            rng.append((c - 1.5 * w - 1.0, c + 1.5 * w + 1.0))
        self.p_range = np.array(rng)
        self._build()

    def _build(self) -> None:
        n, N = self.model.n, self.xgrid.size
        pr = np.asarray(self.p_range, float).reshape(n, 2)
        axes = [np.linspace(a, b, self.n_p) for a, b in pr]
        self.p_axes = axes
        pgrid = np.ascontiguousarray(np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, n))
        self.pgrid = pgrid
        Abar = np.empty((len(pgrid), N, n))
        Lbar = np.empty((len(pgrid), N))
        xs = self.xgrid.flat_points()
        J = len(self.ys)
        if self._aff is not None and self.model.affine.c > 0:
            aff = self.model.affine
            k = self.model.k
            for sl in node_chunks(N, 24 * J * (n + n * k + 1)):
                a0, B, l0, _ = affine_at(self.model, xs[sl], self.ys)
                pfamily_affine(np.ascontiguousarray(a0), np.ascontiguousarray(B), np.ascontiguousarray(l0),
                               float(aff.c), np.asarray(aff.u_ref, float), np.asarray(self.model.controls.lo, float),
                               np.asarray(self.model.controls.hi, float), self.pi[sl], pgrid, Abar[:, sl],
                               Lbar[:, sl])
        else:
            if self._aff is not None:   # affine with c = 0: tabulate it
                self._aff = None
            # the (y, control) tables of a chunk of slow nodes at a time: memory of one chunk, not of the grid
            u = control_nodes(self.model, self.u_nodes)
            nc = len(u)
            for sl in node_chunks(N, 8 * J * nc * (n + 1) * 3):
                A, _, L = coefficients_at(self.model, xs[sl], self.ys, u)
                pfamily_grid(A, L, self.pi[sl], pgrid, Abar[:, sl], Lbar[:, sl])
        shp = self.xgrid.shape
        self.stepper = TabStepper(self.xgrid, Abar.reshape((1, len(pgrid)) + shp + (n,)),
                                  self.Sbar.reshape((1, 1) + shp + (n, n)), Lbar.reshape((1, len(pgrid)) + shp),
                                  self.dt, order=self.order, mode=self.mode)

    def needs_widening(self) -> bool:
        """True if the optimal p sits on the edge of the p grid somewhere in the central half of the box
        *and* the edge entry differs from its inward neighbour. When the maximiser saturates (a control box),
        every p beyond some value gives the same drift and cost: the minimiser then lands on the edge by a
        tie, and widening would only coarsen the p grid (it used to, collapsing the control set)."""
        if self.kind != "averaged-p-family":
            return False
        from .steppers import interior_window
        n = self.model.n
        shape = (self.n_p,) * n
        arg = self.stepper.arg[0].reshape(-1)
        idx = np.stack(np.unravel_index(arg, shape), axis=-1)                    # (N, n)
        edge = np.any((idx == 0) | (idx == self.n_p - 1), axis=-1)
        edge &= interior_window(self.xgrid).reshape(-1)
        if not edge.any():
            return False
        inner = np.where(idx == 0, 1, np.where(idx == self.n_p - 1, self.n_p - 2, idx))
        nb = np.ravel_multi_index(tuple(inner.T), shape)
        nodes = np.flatnonzero(edge)
        C = self.stepper.C.reshape(self.n_p ** n, -1)
        D = self.stepper.disp.reshape(self.n_p ** n, self.xgrid.size, -1)
        same_c = np.isclose(C[arg[nodes], nodes], C[nb[nodes], nodes], rtol=1e-12, atol=1e-14)
        same_d = np.all(np.isclose(D[arg[nodes], nodes], D[nb[nodes], nodes], rtol=1e-12, atol=1e-14), axis=-1)
        return bool(np.any(~(same_c & same_d)))

    def widen(self) -> None:
        pr = np.asarray(self.p_range, float).reshape(self.model.n, 2)
        c, w = pr.mean(axis=1), 0.5 * (pr[:, 1] - pr[:, 0])
        self.p_range = np.stack([c - 2 * w, c + 2 * w], axis=-1)
        self._build()

    def feedback(self) -> np.ndarray:
        """Optimal extended control on (x, y) at the last step: (*xshape, J, k)."""
        st = self.stepper
        N, J, k = self.xgrid.size, len(self.ys), self.model.k
        shp = self.xgrid.shape
        if self.kind == "averaged-affine":
            us = st.ustar.reshape(N, k) if hasattr(st, "ustar") else None
            if us is None:
                us = st.u_nodes[st.arg.reshape(N)]
            return np.broadcast_to(us[:, None, :], (N, J, k)).reshape(shp + (J, k))
        if self.kind == "averaged-grid":
            us = self.u[st.arg.reshape(N)]
            return np.broadcast_to(us[:, None, :], (N, J, k)).reshape(shp + (J, k))
        p = self.pgrid[st.arg.reshape(N)]
        return extended_feedback(self.model, self.xgrid, self.ys, p, self.u_nodes).reshape(shp + (J, k))


def suggest_slow_box(model: Model, window, T: float, ys=None, pi=None, u_nodes=None, samples: int = 21,
                     cap: float = 3.0) -> np.ndarray:
    """A slow box (n, 2) for reporting on ``window`` ((n, 2) or [lo, hi]) over the horizon T.

    Feet that leave the box see an extrapolated V; information reaches the window from at most the distance
    characteristics travel, ``T max|a| + 4 sqrt(2 T) max|sigma|`` (drift and noise sampled on the window, the
    fast nodes ``ys`` (those with weight pi > 1e-8 when pi (nx?, J) is given; by default y = 0) and the
    controls). The margin is capped at ``cap`` window half-widths: with linear extrapolation the pollution
    decays well before that (measure it by box enlargement, see ``scripts/study_value.py box``).
    """
    n = model.n
    win = np.broadcast_to(np.asarray(window, float).reshape(-1, 2), (n, 2))
    axes = [np.linspace(a, b, samples) for a, b in win]
    xs = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, n)
    ys = _ys(model, ys if ys is not None else (np.zeros((1, model.m)) if model.m else None))
    if pi is not None and model.m:
        keep = np.asarray(pi).reshape(-1, len(ys)).max(axis=0) > 1e-8
        ys = ys[keep]
    u = control_nodes(model, u_nodes)
    X, Y, U = xs[None, None], ys[:, None, None], u[None, :, None]
    amax = np.abs(model.a(X, Y, U)).reshape(-1, n).max(axis=0)
    smax = np.abs(model.sigma(X, Y, U)).reshape(-1, n, n).sum(axis=-1).max(axis=0)
    half = 0.5 * (win[:, 1] - win[:, 0])
    margin = np.minimum(T * amax + 4 * np.sqrt(2 * T) * smax, cap * half)
    return np.stack([win[:, 0] - margin, win[:, 1] + margin], axis=-1)
