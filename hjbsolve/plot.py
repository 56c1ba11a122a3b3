"""Publication-quality figures from stored hjbsolve HDF5 files.

    KINDS                                   kind -> one-line description
    available_kinds(path) -> list[str]      the kinds the file at ``path`` supports
    plot_file(path, what=None, output=None, **options) -> matplotlib.figure.Figure

Conventions shown on the axes are the package's (docs/mathematics.md): the Hamiltonian is the *sup* convention
``H = sup_u {-a.p - tr(sigma sigma^T P) - l}``, ``p = D_x V``, ``t`` is the time *remaining* and V is the
inf of the expected cost.

Layouts and kinds
-----------------
Cell files (root group of a run: ``mu``, ``ybar``, ``abar``, ``gbar``, ``hbar``, ``lbar``, ``feedback``)
    ``hbar``      Hbar(x, p) against p = D_x V, one curve per slow node picked (n = 1).
    ``hbar_map``  heat map of Hbar over (p, x) (n = 1); over (p1, p2) at one x (n = 2).
    ``mu``        invariant densities mu_x(y) / h_y of the fast process, one curve per x (m = 1);
                  filled contours over (y1, y2) at one x (m = 2).
    ``drift``     averaged slow drift abar(x) at the reference control and <y>_x - x (n = 1; quiver plots
                  for n = 2).  For Entropy-SGD with the reference control equal to the free dynamics
                  (control "none", steering with u_ref = 0, learning rate with u_ref = 1) abar is labelled
                  ``-grad f_gamma(x)``.
    ``lbar``      effective Lagrangian Lbar(x, q) against q, one curve per x (n = 1; a map over (q1, q2)
                  at one x for n = 2).
    ``feedback``  extended control u*(x, p; y) as a heat map over (y, p) at one x (m = 1), over (y1, y2)
                  at one (x, p) for m = 2.
Value groups (sub-groups ``eps_<eps>``: ``V(t, x.., [y..])``, ``V_blind``, ``feedback``)
    ``value``           V(t, x) at every stored time (effective problem, eps = 0) or V^eps(T, x, y) at a
                        few fast nodes y (eps > 0); a heat map over (x1, x2) at t = T for n = 2.
    ``value_eps``       V^eps(T, x, y0) for every eps > 0 with the effective V(T, x) dashed (y0 = the fast
                        node nearest 0), and a second panel with the differences V^eps - V.
    ``value_feedback``  the stored optimal feedback u*(x, y) at the final time as a heat map over (x, y)
                        (a curve u*(x) when the feedback does not depend on y).
    ``blind``           V (solid) against the y-blind value V_blind (dashed) at the stored times, and the
                        gap V_blind - V >= 0 in a second panel.
Study files (root attributes ``study_name``, ``parameter``, ``reference``, ``fit_order_*``; variables
``param``, ``err_max``, ``err_l2``, ``order_max`` over ``run``)
    ``convergence``  log-log errors in the max and l2 norms against the parameter, with a dashed fitted
                     line per norm and the fitted slope (± spread) in the legend.
    ``table``        the error table (parameter, err_max, order, err_l2, order, and a fit row).

Simulation groups ``simulation_eps_<eps>`` (written by ``hjbsolve simulate``; ``X_mean(s, slow)``,
``X_quantiles``, ``X_paths``, ``running_cost_mean``/``_se``, attributes ``total_cost_*``, ``value_pde``):
    ``simulation``   mean of X with its 5-95% band per eps, sample paths, the cumulative cost with its
                     95% band; the legend gives the cost of the feedback and V from the PDE
    ``law``          convergence in law: E X^eps_s for every eps with the effective E Xbar_s dashed, and
                     the gaps E X^eps - E Xbar with 95% bands
Ergodic files (root attribute ``family = "periodic"``: ``hbar(P..)``, ``chi(P.., y..)``, ``hbar_exact``)
    ``hbar``  Hbar(P) (markers and line), the exact Hbar dashed when stored (a map over (P1, P2) for
              two-dimensional P, exact values as dashed contours).
    ``chi``   correctors chi(y) for a few P (m = 1); filled contours over (y1, y2) at one P (m = 2).
    ``lbar``  Lbar(q) = sup_P {-q.P - Hbar(P)} when stored (a map for two-dimensional q).
    An explicit (non-tensor) list of P stored as an index coordinate ``P`` with ``P_values(P, axis)`` is
    plotted against its values (m = 1) or as a scatter in the (P_1, P_2) plane (m = 2; option ``P=`` is then
    the index).

A file holding a cell root and value groups supports the kinds of both.  ``what=None`` picks the first
available of convergence, value, hbar, hbar_map, mu, chi, ... .

Options (keyword arguments of :func:`plot_file`)
------------------------------------------------
``<dim>=value``   a coordinate name of the data (``x``, ``x1``, ``y``, ``y2``, ``p``, ``P``, ``q``, ``t``):
                  fix that dimension at the node nearest ``value``.  For the dimension along which a kind
                  draws one curve per node (x for hbar/mu/lbar, y for value, P for chi) a list of values
                  picks the curves.  Defaults: central slow node, the node nearest 0 for y, p, P, q, the
                  final time t = T.
``eps=``          the value group to use (value, value_feedback, blind); default: eps = 0 when stored,
                  else the smallest eps.
``component=``    the control (or drift) component for vector quantities; default 0.
``n_curves=``     how many curves to draw when they are not picked explicitly (default 5).
``title=``        replaces the automatic title.

Figures are ``matplotlib.figure.Figure`` objects on the Agg canvas (headless), about 6.4 x 4.2 in, fonts
>= 9 pt, constrained (tight) layout.  ``output`` ending in .png (200 dpi), .pdf or .svg is written atomically
(temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass, field

import matplotlib

if "matplotlib.pyplot" not in sys.modules:      # headless by default; never switch a backend already in use
    matplotlib.use("Agg")

import numpy as np
import matplotlib.patches
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerTuple

from . import store
from .errors import HJBError

__all__ = ["KINDS", "available_kinds", "plot_file", "PlotError"]

KINDS: dict[str, str] = {
    "hbar": "effective Hamiltonian: Hbar(x, p) vs p for a few x (cell file), or Hbar(P) (periodic cell problem)",
    "hbar_map": "heat map of Hbar(x, p) over (p, x) (n = 1) or over (p1, p2) at one x (n = 2)",
    "mu": "invariant densities mu_x(y)/h_y of the fast process for a few x (m = 1), contours at one x (m = 2)",
    "drift": "averaged slow drift abar(x) (-grad f_gamma for Entropy-SGD) and <y>_x - x",
    "lbar": "effective Lagrangian Lbar(x, q) vs q for a few x (Lbar(q) for a periodic cell problem)",
    "feedback": "extended control u*(x, p; y): heat map over (y, p) at one x",
    "chi": "correctors chi(y) of the periodic cell problem for a few P (m = 1), contours at one P (m = 2)",
    "value": "value function V(t, x) at the stored times (eps = 0) or V^eps(T, x, y) at a few y",
    "value_eps": "V^eps(T, x, y0) for every eps with the effective V(T, x), and the differences V^eps - V",
    "value_feedback": "stored optimal feedback u*(x, y) at the final time (heat map over (x, y))",
    "blind": "value V with extended controls vs the y-blind value V_blind, and the gap V_blind - V",
    "convergence": "log-log errors (max and l2 norms) vs the study parameter with fitted slopes",
    "table": "the error table of a convergence study (parameter, errors, observed orders)",
    "simulation": "Monte Carlo of the controlled system: mean and 5-95% band of X, sample paths, running cost",
    "law": "convergence in law: E X^eps_s for every simulated eps next to the effective E Xbar_s",
}

DEFAULT_ORDER = ("convergence", "value", "hbar", "hbar_map", "mu", "chi", "drift", "lbar", "feedback",
                 "table", "value_eps", "value_feedback", "blind", "simulation", "law")

FIGSIZE = (6.4, 4.2)
FIGSIZE_TWO = (6.4, 5.6)          # two stacked panels
PNG_DPI = 200
FORMATS = ("png", "pdf", "svg")
STYLE = {
    "font.size": 10, "axes.labelsize": 10, "axes.titlesize": 10, "legend.fontsize": 9,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "lines.linewidth": 1.6, "lines.markersize": 5,
    "axes.grid": True, "grid.alpha": 0.3, "legend.framealpha": 0.85, "image.cmap": "viridis",
}
HAM_LABEL = "Hbar(x, p)  [sup convention]"
VALUE_LABEL = "[inf of expected cost; t = time remaining]"
_COMPONENT_DIMS = ("control", "slow", "fast")
_OPTION_NAMES = ("eps", "component", "n_curves", "title")
_PARAM_LABELS = {"eps": "eps (scale separation)", "dx": "dx (slow grid spacing)",
                 "dy": "dy (fast grid spacing)", "dt": "dt (time step)", "dp": "dp (costate grid spacing)",
                 "h": "h (grid spacing)", "nu": "nu (viscosity)"}


class PlotError(HJBError):
    """A file cannot be plotted as asked (kind not supported, bad option, bad output name)."""


# --------------------------------------------------------------------------------------------------
# loading and layout detection


@dataclass
class _File:
    path: str
    root: store.Group
    values: list = field(default_factory=list)     # [(eps, name, group)], eps descending, 0 last

    @property
    def attrs(self) -> dict:
        return self.root.attrs

    def var(self, name):
        return self.root.variables.get(name)


def _load(path) -> _File:
    text = os.fspath(path)
    root = store.read(text)         # StoreError (an HJBError) when missing / unreadable
    f = _File(text, root)
    for name, g in root.groups.items():
        v = g.variables.get("V")
        if v is None or not v.dims or v.dims[0] != "t":
            continue
        eps = g.attrs.get("eps")
        if eps is None and name.startswith("eps_"):
            try:
                eps = float(name[4:])
            except ValueError:
                eps = None
        if eps is None:
            continue
        f.values.append((float(eps), name, g))
    f.values.sort(key=lambda e: -e[0])
    return f


def _dims_with(dims, letter: str) -> list[str]:
    """The dimensions named ``letter`` or ``letter<k>`` (x -> x | x1 x2 ...)."""
    return [d for d in dims if d == letter or (d.startswith(letter) and d[len(letter):].isdigit())]


def _is_periodic(f: _File) -> bool:
    if f.attrs.get("family") == "periodic":
        return True
    h = f.var("hbar")
    return h is not None and bool(h.dims) and all(_dims_with([d], "P") for d in h.dims)


def _is_study(f: _File) -> bool:
    return "study_name" in f.attrs or ("param" in f.root.variables and
                                       ("err_max" in f.root.variables or "err_l2" in f.root.variables))


def _has_y(g: store.Group, var: store.Variable) -> bool:
    return bool(_dims_with(var.dims, "y"))


# --------------------------------------------------------------------------------------------------
# which kinds a file supports: each check returns None (supported) or the reason it is not


def _check_hbar(f):
    if _is_periodic(f):
        h = f.var("hbar")
        if h is None:
            return "this periodic cell-problem file has no hbar variable"
        return None if len(h.dims) in (1, 2) else f"Hbar(P) plots need 1 or 2 P dimensions, not {len(h.dims)}"
    h = f.var("hbar")
    if h is None:
        return "this file has no Hbar table (hbar)"
    n = len(_dims_with(h.dims, "x"))
    if n != 1:
        return f"Hbar(p) curves need n = 1 (this file has n = {n}: use hbar_map)"
    if not _dims_with(h.dims, "p"):
        return "the hbar variable has no p dimension"
    return None


def _check_hbar_map(f):
    h = f.var("hbar")
    if h is None or _is_periodic(f):
        return "this file has no Hbar(x, p) table (hbar over x and p)"
    n = len(_dims_with(h.dims, "x"))
    if n not in (1, 2) or len(_dims_with(h.dims, "p")) != n:
        return f"Hbar maps need n = 1 or 2 with one p per slow axis (dims {h.dims})"
    return None


def _check_mu(f):
    v = f.var("mu")
    if v is None:
        return "this file has no invariant law (mu)"
    m = len(_dims_with(v.dims, "y"))
    if m not in (1, 2) or not _dims_with(v.dims, "x"):
        return f"mu plots need m = 1 or 2 fast axes and a slow axis (dims {v.dims})"
    return None


def _check_drift(f):
    v = f.var("abar")
    if v is None:
        return "this file has no averaged drift (abar)"
    n = len(_dims_with(v.dims, "x"))
    return None if n in (1, 2) else f"drift plots need n = 1 or 2 (this file has n = {n})"


def _check_lbar(f):
    v = f.var("lbar")
    if v is None:
        return "this file has no effective Lagrangian (lbar)"
    n = len(_dims_with(v.dims, "x"))
    nq = len(_dims_with(v.dims, "q"))
    if n == 0 and nq in (1, 2) and nq == v.data.ndim:          # Lbar(q) of a periodic cell problem
        return None
    if n not in (1, 2) or nq != n:
        return f"Lbar plots need n = 1 or 2 with one q per slow axis (dims {v.dims})"
    return None


def _check_feedback(f):
    v = f.var("feedback")
    if v is None:
        return "this file has no stored feedback u*(x, p; y)"
    if v.data.size == 0:
        return "the stored feedback is empty (no control)"
    if not _dims_with(v.dims, "y") or not _dims_with(v.dims, "p") or len(_dims_with(v.dims, "y")) > 2:
        return f"feedback maps need p and 1 or 2 fast axes (dims {v.dims})"
    return None


def _check_chi(f):
    v = f.var("chi")
    if v is None or not _is_periodic(f):
        return "this file has no correctors chi(P, y) of a periodic cell problem"
    m = len(_dims_with(v.dims, "y"))
    return None if m in (1, 2) else f"corrector plots need m = 1 or 2 (this file has m = {m})"


def _check_value(f):
    if not f.values:
        return "this file has no value groups"
    return None


def _check_value_eps(f):
    if not f.values:
        return "this file has no value groups"
    if not [e for e, _, g in f.values if e > 0 and _has_y(g, g.variables["V"])]:
        return "this file has no value group with eps > 0 on (x, y)"
    return None


def _check_value_feedback(f):
    if not f.values:
        return "this file has no value groups"
    if not [g for _, _, g in f.values if "feedback" in g.variables and g.variables["feedback"].data.size]:
        return "no value group stores a feedback"
    return None


def _check_blind(f):
    if not f.values:
        return "this file has no value groups"
    if not [g for _, _, g in f.values if "V_blind" in g.variables]:
        return "no value group stores a y-blind value V_blind"
    return None


def _simulations(f) -> list:
    """[(eps, name, group)] of the simulation_eps_* groups, eps descending (0 last)."""
    out = [(float(g.attrs.get("eps", np.nan)), name, g) for name, g in f.root.groups.items()
           if name.startswith("simulation_eps_") and "X_mean" in g.variables]
    return sorted(out, key=lambda e: -e[0])


def _check_simulation(f):
    return None if _simulations(f) else "this file has no simulation groups (run hjbsolve simulate FILE)"


def _check_law(f):
    sims = _simulations(f)
    if not sims:
        return "this file has no simulation groups (run hjbsolve simulate FILE)"
    if len(sims) < 2:
        return "a single simulation group: simulate several eps (hjbsolve simulate FILE --eps ...)"
    return None


def _check_convergence(f):
    if not _is_study(f):
        return "this file is not a convergence study"
    if "param" not in f.root.variables:
        return "this study has no param variable"
    if "err_max" not in f.root.variables and "err_l2" not in f.root.variables:
        return "this study has no errors (err_max, err_l2)"
    return None


_CHECKS = {
    "hbar": _check_hbar, "hbar_map": _check_hbar_map, "mu": _check_mu, "drift": _check_drift,
    "lbar": _check_lbar, "feedback": _check_feedback, "chi": _check_chi, "value": _check_value,
    "value_eps": _check_value_eps, "value_feedback": _check_value_feedback, "blind": _check_blind,
    "convergence": _check_convergence, "table": _check_convergence, "simulation": _check_simulation,
    "law": _check_law,
}


def _available(f: _File) -> list[str]:
    return [k for k in KINDS if _CHECKS[k](f) is None]


def available_kinds(path) -> list[str]:
    """The kinds (keys of :data:`KINDS`, in that order) that the file at ``path`` can be plotted as."""
    return _available(_load(path))


# --------------------------------------------------------------------------------------------------
# data selection helpers


def _fmt(v) -> str:
    v = float(v)
    return f"{v:.3g}" if v != 0 else "0"


def _coord(g: store.Group, dim: str, size: int) -> np.ndarray:
    """Node values of ``dim``: its coordinate, or ``<dim>_values(dim, axis)`` when that holds the values of an
    index coordinate along one axis (explicit P lists of periodic cell problems), else 0..size-1."""
    pv = g.variables.get(f"{dim}_values")
    if pv is not None and pv.dims[:1] == (dim,) and pv.data.shape == (size, 1) and pv.data.dtype.kind in "iuf":
        return np.asarray(pv.data[:, 0], float)
    c = g.coords.get(dim)
    if c is not None and c.data.shape == (size,) and c.data.dtype.kind in "iuf":
        vals = np.array(c.data, float)
        top = float(np.max(np.abs(vals))) if vals.size else 0.0
        vals[np.abs(vals) < 1e-12 * top] = 0.0          # round-off nodes such as -4.4e-16 print as 0
        return vals
    return np.arange(size, dtype=float)


def _nearest(values: np.ndarray, target) -> int:
    try:
        t = float(target)
    except (TypeError, ValueError):
        raise PlotError(f"expected a number, got {target!r}") from None
    return int(np.argmin(np.abs(values - t)))


def _default_index(dim: str, values: np.ndarray) -> int:
    if dim == "t":
        return len(values) - 1
    if _dims_with([dim], "x"):
        return len(values) // 2
    if any(_dims_with([dim], s) for s in ("y", "p", "P", "q")):
        return _nearest(values, 0.0)
    return 0


def _scalar_option(dim, value):
    if isinstance(value, (list, tuple, np.ndarray)):
        arr = np.asarray(value).ravel()
        if arr.size != 1:
            raise PlotError(f"option {dim}= takes one value here (the plot is drawn at one {dim}), got {value!r}")
        return arr[0]
    return value


def _slice(g: store.Group, var: store.Variable, keep, opts: dict, defaults: dict | None = None):
    """``var`` with every dimension outside ``keep`` fixed at one node; returns (array over keep, chosen).

    A fixed dimension takes the node nearest ``opts[dim]``, else ``defaults[dim]`` (an index), else the
    dimension's default (:func:`_default_index`).  Component dimensions (control, slow, fast) take
    ``opts['component']``.  ``chosen`` maps each fixed dimension to (value, size).
    """
    idx, chosen = [], {}
    for ax, dim in enumerate(var.dims):
        if dim in keep:
            idx.append(slice(None))
            continue
        size = var.data.shape[ax]
        vals = _coord(g, dim, size)
        if dim in _COMPONENT_DIMS:
            i = int(opts.get("component", 0) or 0)
            if not 0 <= i < size:
                raise PlotError(f"option component={i} is out of range: {dim} has {size} components")
        elif dim in opts and opts[dim] is not None:
            i = _nearest(vals, _scalar_option(dim, opts[dim]))
        elif defaults and dim in defaults:
            i = int(defaults[dim])
        else:
            i = _default_index(dim, vals)
        idx.append(i)
        chosen[dim] = (vals[i], size)
    arr = np.asarray(var.data[tuple(idx)], float)
    rest = [d for d in var.dims if d in keep]
    missing = [d for d in keep if d not in rest]
    if missing:
        raise PlotError(f"variable has no dimension {missing[0]!r} (dims {var.dims})")
    return np.transpose(arr, [rest.index(d) for d in keep]), chosen


def _where(chosen: dict, skip=()) -> str:
    parts = []
    for dim, (val, size) in chosen.items():
        if dim in skip:
            continue
        if dim in _COMPONENT_DIMS:
            if size > 1:
                parts.append(_component_name(dim, int(val)))
        elif size > 1 or dim == "t":
            parts.append(f"{dim} = {_fmt(val)}")
    return ", ".join(parts)


def _component_name(dim: str, k: int) -> str:
    """1-based names of vector components: control u1, u2 (control), x1 (slow), y1 (fast)."""
    letter = {"control": "u", "slow": "x", "fast": "y"}.get(dim, dim)
    return f"control {letter}{k + 1}" if dim == "control" else f"component {letter}{k + 1}"


def _curve_indices(vals: np.ndarray, opt, count: int, frac=(0.0, 1.0)) -> list[int]:
    """Nodes of the curves: nearest to the values in ``opt``, else ``count`` evenly spaced in ``frac``."""
    if opt is not None:
        out = []
        for t in np.atleast_1d(np.asarray(opt, dtype=object)).ravel():
            i = _nearest(vals, t)
            if i not in out:
                out.append(i)
        return out
    n = len(vals)
    lo, hi = frac[0] * (n - 1), frac[1] * (n - 1)
    return [int(i) for i in np.unique(np.round(np.linspace(lo, hi, max(1, min(count, n)))).astype(int))]


def _finite(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=float)
    a[~np.isfinite(a)] = np.nan
    return a


def _title(ax, opts, text: str, params: str = "") -> None:
    """Axes title, with the parameters the figure depends on (``params``) as its last line; lines longer than
    the axes allow are wrapped (about 12 characters per inch at 12 pt)."""
    import textwrap
    text = opts.get("title") or (text + (f"\n{params}" if params else ""))
    width = max(40, int(12 * ax.get_position().width * ax.figure.get_figwidth()))

    def wrap(line: str) -> str:          # break between ", "-separated items first, inside them only if needed
        out, cur = [], ""
        for item in line.split(", "):
            cand = f"{cur}, {item}" if cur else item
            if len(cand) <= width or not cur:
                cur = cand
            else:
                out.append(cur + ",")
                cur = item
        out.append(cur)
        return "\n".join(textwrap.fill(x, width) for x in out)

    ax.set_title("\n".join(wrap(line) for line in text.split("\n")))


def _case_dict(f: _File) -> dict:
    """The case the file was made with (its resolved case, or an older file's raw case text with the recorded
    overrides; :func:`hjbsolve.provenance.stored_raw`) as a dict; {} when there is none."""
    import warnings

    from .provenance import stored_raw
    try:
        with warnings.catch_warnings():            # an older file: its raw case text is good enough for labels
            warnings.simplefilter("ignore")
            return dict(stored_raw(f.attrs, f.path))
    except HJBError:
        return {}


def _params(f: _File, g: store.Group | None = None, time: bool = False) -> str:
    """One line with the parameters a figure depends on: the model's constants (gamma, beta for Entropy-SGD,
    nu for a periodic cell problem, the params of an expr model), the grid sizes stored in the file and, for
    value groups (``time``), T and dt."""
    case = _case_dict(f)
    model, parts = case.get("model") or {}, []
    family = case.get("family") or f.attrs.get("family")
    if family == "entropy_sgd":
        parts += [f"{k} = {_fmt(model[k])}" for k in ("gamma", "beta") if isinstance(model.get(k), (int, float))]
    elif family == "periodic" and model:
        parts.append(f"nu = {_fmt(model.get('nu', 0.0))}")       # the schema's default when not given
    elif isinstance(model.get("params"), dict):
        parts += [f"{k} = {_fmt(v)}" for k, v in list(model["params"].items())[:4] if isinstance(v, (int, float))]
    where = g if g is not None else f.root
    sizes = []
    for letter in ("x", "y"):
        dims = [d for d in where.coords if _dims_with([d], letter)]
        if dims:
            n = [int(np.asarray(where.coords[d].data).size) for d in sorted(dims)]
            sizes.append(f"{letter} {'x'.join(map(str, n))}")
    if sizes:
        parts.append("grid " + ", ".join(sizes))
    if time:
        attrs = g.attrs if g is not None else {}
        T = attrs.get("T", (case.get("time") or {}).get("T"))
        dt = attrs.get("dt", (case.get("time") or {}).get("dt"))
        parts += [f"{k} = {_fmt(v)}" for k, v in (("T", T), ("dt", dt)) if v is not None]
    return ", ".join(p for p in parts if p)


def _case_name(f: _File) -> str:
    return str(f.attrs.get("case_name") or f.attrs.get("study_name") or os.path.basename(f.path))


def _heatmap(fig, ax, xs, ys, z, label: str, cmap=None, symmetric=False):
    """pcolormesh of z[ix, iy] over nodes (xs, ys) with a colour bar labelled ``label``."""
    z = np.ma.masked_invalid(np.asarray(z, float).T)
    kw = {}
    if symmetric and z.count():
        lim = float(np.max(np.abs(z))) or 1.0
        kw = {"vmin": -lim, "vmax": lim}
    mesh = ax.pcolormesh(xs, ys, z, shading="nearest", cmap=cmap, **kw)
    cb = fig.colorbar(mesh, ax=ax)
    cb.set_label(label)
    ax.grid(False)
    return mesh


def _contour(fig, ax, xs, ys, z, label: str):
    z = np.ma.masked_invalid(np.asarray(z, float).T)
    if z.count() < 4 or not np.ptp(z.compressed()):
        return _heatmap(fig, ax, xs, ys, z.T, label)
    cs = ax.contourf(xs, ys, z, levels=14)
    cb = fig.colorbar(cs, ax=ax)
    cb.set_label(label)
    ax.grid(False)
    return cs


def _map_with_contours(fig, ax, xs, ys, z, label: str):
    """A smooth (Gouraud-shaded) map of z[ix, iy] with labelled contour lines. The colour scale spans the 2-98%
    quantiles of z (the colour bar's arrows mark the rest), so that fast-growing corners do not flatten the
    region of interest; the contour levels cover the whole range."""
    zz = np.ma.masked_invalid(np.asarray(z, float).T)
    vals = zz.compressed()
    if vals.size < 4 or not np.ptp(vals):
        return _heatmap(fig, ax, xs, ys, z, label)
    lo, hi = (float(q) for q in np.percentile(vals, [2.0, 98.0]))
    if not hi > lo:
        lo, hi = float(vals.min()), float(vals.max())
    mesh = ax.pcolormesh(xs, ys, zz, shading="gouraud", vmin=lo, vmax=hi)
    extend = {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
        (bool(vals.min() < lo), bool(vals.max() > hi)), "neither")
    fig.colorbar(mesh, ax=ax, extend=extend).set_label(label)
    import matplotlib.ticker as mticker
    levels = mticker.MaxNLocator(nbins=10).tick_values(float(vals.min()), float(vals.max()))
    levels = levels[(levels > vals.min()) & (levels < vals.max())]
    if levels.size:
        cs = ax.contour(xs, ys, zz, levels=levels, colors="k", linewidths=0.7, alpha=0.8)
        ax.clabel(cs, fontsize=9, fmt=lambda v: _fmt(v), inline=True)
    ax.grid(False)
    return mesh


def _mass_window(coord: np.ndarray, mass: np.ndarray, tail: float = 1e-4) -> tuple[float, float]:
    """The interval of ``coord`` outside which at most ``tail`` of ``mass`` lies on each side, padded by
    5% of its width (clipped to the grid)."""
    m = np.clip(np.nan_to_num(np.asarray(mass, float)), 0.0, None)
    total = m.sum()
    if total <= 0 or coord.size < 2:
        return float(coord[0]), float(coord[-1])
    c = np.cumsum(m) / total
    lo = coord[min(int(np.searchsorted(c, tail)), coord.size - 1)]
    hi = coord[min(int(np.searchsorted(c, 1.0 - tail)) + 1, coord.size - 1)]
    pad = 0.05 * (hi - lo) if hi > lo else (coord[1] - coord[0])
    return float(max(coord[0], lo - pad)), float(min(coord[-1], hi + pad))


def _legend(ax, **kw):
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


# --------------------------------------------------------------------------------------------------
# cell files


def _entropy_free_drift(f: _File) -> bool:
    """True when abar (the drift at the reference control) is Chaudhari's -grad f_gamma."""
    if f.attrs.get("family") != "entropy_sgd":
        return False
    model = _case_dict(f).get("model") or {}
    control = model.get("control", "none")
    u_ref = model.get("u_ref")
    if control == "none":
        return True
    try:
        ref = None if u_ref is None else np.asarray(u_ref, float)
    except (TypeError, ValueError):
        return False
    if control == "steering":
        return ref is None or bool(np.all(ref == 0))
    if control == "learning_rate":
        return ref is None or bool(np.all(ref == 1))
    return False


def _plot_hbar(f, fig, opts):
    if _is_periodic(f):
        return _plot_hbar_periodic(f, fig, opts)
    g, v = f.root, f.var("hbar")
    xd, pd = _dims_with(v.dims, "x")[0], _dims_with(v.dims, "p")[0]
    xs, ps = _coord(g, xd, v.data.shape[v.dims.index(xd)]), _coord(g, pd, v.data.shape[v.dims.index(pd)])
    ax = fig.add_subplot()
    chosen = {}
    for i in _curve_indices(xs, opts.get(xd), opts["n_curves"]):
        h, chosen = _slice(g, v, [pd], {**opts, xd: xs[i]})
        ax.plot(ps, _finite(h), label=f"{xd} = {_fmt(xs[i])}")
    ax.set_xlabel(f"{pd} = D_x V  (costate)")
    ax.set_ylabel(HAM_LABEL)
    where = _where(chosen, skip=(xd,))
    _title(ax, opts, f"Effective Hamiltonian, {_case_name(f)}" + (f"\n{where}" if where else ""), _params(f))
    _legend(ax, title="slow state")


def _plot_hbar_map(f, fig, opts):
    g, v = f.root, f.var("hbar")
    xd, pd = _dims_with(v.dims, "x"), _dims_with(v.dims, "p")
    ax = fig.add_subplot()
    if len(xd) == 1:
        z, chosen = _slice(g, v, [pd[0], xd[0]], opts)
        xs = _coord(g, pd[0], z.shape[0])
        ys = _coord(g, xd[0], z.shape[1])
        _map_with_contours(fig, ax, xs, ys, z, HAM_LABEL)
        ax.set_xlabel(f"{pd[0]} = D_x V  (costate)")
        ax.set_ylabel(f"{xd[0]}  (slow state)")
    else:
        z, chosen = _slice(g, v, pd, opts)
        xs, ys = _coord(g, pd[0], z.shape[0]), _coord(g, pd[1], z.shape[1])
        _map_with_contours(fig, ax, xs, ys, z, "Hbar(x, p1, p2)  [sup convention]")
        ax.set_xlabel(f"{pd[0]}  (costate, D_x1 V)")
        ax.set_ylabel(f"{pd[1]}  (costate, D_x2 V)")
    where = _where(chosen)
    _title(ax, opts, f"Effective Hamiltonian, {_case_name(f)}" + (f"\n{where}" if where else ""), _params(f))


def _plot_mu(f, fig, opts):
    g, v = f.root, f.var("mu")
    xd, yd = _dims_with(v.dims, "x"), _dims_with(v.dims, "y")
    widths = []
    for d in yd:
        c = _coord(g, d, v.data.shape[v.dims.index(d)])
        widths.append(float(c[1] - c[0]) if c.size > 1 else 1.0)
    vol = float(np.prod(widths))
    ax = fig.add_subplot()
    if len(yd) == 1:
        xs = _coord(g, xd[0], v.data.shape[v.dims.index(xd[0])])
        ys = _coord(g, yd[0], v.data.shape[v.dims.index(yd[0])])
        chosen, windows = {}, []
        for i in _curve_indices(xs, opts.get(xd[0]), opts["n_curves"]):
            d, chosen = _slice(g, v, yd, {**opts, xd[0]: xs[i]})
            ax.plot(ys, d / vol, label=f"{xd[0]} = {_fmt(xs[i])}")
            windows.append(_mass_window(ys, d))
        if windows and yd[0] not in opts:          # zoom to where the mass of the drawn laws is
            ax.set_xlim(min(w[0] for w in windows), max(w[1] for w in windows))
        ax.set_xlabel(f"{yd[0]}  (fast state)")
        ax.set_ylabel(f"density mu_x({yd[0]})  [mu / h_y]")
        _legend(ax, title="slow state")
        where = _where(chosen, skip=(xd[0],))
    else:
        d, chosen = _slice(g, v, yd, opts)
        ys0 = _coord(g, yd[0], d.shape[0])
        ys1 = _coord(g, yd[1], d.shape[1])
        dens = np.asarray(d, float) / vol
        dlabel = "density mu_x(y)  [mu / (h_y1 h_y2)]"
        if dens.size >= 4 and np.ptp(np.nan_to_num(dens)) > 0:      # smooth shading, a few level lines
            mesh = ax.pcolormesh(ys0, ys1, np.ma.masked_invalid(dens.T), shading="gouraud", cmap="viridis")
            fig.colorbar(mesh, ax=ax).set_label(dlabel)
            top = float(np.nanmax(dens))
            ax.contour(ys0, ys1, dens.T, levels=top * np.array([0.1, 0.3, 0.5, 0.7, 0.9]), colors="w",
                       linewidths=0.6, alpha=0.8)
            ax.grid(False)
        else:
            _heatmap(fig, ax, ys0, ys1, dens, dlabel)
        ax.set_xlim(*_mass_window(ys0, np.nansum(d, axis=1)))      # zoom to where the mass is
        ax.set_ylim(*_mass_window(ys1, np.nansum(d, axis=0)))
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel(f"{yd[0]}  (fast state)")
        ax.set_ylabel(f"{yd[1]}  (fast state)")
        where = _where(chosen)
    _title(ax, opts, f"Invariant law of the fast process, {_case_name(f)}" + (f"\n{where}" if where else ""),
           _params(f))


def _plot_drift(f, fig, opts):
    g, a = f.root, f.var("abar")
    yb = f.var("ybar")
    xd = _dims_with(a.dims, "x")
    free = _entropy_free_drift(f)
    alabel = "abar(x) = -grad f_gamma(x)" if free else "abar(x)  (reference control)"
    if len(xd) == 1:
        ax = fig.add_subplot()
        xs = _coord(g, xd[0], a.data.shape[a.dims.index(xd[0])])
        ncomp = a.data.shape[a.dims.index("slow")] if "slow" in a.dims else 1
        for k in range(ncomp):
            z, _ = _slice(g, a, xd, {**opts, "component": k})
            ax.plot(xs, z, label=alabel if ncomp == 1 else f"{alabel}, {_component_name('slow', k)}")
        if yb is not None and "fast" in yb.dims and yb.data.shape[yb.dims.index("fast")] == 1:
            z, _ = _slice(g, yb, xd, {**opts, "component": 0})
            ax.plot(xs, z - xs, "--", label="<y>_x - x  (replica mean minus x)")
        ax.set_xlabel(f"{xd[0]}  (slow state)")
        ax.set_ylabel("averaged slow drift")
        _legend(ax)
        _title(ax, opts, f"Averaged dynamics, {_case_name(f)}", _params(f))
        return
    x0 = _coord(g, xd[0], a.data.shape[a.dims.index(xd[0])])
    x1 = _coord(g, xd[1], a.data.shape[a.dims.index(xd[1])])
    fields = [("abar", a, "abar(x) = -grad f_gamma(x)" if free else "abar(x)", False)]
    if yb is not None and "fast" in yb.dims and yb.data.shape[yb.dims.index("fast")] == 2:
        fields.append(("ybar", yb, "<y>_x - x", True))
    X0, X1 = np.meshgrid(x0, x1, indexing="ij")
    s0, s1 = max(1, len(x0) // 20), max(1, len(x1) // 20)
    axes = fig.subplots(1, len(fields), squeeze=False)[0]
    for ax, (_, var, label, minus_x) in zip(axes, fields):
        u, _ = _slice(g, var, xd, {**opts, "component": 0})
        w, _ = _slice(g, var, xd, {**opts, "component": 1})
        if minus_x:
            u, w = u - X0, w - X1
        speed = np.hypot(u, w)
        spacing = min(abs(x0[s0] - x0[0]) if len(x0) > s0 else 1.0, abs(x1[s1] - x1[0]) if len(x1) > s1 else 1.0)
        # every arrow 0.8 of the arrow spacing long (its direction), its colour the speed: a drift that grows
        # toward the box faces would otherwise shrink the arrows in the middle to dots
        with np.errstate(invalid="ignore", divide="ignore"):
            unit = np.where(speed > 0, 0.8 * spacing / speed, 0.0)
        q = ax.quiver(X0[::s0, ::s1], X1[::s0, ::s1], (u * unit)[::s0, ::s1], (w * unit)[::s0, ::s1],
                      speed[::s0, ::s1], angles="xy", scale_units="xy", scale=1.0, width=0.006, pivot="middle")
        fig.colorbar(q, ax=ax, orientation="horizontal").set_label(f"|{label}|  (arrows: direction)")
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel(f"{xd[0]}  (slow state)")
        ax.set_ylabel(f"{xd[1]}  (slow state)")
    if opts.get("title"):
        fig.suptitle(opts["title"])
    else:
        fig.suptitle(f"Averaged dynamics, {_case_name(f)}\n{_params(f)}")


def _attained_range(ps: np.ndarray, h: np.ndarray) -> tuple[float, float] | None:
    """The velocities q whose Lbar(q) = sup_p {-q p - H(p)} is attained inside the p box: q = -H'(p), i.e.
    [-H'(p_max), -H'(p_min)] with the one-sided slopes at the box ends (H convex). Outside it the sup sits on
    the box edge and the transform is the line -q p_edge - H(p_edge), of slope -+p_max: an artefact of the
    truncated box, not Lbar."""
    h = np.asarray(h, float)
    if ps.size < 2 or not np.isfinite(h[[0, 1, -2, -1]]).all():
        return None
    s_lo = (h[1] - h[0]) / (ps[1] - ps[0])
    s_hi = (h[-1] - h[-2]) / (ps[-1] - ps[-2])
    return float(-s_hi), float(-s_lo)


def _draw_lbar_curve(ax, qs, z, ps, h, color, label) -> str:
    """One Lbar curve: solid where the sup is attained inside the p box, dotted (marked) where the box edge
    is reached; a single marker when Hbar is linear in p (Lbar is the indicator of one velocity). Returns
    the kind drawn: 'curve', 'indicator' or 'plain' (no Hbar to judge by)."""
    z = _finite(z)
    rng = _attained_range(ps, h) if ps is not None else None
    if rng is None:
        ax.plot(qs, z, color=color, label=label)
        return "plain"
    lo, hi = rng
    tol = 1e-9 * (1.0 + abs(lo) + abs(hi))
    ax.plot(qs, z, ":", color=color, lw=1.0, alpha=0.7)
    if hi - lo <= tol:                  # Hbar linear in p: no control moves the averaged velocity
        qstar = 0.5 * (lo + hi)
        qstar = 0.0 if abs(qstar) <= tol else qstar
        lstar = float(np.nanmax(-qstar * ps - np.asarray(h, float)))
        ax.plot([qstar], [lstar], "o", color=color, ms=6, label=f"{label}: q = {_fmt(qstar)} only")
        return "indicator"
    inside = (qs >= lo - tol) & (qs <= hi + tol)
    ax.plot(qs, np.where(inside, z, np.nan), color=color, label=label)
    return "curve"


def _plot_lbar(f, fig, opts):
    g, v = f.root, f.var("lbar")
    hb = f.var("hbar")
    xd, qd = _dims_with(v.dims, "x"), _dims_with(v.dims, "q")
    ax = fig.add_subplot()
    label = "Lbar(x, q) = sup_p {-q.p - Hbar(x, p)}"
    kinds = set()
    if not xd:                                    # periodic: Lbar(q) = sup_P {-q.P - Hbar(P)}
        label = "Lbar(q) = sup_P {-q.P - Hbar(P)}"
        if len(qd) == 1:
            Ps = (_coord(g, hb.dims[0], hb.data.shape[0]) if hb is not None and len(hb.dims) == 1
                  and f"{hb.dims[0]}_values" not in g.variables else None)
            kinds.add(_draw_lbar_curve(ax, _coord(g, qd[0], v.data.shape[0]), v.data, Ps,
                                       None if Ps is None else hb.data, "C0", "Lbar(q)"))
            ax.set_ylabel(label)
            _legend(ax)
        else:
            _heatmap(fig, ax, _coord(g, qd[0], v.data.shape[0]), _coord(g, qd[1], v.data.shape[1]),
                     _finite(v.data), label)
            ax.set_ylabel(f"{qd[1]}  (averaged velocity)")
        ax.set_xlabel(f"{qd[0]}  (averaged velocity)")
        _title(ax, opts, f"Effective Lagrangian of the periodic cell problem, {_case_name(f)}"
               + _lbar_note(kinds, "P"), _params(f))
        return
    pd = _dims_with(hb.dims, "p") if hb is not None else []
    if len(xd) == 1:
        xs = _coord(g, xd[0], v.data.shape[v.dims.index(xd[0])])
        qs = _coord(g, qd[0], v.data.shape[v.dims.index(qd[0])])
        ps = _coord(g, pd[0], hb.data.shape[hb.dims.index(pd[0])]) if len(pd) == 1 else None
        chosen = {}
        for n, i in enumerate(_curve_indices(xs, opts.get(xd[0]), opts["n_curves"])):
            z, chosen = _slice(g, v, qd, {**opts, xd[0]: xs[i]})
            h = _slice(g, hb, pd, {**opts, xd[0]: xs[i]})[0] if ps is not None else None
            kinds.add(_draw_lbar_curve(ax, qs, z, ps, h, f"C{n % 10}", f"{xd[0]} = {_fmt(xs[i])}"))
        ax.set_xlabel(f"{qd[0]}  (averaged velocity)")
        ax.set_ylabel(label)
        if kinds == {"curve"}:                    # zoom to Lbar itself: the artefact lines run off the axes
            solid = np.concatenate([ln.get_ydata() for ln in ax.get_lines() if ln.get_linestyle() == "-"])
            solid = solid[np.isfinite(solid)]
            if solid.size and np.ptp(solid) > 0:
                pad = 0.08 * np.ptp(solid)
                ax.set_ylim(solid.min() - pad, solid.max() + pad)
        _legend(ax, title="slow state", loc="best")
        where = _where(chosen, skip=(xd[0],))
    else:
        z, chosen = _slice(g, v, qd, opts)
        q0, q1 = _coord(g, qd[0], z.shape[0]), _coord(g, qd[1], z.shape[1])
        z = _finite(z)
        if len(pd) == 2:                          # mask the velocities the p box cannot produce
            h, _ = _slice(g, hb, pd, opts)
            p0, p1 = _coord(g, pd[0], h.shape[0]), _coord(g, pd[1], h.shape[1])
            with np.errstate(invalid="ignore"):
                d0, d1 = np.diff(h, axis=0) / np.diff(p0)[:, None], np.diff(h, axis=1) / np.diff(p1)[None, :]
                ok = (q0[:, None] >= -np.nanmax(d0[-1]) - 1e-12) & (q0[:, None] <= -np.nanmin(d0[0]) + 1e-12)
                ok &= (q1[None, :] >= -np.nanmax(d1[:, -1]) - 1e-12) & (q1[None, :] <= -np.nanmin(d1[:, 0]) + 1e-12)
            if ok.any():
                z = np.where(ok, z, np.nan)
                kinds.add("masked")
        _heatmap(fig, ax, q0, q1, z, label)
        ax.set_xlabel(f"{qd[0]}  (averaged velocity)")
        ax.set_ylabel(f"{qd[1]}  (averaged velocity)")
        where = _where(chosen)
    _title(ax, opts, f"Effective Lagrangian, {_case_name(f)}" + (f"\n{where}" if where else "") + _lbar_note(kinds),
           _params(f))


def _lbar_note(kinds: set, p: str = "p") -> str:
    notes = []
    if kinds & {"curve", "indicator"}:
        notes.append(f"dotted: the {p} box edge is reached (slope -+{p}_max), an artefact, not Lbar")
    if "indicator" in kinds:
        notes.append(f"Hbar linear in {p}: Lbar = +inf except at the marked velocity")
    if "masked" in kinds:
        notes.append(f"blank: velocities the {p} box cannot produce")
    return "".join(f"\n{n}" for n in notes)


def _plot_feedback(f, fig, opts):
    g, v = f.root, f.var("feedback")
    yd, pd = _dims_with(v.dims, "y"), _dims_with(v.dims, "p")
    ax = fig.add_subplot()
    if len(yd) == 1:
        keep = [yd[0], pd[0]]
        defaults = None
    else:
        keep = yd
        defaults = {}
        for d in pd:       # at p = 0 the maximiser is often trivial: default to p near p_max / 2
            ps = _coord(g, d, v.data.shape[v.dims.index(d)])
            defaults[d] = _nearest(ps, 0.5 * np.nanmax(ps))
    z, chosen = _slice(g, v, keep, opts, defaults)
    xs, ys = _coord(g, keep[0], z.shape[0]), _coord(g, keep[1], z.shape[1])
    _heatmap(fig, ax, xs, ys, z, "u*(x, p; y)  (maximiser of the sup, extended control)")
    ax.set_xlabel(f"{keep[0]}  (fast state)")
    ax.set_ylabel(f"{keep[1]} = D_x V  (costate)" if keep[1] in pd else f"{keep[1]}  (fast state)")
    where = _where(chosen)
    _title(ax, opts, f"Extended feedback, {_case_name(f)}" + (f"\n{where}" if where else ""), _params(f))


# --------------------------------------------------------------------------------------------------
# periodic (ergodic) cell problems


def _periodic_exact_1d(f: _File, P: np.ndarray) -> np.ndarray | None:
    """Hbar(P) in closed form for the first-order 1-D cell problem |P + chi'|^2/2 + V(y) = Hbar (family periodic,
    m = 1, nu = 0, hamiltonian quadratic; docs/mathematics.md §4): max V on the flat part
    |P| <= int_0^1 sqrt(2 (max V - V)), else the root Hbar of int_0^1 sqrt(2 (Hbar - V(y))) dy = |P|. The
    integrals use 2^14 periodic nodes (spectral where Hbar > max V, O(h^2) at the flat part's edge); max V
    is refined by a bounded 1-D minimisation. None when the case is not of this kind."""
    model = _case_dict(f).get("model") or {}
    if (not isinstance(model.get("V"), str) or model.get("m", 1) != 1 or float(model.get("nu", 0.0)) != 0.0
            or model.get("hamiltonian", "quadratic") != "quadratic"):
        return None
    from scipy.optimize import brentq, minimize_scalar

    from .expr import compile_expression
    try:
        V = compile_expression(model["V"], {"y": 1}, dict(model.get("params") or {}), where="model.V")
    except HJBError:
        return None
    M = 2 ** 14
    y = np.arange(M) / M
    v = np.asarray(V.evaluate(y=y[:, None]), float)
    if not np.isfinite(v).all():
        return None
    j = int(np.argmax(v))
    res = minimize_scalar(lambda t: -float(V.evaluate(y=np.array([[t]]))[0]), bounds=(y[j] - 1 / M, y[j] + 1 / M),
                          method="bounded", options={"xatol": 1e-13})
    vmax = max(float(v[j]), -float(res.fun))

    def width(H):
        return float(np.mean(np.sqrt(np.maximum(2.0 * (H - v), 0.0))))

    flat = width(vmax)
    out = np.full(P.shape, vmax)
    for i, p in enumerate(np.abs(P)):
        if p > flat:
            out[i] = brentq(lambda H: width(H) - p, vmax, vmax + 0.5 * p * p + 1e-12, xtol=1e-14, rtol=1e-14)
    return out


def _plot_hbar_periodic(f, fig, opts):
    g, v = f.root, f.var("hbar")
    ex = f.var("hbar_exact")
    ax = fig.add_subplot()
    label = "Hbar(P)  [-nu Lap chi + G(y, P + D chi) = Hbar]"
    pv = g.variables.get(f"{v.dims[0]}_values")
    if len(v.dims) == 1 and pv is not None and pv.data.ndim == 2 and pv.data.shape[1] == 2:
        P = np.asarray(pv.data, float)            # explicit list of P vectors in 2-D: scatter coloured by Hbar
        sc = ax.scatter(P[:, 0], P[:, 1], c=_finite(v.data), s=40)
        fig.colorbar(sc, ax=ax).set_label(label)
        ax.set_xlabel("P_1")
        ax.set_ylabel("P_2")
    elif len(v.dims) == 1:
        Ps = _coord(g, v.dims[0], v.data.shape[0])
        ax.plot(Ps, _finite(v.data), "o-", ms=3.5, label="computed")
        exact = (_finite(ex.data) if ex is not None and ex.data.shape == v.data.shape
                 else _periodic_exact_1d(f, np.asarray(Ps, float)))
        if exact is not None:
            err = float(np.nanmax(np.abs(_finite(v.data) - exact)))
            ax.plot(Ps, exact, "k--", label=f"exact (max |computed - exact| = {err:.1e})")
        ax.set_xlabel(f"{v.dims[0]}  (cell-problem slope)")
        ax.set_ylabel(label)
        _legend(ax)
    else:
        P0, P1 = (_coord(g, d, n) for d, n in zip(v.dims, v.data.shape))
        _heatmap(fig, ax, P0, P1, v.data, label)
        if ex is not None and ex.data.shape == v.data.shape and np.ptp(np.nan_to_num(ex.data)) > 0:
            ax.contour(P0, P1, np.asarray(ex.data, float).T, levels=8, colors="k", linestyles="--",
                       linewidths=0.9)
        ax.set_xlabel(f"{v.dims[0]}")
        ax.set_ylabel(f"{v.dims[1]}")
    _title(ax, opts, f"Effective Hamiltonian of the periodic cell problem, {_case_name(f)}"
           + ("\n(exact: dashed)" if ex is not None and len(v.dims) == 2 else ""), _params(f))


def _plot_chi(f, fig, opts):
    g, v = f.root, f.var("chi")
    Pd, yd = _dims_with(v.dims, "P"), _dims_with(v.dims, "y")
    ax = fig.add_subplot()
    label = "chi(y)  [corrector, chi(y_0) = 0]"
    if len(yd) == 1:
        ys = _coord(g, yd[0], v.data.shape[v.dims.index(yd[0])])
        chosen = {}
        if Pd:
            Ps = _coord(g, Pd[0], v.data.shape[v.dims.index(Pd[0])])
            for i in _curve_indices(Ps, opts.get(Pd[0]), opts["n_curves"]):
                z, chosen = _slice(g, v, yd, {**opts, Pd[0]: Ps[i]})
                ax.plot(ys, _finite(z), label=f"{Pd[0]} = {_fmt(Ps[i])}")
        else:
            z, chosen = _slice(g, v, yd, opts)
            ax.plot(ys, _finite(z), label="chi")
        ax.set_xlabel(f"{yd[0]}  (fast state, period 1)")
        ax.set_ylabel(label)
        _legend(ax)
        where = _where(chosen, skip=tuple(Pd[:1]))
    else:
        z, chosen = _slice(g, v, yd, opts)
        _contour(fig, ax, _coord(g, yd[0], z.shape[0]), _coord(g, yd[1], z.shape[1]), z, label)
        ax.set_xlabel(f"{yd[0]}  (fast state)")
        ax.set_ylabel(f"{yd[1]}  (fast state)")
        ax.set_aspect("equal", adjustable="box")
        where = _where(chosen)
    _title(ax, opts, f"Correctors of the periodic cell problem, {_case_name(f)}" + (f"\n{where}" if where else ""),
           _params(f))


# --------------------------------------------------------------------------------------------------
# value groups


def _eps_label(eps: float, g=None) -> str:
    if g is not None and str(g.attrs.get("problem", "")).startswith("plain"):
        return "plain HJB (no fast variable)"
    return "eps = 0 (effective)" if eps == 0 else f"eps = {eps:g}"


def _pick_group(f: _File, opts, need=None):
    """(eps, name, group) chosen by ``opts['eps']`` among value groups passing ``need``."""
    groups = [e for e in f.values if need is None or need(e[2])]
    if not groups:
        raise PlotError(f"{f.path}: no value group has the data for this plot")
    if opts.get("eps") is not None:
        want = float(_scalar_option("eps", opts["eps"]))
        for e in groups:
            if math.isclose(e[0], want, rel_tol=1e-9, abs_tol=1e-300):
                return e
        have = ", ".join(f"{e[0]:g}" for e in groups)
        raise PlotError(f"{f.path}: no value group with eps = {want:g} for this plot; eps available: {have}")
    zero = [e for e in groups if e[0] == 0]
    return zero[0] if zero else groups[-1]


def _plot_value(f, fig, opts):
    eps, _, g = _pick_group(f, opts)
    v = g.variables["V"]
    xd, yd = _dims_with(v.dims, "x"), _dims_with(v.dims, "y")
    ax = fig.add_subplot()
    name = "V^eps" if yd else "V"
    if len(xd) == 1:
        xs = _coord(g, xd[0], v.data.shape[v.dims.index(xd[0])])
        chosen = {}
        if yd:
            ys = _coord(g, yd[0], v.data.shape[v.dims.index(yd[0])])
            for i in _curve_indices(ys, opts.get(yd[0]), opts["n_curves"], frac=(0.2, 0.8)):
                z, chosen = _slice(g, v, xd, {**opts, yd[0]: ys[i]})
                ax.plot(xs, _finite(z), label=f"{yd[0]} = {_fmt(ys[i])}")
            ax.set_ylabel(f"V^eps(T, x, y)  {VALUE_LABEL}")
            where = _where(chosen, skip=(yd[0],))
            legend_title = "fast state"
        else:
            ts = _coord(g, "t", v.data.shape[0])
            for i in _curve_indices(ts, opts.get("t"), len(ts)):
                z, chosen = _slice(g, v, xd, {**opts, "t": ts[i]})
                ax.plot(xs, _finite(z), label=f"t = {_fmt(ts[i])}")
            ax.set_ylabel(f"V(t, x)  {VALUE_LABEL}")
            where = _where(chosen, skip=("t",))
            legend_title = "time remaining"
        ax.set_xlabel(f"{xd[0]}  (slow state)")
        _legend(ax, title=legend_title)
    else:
        z, chosen = _slice(g, v, xd[:2], opts)
        _heatmap(fig, ax, _coord(g, xd[0], z.shape[0]), _coord(g, xd[1], z.shape[1]), _finite(z),
                 f"{name}  {VALUE_LABEL}")
        ax.set_aspect("equal", adjustable="box")          # both axes are the slow state: keep its geometry
        ax.set_xlabel(f"{xd[0]}  (slow state)")
        ax.set_ylabel(f"{xd[1]}  (slow state)")
        where = _where(chosen)
    _title(ax, opts, f"Value function, {_eps_label(eps, g)}, {_case_name(f)}" + (f"\n{where}" if where else ""),
           _params(f, g, time=True))


def _final(g, v, opts):
    """Index of the time used for 'final time' plots (option t=, default the last stored time)."""
    ts = _coord(g, "t", v.data.shape[0])
    i = _nearest(ts, _scalar_option("t", opts["t"])) if opts.get("t") is not None else len(ts) - 1
    return i, ts[i]


def _plot_value_eps(f, fig, opts):
    withy = [e for e in f.values if e[0] > 0 and _has_y(e[2], e[2].variables["V"])]
    zero = [e for e in f.values if e[0] == 0]
    axes = fig.subplots(2 if zero else 1, 1, sharex=True, squeeze=False)[:, 0]
    ax = axes[0]
    xname, where, Ts = None, "", set()
    ref = None
    if zero:
        g0 = zero[0][2]
        v0 = g0.variables["V"]
        xd0 = _dims_with(v0.dims, "x")
        _, T = _final(g0, v0, opts)
        z0, _ = _slice(g0, v0, xd0[:1], {**opts, "t": T})
        x0 = _coord(g0, xd0[0], z0.shape[0])
        ref = (x0, _finite(z0))
        Ts.add(float(T))
    colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.85, max(1, len(withy))))
    for c, (eps, _, g) in zip(colors, withy):
        v = g.variables["V"]
        xd = _dims_with(v.dims, "x")
        xname = xd[0]
        _, T = _final(g, v, opts)
        Ts.add(float(T))
        z, chosen = _slice(g, v, xd[:1], {**opts, "t": T})
        xs = _coord(g, xd[0], z.shape[0])
        ax.plot(xs, _finite(z), color=c, label=_eps_label(eps))
        where = _where(chosen, skip=("t",))
        if ref is not None:
            axes[1].plot(xs, _finite(z) - np.interp(xs, ref[0], ref[1], left=np.nan, right=np.nan),
                         color=c, label=_eps_label(eps))
    if ref is not None:
        ax.plot(ref[0], ref[1], "k--", label=_eps_label(0.0))
        axes[1].set_ylabel("V^eps - V")
        axes[1].set_xlabel(f"{xname}  (slow state)")
        _legend(axes[1], ncols=2)
    else:
        ax.set_xlabel(f"{xname}  (slow state)")
    ax.set_ylabel(f"V^eps(T, x, y0)  {VALUE_LABEL}" if ref is None else "V^eps(T, x, y0)")
    _legend(ax)
    tt = ", ".join(_fmt(t) for t in sorted(Ts))
    _title(ax, opts, f"Convergence eps -> 0 of the value, {_case_name(f)}\nT = {tt}"
           + (f", {where}" if where else "") + ("  (no eps = 0 group)" if ref is None else f"  {VALUE_LABEL}"),
           _params(f, withy[0][2] if withy else None, time=True))


