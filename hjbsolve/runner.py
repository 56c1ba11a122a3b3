"""Run a case: case -> model -> grids -> stages -> :class:`~hjbsolve.result.Result`. No file I/O here."""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np

from .case import Case
from .errors import HJBError, NumericalError
from .effective import cell_stage
from .grid import Grid
from .legendre import default_q_axes, effective_lagrangian
from .model import Model
from .models import build_model
from .result import Result

log = logging.getLogger(__name__)


def _per_axis(box, d: int):
    """A box given as one [lo, hi] applies to every axis."""
    return [list(box)] * d if (d > 1 and np.ndim(box) == 1) else box


def slow_grid(case: Case, model: Model) -> Grid:
    return Grid.from_box(_per_axis(case.grid["x"]["box"], model.n), case.grid["x"]["n"]) if model.n else None


def fast_grid(case: Case, model: Model, xgrid: Grid) -> Grid:
    """The y grid: the case's box, or one chosen from the Gibbs tails of mu_x over all x nodes (None for a
    plain problem, m = 0)."""
    if model.m == 0:
        return None
    spec = case.grid["y"]
    box = spec.get("box")
    if box is None:
        if model.y_box_hint is None:
            from .errors import CaseError
            raise CaseError(f"{case.source}: grid.y.box: required for this model (the box cannot be derived "
                            "from the data: give [lo, hi] per fast axis)")
        box = model.y_box_hint(xgrid.flat_points())
        log.info("y box from the Gibbs tails: %s", np.round(box, 4).tolist())
    return Grid.from_box(_per_axis(box, model.m), spec["n"])


def probe_coefficients(case: Case, model: Model, xg: Grid, yg: Grid | None, max_points: int = 20000) -> None:
    """Evaluate every coefficient on the grids (x and y nodes, every control node; subsampled to about
    ``max_points`` (x, y) pairs) and raise a CaseError naming the file, the key and the point of the first
    value that is not finite. ``hjbsolve check`` runs it; the stages check again on their own grids."""
    from .errors import CaseError
    xs = xg.flat_points()
    ys = yg.flat_points() if yg is not None else np.zeros((1, 0))
    step = max(1, int(np.ceil(np.sqrt(len(xs) * len(ys) / max_points))))     # the same stride on x and y
    X, Y = xs[::step], ys[::step]
    # include the box corners and the last nodes, where growth makes trouble
    X = np.concatenate([X, xs[-1:]]) if len(xs) > 1 else X
    Y = np.concatenate([Y, ys[-1:]]) if len(ys) > 1 else Y
    Xb = np.repeat(X, len(Y), axis=0)
    Yb = np.tile(Y, (len(X), 1))
    U = model.controls.nodes()
    keys = {"a": "a", "sigma": "sigma", "l": "l", "g": "g", "b": "b", "tau": "tau"}
    prefix = "model." if case.family == "expr" else "model (coefficient "

    def check(name, values, u=None):
        bad = ~np.isfinite(np.asarray(values, float))
        if bad.any():
            i = int(np.argwhere(bad.reshape(len(Xb), -1).any(axis=1))[0, 0])
            where = f"x = {np.round(Xb[i], 6).tolist()}" + (f", y = {np.round(Yb[i], 6).tolist()}" if model.m else "")
            where += f", u = {np.round(u, 6).tolist()}" if u is not None and model.k else ""
            key = f"model.{keys[name]}" if case.family == "expr" else f"{prefix}{name})"
            raise CaseError(f"{case.source}: {key}: not finite ({np.asarray(values, float).reshape(len(Xb), -1)[i][0]})"
                            f" at {where}")

    check("g", model.g(Xb, Yb))
    if model.m:
        check("b", model.b(Xb, Yb))
        check("tau", model.tau(Xb, Yb))
    for u in U:
        Ub = np.broadcast_to(u, (len(Xb), len(u)))
        check("a", model.a(Xb, Yb, Ub), u)
        check("sigma", model.sigma(Xb, Yb, Ub), u)
        check("l", model.l(Xb, Yb, Ub), u)
    if yg is not None:
        # the fast generator at a few x nodes: ellipticity of tau, monotonicity of the stencil on this y grid
        from .cell.generator import fast_generator
        for x in xs[np.unique(np.linspace(0, len(xs) - 1, 3).astype(int))]:
            xb = np.broadcast_to(x, (len(ys), model.n))
            try:
                fast_generator(yg, model.fast_diffusion(xb, ys), drift=np.zeros((len(ys), model.m)))
            except NumericalError as e:
                raise _name_the_key(case, e) from None


