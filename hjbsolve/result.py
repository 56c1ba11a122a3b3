"""The :class:`Result` of a run and its HDF5 layout (see README, "Files").

Root group (cell stage, independent of eps):
    coordinates   x | x1 x2 ...  (slow nodes),  y | y1 y2 ...  (fast nodes),  p | p1 p2 ... (Hbar table),
                  P (Hessian slot, when the slow noise is on), slow/fast/control (component indices)
    mu(x.., y..)          discrete invariant law mu_x (probabilities, sum over y = 1)
    ybar(x.., fast)       replica mean ∫ y dmu_x
    abar(x.., slow)       averaged slow drift ∫ a(x, y, u_ref) dmu_x
    gbar(x..)             ∫ g(x, y) dmu_x
    lbar(x.., q.., [P])   Lbar(x, q) = sup_p {-q.p - Hbar(x, p)} (effective Lagrangian)
    hbar(x.., p.., [P])   Hbar = ∫ sup_u {-a.p - tr(sigma sigma^T P) - l} dmu_x   (sup convention)
    feedback(x.., p.., [P], y.., control)   maximiser u*(x, p; y): extended control (float32)
Attributes: conventions, the full case text, package version, creation time, stage timings.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

import numpy as np

from . import __version__, store
from .effective import CellResult
from .grid import Grid

CONVENTIONS = {
    "hamiltonian": "H(x,y,p,P) = sup_u { -a(x,y,u).p - tr(sigma sigma^T(x,y,u) P) - l(x,y,u) } (sup convention)",
    "pde": "dV/dt + H(x,y,D_xV,D_xxV) - (1/eps) L^x V = 0, V(0,x,y) = g(x,y); t is the time remaining",
    "fast_generator": "L^x v = b.D_y v + tr(tau tau^T D_yy v)",
    "effective_hamiltonian": "Hbar(x,p,P) = sum_j mu_x(y_j) H(x,y_j,p,P), sup over u inside the average",
    "mu": "probability vector on the y nodes (density = mu / cell volume)",
}


def axis_names(letter: str, d: int) -> list[str]:
    return [letter] if d == 1 else [f"{letter}{i + 1}" for i in range(d)]


@dataclass
class Result:
    """Everything a run computed, with provenance. ``save``/``load`` map it to one HDF5 file."""

    case_name: str
    case_text: str
    family: str
    cell: CellResult | None = None
    ergodic: object | None = None     # homogenization.ErgodicTable for periodic cases
    attrs: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    extra_groups: dict = field(default_factory=dict)   # name -> store.Group (value stage, studies, ...)

    def value(self, eps: float = 0.0) -> dict:
        """The value stage's result for one eps (0: the effective problem, or a plain problem) as arrays:
        ``{"t", "V", "feedback", <axis name>: values...}`` (V has the axes ("t", x..., [y...])); the group
        ``eps_<eps>`` of the file. KeyError naming the groups there when that eps was not run."""
        name = f"eps_{float(eps):g}"
        if name not in self.extra_groups:
            have = ", ".join(k for k in self.extra_groups if k.startswith("eps_")) or "none"
            raise KeyError(f"no value function for eps = {eps:g} (groups: {have})")
        g = self.extra_groups[name]
        out = {k: np.asarray(v.data) for k, v in g.coords.items()}
        out.update({k: np.asarray(v.data) for k, v in g.variables.items()})
        out["dims"] = tuple(g.variables["V"].dims)
        return out

    # ------------------------------------------------------------------ HDF5
    def to_group(self) -> store.Group:
        attrs = {"title": f"hjbsolve result: {self.case_name}", "case_name": self.case_name,
                 "family": self.family, "case_text": self.case_text, "hjbsolve_version": __version__,
                 "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                 **{f"convention_{k}": v for k, v in CONVENTIONS.items()},
                 **{f"time_{k}_s": float(v) for k, v in self.timings.items()}, **self.attrs}
        root = store.Group(attrs=attrs)
        c = self.cell
        if c is not None:
            n, m = c.xgrid.ndim, c.ygrid.ndim
            xd, yd, pd = axis_names("x", n), axis_names("y", m), axis_names("p", n)
            for names, axes, what in ((xd, c.xgrid.axes, "slow state"), (yd, c.ygrid.axes, "fast state")):
                for nm, ax in zip(names, axes):
                    root.coords[nm] = store.Variable(ax, (nm,), {"long_name": f"{what} {nm}"})
            for nm, ax in zip(pd, c.p_axes):
                root.coords[nm] = store.Variable(np.asarray(ax), (nm,), {"long_name": f"costate {nm} (D_x V)"})
            Pd = []
            if c.P.size:
                if c.P.ndim == 1:
                    root.coords["P"] = store.Variable(c.P, ("P",), {"long_name": "Hessian slot D_xx V = P I"})
                else:
                    root.coords["P"] = store.Variable(np.arange(len(c.P)), ("P",),
                                                      {"long_name": "index of the Hessian slot value"})
                    root.variables["P_matrix"] = store.Variable(c.P, ("P", "slow", "slow_"),
                                                                {"long_name": "Hessian slot D_xx V = P_matrix"})
                Pd = ["P"]
            V = store.Variable
            root.variables["mu"] = V(c.mu, (*xd, *yd), {"long_name": "invariant law mu_x of the fast process",
                                                        "units": "probability per node"})
            root.variables["ybar"] = V(c.ybar, (*xd, "fast"), {"long_name": "mean of mu_x, <y>_x"})
            root.variables["abar"] = V(c.abar, (*xd, "slow"),
                                       {"long_name": "averaged slow drift at the reference control"})
            root.variables["gbar"] = V(c.gbar, tuple(xd), {"long_name": "effective initial datum gbar(x)"})
            if c.hbar is not None:
                hb_attrs = {"long_name": "effective Hamiltonian Hbar(x,p)" + ("" if Pd else " at P = D_xx V = 0"),
                            "convention": CONVENTIONS["effective_hamiltonian"]}
                if not Pd:
                    hb_attrs["hessian_slot"] = ("P = 0: no grid.P values given (the slow noise term -tr(sigma "
                                                "sigma^T P) vanishes; give grid.P.values to tabulate it)")
                root.variables["hbar"] = V(c.hbar, (*xd, *pd, *Pd), hb_attrs)
            if c.lbar is not None:
                qd = axis_names("q", n)
                for nm, ax in zip(qd, c.q_axes):
                    root.coords[nm] = store.Variable(np.asarray(ax), (nm,), {"long_name": f"averaged velocity {nm}"})
                root.variables["lbar"] = V(c.lbar, (*xd, *qd, *Pd), {
                    "long_name": "effective Lagrangian Lbar(x,q) = sup_p {-q.p - Hbar(x,p)}",
                    "convention": "Hbar(x,p) = sup_q {-q.p - Lbar(x,q)}; discrete Legendre-Fenchel over the p grid"})
            if c.feedback is not None:
                root.variables["feedback"] = V(c.feedback, (*xd, *pd, *Pd, *yd, "control"),
                                               {"long_name": "maximising control u*(x,p;y) (extended control)"})
            root.attrs.update({"x_box": np.array([c.xgrid.lo, c.xgrid.hi]).T.ravel(),
                               "y_box": np.array([c.ygrid.lo, c.ygrid.hi]).T.ravel()})
            for side, mass in c.boundary_mass.items():
                root.attrs[f"boundary_mass_{side.replace(' ', '_')}"] = float(mass)
            if c.sup_method:
                root.attrs["hbar_sup_method"] = c.sup_method
        if self.ergodic is not None:
            self._ergodic_to(root)
        root.groups.update(self.extra_groups)
        return root

    def _ergodic_to(self, root: store.Group) -> None:
        e = self.ergodic
        V = store.Variable
        yd = axis_names("y", e.m)
        Pd = axis_names("P", e.m) if e.tensor else ["P"]
        for nm in yd:
            root.coords[nm] = V(e.y, (nm,), {"long_name": f"torus coordinate {nm}", "units": "period = 1"})
        if e.tensor:
            for nm, ax in zip(Pd, e.P_axes):
                root.coords[nm] = V(np.asarray(ax), (nm,), {"long_name": f"slow gradient {nm}"})
        else:
            root.coords["P"] = V(np.arange(len(e.P)), ("P",), {"long_name": "index of the P value"})
            root.variables["P_values"] = V(e.P, ("P", "axis"), {"long_name": "P values"})
        shape = [len(a) for a in e.P_axes] if e.tensor else [len(e.P)]
        conv = "-nu Lap chi + G(y, P + D chi) = Hbar(P) on the unit torus; chi(node 0) = 0"
        root.variables["hbar"] = V(e.hbar.reshape(shape), tuple(Pd), {"long_name": "effective Hamiltonian Hbar(P)",
                                                                     "convention": conv})
        root.variables["chi"] = V(e.chi.reshape(shape + list(e.chi.shape[1:])), (*Pd, *yd),
                                  {"long_name": "corrector chi(P; y)"})
        root.variables["residual"] = V(e.residual.reshape(shape), tuple(Pd), {"long_name": "final max residual"})
        root.variables["iterations"] = V(e.iterations.reshape(shape), tuple(Pd), {"long_name": "Newton iterations"})
        if e.estimate is not None:
            from .cell.ergodic.tables import ESTIMATE_STATUS
            s = e.estimate
            for nm, arr, desc in (
                    ("hbar_error_estimate", s.estimate, "estimate of |hbar - Hbar| from the grids N, N/2, N/4"),
                    ("hbar_observed_order", s.order, "observed order log2(d_coarse / d_fine) (NaN unless clean)"),
                    ("hbar_richardson", s.richardson, "Richardson-extrapolated Hbar (NaN unless the order is clean)"),
                    ("hbar_N2", s.hbar_mid, "Hbar on the grid N/2"),
                    ("hbar_N4", s.hbar_coarse, "Hbar on the grid N/4")):
                root.variables[nm] = V(np.asarray(arr).reshape(shape), tuple(Pd), {"long_name": desc})
            root.variables["hbar_estimate_status"] = V(
                s.status.reshape(shape), tuple(Pd),
                {"long_name": "kind of error estimate", **{f"code_{k}": v for k, v in ESTIMATE_STATUS.items()}})
        if e.lbar is not None:
            qd = axis_names("q", e.m)
            for nm, ax in zip(qd, e.q_axes):
                root.coords[nm] = V(np.asarray(ax), (nm,), {"long_name": f"velocity {nm}"})
            root.variables["lbar"] = V(e.lbar, tuple(qd), {"long_name": "Lbar(q) = sup_P {-q.P - Hbar(P)}"})
        root.attrs.update({"nu": e.nu, "N": e.N, "offset_in_h": e.offset, "m": e.m})
        if e.note:
            root.attrs["lbar_note"] = e.note

    def save(self, path) -> None:
        """Write atomically to ``path`` (temporary file in the same folder, renamed when complete)."""
        store.write(path, self.to_group())

    @classmethod
    def load(cls, path) -> "Result":
        g = store.read(path)
        a = dict(g.attrs)
        res = cls(case_name=a.get("case_name", ""), case_text=a.get("case_text", ""), family=a.get("family", ""),
                  timings={k[5:-2]: v for k, v in a.items() if k.startswith("time_") and k.endswith("_s")})
        if "mu" in g.variables:
            xd = [d for d in g.variables["gbar"].dims]
            yd = list(g.variables["mu"].dims[len(xd):])
            grid = lambda names: Grid(tuple(float(g.coords[nm].data[0]) for nm in names),
                                      tuple(float(g.coords[nm].data[-1]) for nm in names),
                                      tuple(len(g.coords[nm].data) for nm in names))
            xg, yg = grid(xd), grid(yd)
            pd = [f"p{i + 1}" if len(xd) > 1 else "p" for i in range(len(xd))]
            p_axes = [g.coords[nm].data for nm in pd if nm in g.coords]
            pgrid = (np.stack(np.meshgrid(*p_axes, indexing="ij"), -1).reshape(-1, len(xd)) if p_axes
                     else np.zeros((0, len(xd))))
            v = g.variables
            res.cell = CellResult(xgrid=xg, ygrid=yg, p=pgrid, p_axes=p_axes,
                                  P=(g.variables["P_matrix"].data if "P_matrix" in g.variables else
                                     g.coords["P"].data if "P" in g.coords else np.zeros(0)),
                                  mu=v["mu"].data, ybar=v["ybar"].data, abar=v["abar"].data, gbar=v["gbar"].data,
                                  hbar=v["hbar"].data if "hbar" in v else None,
                                  feedback=v["feedback"].data if "feedback" in v else None,
                                  lbar=v["lbar"].data if "lbar" in v else None,
                                  q_axes=[g.coords[nm].data for nm in axis_names("q", len(xd)) if nm in g.coords],
                                  boundary_mass={k[14:].replace("_", " "): val for k, val in a.items()
                                                 if k.startswith("boundary_mass_")},
                                  sup_method=str(a.get("hbar_sup_method", "")))
        res.extra_groups = dict(g.groups)
        res.attrs = {k: val for k, val in a.items() if k in ("x_box", "y_box")}
        return res


# ------------------------------------------------------------------ reading stored files defensively

#: attributes that hold numbers wherever they appear (a string or NaN there means a damaged file)
NUMERIC_ATTRS = ("eps", "x_box", "y_box", "nu", "N", "m", "offset_in_h", "value_pde", "y0", "x0", "x_n",
                 "fast_resolution", "T", "dt")
#: arrays that are finite or +-inf but never NaN in a file written by hjbsolve (coordinates never hold NaN)
#: the cell stage's datasets: a file holding one of them holds all
CELL_DATASETS = ("mu", "ybar", "abar", "gbar")
NO_NAN = ("mu", "ybar", "abar", "gbar", "hbar", "lbar", "feedback", "V", "chi", "P_matrix", "P_values")


def check_file(path) -> store.Group:
    """Read a stored file for a command (``info``, ``plot``, ``simulate``, ``study --resume``) and refuse a
    corrupt or foreign one with an :class:`~hjbsolve.errors.HJBError` of one line naming the file and the
    dataset or attribute: unreadable HDF5 (bit flips, truncation), an axis without its dimension scale or of
    the wrong length, a non-numeric numeric attribute, NaN in a stored array, a case text that does not
    parse or validate. Returns the tree (as :func:`hjbsolve.store.read`)."""
    import os

    from .errors import HJBError
    text = os.fspath(path)
    if not os.path.exists(text):
        raise HJBError(f"{text}: file not found")
    if not os.path.isdir(text) and not os.path.isfile(text):
        raise HJBError(f"{text}: not a regular file (a device, FIFO or socket): give an HDF5 result file")
    try:
        root = store.read(text)
    except HJBError:
        raise
    except Exception as e:          # h5py / HDF5 errors of damaged files come in many types
        raise HJBError(f"{text}: damaged or foreign HDF5 file: {type(e).__name__}: {' '.join(str(e).split())}") from None
    _check_group(text, root, "/", {})
    cell = [k for k in CELL_DATASETS if k in root.variables]
    if cell and len(cell) < len(CELL_DATASETS):
        missing = ", ".join(k for k in CELL_DATASETS if k not in root.variables)
        raise HJBError(f"{text}: dataset {missing} missing beside {', '.join(cell)} (damaged file)")
    for name, g in root.groups.items():
        if name.startswith("eps_") and ("V" not in g.variables or "t" not in g.coords):
            raise HJBError(f"{text}: group /{name}: dataset {'V' if 'V' not in g.variables else 't'} missing "
                           "(damaged file)")
    _check_stored_case(text, root.attrs)
    return root


def _check_stored_case(path: str, attrs: dict) -> None:
    """The case a file was made with (:func:`hjbsolve.provenance.stored_raw`: the resolved case, or the raw
    case text of older files) must match its hash and validate."""
    from .errors import HJBError
    if "case_resolved" not in attrs and "case_text" not in attrs:
        return
    from .case import validate
    from .provenance import sha256, stored_raw
    resolved = attrs.get("case_resolved")
    if resolved is not None and not isinstance(resolved, str):
        raise HJBError(f"{path}: attribute case_resolved: expected the case's TOML text, got "
                       f"{type(resolved).__name__}")
    if isinstance(resolved, str) and "case_sha256" in attrs and sha256(resolved) != attrs["case_sha256"]:
        raise HJBError(f"{path}: attribute case_resolved: does not match its case_sha256 (damaged file)")
    if resolved is None and not isinstance(attrs.get("case_text"), str):
        raise HJBError(f"{path}: attribute case_text: expected the case's TOML text, got "
                       f"{type(attrs.get('case_text')).__name__}")
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # the consumer warns about old files itself
            raw = stored_raw(attrs, path)
    except RecursionError:
        raise HJBError(f"{path}: the stored case is nested too deeply (damaged file)") from None
    validate(raw, f"{path} (stored case)")


def _check_group(path: str, g: store.Group, where: str, inherited: dict) -> None:
    from .errors import HJBError
    coords = {**inherited, **{k: len(np.atleast_1d(v.data)) for k, v in g.coords.items()}}
    for name, c in g.coords.items():
        d = np.asarray(c.data)
        if d.dtype.kind == "f" and np.isnan(d).any():
            raise HJBError(f"{path}: dataset {where}{name}: NaN in a coordinate (damaged file)")
    for name, v in g.variables.items():
        data = np.asarray(v.data)
        for axis, dim in enumerate(v.dims):
            if dim == f"{name}_dim_{axis}":
                raise HJBError(f"{path}: dataset {where}{name}: axis {axis} has no dimension scale "
                               "(damaged or foreign file)")
            if dim in coords and axis < data.ndim and data.shape[axis] != coords[dim]:
                raise HJBError(f"{path}: dataset {where}{name}: axis {dim} has {data.shape[axis]} values, its "
                               f"coordinate {coords[dim]} (damaged or foreign file)")
        if name in NO_NAN and data.dtype.kind == "f" and np.isnan(data).any():
            raise HJBError(f"{path}: dataset {where}{name}: holds NaN (damaged file)")
    for key in NUMERIC_ATTRS:
        if key in g.attrs:
            val = np.asarray(g.attrs[key])
            if val.dtype.kind not in "biuf" or (val.dtype.kind == "f" and np.isnan(val).any()):
                raise HJBError(f"{path}: attribute {where}{key}: expected a number, got {g.attrs[key]!r:.60}")
    for name, sub in g.groups.items():
        _check_group(path, sub, f"{where}{name}/", coords)