def _plot_value_feedback(f, fig, opts):
    eps, _, g = _pick_group(f, {**opts, "eps": opts.get("eps")},
                            need=lambda g: "feedback" in g.variables and g.variables["feedback"].data.size > 0)
    if opts.get("eps") is None:           # default: the smallest eps > 0 with a y-dependent feedback
        pos = [e for e in f.values if e[0] > 0 and "feedback" in e[2].variables
               and e[2].variables["feedback"].data.size > 0]
        if pos:
            eps, _, g = pos[-1]
    v = g.variables["feedback"]
    xd, yd = _dims_with(v.dims, "x"), _dims_with(v.dims, "y")
    ax = fig.add_subplot()
    T = g.attrs.get("T")
    when = "t = T" + (f" = {_fmt(T)}" if T is not None else "") + " (time remaining: the whole horizon)"
    label = "u*(x, y) at t = T"
    if yd:
        z, chosen = _slice(g, v, [xd[0], yd[0]], opts)
        _heatmap(fig, ax, _coord(g, xd[0], z.shape[0]), _coord(g, yd[0], z.shape[1]), z, label)
        ax.set_ylabel(f"{yd[0]}  (fast state)")
    elif len(xd) == 1:
        z, chosen = _slice(g, v, xd, opts)
        ax.plot(_coord(g, xd[0], z.shape[0]), z, label="u*(x)")
        ax.set_ylabel("u*(x) at t = T  (optimal feedback)")
        _legend(ax)
    else:
        z, chosen = _slice(g, v, xd[:2], opts)
        _heatmap(fig, ax, _coord(g, xd[0], z.shape[0]), _coord(g, xd[1], z.shape[1]), z, "u*(x) at t = T")
        ax.set_aspect("equal", adjustable="box")
        ax.set_ylabel(f"{xd[1]}  (slow state)")
    ax.set_xlabel(f"{xd[0]}  (slow state)")
    where = ", ".join(w for w in (when, _where(chosen)) if w)
    _title(ax, opts, f"Optimal feedback, {_eps_label(eps, g)}, {_case_name(f)}\n{where}", _params(f, g, time=True))