def p_axes(case: Case, model: Model):
    spec = case.grid.get("p")
    if not spec:
        return None
    g = Grid.from_box(spec["box"], spec["n"])
    if g.ndim == 1 and model.n > 1:
        g = Grid.from_box([spec["box"]] * model.n, spec["n"])
    return g.axes


def add_effective_lagrangian(case: Case, cell) -> None:
    """Lbar(x, q) = sup_p {-q.p - Hbar(x, p)} from the Hbar table (linear-time discrete transform)."""
    d = len(cell.p_axes)
    hb = cell.hbar if cell.P.size == 0 else np.moveaxis(cell.hbar, -1, 0)   # P axis first
    spec = case.grid.get("q")
    if spec:
        g = Grid.from_box(spec["box"] if not (d > 1 and not isinstance(spec["box"][0], list))
                          else [spec["box"]] * d, spec["n"])
        q_axes = g.axes
    else:
        q_axes = default_q_axes(cell.p_axes, hb.reshape((-1,) + hb.shape[hb.ndim - d:]))
    lb = effective_lagrangian(cell.p_axes, hb, q_axes)
    cell.q_axes = q_axes
    cell.lbar = lb if cell.P.size == 0 else np.moveaxis(lb, 0, -1)


def run_cell(case: Case, model: Model | None = None) -> Result:
    """The cell stage of ``case``: invariant laws, ybar, abar, gbar and Hbar tables (periodic cases:
    the nonlinear cell problems)."""
    if case.family == "periodic":
        return run_periodic(case)
    t0 = time.perf_counter()
    model = model or build_model(case)
    xg = slow_grid(case, model)
    yg = fast_grid(case, model, xg)
    P = case.grid["P"]["values"] if case.grid.get("P") else None
    cell = cell_stage(model, xg, yg, p_axes(case, model), P_values=P, exact_sup=case.grid["u"]["exact"],
                      keep_feedback=case.run["feedback"])
    if cell.hbar is not None:
        t1 = time.perf_counter()
        add_effective_lagrangian(case, cell)
        cell.timings["legendre"] = time.perf_counter() - t1
    timings = dict(cell.timings)
    timings["total"] = time.perf_counter() - t0
    result = Result(case_name=case.name, case_text=case.text, family=case.family, cell=cell, timings=timings)
    result.attrs.update(provenance_attrs(case, model))
    return result


def provenance_attrs(case: Case, model: Model | None = None) -> dict:
    """Root attributes that say what made the numbers: the resolved case and its hash, the versions
    (:func:`hjbsolve.provenance.case_attrs`) and the solver settings: how the min over the controls is
    taken is added by :func:`_record_minimisation`), the control nodes, and the number of numba threads."""
    from .provenance import case_attrs
    attrs = case_attrs(case)
    try:
        import numba
        attrs["solver_threads"] = int(numba.get_num_threads())
    except ImportError:        # pragma: no cover - a dependency
        pass
    if model is not None and model.k:
        attrs["solver_control_nodes"] = int(len(model.controls.nodes()))
        attrs["solver_exact_sup"] = bool(case.grid["u"]["exact"])     # the closed-form min where there is one
    return attrs


