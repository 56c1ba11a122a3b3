"""Value functions V^eps(t, x, y) and V(t, x) by monotone semi-Lagrangian (SL) schemes.

Convention (docs/mathematics.md, sup convention): t is the time *remaining*, V is the inf of the expected cost,

    ∂_t V^eps + H(x, y, D_x V, D_xx V) - (1/eps) L^x V = 0,   V^eps(0) = g        (eps > 0)
    ∂_t V + Hbar(x, D V, D² V) = 0,                           V(0) = gbar          (eps = 0)
    ∂_t V + H(x, D V, D² V) = 0,                              V(0) = g             (m = 0, plain HJB)

Schemes (details in :mod:`hjbsolve.sl.kernels`, :mod:`hjbsolve.sl.steppers`, :mod:`hjbsolve.sl.build`):

* Slow step (every case): ``V^{k+1}(x) = min_u [ C_u(x) + sum_f w_f V^k(xi_f(u)) ]`` with the feet
  ``xi_f = x + dt a + dt²/2 (D_x a) a ± sqrt(2 n dt)(I + dt/2 D_x a) sigma_col`` (Kushner/Camilli-Falcone
  2n-point stencil, Taylor second-order characteristics; ``order=1``: Euler feet) and the trapezoidal step cost
  ``C_u = dt/2 (l(x, u) + E l(xi, u))``; multilinear interpolation with non-negative weights: monotone.
  Minimisation: control-affine models with quadratic cost are minimised exactly in 1-D (the objective is
  piecewise quadratic in u along the interpolant) and by grid + golden section in 2-D, and their noise width
  and cost include the affine feedback ``u + K (xi - x)``, K = D_x u*, within the step (without it a control
  frozen over the step cannot react to the noise: an O(dt) error ``c K² sigma² T/2``); other models are
  minimised over a finite control set (O(du²) per unit time), first order in time when sigma != 0 and the
  feedback depends on x (frozen control), second order otherwise. Error: O(dt²) (resp. O(dt)) + O(dx²/dt).
* eps > 0: Lie splitting, slow step at every fixed fast node y_j, then the fast part implicitly,
  ``(I - (dt/eps) Q_x) V^{k+1}(x, .) = W(x, .)`` with the cell stage's generator Q_x (tridiagonal GTH solve in
  1-D y, sparse LU per x for m = 2, factorised once). Monotone, stable and equally expensive for every eps;
  first order in dt, uniformly in eps. As eps -> 0 the fast solve tends to the pi-average: the scheme becomes
  the per-y effective scheme below exactly (asymptotic preserving).
* eps = 0, ``effective_scheme="per_y"``: the slow step at every y_j then the pi-average,
  ``V^{k+1}(x_i) = sum_j pi_j min_u S_{u, y_j}[V^k](x_i)`` (min inside the average: extended controls), or
  ``min_u sum_j pi_j S_{u, y_j}[V^k]`` (y-blind). Each step freezes y for a time dt while the true fast variable
  has mixed: the fan of per-y feet acts as a spurious diffusion ``(dt/2) Var_pi(a*) D²V`` per unit time (a* the
  per-y optimal drift; per-y controls can partly counteract it at a cost): first order in dt whatever the feet.
* eps = 0, ``effective_scheme="averaged"`` (default): the effective problem as an ordinary control problem
  with averaged coefficients, one foot per control (no fan), second order in time. Extended controls enter
  through the family of maximisers ``alpha_p(y) = argmax_u H(x, y, p)`` parametrised by p: the min over p
  realises Hbar (sup inside the average) exactly; for control-affine models whose B does not depend on y the
  maximiser does not depend on y and the extended and y-blind problems coincide.

* ``richardson=True`` (first-order schemes: eps > 0, per-y, plain): Richardson extrapolation in dt,
  ``V = 2 V_{dt/2} - V_dt``, with the monotone ``V_monotone = V_{dt/2}`` kept beside it (the
  viscosity-consistent fallback where V is not smooth) and ``richardson_change_max`` = max |V - V_monotone|
  on the central half of the box (the error estimate of V_monotone). Second order in dt, uniformly in eps:
  the Lie scheme's error is ``C dt + O(dt²)`` with C bounded in eps (the splitting constant for eps >> dt,
  the fan constant (1/2) Var_pi(a*) D²V for eps << dt), and the implicit fast step has no O(eps/dt) term
  (its fixed point ``-(dt/eps) Q w = dt F`` is the quasi-static corrector ``Q w = -eps F`` of V^eps).
  The eps -> 0 limit is the extrapolated per-y scheme (second order); the interpolation term becomes
  0.45 dx²/dt (choose dx ∝ dt^1.5). Measured on the LQ family: orders 1.84-1.90 at eps = 0.1 and 1e-3,
  error <= 7.5e-4 for every eps on 641 x 151 nodes with dt = 0.05 (tests/test_value_richardson.py).
  In the first-order schemes a 1-D control-affine model whose B depends on x is minimised exactly all
  the same (:func:`_exact_in_splitting`).
* Feedback: ``feedback_t`` holds the control at every output time (float32), ``feedback`` its last slice;
  ``attrs["minimisation"]`` says which minimisation ran.

Truncated domains: the slow box is the grid's; feet outside it see the interpolant extended linearly
(``extrapolation="linear"``, default) or the foot clamped to the box (``"clamp"``: homogeneous Neumann).
Report errors on an interior window: the box edge pollutes a layer whose width grows with the foot spread.

Time step: dt is adjusted to T / round(T / dt). After the first step the largest displacement of the
optimal feet on the central half of the box is measured; if it exceeds ``max_cells`` grid cells the time
error dominates what the grid can resolve (the SL error is O(dt^q + dx²/dt)), and a warning recommends
``dt * max_cells / displacement``.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import store
from .cell.invariant import BoxWarning, check_truncation
from .errors import NumericalError
from .grid import Grid
from .model import Model
from .progress import progress
from .result import axis_names
from .sl import kernels as K
from .sl.build import AveragedProblem, control_nodes, fast_generators, minimisation_kind, per_y_stepper
from .sl.fast import FastSolver
from .sl.steppers import interior_window

log = logging.getLogger(__name__)

EXTRAPOLATIONS = {"linear": 0, "clamp": 1, "neumann": 1}


class TimeStepWarning(UserWarning):
    """dt is too large for the accuracy the grid can give."""


#: the value stage's y-box warning is the cell stage's (one check, ``cell.invariant.check_truncation``)
YBoxWarning = BoxWarning


class ControlGridWarning(UserWarning):
    """A minimisation over a control grid whose spacing limits the accuracy."""


#: estimated control-grid error (T c du²/8) above which the value stage warns
CONTROL_GRID_WARN = 1e-3


def interpolation_error_estimate(model: Model, xgrid: Grid, ygrid: Grid | None, T: float, dt: float) -> float:
    """The scheme's own error scale: the multilinear-interpolation term ``(T/dt) sum_d h_d²/8 max|D_dd V|`` of
    the SL step, with the terminal cost g (at the centre of the y box) standing in for V, its second
    differences taken on the central half of the slow box."""
    xs = xgrid.flat_points()
    yc = np.zeros((1, 0)) if ygrid is None else 0.5 * (np.asarray(ygrid.lo) + np.asarray(ygrid.hi))[None]
    g = np.broadcast_to(model.g(xs, np.broadcast_to(yc, (len(xs), yc.shape[1]))), (len(xs),)).reshape(xgrid.shape)
    win = interior_window(xgrid)
    est = 0.0
    for d in range(xgrid.ndim):
        if xgrid.shape[d] < 3:
            continue
        D2 = np.gradient(np.gradient(g, xgrid.h[d], axis=d), xgrid.h[d], axis=d)
        est += xgrid.h[d] ** 2 / 8 * float(np.abs(D2[win]).max())
    return float(T / dt * est)


def _control_grid_check(model, u_nodes: np.ndarray, T: float, what: str, scheme_err: float = 0.0) -> str:
    """Describe the control grid of a grid-only minimisation and warn when, for a quadratic control cost
    c |u - u_ref|²/2, its error estimate T c du²/8 (the cost of missing the minimiser by du/2 per unit time)
    exceeds both CONTROL_GRID_WARN and the scheme's own error estimate ``scheme_err``
    (:func:`interpolation_error_estimate`), with the number of nodes that would bring it below."""
    u = np.asarray(u_nodes, float).reshape(len(u_nodes), -1)
    du = max((np.diff(np.unique(u[:, d])).max() if len(np.unique(u[:, d])) > 1 else 0.0) for d in range(u.shape[1]))
    text = f"min over a grid of {len(u)} controls (spacing {du:.3g})"
    c = getattr(model.affine, "c", None) if model.affine is not None else None
    if c is not None and du > 0:
        est = T * float(c) * du * du / 8
        level = max(CONTROL_GRID_WARN, scheme_err)
        text += f", error estimate T c du^2/8 = {est:.2g}"
        if est > level:
            width = max(float(np.ptp(u[:, d])) for d in range(u.shape[1]))
            need = int(np.ceil(width / np.sqrt(8 * level / (T * float(c))))) + 1
            warnings.warn(f"{what}: {text}, above the scheme's own error estimate {scheme_err:.2g} "
                          f"(interpolation): set grid.u.n >= {need}", ControlGridWarning, stacklevel=3)
    return text


@dataclass
class ValueResult:
    """Output of :func:`value_function`.

    V: (len(t_out), *xshape[, *yshape]); feedback: optimal control at the final time (*xshape[, *yshape], k)
    (for eps = 0 the extended feedback on (x, y)); feedback_t: the same at every output time
    (len(t_out), ...), float32: at t_k the control of the step that ends at t_k (at t = 0 that of the first
    step); V_monotone: with ``richardson=True`` the monotone V_{dt/2} (V is then the extrapolated value);
    V_blind/feedback_blind: the y-blind value (eps = 0, when asked). Failed runs raise :class:`~hjbsolve.errors.NumericalError` whose ``partial`` attribute holds the
    ValueResult finished so far.
    """

    eps: float
    t_out: np.ndarray
    V: np.ndarray
    xgrid: Grid
    ygrid: Grid | None
    feedback: np.ndarray | None = None
    feedback_t: np.ndarray | None = None
    V_monotone: np.ndarray | None = None
    V_blind: np.ndarray | None = None
    feedback_blind: np.ndarray | None = None
    timings: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)

    def to_group(self) -> store.Group:
        """A :class:`hjbsolve.store.Group` (coordinates t, x | x1 x2, [y | y1 y2], attributes of the scheme)."""
        xd = axis_names("x", self.xgrid.ndim)
        yd = axis_names("y", self.ygrid.ndim) if (self.ygrid is not None and self.V.ndim > 1 + self.xgrid.ndim) else []
        Var = store.Variable
        coords = {"t": Var(np.asarray(self.t_out, float), ("t",), {"long_name": "time remaining"})}
        for nm, ax in zip(xd, self.xgrid.axes):
            coords[nm] = Var(ax, (nm,), {"long_name": f"slow state {nm}"})
        if yd:
            for nm, ax in zip(yd, self.ygrid.axes):
                coords[nm] = Var(ax, (nm,), {"long_name": f"fast state {nm}"})
        name = "V^eps(t,x,y)" if yd else "V(t,x)"
        variables = {"V": Var(self.V, ("t", *xd, *yd), {"long_name": f"value function {name}",
                                                         "convention": "inf of the expected cost; t = time remaining"})}
        fd = list(yd) if yd else (axis_names("y", self.ygrid.ndim) if self.ygrid is not None else [])
        if self.feedback is not None:
            dims = ("control",) if self.feedback.ndim == self.xgrid.ndim + len(fd) + 1 else ()
            variables["feedback"] = Var(self.feedback, (*xd, *fd, *dims),
                                        {"long_name": "optimal control at the final time (extended feedback on (x, y))"})
            if fd and not yd:
                for nm, ax in zip(fd, self.ygrid.axes):
                    coords[nm] = Var(ax, (nm,), {"long_name": f"fast state {nm}"})
        if self.feedback_t is not None:
            dims = ("control",) if self.feedback_t.ndim == 1 + self.xgrid.ndim + len(fd) + 1 else ()
            variables["feedback_t"] = Var(np.asarray(self.feedback_t, np.float32), ("t", *xd, *fd, *dims),
                                          {"long_name": "optimal control at every stored time (the control of "
                                                        "the step ending there; t = 0: the first step's)"})
        if self.V_monotone is not None:
            variables["V_monotone"] = Var(self.V_monotone, ("t", *xd, *yd),
                                          {"long_name": "monotone value V_{dt/2} (V is its Richardson "
                                                        "extrapolation 2 V_{dt/2} - V_dt)"})
        if self.V_blind is not None:
            variables["V_blind"] = Var(self.V_blind, ("t", *xd), {"long_name": "value with y-blind controls"})
        if self.feedback_blind is not None:
            variables["feedback_blind"] = Var(self.feedback_blind, (*xd, "control"),
                                              {"long_name": "optimal y-blind control at the final time"})
        attrs = {"eps": float(self.eps), **{k: v for k, v in self.attrs.items() if v is not None},
                 **{f"time_{k}_s": float(v) for k, v in self.timings.items()}}
        return store.Group(coords=coords, variables=variables, attrs=attrs)


def _mass_warning(pi: np.ndarray, ygrid: Grid) -> dict:
    return check_truncation(pi, ygrid, "value stage")


def value_function(model: Model, cell=None, eps: float = 0.0, T: float = 1.0, dt: float = 0.01,
                   output_times=None, xgrid: Grid | None = None, ygrid: Grid | None = None,
                   variant: str = "extended", effective_scheme: str = "averaged", blind: bool = False,
                   order: int = 2, extrapolation: str = "linear", minimize: str = "auto", u_nodes=None,
                   max_cells: float = 10.0, p_range=None, n_p: int | None = None, refine: int = 2,
                   richardson: bool = False) -> "ValueResult":
    """Solve the value-function problem of ``model`` (see module docstring for equations and schemes).

    Parameters
    ----------
    model : the model (m = 0 for a plain HJB problem, see :mod:`hjbsolve.sl.problem`).
    cell : a :class:`~hjbsolve.effective.CellResult` on the same grids (its mu and gbar are reused), or None.
    eps : > 0 solves V^eps on (x, y); 0 solves the effective problem on x.
    T, dt, output_times : horizon, time step (adjusted to T / round(T / dt)), times to store
        (default T * [0, 1/4, 1/2, 3/4, 1]; each rounded to the nearest step).
    xgrid, ygrid : grids (default: the cell's).
    variant : 'extended' (min inside the pi-average) or 'y_blind' (eps = 0).
    effective_scheme : 'averaged' (second order, no fan) or 'per_y' (the eps -> 0 limit of the V^eps scheme).
    blind : eps = 0: also compute the y-blind value (``V_blind``).
    order : 2 (Taylor feet + trapezoidal cost) or 1 (Euler feet).
    extrapolation : 'linear' (default) or 'clamp' / 'neumann' for feet outside the slow box.
    minimize : 'auto' | 'exact' | 'refined' | 'grid' (see :func:`hjbsolve.sl.build.minimisation_kind`).
    u_nodes : control nodes (nc, k) for the grid min (default: the model's control grid).
    max_cells : displacement (in cells per step) above which the dt warning is issued.
    p_range, n_p : p box ((n, 2)) and nodes per axis of the extended averaged scheme (default from the data).
    richardson : Richardson extrapolation in dt of the first-order schemes (V^eps, per-y, plain): V is
        ``2 V_{dt/2} - V_dt``, ``V_monotone`` the monotone ``V_{dt/2}`` (see the module docstring). Ignored
        (with a note in the attributes) by the averaged eps = 0 scheme, which is second order already.
    """
    t_start = time.perf_counter()
    eps = float(eps)
    if eps < 0:
        raise ValueError("eps must be >= 0")
    if variant not in ("extended", "y_blind"):
        raise ValueError("variant must be 'extended' or 'y_blind'")
    if effective_scheme not in ("averaged", "per_y"):
        raise ValueError("effective_scheme must be 'averaged' or 'per_y'")
    if extrapolation not in EXTRAPOLATIONS:
        raise ValueError(f"extrapolation must be one of {sorted(EXTRAPOLATIONS)}")
    mode = EXTRAPOLATIONS[extrapolation]
    plain = model.m == 0
    xgrid = xgrid or (cell.xgrid if cell is not None else None)
    if xgrid is None:
        raise ValueError("give xgrid (or a cell result)")
    if not plain:
        ygrid = ygrid or (cell.ygrid if cell is not None else None)
        if ygrid is None:
            raise ValueError("give ygrid (or a cell result)")
    else:
        ygrid = None
    n = model.n
    nsteps = max(1, int(round(T / dt)))
    if abs(T / nsteps - dt) > 0.01 * dt:
        warnings.warn(f"dt = {dt:g} does not divide T = {T:g}: using dt = {T / nsteps:g} ({nsteps} steps)",
                      TimeStepWarning, stacklevel=2)
    dt = T / nsteps
    if output_times is None:
        output_times = T * np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    out_steps = sorted({min(nsteps, max(0, int(round(t / dt)))) for t in np.atleast_1d(output_times)})
    t_out = np.array([k * dt for k in out_steps])
    off = [t for t in np.atleast_1d(output_times) if abs(min(nsteps, max(0, round(t / dt))) * dt - t) > 1e-9 * max(T, 1)]
    if off:
        log.info("output times %s are not multiples of dt = %g: stored at the nearest step (the stored t is exact)",
                 np.round(off, 6).tolist(), dt)
    xs = xgrid.flat_points()
    xshape = xgrid.shape
    timings = {}
    attrs = {"scheme": "", "order_time": "", "dt": dt, "T": float(T), "nsteps": nsteps,
             "extrapolation": f"{extrapolation}: feet outside the slow box see the "
                              + ("interpolant extended linearly" if mode == 0 else "foot clamped onto the box (Neumann)"),
             "x_box": np.array([xgrid.lo, xgrid.hi]).T.ravel()}
    if ygrid is not None:
        attrs["y_box"] = np.array([ygrid.lo, ygrid.hi]).T.ravel()

    # fast laws and generators
    gens = None
    ys = None
    pi = None
    same = False
    if not plain:
        ys = ygrid.flat_points()
        same = cell is not None and cell.xgrid == xgrid and cell.ygrid == ygrid
        if eps > 0 or not same:
            gens, pi = fast_generators(model, xgrid, ygrid)
        if same:
            pi = np.ascontiguousarray(cell.mu.reshape(xgrid.size, ygrid.size))
        else:            # the cell stage has checked its own laws on this grid already
            _mass_warning(pi, ygrid)
    timings["setup"] = time.perf_counter() - t_start

    def run(kind: str, dt: float, nsteps: int, out_steps: list, tag: str = ""):
        """kind: 'plain', 'eps', 'per_y', 'per_y_blind', 'averaged' -> (V_out list, feedback list): V and the
        optimal control at every output step (the control of step k, which maps V(t_k - dt) to V(t_k); at
        t = 0 that of the first step)."""
        t0 = time.perf_counter()
        ext_var = "y_blind" if kind in ("per_y_blind", "averaged_blind") else "extended"
        fast = None
        avg = None
        if kind == "plain":
            st = per_y_stepper(model, xgrid, None, dt, order, mode, minimize, u_nodes, refine)
            V = np.array(model.g(xs, np.zeros((len(xs), 0))).reshape((1,) + xshape), float, copy=True)
        elif kind == "eps":
            st = per_y_stepper(model, xgrid, ys, dt, order, mode, minimize, u_nodes, refine)
            fast = FastSolver(gens, dt / eps)
            V = np.array(np.broadcast_to(model.g(xs[None], ys[:, None]), (len(ys), len(xs)))
                         .reshape((len(ys),) + xshape), float, copy=True)
        else:
            if same and cell.gbar is not None:
                gb = np.asarray(cell.gbar, float).reshape(xgrid.size)
            else:
                gb = np.einsum("ij,ji->i", pi, np.broadcast_to(model.g(xs[None], ys[:, None]), (len(ys), len(xs))))
            V = np.array(gb.reshape((1,) + xshape), float, copy=True)
            if kind.startswith("per_y"):
                st = per_y_stepper(model, xgrid, ys, dt, order, mode,
                                   "grid" if kind == "per_y_blind" else minimize, u_nodes, refine)
                if kind == "per_y_blind" and n != 1:
                    raise NotImplementedError("the per-y y-blind scheme is implemented for n = 1")
            else:
                avg = AveragedProblem(model, xgrid, ys, pi, dt, variant=ext_var, order=order, mode=mode,
                                      minimize=minimize, u_nodes=u_nodes, refine=refine, p_range=p_range, n_p=n_p)
                avg.initial_p_range(V)
                st = avg.stepper
                attrs["minimisation"] = _averaged_minimisation(avg, model, xgrid, minimize, order, u_nodes, T,
                                                               scheme_err)
        timings[f"{kind}{tag}_setup"] = time.perf_counter() - t0
        outs = [V.copy()] if 0 in out_steps else []
        fbs = []
        buf = np.empty_like(V)
        J = len(ys) if ys is not None else 1
        W = np.empty((J,) + xshape) if kind in ("eps", "per_y") else None
        t1 = time.perf_counter()
        for k in progress(range(1, nsteps + 1), desc=f"value {kind}{tag} eps={eps:g}", total=nsteps, unit="step"):
            ts = time.perf_counter()
            if kind == "eps":
                st.step(V, W)
                fast.solve(W.reshape(J, -1), buf.reshape(J, -1))
            elif kind == "per_y":
                Vb = np.ascontiguousarray(np.broadcast_to(V, (J,) + xshape))
                st.step(Vb, W)
                K.average_over_y(W.reshape(J, -1), pi, buf.reshape(-1))
            elif kind == "per_y_blind":
                K.step_blind_1d(V[0], pi, st.C, st.disp, st.noise, st.mode, buf[0], st.arg[0])
            else:
                st.step(V, buf)
                if avg is not None and avg.needs_widening():
                    for _ in range(6):
                        avg.widen()
                        st = avg.stepper
                        st.step(V, buf)
                        if not avg.needs_widening():
                            break
            if not K.all_finite(buf):
                part = finish(outs, fbs, kind, partial=True)
                err = NumericalError(f"non-finite value in the value stage ({kind} scheme), eps = {eps:g}, "
                                     f"step {k} of {nsteps} (t = {k * dt:g})")
                err.partial = part
                raise err
            V, buf = buf, V
            if k == 1:
                timings[f"{kind}{tag}_first_step"] = time.perf_counter() - ts
                if kind != "per_y_blind" and tag != "_dt2":
                    # rows: fast nodes in the central half of the y box (the tails move fast but weigh nothing)
                    rows = (None if kind not in ("eps", "per_y") else
                            interior_window(ygrid).ravel())
                    d = st.displacement_cells(rows)
                    if d > max_cells:
                        warnings.warn(f"dt = {dt:g}: the optimal feet move up to {d:.1f} grid cells per step "
                                      f"(more than {max_cells:g}); unless the characteristics are exact (constant "
                                      "coefficients), the time error then dominates what the grid resolves: "
                                      f"recommended dt <= {dt * max_cells / d:.3g}",
                                      TimeStepWarning, stacklevel=3)
                if 0 in out_steps:
                    fbs.append(feedback(kind, st, avg))
            if k in out_steps:
                outs.append(V.copy())
                fbs.append(feedback(kind, st, avg))
        timings[f"{kind}{tag}_steps"] = time.perf_counter() - t1
        timings[f"{kind}{tag}_total"] = time.perf_counter() - t0
        return outs, fbs

    def feedback(kind, st, avg):
        """The control of the last step (float32): (*xshape[, *yshape], k); None for k = 0."""
        k = model.k
        if k == 0:
            return None
        if avg is not None:
            fb = avg.feedback()
            full = int(np.prod(xshape)) * ygrid.size * k
            # the extended feedback lives on (x, y): give it the y grid's shape (m = 2 came back flattened)
            fb = fb.reshape(xshape + ygrid.shape + (k,)) if (ygrid is not None and fb.size == full) else fb
            return np.asarray(fb, np.float32)
        if hasattr(st, "ustar"):
            u = st.ustar[..., None] if st.ustar.ndim == 1 + n else st.ustar
        else:
            u = st.u_nodes[st.arg]
        # u: (J, *xshape, k)
        if kind in ("plain", "per_y_blind"):
            return np.asarray(u[0], np.float32)
        return np.asarray(np.moveaxis(u, 0, n).reshape(xshape + ygrid.shape + (k,)), np.float32)

    def finish(outs, fbs, kind, partial=False):
        if kind in ("eps",):
            Vs = np.array([np.moveaxis(v, 0, -1).reshape(xshape + ygrid.shape) for v in outs]) if outs else np.zeros((0,))
        else:
            Vs = np.array([v.reshape(xshape) for v in outs]) if outs else np.zeros((0,))
        fbs = [f for f in fbs if f is not None]
        fb_t = np.array(fbs) if fbs else None
        return ValueResult(eps=eps, t_out=t_out[:len(outs)], V=Vs, xgrid=xgrid, ygrid=ygrid,
                           feedback=fb_t[-1] if fb_t is not None else None,
                           feedback_t=fb_t if (fb_t is not None and len(fb_t) == len(outs)) else None,
                           timings=dict(timings), attrs=dict(attrs))

    if plain:
        kind = "plain"
    elif eps > 0:
        kind = "eps"
    elif effective_scheme == "per_y":
        kind = "per_y" if variant == "extended" else "per_y_blind"
    else:
        kind = "averaged" if variant == "extended" else "averaged_blind"
    attrs.update(_describe(kind, order, eps, model))
    scheme_err = interpolation_error_estimate(model, xgrid, ygrid, T, dt / 2 if richardson else dt)
    if _exact_in_splitting(kind, model, xgrid, minimize, order):
        minimize = "exact"
        attrs["minimisation"] = _KIND_TEXT["exact"] + EXACT_X_DEPENDENT_B
    elif not kind.startswith("averaged"):
        attrs["minimisation"] = _minimisation(kind, model, xgrid, minimize, order, u_nodes, T, scheme_err)
    extrapolate = richardson and kind in RICHARDSON_KINDS
    if richardson and not extrapolate:
        attrs["richardson"] = f"not applied: the {kind} scheme is second order in time already"
    if extrapolate:
        # the same scheme at dt and dt/2; V = 2 V_{dt/2} - V_dt removes the O(dt) term of the error
        outs_c, _ = run(kind, dt, nsteps, out_steps, tag="_dt")
        outs_f, fbs_f = run(kind, dt / 2, 2 * nsteps, [2 * s for s in out_steps], tag="_dt2")
        res = finish(outs_f, fbs_f, kind)
        coarse = finish(outs_c, [], kind).V
        res.V_monotone = res.V
        res.V = 2.0 * res.V_monotone - coarse
        diff = np.abs(res.V_monotone - coarse).reshape(len(t_out), -1)
        win = interior_window(xgrid).reshape(-1)
        if res.V.ndim > 1 + n:
            win = (win[:, None] & interior_window(ygrid).reshape(1, -1)).reshape(-1)
        attrs.update(_describe_richardson(kind, order))
        attrs["dt_fine"] = dt / 2
        attrs["richardson_change_max"] = float(diff[:, win].max()) if win.any() else float(diff.max())
        res.attrs = dict(attrs)
    else:
        outs, fbs = run(kind, dt, nsteps, out_steps)
        res = finish(outs, fbs, kind)
    if blind and not plain and eps == 0 and variant == "extended":
        bkind = "per_y_blind" if effective_scheme == "per_y" else "averaged_blind"
        outs_b, fbs_b = run(bkind, dt, nsteps, out_steps)
        res.V_blind = np.array([v.reshape(xshape) for v in outs_b])
        fb_b = fbs_b[-1] if fbs_b else None
        if fb_b is not None:
            fb_b = np.asarray(fb_b)
            res.feedback_blind = fb_b[..., 0, :] if fb_b.ndim == n + 1 + ygrid.ndim else fb_b
        res.attrs["scheme_blind"] = _describe(bkind, order, eps, model)["scheme"]
        if bkind == "per_y_blind":
            res.attrs["scheme_blind"] += "; " + _control_grid_check(model, control_nodes(model, u_nodes), T,
                                                                    "per-y y-blind scheme", scheme_err)
    timings["total"] = time.perf_counter() - t_start
    res.timings = dict(timings)
    return res


#: schemes that are first order in time, which ``richardson=True`` extrapolates
RICHARDSON_KINDS = ("eps", "per_y", "plain")


def _describe_richardson(kind: str, order: int) -> dict:
    limit = {"eps": "; eps -> 0 limit: the Richardson extrapolation of the per-y effective scheme "
                    "(effective_scheme='per_y', richardson=True)",
             "per_y": "; the eps -> 0 limit of the extrapolated V^eps scheme", "plain": ""}[kind]
    return {"time_scheme": "Richardson extrapolation in dt: V = 2 V_{dt/2} - V_dt of the monotone scheme; "
                           "V_monotone = V_{dt/2} (monotone, viscosity-consistent)" + limit,
            "order_time": ("2 (extrapolated; V_monotone: 1), plus O(dx^2/dt) interpolation (amplified 3x by the "
                           "extrapolation: 0.45 dx^2/dt for 0.15 dx^2/dt)" if order == 2 else
                           "2 in the splitting/fan part (Euler feet: first-order feet errors cancel too)")}


def _minimisation(kind: str, model: Model, xgrid: Grid, minimize: str, order: int, u_nodes, T: float,
                  scheme_err: float = 0.0) -> str:
    """Which minimisation over the controls the slow step runs: 'none' (k = 0), 'exact piecewise-quadratic'
    (1-D control-affine, quadratic cost), 'refined' (2-D affine: grid + golden section) or 'grid' (a finite
    control set, with a :class:`ControlGridWarning` when its error estimate is large). The averaged scheme
    states its own (see :func:`_averaged_minimisation`)."""
    if model.k == 0:
        return "none (no control)"
    mk = "grid" if kind == "per_y_blind" else minimisation_kind(model, xgrid, minimize, order)
    if mk != "grid":
        return _KIND_TEXT[mk]
    return "grid: " + _control_grid_check(model, control_nodes(model, u_nodes), T, f"value stage ({kind} scheme)",
                                          scheme_err)


EXACT_X_DEPENDENT_B = ("; B depends on x: the foot's u-quadratic Taylor term (dt^2/2) (D_x B) B u^2 is left out, "
                       "an O(dt) error like the splitting's own (removed with it by run.richardson)")


def _exact_in_splitting(kind: str, model: Model, xgrid: Grid, minimize: str, order: int) -> bool:
    """True when a 1-D control-affine model with quadratic cost whose B depends on x (``minimisation_kind``
    says 'grid' for second-order feet) is minimised exactly all the same: in the first-order schemes (the
    Lie splitting of V^eps, the per-y scheme) the left-out foot term (dt^2/2) (D_x B) B u^2 costs O(dt) like
    the scheme itself, the O(du^2) of a control grid does not shrink with dt, and Richardson extrapolation
    removes the O(dt) term (not the grid's)."""
    return (kind in ("eps", "per_y") and minimize == "auto" and model.n == 1 and model.k == 1
            and model.affine is not None and model.affine.c > 0
            and minimisation_kind(model, xgrid, minimize, order) == "grid")


_KIND_TEXT = {"exact": "exact piecewise-quadratic (1-D control-affine, quadratic cost)",
              "refined": "refined: grid + golden section (2-D control-affine)",
              "grid-affine": "grid (2-D control-affine, no refinement)"}


def _averaged_minimisation(avg, model: Model, xgrid: Grid, minimize: str, order: int, u_nodes, T: float,
                           scheme_err: float = 0.0) -> str:
    if model.k == 0:
        return "none (no control)"
    if avg.kind == "averaged-affine":
        mk = minimisation_kind(model, xgrid, minimize, order)
        return _KIND_TEXT.get(mk, mk) + " (averaged affine problem)"
    if avg.kind == "averaged-p-family":
        how = ("closed form" if (model.affine is not None and model.affine.c > 0 and avg._aff is not None)
               else "argmax over the control grid (" + _control_grid_check(
                   model, control_nodes(model, u_nodes), T, "value stage (averaged scheme, maximisers alpha_p)",
                   scheme_err) + ")")
        return f"p-family: maximisers alpha_p(y) by {how}, min over a grid of {avg.n_p} p nodes per axis (O(dp^2))"
    return "grid: " + _control_grid_check(model, control_nodes(model, u_nodes), T, "value stage (averaged scheme)",
                                          scheme_err)


def _describe(kind: str, order: int, eps: float, model: Model) -> dict:
    feet = ("Taylor second-order feet x + dt a + dt^2/2 (D_x a) a, trapezoidal running cost" if order == 2
            else "Euler feet x + dt a")
    stencil = "Kushner/Camilli-Falcone 2n-point noise stencil, multilinear interpolation, monotone"
    d = {"scheme": "", "order_time": "", "splitting": "none", "convention":
         "sup convention; t = time remaining; V = inf of the expected cost"}
    if kind == "plain":
        d["scheme"] = f"semi-Lagrangian DP step for dV/dt + H(x,DV,D2V) = 0: {feet}; {stencil}"
        d["order_time"] = (f"{order} (plus O(dx^2/dt) interpolation; grid-minimised models with slow noise: 1)"
                           if order == 2 else "1 (plus O(dx^2/dt) interpolation)")
    elif kind == "eps":
        d["scheme"] = (f"Lie splitting: slow SL step at each fixed y_j ({feet}; {stencil}), then the fast part "
                       f"implicitly: (I - (dt/eps) Q_x) V(x,.) = W(x,.) with the cell stage's generator Q_x "
                       f"(tridiagonal GTH elimination for 1-D y, sparse LU per x for 2-D y, factorised once)")
        d["splitting"] = ("Lie (slow SL step at frozen y, then implicit-Euler fast step); first order in dt, "
                          "uniformly in eps; asymptotic preserving (eps -> 0: the per-y effective scheme)")
        d["order_time"] = "1 (splitting; plus O(dx^2/dt) interpolation and O(dy^2) generator errors)"
    elif kind in ("per_y", "per_y_blind"):
        inside = "min over u inside the pi-average (extended)" if kind == "per_y" else "min over u outside (y-blind)"
        d["scheme"] = f"per-y effective SL scheme, {inside}: {feet}; {stencil}"
        d["order_time"] = "1 (fan of per-y feet: spurious diffusion (dt/2) Var_pi(a) D2V)"
    else:
        what = ("extended controls via the maximiser family alpha_p(y) = argmax_u H(x,y,p), min over p"
                if kind == "averaged" else "y-blind controls, min over u of the averaged problem")
        d["scheme"] = f"averaged-coefficient effective SL scheme ({what}): {feet}; {stencil}"
        d["order_time"] = (f"{order} (plus O(dx^2/dt) interpolation, O(dp^2) or O(du^2) control grid)")
    return d