def _plot_blind(f, fig, opts):
    eps, _, g = _pick_group(f, opts, need=lambda g: "V_blind" in g.variables)
    v, vb = g.variables["V"], g.variables["V_blind"]
    xd = _dims_with(vb.dims, "x")
    ts = _coord(g, "t", vb.data.shape[0])
    ax, ax2 = fig.subplots(2, 1, sharex=True)
    colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.85, len(ts)))
    chosen = {}
    for i, c in zip(_curve_indices(ts, opts.get("t"), len(ts)), colors):
        o = {**opts, "t": ts[i]}
        zb, chosen = _slice(g, vb, xd[:1], o)
        z, _ = _slice(g, v, xd[:1], o)
        xs = _coord(g, xd[0], z.shape[0])
        ax.plot(xs, _finite(z), color=c, label=f"t = {_fmt(ts[i])}")
        ax.plot(xs, _finite(zb), "--", color=c)
        ax2.plot(xs, _finite(zb - z), color=c, label=f"t = {_fmt(ts[i])}")
    ax.set_ylabel("V (solid), V_blind (dashed)")
    ax2.set_ylabel("V_blind - V  (>= 0)")
    ax2.set_xlabel(f"{xd[0]}  (slow state)")
    _legend(ax, title="time remaining", ncols=2)
    where = _where(chosen, skip=("t",))
    _title(ax, opts, f"Extended vs y-blind controls, {_eps_label(eps)}, {_case_name(f)}\n"
           + (f"{where}  " if where else "") + VALUE_LABEL, _params(f, g, time=True))