def _record_minimisation(result: Result) -> Result:
    """``solver_minimisation`` at the root: how each value group took the min over the controls (its
    ``minimisation`` attribute, see :mod:`hjbsolve.value`)."""
    how = {name: g.attrs["minimisation"] for name, g in result.extra_groups.items()
           if isinstance(g.attrs.get("minimisation"), str)}
    if how:
        result.attrs["solver_minimisation"] = "; ".join(f"{name}: {text}" for name, text in how.items())
    return result


def eps_group_name(eps: float) -> str:
    """HDF5 group of one eps: 'eps_0.01'; 'eps_0' is the effective problem."""
    return f"eps_{float(eps):g}"


def run_values(case: Case, model: Model, cell, on_result: Callable | None = None, done: dict | None = None) -> dict:
    """The value stage for every eps of the case (in the order given); returns name -> store.Group.

    ``on_result(name, group)`` is called as soon as each eps is finished (the CLI writes it to disk then),
    so that a run stopped halfway keeps what it finished. ``done``: groups already computed for this very
    case (``hjbsolve run --resume``), taken as they are.
    """
    import warnings

    from .value import value_function
    groups = {}
    done = done or {}
    r = case.run
    if r["blind"] and 0.0 not in [float(e) for e in r["eps"]]:
        warnings.warn(f"{case.source}: run.blind = true asks for the y-blind value of the effective problem, but "
                      "run.eps has no 0: add 0.0 to run.eps", UserWarning, stacklevel=2)
    for eps in r["eps"]:
        name = eps_group_name(eps)
        if name in done:
            log.info("value stage, eps = %g: kept from the partial file", eps)
            groups[name] = done[name]
            continue
        log.info("value stage, eps = %g", eps)
        res = value_function(model, cell, eps=eps, T=case.time["T"], dt=case.time["dt"],
                             output_times=r["output_times"], blind=(r["blind"] and eps == 0.0), order=r["order"],
                             extrapolation=r["extrapolation"], effective_scheme=r["effective_scheme"],
                             richardson=r["richardson"],
                             u_nodes=None if case.grid["u"]["exact"] else model.controls.nodes(),
                             minimize="auto" if case.grid["u"]["exact"] else "grid")
        groups[name] = res.to_group()
        if on_result is not None:
            on_result(name, groups[name])
    return groups


def run_plain(case: Case, model: Model, on_result: Callable | None = None) -> Result:
    """A plain HJB problem (expr family with m = 0): no fast variable, hence no cell stage; the value
    function V(t, x) in the group ``eps_0`` (``run.eps`` plays no part)."""
    import warnings

    from .value import value_function
    t0 = time.perf_counter()
    xg = slow_grid(case, model)
    r = case.run
    if any(float(e) != 0.0 for e in r["eps"]):
        warnings.warn(f"{case.source}: run.eps = {r['eps']} plays no part in a plain problem (m = 0, no fast "
                      "variable): its value function is the group eps_0", UserWarning, stacklevel=2)
    exact = case.grid["u"]["exact"] and model.controls.points is None
    res = value_function(model, None, eps=0.0, T=case.time["T"], dt=case.time["dt"], xgrid=xg,
                         output_times=r["output_times"], order=r["order"], extrapolation=r["extrapolation"],
                         richardson=r["richardson"],
                         u_nodes=None if exact else model.controls.nodes(), minimize="auto" if exact else "grid")
    res.attrs["problem"] = "plain HJB (m = 0): no fast variable"
    res.attrs["control_set"] = _describe_controls(model)
    name = eps_group_name(0.0)
    group = res.to_group()
    if on_result is not None:
        on_result(name, group)
    result = Result(case_name=case.name, case_text=case.text, family=case.family,
                    timings={"values": time.perf_counter() - t0})
    result.attrs.update(provenance_attrs(case, model))
    result.extra_groups[name] = group
    result.timings["total"] = time.perf_counter() - t0
    return result