# --------------------------------------------------------------------------------------------------
# studies


def _study_columns(f: _File):
    v = f.root.variables
    param = np.asarray(v["param"].data, float).ravel()
    cols = {}
    for norm in ("max", "l2"):
        e = v.get(f"err_{norm}")
        if e is None:
            continue
        err = np.asarray(e.data, float).ravel()
        o = v.get(f"order_{norm}")
        if o is not None and np.asarray(o.data).size == err.size:
            order = np.asarray(o.data, float).ravel()
        else:
            order = _pairwise_orders(param, err)
        cols[norm] = (err, order)
    return param, cols


def _pairwise_orders(param, err) -> np.ndarray:
    out = np.full(err.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(1, err.size):
            num = np.log(err[i] / err[i - 1])
            den = np.log(param[i] / param[i - 1])
            out[i] = num / den if den != 0 else np.nan
    out[~np.isfinite(out)] = np.nan
    return out


def _fit(param, err, stored_order, stored_spread):
    """(slope, spread, intercept, mask): stored slope when finite, else least squares in log-log."""
    ok = np.isfinite(param) & np.isfinite(err) & (param > 0) & (err > 0)
    lh, le = np.log(param[ok]), np.log(err[ok])
    slope, spread = stored_order, stored_spread
    if slope is None or not np.isfinite(slope):
        if ok.sum() < 2 or np.ptp(lh) == 0:
            return None, None, None, ok
        A = np.stack([lh, np.ones_like(lh)], 1)
        coef, *_ = np.linalg.lstsq(A, le, rcond=None)
        slope = float(coef[0])
        if ok.sum() > 2:
            res = le - A @ coef
            s2 = float(res @ res) / (ok.sum() - 2)
            spread = math.sqrt(s2 / float(np.sum((lh - lh.mean()) ** 2)))
        else:
            spread = None
    if ok.sum() == 0:
        return slope, spread, None, ok
    intercept = float(np.mean(le - slope * lh))
    return float(slope), spread, intercept, ok


def _attr_float(attrs, key):
    try:
        v = attrs.get(key)
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _slope_text(slope, spread) -> str:
    if slope is None:
        return "no fit"
    s = f"slope {slope:.2f}"
    if spread is not None and np.isfinite(spread):
        s += f" ± {spread:.2f}"
    return s


_NORM_NAMES = {"max": "max norm", "l2": "l2 norm"}


def _param_name(f):
    return str(f.attrs.get("parameter") or "param")


def _study_series(f: _File, n: int):
    """(series index per run, {series: label}, {series: stored fits [kmax, spread, kl2, spread]}) of a study:
    one series per combination of the varied keys other than the first (the abscissa)."""
    v = f.root.variables
    series = (np.asarray(v["series"].data, int).ravel() if "series" in v and np.asarray(v["series"].data).size == n
              else np.zeros(n, int))
    varied = [str(k) for k in np.atleast_1d(f.attrs.get("varied", []))]
    labels = {}
    for s in np.unique(series):
        i = int(np.flatnonzero(series == s)[0])
        parts = []
        for key in varied[1:]:
            var = v.get("vary_" + re.sub(r"[^A-Za-z0-9_]", "_", key))
            if var is not None:
                parts.append(f"{key} = {np.asarray(var.data).ravel()[i]:g}")
        labels[int(s)] = ", ".join(parts) or f"series {int(s)}"
    fits = {}
    for s in labels:
        raw = f.attrs.get(f"fit_series_{s}")
        if raw is not None and np.size(raw) == 4:
            fits[s] = [float(x) for x in np.ravel(raw)]
    return series, labels, fits


def _plot_convergence(f, fig, opts):
    param, cols = _study_columns(f)
    series, labels, fits = _study_series(f, param.size)
    several = len(labels) > 1
    ax = fig.add_subplot()
    handles, names, fitted = [], [], []
    for si, s in enumerate(sorted(labels)):
        sel = series == s
        for ni, (norm, (err, _)) in enumerate(cols.items()):
            color = f"C{(2 * si + ni) % 10}" if several else ("C0", "C3")[ni]
            marker = ("o", "s")[ni]
            stored = fits.get(s)
            k_st = stored[0 if norm == "max" else 2] if stored else _attr_float(f.attrs, f"fit_order_{norm}")
            sp_st = stored[1 if norm == "max" else 3] if stored else _attr_float(f.attrs, f"fit_order_{norm}_spread")
            slope, spread, icpt, ok = _fit(param[sel], err[sel], k_st, sp_st)
            if not ok.any():
                continue
            ps, es = param[sel][ok], err[sel][ok]
            (pts,) = ax.loglog(ps, es, marker, color=color, ls="none", ms=6)
            label = (f"{labels[s]}: " if several else "") + f"{_NORM_NAMES[norm]}, {_slope_text(slope, spread)}"
            if slope is not None and icpt is not None and ps.size > 1:
                h = np.geomspace(ps.min(), ps.max(), 50)
                (line,) = ax.loglog(h, np.exp(icpt) * h ** slope, "--", color=color, lw=1.2)
                handles.append((pts, line))
                fitted.append((slope, icpt, float(ps.min()), float(ps.max()), color))
            else:
                handles.append(pts)
            names.append(label)
    disc = f.root.variables.get("disc_err_max")
    if disc is not None and np.asarray(disc.data).size == param.size:
        d = np.asarray(disc.data, float).ravel()
        for s in sorted(labels):
            sel = (series == s) & np.isfinite(d) & (d > 0) & np.isfinite(param) & (param > 0)
            if sel.sum() < 1:
                continue
            order = np.argsort(param[sel])
            ps, ds = param[sel][order], d[sel][order]
            errs = np.concatenate([c[0][sel] for c in cols.values()])
            floor = min(float(np.nanmin(errs[errs > 0])) if (errs > 0).any() else ds.min(), ds.min()) / 3.0
            (dl,) = ax.loglog(ps, ds, ":", color="0.35", lw=1.2)
            band = ax.fill_between(ps, floor, 3.0 * ds, color="0.5", alpha=0.18, lw=0)
            if s == sorted(labels)[0]:
                handles.append((dl, band))
                names.append("discretisation error |V^eps_h - V^eps| (dotted); shaded: < 3x it, not resolved")
    _slope_triangles(ax, fitted)
    if handles:
        # below the axes: a legend inside would hide points, fits or the band
        ax.legend(handles, names, handler_map={tuple: HandlerTuple(ndivide=1)}, title="error (markers), fit (dashed)",
                  fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    name = _param_name(f)
    ax.set_xlabel(_PARAM_LABELS.get(name, name))
    ref = str(f.attrs.get("reference") or "unknown")
    ax.set_ylabel(f"error  [reference: {ref}]")
    ax.grid(True, which="both", alpha=0.25)
    _title(ax, opts, f"Convergence study {f.attrs.get('study_name', _case_name(f))}",
           _params(f, time=name not in ("dx", "dt")))          # T and dt, unless dt is refined with the grid


def _slope_triangles(ax, fitted) -> None:
    """A reference-slope triangle below the fitted line for each distinct reference order: the fitted order
    rounded to an integer, at least 1 (the orders schemes and eps-rates have; a pre-asymptotic fit of 0.67
    is drawn against 1). Its hypotenuse has the reference slope; the legs are labelled 1 and k."""
    done = set()
    for slope, icpt, lo, hi, color in fitted:
        if not slope > 0.25:
            continue
        k = float(max(1, int(math.floor(slope + 0.5))))
        if k in done or not hi > lo:
            continue
        done.add(k)
        la, lb = math.log(lo), math.log(hi)
        x0, x1 = math.exp(la + 0.55 * (lb - la)), math.exp(la + 0.85 * (lb - la))
        y0 = math.exp(icpt) * x0 ** slope * (0.35 if k > 0 else 2.8)
        y1 = y0 * (x1 / x0) ** k
        corner = (x1, y0) if k > 0 else (x0, y1)
        ax.add_patch(matplotlib.patches.Polygon([(x0, y0), corner, (x1, y1)], closed=True, fill=False,
                                                 edgecolor=color, lw=1.0))
        ax.text(math.sqrt(x0 * x1), min(y0, y1) / 1.12, "1", ha="center", va="top", fontsize=9, color=color)
        ax.text(corner[0] * 1.04, math.sqrt(y0 * y1), f"{k:g}", ha="left", va="center", fontsize=9, color=color)


def _cell(v, fmt):
    return "–" if v is None or not np.isfinite(v) else format(v, fmt)


def _plot_table(f, fig, opts):
    param, cols = _study_columns(f)
    series, labels, fits = _study_series(f, param.size)
    v = f.root.variables
    name = _param_name(f)
    varied = [str(k) for k in np.atleast_1d(f.attrs.get("varied", []))]
    vcols = [(k, np.asarray(v["vary_" + re.sub(r"[^A-Za-z0-9_]", "_", k)].data).ravel()) for k in varied
             if ("vary_" + re.sub(r"[^A-Za-z0-9_]", "_", k)) in v]
    header = [k for k, _ in vcols] + ([name] if name not in [k for k, _ in vcols] else [])
    for norm in ("max", "l2"):
        if norm in cols:
            header += [f"err_{norm}", "order"]
    rows = []
    for i in range(param.size):
        row = [_cell(float(vals[i]), "g") for _, vals in vcols]
        if name not in [k for k, _ in vcols]:
            row.append(_cell(param[i], ".4g"))
        for norm in ("max", "l2"):
            if norm in cols:
                err, order = cols[norm]
                row += [_cell(err[i], ".3e"), _cell(order[i], ".2f")]
        rows.append(row)
    lead = len(header) - 2 * len(cols)
    for s in sorted(labels):
        sel = series == s
        fitrow = [f"fit ({labels[s]})" if len(labels) > 1 else "fit"] + [""] * (lead - 1)
        for norm in ("max", "l2"):
            if norm in cols:
                stored = fits.get(s)
                k_st = stored[0 if norm == "max" else 2] if stored else _attr_float(f.attrs, f"fit_order_{norm}")
                sp_st = stored[1 if norm == "max" else 3] if stored else _attr_float(f.attrs, f"fit_order_{norm}_spread")
                slope, spread, _, _ = _fit(param[sel], cols[norm][0][sel], k_st, sp_st)
                fitrow += ["", _slope_text(slope, spread).replace("slope ", "") if slope is not None else "–"]
        rows.append(fitrow)
    # compact: the figure is as tall as its rows (0.27 in each) plus the title, and the table fills the axes
    fig.set_size_inches(FIGSIZE[0], 0.27 * (len(rows) + 1) + 0.75)
    ax = fig.add_subplot()
    ax.axis("off")
    tab = ax.table(cellText=rows, colLabels=header, cellLoc="center", bbox=[0.0, 0.0, 1.0, 1.0])
    tab.auto_set_font_size(False)
    tab.set_fontsize(9)
    for (r, _c), cell in tab.get_celld().items():
        if r == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#e6e6e6")
    ref = str(f.attrs.get("reference") or "unknown")
    _title(ax, opts, f"Convergence study {f.attrs.get('study_name', _case_name(f))}  (reference: {ref})")


# --------------------------------------------------------------------------------------------------
def _rounding_level(spread: float, scale: float) -> bool:
    """True when a statistical spread is rounding noise (a deterministic path): |spread| <= 1e-9 (1 + |scale|)."""
    return not np.isfinite(spread) or abs(spread) <= 1e-9 * (1.0 + abs(scale))


def _plot_simulation(f, fig, opts):
    """Three panels: mean of X with its 5-95% quantile band per eps, sample paths, running cost with 95% CI."""
    sims = _simulations(f)
    if "eps" in opts:
        sims = [e for e in sims if abs(e[0] - float(opts["eps"])) <= 1e-12 * max(1.0, abs(e[0]))] or sims
    comp = int(opts.get("component", 0))
    a1, a2, a3 = fig.subplots(3, 1, sharex=True)
    colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.85, max(1, len(sims))))
    for c, (eps, _, g) in zip(colors, sims):
        sgrid = g.coords["s"].data
        mean = g.variables["X_mean"].data[:, comp]
        at = g.attrs
        lab = _eps_label(eps)
        if "total_cost_mean" in at:
            cost, half = float(at["total_cost_mean"]), 1.96 * float(at.get("total_cost_se", 0.0))
            spread = "" if _rounding_level(half, cost) else f" ± {half:.2g}"     # no band for a deterministic path
            lab += f": cost {cost:.4g}{spread}" + (f", PDE V {at['value_pde']:.4g}" if "value_pde" in at else "")
        a1.plot(sgrid, mean, color=c, label=lab)
        if "X_quantiles" in g.variables:
            q = g.variables["X_quantiles"].data[..., comp]
            qv = g.coords["quantile"].data
            lo, hi = int(np.argmin(np.abs(qv - 0.05))), int(np.argmin(np.abs(qv - 0.95)))
            if not _rounding_level(float(np.nanmax(q[hi] - q[lo])), float(np.nanmax(np.abs(q)))):
                a1.fill_between(sgrid, q[lo], q[hi], color=c, alpha=0.2)
        if "X_paths" in g.variables:
            P = g.variables["X_paths"].data
            for k in range(min(5, P.shape[0])):
                a2.plot(sgrid, P[k, :, comp], color=c, lw=0.8, alpha=0.8)
        if "running_cost_mean" in g.variables:
            rc = g.variables["running_cost_mean"].data
            se = g.variables["running_cost_se"].data if "running_cost_se" in g.variables else 0 * rc
            a3.plot(sgrid, rc, color=c)
            if not _rounding_level(float(np.nanmax(1.96 * se)), float(np.nanmax(np.abs(rc)))):
                a3.fill_between(sgrid, rc - 1.96 * se, rc + 1.96 * se, color=c, alpha=0.2)
    a1.set_ylabel("X: mean, 5-95%" if comp == 0 else f"X_{comp + 1}: mean, 5-95%")
    a2.set_ylabel("sample paths")
    a3.set_ylabel("cost ∫ l ds (95%)")
    a3.set_xlabel("s  (time elapsed)")
    handles, names = a1.get_legend_handles_labels()
    if handles:                           # below the panels: inside, it would hide the bands
        fig.legend(handles, names, loc="outside lower center", fontsize=9,
                   title="cost of the feedback (95% interval) and V from the PDE")
    _title(a1, opts, f"Monte Carlo under the computed feedback, {_case_name(f)}", _params(f))


def _plot_law(f, fig, opts):
    """E X_s for every eps, with the effective E Xbar_s dashed, and the gaps with 95% intervals."""
    sims = _simulations(f)
    comp = int(opts.get("component", 0))
    zero = [e for e in sims if e[0] == 0.0]
    a1, a2 = fig.subplots(2, 1, sharex=True) if zero else (fig.subplots(1, 1), None)
    colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.85, max(1, len(sims))))
    ref = None
    if zero:
        g0 = zero[0][2]
        ref = (g0.coords["s"].data, g0.variables["X_mean"].data[:, comp],
               g0.variables["X_mean_se"].data[:, comp] if "X_mean_se" in g0.variables else None)
    for c, (eps, _, g) in zip(colors, sims):
        if eps == 0.0:
            continue
        sg = g.coords["s"].data
        m = g.variables["X_mean"].data[:, comp]
        a1.plot(sg, m, color=c, label=_eps_label(eps))
        if ref is not None:
            gap = m - np.interp(sg, ref[0], ref[1])
            se = g.variables["X_mean_se"].data[:, comp] if "X_mean_se" in g.variables else 0 * m
            se0 = np.interp(sg, ref[0], ref[2]) if ref[2] is not None else 0 * m
            band = 1.96 * np.sqrt(se**2 + se0**2)
            a2.plot(sg, gap, color=c, label=_eps_label(eps))
            a2.fill_between(sg, gap - band, gap + band, color=c, alpha=0.2)
    if ref is not None:
        a1.plot(ref[0], ref[1], "k--", label=_eps_label(0.0))
        a2.axhline(0.0, color="k", lw=0.8)
        a2.set_ylabel("E X^eps - E Xbar (95%)")
        a2.set_xlabel("s  (time elapsed)")
    else:
        a1.set_xlabel("s  (time elapsed)")
    a1.set_ylabel("E X_s" if comp == 0 and not any(g.variables["X_mean"].data.shape[1] > 1 for _, _, g in sims)
                  else f"E X{comp + 1}_s")
    _legend(a1)
    _title(a1, opts, f"Convergence in law of the slow variable, {_case_name(f)}", _params(f))