def _describe_controls(model: Model) -> str:
    c = model.controls
    if c.k == 0:
        return "none"
    if c.points is not None:
        return f"{c.kind}: {len(c.points)} points in R^{c.k}"
    return "box " + " x ".join(f"[{a:g}, {b:g}]" for a, b in zip(c.lo, c.hi)) + (
        " (closed-form min)" if model.affine is not None else f" ({' x '.join(map(str, c.n))} grid nodes)")


def run_periodic(case: Case) -> Result:
    """The periodic cell problems of a ``periodic`` case: Hbar(P), correctors chi, Lbar."""
    from .homogenization import ergodic_stage
    from .models.periodic import P_values
    from .models.periodic import build as build_periodic
    t0 = time.perf_counter()
    mod, grid = case.model, case.grid
    ham = build_periodic(mod, where=case.source)
    P, axes = P_values(grid, mod["m"])
    q_axes = None
    if grid.get("q"):
        box = grid["q"]["box"]
        q_axes = Grid.from_box(box if isinstance(box[0], list) else [box] * mod["m"], grid["q"]["n"]).axes
    N = grid["y"]["n"] if not isinstance(grid["y"]["n"], list) else grid["y"]["n"][0]
    try:
        table = ergodic_stage(ham, P, axes, grid["P"]["values"] is None, mod["m"], N, mod["nu"],
                              offset=grid["y"]["offset"], tol=mod["tol"], maxiter=mod["maxiter"], q_axes=q_axes,
                              hbar_tol=grid["y"]["tol"])
    except HJBError as e:          # name the case: the solver's messages name the point, not the file
        raise type(e)(f"{case.source}: model: {e}") from None
    timings = dict(table.timings, total=time.perf_counter() - t0)
    result = Result(case_name=case.name, case_text=case.text, family=case.family, ergodic=table, timings=timings)
    result.attrs.update(provenance_attrs(case))
    return result


def run(case: Case, on_cell: Callable | None = None, on_result: Callable | None = None,
        resumed: Result | None = None) -> Result:
    """Run every stage that the case asks for: cell, then (``run.values``) the value function for each
    eps. Callbacks ``on_cell(result)`` and ``on_result(name, group)`` see each stage as it finishes.
    A ``periodic`` case has one stage: its cell problems (Hbar(P), chi, Lbar).

    ``resumed``: a :class:`Result` of an interrupted run of this very case (the caller has checked the
    stored hash): its cell stage and its eps groups are kept, the other eps are computed."""
    if case.family == "periodic":
        return run_periodic(case)
    model = build_model(case)
    try:
        if model.m == 0:
            if resumed is not None and eps_group_name(0.0) in resumed.extra_groups:
                return _record_minimisation(resumed)
            return _record_minimisation(run_plain(case, model, on_result))
        if resumed is not None and resumed.cell is not None:
            result = resumed
            log.info("cell stage: kept from the partial file")
        else:
            result = run_cell(case, model)
            if on_cell is not None:
                on_cell(result)
        if case.run["values"]:
            t0 = time.perf_counter()
            done = dict(resumed.extra_groups) if resumed is not None and result is resumed else {}
            result.extra_groups.update(run_values(case, model, result.cell, on_result, done))
            result.timings["values"] = time.perf_counter() - t0
    except NumericalError as e:
        raise _name_the_key(case, e) from None
    return _record_minimisation(result)


def _name_the_key(case: Case, e: NumericalError) -> NumericalError:
    """'coefficient l is nan at ...' -> '<file>: model.l: coefficient l is nan at ...' (expr formulas are keys)."""
    text = str(e)
    words = text.split()
    if text.startswith(case.source):
        return e
    if len(words) > 1 and words[0] == "coefficient":
        key = f"model.{words[1]}" if case.family == "expr" else "model"
        return NumericalError(f"{case.source}: {key}: {text}")
    if text.startswith("grid.y:"):
        return NumericalError(f"{case.source}: {text}")
    if text.startswith("fast diffusion"):
        return NumericalError(f"{case.source}: {'model.tau' if case.family == 'expr' else 'model'}: {text}")
    return e