# entry point


_PLOTTERS = {
    "hbar": _plot_hbar, "hbar_map": _plot_hbar_map, "mu": _plot_mu, "drift": _plot_drift, "lbar": _plot_lbar,
    "feedback": _plot_feedback, "chi": _plot_chi, "value": _plot_value, "value_eps": _plot_value_eps,
    "value_feedback": _plot_value_feedback, "blind": _plot_blind, "convergence": _plot_convergence,
    "table": _plot_table, "simulation": _plot_simulation, "law": _plot_law,
}


def _check_options(f: _File, options: dict) -> dict:
    dims = set()

    def collect(g):
        dims.update(g.coords)
        for v in g.variables.values():
            dims.update(v.dims)
        for sub in g.groups.values():
            collect(sub)

    collect(f.root)
    for key in options:
        if key not in _OPTION_NAMES and key not in dims:
            known = ", ".join(sorted(d for d in dims if d not in _COMPONENT_DIMS)) or "none"
            raise PlotError(f"{f.path}: unknown plot option {key!r}; options: eps, component, n_curves, title, "
                            f"or a coordinate name of this file ({known})")
    out = dict(options)
    try:
        out["n_curves"] = int(options.get("n_curves", 5))
    except (TypeError, ValueError):
        raise PlotError(f"{f.path}: option n_curves must be an integer, got {options['n_curves']!r}") from None
    if out["n_curves"] < 1:
        raise PlotError(f"{f.path}: option n_curves must be >= 1")
    return out


def _save(fig: Figure, output) -> None:
    text = os.fspath(output)
    ext = os.path.splitext(text)[1].lower().lstrip(".")
    if ext not in FORMATS:
        raise PlotError(f"cannot write {text}: unsupported figure format {ext or '(none)'!r}; "
                        f"use .png, .pdf or .svg")
    with store.atomic_output(text) as tmp:
        try:
            fig.savefig(tmp, format=ext, dpi=PNG_DPI if ext == "png" else "figure")
        except OSError as exc:
            raise PlotError(f"cannot write {text}: {exc.strerror or exc}") from exc


def plot_file(path, what: str | None = None, output=None, **options) -> Figure:
    """Plot a stored hjbsolve file; return the :class:`~matplotlib.figure.Figure` (and save it to ``output``).

    ``what`` is a key of :data:`KINDS` (see the module docstring for what each kind shows); None picks a
    default for the file (convergence for a study, value when value groups are stored, else hbar,
    hbar_map, mu, ...).  ``output`` ending in .png (200 dpi), .pdf or .svg saves the figure atomically.
    ``options``: ``<dim>=value`` (fix a dimension or pick the curves), ``eps=``, ``component=``,
    ``n_curves=``, ``title=``.

    Raises :class:`~hjbsolve.errors.HJBError` (one line) for a missing/unreadable file, a kind the file
    cannot support (the message lists the kinds it does support), a bad option or output name.
    """
    f = _load(path)
    avail = _available(f)
    listing = f"kinds available: {', '.join(avail) if avail else 'none'}"
    if what is None:
        what = next((k for k in DEFAULT_ORDER if k in avail), None)
        if what is None:
            raise PlotError(f"{f.path}: nothing to plot: not a cell, value, study or periodic cell-problem file")
    if what not in KINDS:
        raise PlotError(f"{f.path}: unknown plot kind {what!r}; {listing}")
    reason = _CHECKS[what](f)
    if reason is not None:
        raise PlotError(f"{f.path}: cannot plot {what!r}: {reason}; {listing}")
    opts = _check_options(f, options)
    if output is not None:
        ext = os.path.splitext(os.fspath(output))[1].lower().lstrip(".")
        if ext not in FORMATS:       # fail before drawing
            raise PlotError(f"cannot write {os.fspath(output)}: unsupported figure format {ext or '(none)'!r}; "
                            "use .png, .pdf or .svg")
    with matplotlib.rc_context(STYLE):
        tall = what in ("simulation", "convergence") or (what in ("value_eps", "blind", "law") and _two_panels(f, what))
        fig = Figure(figsize=FIGSIZE_TWO if tall else FIGSIZE,
                     layout="constrained")
        FigureCanvasAgg(fig)
        try:
            _PLOTTERS[what](f, fig, opts)
        except HJBError:
            raise
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise PlotError(f"{f.path}: cannot plot {what!r}: unexpected data layout ({type(exc).__name__}: "
                            f"{exc})") from exc
        if output is not None:
            _save(fig, output)
    return fig


def _two_panels(f: _File, what: str) -> bool:
    if what == "blind":
        return True
    if what == "law":
        return any(e[0] == 0 for e in _simulations(f))
    return any(e[0] == 0 for e in f.values)
