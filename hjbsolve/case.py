"""Case files: TOML -> validated :class:`Case`.

A case has top-level keys ``name``, ``description``, ``family`` and the tables ``[model]`` (the family's
parameters), ``[grid]``, ``[time]`` and ``[run]``. Every key is checked against the schema below; a
mistake gives one :class:`~hjbsolve.errors.CaseError` naming the file, the dotted key and what is
allowed (with a close-match suggestion for unknown keys). The schema is printed by
``hjbsolve check --schema`` and documented in the README.
"""

from __future__ import annotations

import copy
import difflib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import CaseError

REQUIRED = object()
FAMILIES = ("entropy_sgd", "lq", "expr", "periodic")


@dataclass
class Spec:
    """One key: its kind, default, allowed range or choices, and a one-line doc."""

    kind: str                      # str int float bool floats box formula formulas params table
    default: Any = REQUIRED
    doc: str = ""
    choices: tuple | None = None
    gt: float | None = None        # value > gt
    ge: float | None = None        # value >= ge
    lt: float | None = None        # value < lt
    le: float | None = None
    table: dict | None = None      # sub-schema for kind "table"
    check: Callable | None = None  # extra check: value -> error message or None


def _axis(default_n=None, box_required=True, doc=""):
    return Spec("table", {} if not box_required else REQUIRED, doc, table={
        "box": Spec("box", REQUIRED if box_required else None,
                    "[lo, hi] (applied to every axis) or [[lo1, hi1], [lo2, hi2], ...]"),
        "n": Spec("ints", REQUIRED if default_n is None else default_n, "nodes per axis (>= 3)", ge=3),
    })


GRID = {
    "x": _axis(doc="slow grid: box and nodes per axis"),
    "y": Spec("table", {}, "fast grid: nodes per axis; box from the Gibbs tails unless given (entropy_sgd, lq; the expr family needs "
              "box)", table={
        "box": Spec("box", None, "[lo, hi] or per-axis list; default: from the data (entropy_sgd, lq)"),
        "n": Spec("ints", 301, "nodes per axis (>= 3)", ge=3),
    }),
    "p": Spec("table", None, "p grid for Hbar tables (per slow axis)", table={
        "box": Spec("box", REQUIRED, "[lo, hi] or per-axis list"),
        "n": Spec("ints", REQUIRED, "values per axis (>= 3)", ge=3),
    }),
    "q": Spec("table", None, "velocity grid for the effective Lagrangian Lbar(x, q) (default: the slopes of "
              "Hbar on the p grid)", table={
        "box": Spec("box", REQUIRED, "[lo, hi] or per-axis list"),
        "n": Spec("ints", REQUIRED, "values per axis (>= 3)", ge=3),
    }),
    "P": Spec("table", None, "Hessian slot values P = D_xx V for Hbar(x, p, P), when the slow noise is on",
              table={"values": Spec("any", REQUIRED, "list of P: numbers s (meaning s I) or n x n symmetric "
                                                    "matrices [[P11, P12], [P12, P22]]")}),
    "u": Spec("table", {}, "control discretisation", table={
        "n": Spec("ints", 21, "control nodes per axis (>= 1)", ge=1),
        "exact": Spec("bool", True, "use the closed-form maximiser when the family has one"),
        "radii": Spec("int", 5, "model.u_ball: circles (k = 2) or nodes per half-interval (k = 1)", ge=1),
        "directions": Spec("int", 32, "model.u_ball, k = 2: directions on each circle", ge=3),
    }),
}

PERIODIC_GRID = {
    "y": Spec("table", REQUIRED, "torus grid: N nodes per axis, h = 1/N, y_i = (offset + i) h", table={
        "n": Spec("ints", REQUIRED, "nodes per axis (>= 4)", ge=4),
        "offset": Spec("float", 0.0, "shift of the nodes in units of h (0.5: no node at y = 0)"),
        "tol": Spec("float", 0.0, "refine N (doubling) until every Hbar error estimate is <= tol (0: no refinement; "
                    "`hjbsolve cell --tol`)", ge=0),
    }),
    "P": Spec("table", REQUIRED, "P values: a tensor grid (box, n) or an explicit list (values)", table={
        "box": Spec("box", None, "[lo, hi] or per-axis list"),
        "n": Spec("ints", None, "values per axis (>= 1)", ge=1),
        "values": Spec("any", None, "explicit P values: numbers (m = 1) or [P1, P2] pairs (m = 2)"),
    }),
    "q": Spec("table", None, "velocity grid for Lbar(q) = sup_P {-q.P - Hbar(P)} (default from the slopes)",
              table={"box": Spec("box", REQUIRED, "[lo, hi] or per-axis list"),
                     "n": Spec("ints", REQUIRED, "values per axis (>= 3)", ge=3)}),
}

TIME = {
    "T": Spec("float", 1.0, "horizon (time remaining)", gt=0),
    "dt": Spec("float", 0.01, "time step", gt=0),
}

RUN = {
    "eps": Spec("floats", [0.0], "scale separations; 0 names the effective problem", ge=0),
    "output": Spec("str", None, "output file (default results/<name>.h5)"),
    "feedback": Spec("bool", True, "store the maximising feedback u*(x, p; y)"),
    "values": Spec("bool", True, "run the value stage (V^eps for eps > 0, V for eps = 0) after the cell stage"),
    "output_times": Spec("floats", None, "times at which V is stored (default T * [0, 1/4, 1/2, 3/4, 1])", ge=0),
    "blind": Spec("bool", False, "eps = 0: also compute the value with y-blind controls (V_blind)"),
    "order": Spec("int", 2, "semi-Lagrangian characteristics: 2 (second order) or 1 (Euler)", choices=(1, 2)),
    "extrapolation": Spec("str", "linear", "feet outside the slow box", choices=("linear", "clamp")),
    "effective_scheme": Spec("str", "averaged", "eps = 0 scheme: averaged (2nd order) or per_y (the eps->0 "
                             "limit of the V^eps scheme)", choices=("averaged", "per_y")),
    "richardson": Spec("bool", False, "Richardson extrapolation in dt of the first-order schemes (eps > 0, "
                       "per_y, plain): V = 2 V(dt/2) - V(dt), second order; V_monotone = V(dt/2) kept"),
}

STUDY = {
    "vary": Spec("any", {}, "key = [values]: what the study varies (eps, grid, dt or any dotted case key)"),
    "window": Spec("table", {}, "interior window where errors are measured", table={
        "x": Spec("floats", [-1.0, 1.0], "[lo, hi] for every slow axis"),
        "y": Spec("floats", [-1.0, 1.0], "[lo, hi] for every fast axis"),
    }),
    "reference": Spec("str", "auto", "what errors are measured against",
                      choices=("auto", "exact", "limit", "finest")),
}

LOSS_NAMES = ("quadratic", "double_well", "gaussian_mixture", "tilted_cosine", "rastrigin")

MODEL = {
    "entropy_sgd": {
        "loss": Spec("str", REQUIRED, "the loss f", choices=LOSS_NAMES),
        "dim": Spec("int", 1, "dimension d = n = m", choices=(1, 2)),
        "gamma": Spec("float", REQUIRED, "coupling scale gamma", gt=0),
        "beta": Spec("float", REQUIRED, "inverse temperature beta", gt=0),
        "quadratic_a": Spec("float", 1.0, "curvature a of the quadratic loss a|y|^2/2"),
        "rastrigin_A": Spec("float", 1.0, "amplitude A of the Rastrigin loss", ge=0),
        "mixture": Spec("table", None, "Gaussian mixture exp(-beta f) = sum w_k N(c_k, s_k^2)", table={
            "weights": Spec("floats", REQUIRED, "w_k > 0", gt=0),
            "centres": Spec("any", REQUIRED, "c_k: list of numbers (1-D) or of [c1, c2] pairs (2-D)"),
            "widths": Spec("floats", REQUIRED, "s_k > 0", gt=0),
        }),
        "control": Spec("str", "none", "slow control", choices=("none", "steering", "learning_rate")),
        "u_box": Spec("box", [-1.0, 1.0], "control box [u_min, u_max] (per axis for steering)"),
        "u_ref": Spec("float", None, "reference control (default 0 for steering, 1 for learning_rate)"),
        "control_cost": Spec("float", 1.0, "c in l = c |u - u_ref|^2 / 2", ge=0),
        "state_cost": Spec("float", 0.0, "lambda in l += lambda f(x)", ge=0),
        "terminal": Spec("str", "loss", "g(x, y) = f(x) | f(y) | 0", choices=("loss", "replica", "zero")),
        "sigma": Spec("float", 0.0, "slow noise sigma (times I)", ge=0),
    },
    "lq": {
        "a11": Spec("float", 0.0, "slow drift on x"), "a12": Spec("float", 1.0, "slow drift on y"),
        "a21": Spec("float", 1.0, "fast drift on x"), "a22": Spec("float", -1.0, "fast drift on y (< 0)", lt=0),
        "b": Spec("float", 1.0, "control gain"), "sigma": Spec("float", 0.0, "slow noise", ge=0),
        "tau": Spec("float", 1.0, "fast noise (> 0)", gt=0), "r": Spec("float", 1.0, "control cost (> 0)", gt=0),
        "q": Spec("float", 1.0, "state cost on x", ge=0), "s": Spec("float", 0.0, "state cost on y", ge=0),
        "g0": Spec("float", 1.0, "terminal cost g0 x^2/2", ge=0),
        "u_box": Spec("box", [-10.0, 10.0], "control box [u_min, u_max]"),
    },
    "periodic": {
        "m": Spec("int", 1, "dimension of the torus (3: not for hamiltonian = \"general\")", choices=(1, 2, 3)),
        "nu": Spec("float", 0.0, "viscosity nu >= 0 in -nu Δchi + G(y, P + Dchi) = Hbar", ge=0),
        "params": Spec("params", {}, "named constants usable in the formulas"),
        "hamiltonian": Spec("str", "quadratic", "form of G",
                            choices=("quadratic", "separable", "general", "control", "metric")),
        "V": Spec("formula", None, "potential V(y) (quadratic, separable); must be 1-periodic"),
        "K": Spec("formula", None, "separable: convex kinetic part K(s), G = sum_k K(q_k) + V(y)"),
        "G": Spec("formula", None, "general: G(y, q), convex in q (q or q1, q2 for the components)"),
        "f": Spec("formulas", None, "control: f(y, a), one formula per axis, G = max_a {-f.q - l}"),
        "l": Spec("formula", None, "control: running cost l(y, a)"),
        "a_box": Spec("box", None, "control: box of the control a"),
        "a_n": Spec("ints", 41, "control: nodes per control axis", ge=2),
        "c": Spec("formula", None, "metric: speed c(y) >= 0 in G = c(y) |q| (may be discontinuous: where(...))"),
        "norm": Spec("str", "l2", "metric: the norm |q| (l2; l1 = box of controls; linf = cross of controls)",
                     choices=("l2", "l1", "linf")),
        "control_set": Spec("any", None, "metric: vertices [[a1, a2], ...] of a polytope B with 0 inside, "
                            "G = c(y) max_(a in B) -a.q (instead of norm)"),
        "q_box": Spec("float", 4.0, "half-width of the q box where convexity is checked", gt=0),
        "tol": Spec("float", 1e-12, "residual tolerance of the Newton iteration", gt=0),
        "maxiter": Spec("int", 100, "Newton iterations per stage", ge=1),
    },
    "expr": {
        "n": Spec("int", 1, "slow dimension", choices=(1, 2, 3)),
        "m": Spec("int", 1, "fast dimension; 0: a plain HJB problem (no y, no b, no tau)", choices=(0, 1, 2, 3)),
        "params": Spec("params", {}, "named constants usable in the formulas"),
        "a": Spec("formulas", REQUIRED, "slow drift a(x, y, u): formula or list of n formulas"),
        "sigma": Spec("formulas", "0", "slow noise sigma(x, y, u): scalar (times I), n diagonal, or n x n"),
        "b": Spec("formulas", None, "fast drift b(x, y): formula or list of m formulas (required if m >= 1)"),
        "tau": Spec("formulas", None, "fast noise tau(x, y): scalar (times I), m diagonal, or m x m "
                    "(required if m >= 1)"),
        "l": Spec("formula", "0", "running cost l(x, y, u)"),
        "g": Spec("formula", "0", "terminal cost g(x, y)"),
        "u_box": Spec("box", None, "control box [lo, hi] or per-axis list (grid: grid.u.n per axis)"),
        "u_ball": Spec("table", None, "control ball |u - centre| <= radius, k = 1 or 2 (nodes: grid.u.radii "
                       "circles x grid.u.directions)", table={
                           "radius": Spec("float", REQUIRED, "radius", gt=0),
                           "centre": Spec("floats", REQUIRED, "centre (k numbers; its length sets k)"),
                       }),
        "u_list": Spec("any", None, "explicit control set: [u1, u2, ...] (k = 1) or [[u11, u12], ...]"),
        "u_ref": Spec("floats", None, "reference control for abar (default: centre of the box)"),
    },
}

TOP = {
    "name": Spec("str", REQUIRED, "case name (letters, digits, _ - .)"),
    "description": Spec("str", "", "one-line description"),
    "family": Spec("str", REQUIRED, "model family", choices=FAMILIES),
    "model": Spec("table", REQUIRED, "the family's parameters"),
    "grid": Spec("table", REQUIRED, "grids", table=GRID),
    "time": Spec("table", {}, "time stepping", table=TIME),
    "run": Spec("table", {}, "what to run and where to store it", table=RUN),
    "study": Spec("table", {}, "convergence study defaults (hjbsolve study)", table=STUDY),
}


@dataclass
class Case:
    """A validated case: every key present (defaults filled in), plus where it came from."""

    name: str
    description: str
    family: str
    model: dict
    grid: dict
    time: dict
    run: dict
    study: dict = field(default_factory=dict)
    source: str = "<dict>"
    text: str = ""
    overrides: list = field(default_factory=list)

    @property
    def output(self) -> str:
        return self.run.get("output") or f"results/{self.name}.h5"

    def as_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "family": self.family,
                "model": copy.deepcopy(self.model), "grid": copy.deepcopy(self.grid),
                "time": dict(self.time), "run": dict(self.run), "study": copy.deepcopy(self.study)}


# ---------------------------------------------------------------------------------------------------
# validation

class CaseErrors(CaseError):
    """Several mistakes in one case file: ``lines`` holds one message per mistake (``hjbsolve check`` and
    every command print them all, one line each)."""

    def __init__(self, lines: list[str]):
        self.lines = list(lines)
        super().__init__(self.lines[0] if len(self.lines) == 1 else
                         f"{len(self.lines)} mistakes: " + " | ".join(self.lines))


def _lines(e: CaseError) -> list[str]:
    return list(getattr(e, "lines", None) or [str(e)])


def _fail(src: str, key: str, msg: str):
    raise CaseError(f"{src}: {key}: {msg}" if key else f"{src}: {msg}")


#: integers beyond this are refused (grid sizes, counts: nothing this large fits in memory)
MAX_INT = 2 ** 62
#: magnitude range of non-zero numbers (squares and products of case values stay finite in float64)
MAX_MAGNITUDE, MIN_MAGNITUDE = 1e100, 1e-100


def _typename(v) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(v), type(v).__name__)


def _number(v, src, key, integer=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        _fail(src, key, f"expected {'an integer' if integer else 'a number'}, got {_typename(v)} {v!r}")
    if integer and not isinstance(v, int):
        _fail(src, key, f"expected an integer, got {v!r}")
    if integer:
        if abs(v) > MAX_INT:
            _fail(src, key, f"integer {_short(v)} is out of range (|n| <= 2^62)")
        return int(v)
    if isinstance(v, int) and abs(v) > MAX_MAGNITUDE:
        _fail(src, key, f"{_short(v)} is out of the supported range (|value| <= {MAX_MAGNITUDE:g})")
    if not math.isfinite(v):
        _fail(src, key, f"expected a finite number, got {v!r}")
    if v != 0 and not MIN_MAGNITUDE <= abs(v) <= MAX_MAGNITUDE:
        _fail(src, key, f"{v:g} is out of the supported range ({MIN_MAGNITUDE:g} <= |value| <= {MAX_MAGNITUDE:g}, "
              "or 0): rescale the problem")
    return float(v)


def _short(v: int) -> str:
    text = str(v) if abs(v) < 10 ** 30 else f"{str(v)[:12]}... ({len(str(abs(v)))} digits)"
    return text


def _range(v, spec: Spec, src, key):
    for bound, ok, text in ((spec.gt, lambda a, b: a > b, ">"), (spec.ge, lambda a, b: a >= b, ">="),
                            (spec.lt, lambda a, b: a < b, "<"), (spec.le, lambda a, b: a <= b, "<=")):
        if bound is not None and not ok(v, bound):
            _fail(src, key, f"must be {text} {bound:g}, got {v:g}")


def _box(v, src, key):
    if not isinstance(v, list) or not v:
        _fail(src, key, f"expected a box [lo, hi] or [[lo1, hi1], ...], got {v!r}")
    rows = v if isinstance(v[0], list) else [v]
    out = []
    for i, row in enumerate(rows):
        k = key if len(rows) == 1 else f"{key}[{i}]"
        if not isinstance(row, list) or len(row) != 2:
            _fail(src, k, f"expected [lo, hi], got {row!r}")
        lo, hi = (_number(x, src, k) for x in row)
        if not lo < hi:
            _fail(src, k, f"box [{lo:g}, {hi:g}] has lo >= hi")
        out.append([lo, hi])
    return out[0] if not isinstance(v[0], list) else out


def _formulas(v, src, key):
    def ok(s):
        return isinstance(s, str) or (isinstance(s, (int, float)) and not isinstance(s, bool))
    if ok(v):
        return str(v)
    if isinstance(v, list) and v and all(ok(s) for s in v):
        return [str(s) for s in v]
    if isinstance(v, list) and v and all(isinstance(r, list) and r and all(ok(s) for s in r) for r in v):
        if len({len(r) for r in v}) != 1:
            _fail(src, key, "matrix rows have different lengths")
        return [[str(s) for s in r] for r in v]
    _fail(src, key, f"expected a formula string, a list of formulas or a list of lists, got {v!r}")


def _validate_value(v, spec: Spec, src: str, key: str):
    kind = spec.kind
    if kind == "any":
        out = v
    elif kind == "str":
        if not isinstance(v, str):
            _fail(src, key, f"expected a string, got {_typename(v)} {v!r}")
        out = v
    elif kind == "bool":
        if not isinstance(v, bool):
            _fail(src, key, f"expected true or false, got {v!r}")
        out = v
    elif kind in ("int", "float"):
        out = _number(v, src, key, integer=(kind == "int"))
        _range(out, spec, src, key)
    elif kind in ("floats", "ints"):
        items = v if isinstance(v, list) else [v]
        if not items:
            _fail(src, key, "expected a non-empty list")
        out = [_number(x, src, f"{key}", integer=(kind == "ints")) for x in items]
        for x in out:
            _range(x, spec, src, key)
        if kind == "ints" and not isinstance(v, list):
            out = out[0]
    elif kind == "box":
        out = _box(v, src, key)
    elif kind == "formula":
        out = _formulas(v, src, key)
        if not isinstance(out, str):
            _fail(src, key, f"expected one formula string, got {v!r}")
    elif kind == "formulas":
        out = _formulas(v, src, key)
    elif kind == "params":
        if not isinstance(v, dict):
            _fail(src, key, f"expected a table of name = number, got {v!r}")
        out = {name: _number(x, src, f"{key}.{name}") for name, x in v.items()}
    elif kind == "table":
        if not isinstance(v, dict):
            _fail(src, key, f"expected a table, got {_typename(v)} {v!r}")
        out = _validate_table(v, spec.table, src, key) if spec.table is not None else v
    else:  # pragma: no cover
        raise AssertionError(kind)
    if spec.choices is not None and out not in spec.choices:
        allowed = ", ".join(map(str, spec.choices))
        hint = difflib.get_close_matches(str(out), list(map(str, spec.choices)), n=1)
        _fail(src, key, f"{out!r} is not one of: {allowed}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    if spec.check is not None:
        msg = spec.check(out)
        if msg:
            _fail(src, key, msg)
    return out


def _validate_table(d: dict, schema: dict, src: str, prefix: str) -> dict:
    """Validate one table; every mistake in it (and in its sub-tables) is collected, then raised at once
    as :class:`CaseErrors`."""
    out, errors, hinted = {}, [], set()
    for k in d:
        if k not in schema:
            full = f"{prefix}.{k}" if prefix else k
            hint = difflib.get_close_matches(k, list(schema), n=1)
            hinted.update(hint)
            allowed = ", ".join(schema)
            errors.append(f"{src}: {full}: unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; allowed here: {allowed}")
    for k, spec in schema.items():
        full = f"{prefix}.{k}" if prefix else k
        try:
            if k in d and d[k] is not None:          # None (from a filled-in case dict) means "not given"
                out[k] = _validate_value(d[k], spec, src, full)
            elif spec.default is REQUIRED:
                if k not in hinted:             # a misspelt required key is reported once, as unknown
                    _fail(src, full, f"missing required key ({spec.doc})")
            elif spec.kind == "table" and spec.table is not None and spec.default is not None:
                out[k] = _validate_table(copy.deepcopy(spec.default), spec.table, src, full)
            else:
                out[k] = copy.deepcopy(spec.default)
        except CaseError as e:
            errors.extend(_lines(e))
    if errors:
        raise CaseErrors(errors)
    return out


def _check_consistency(c: dict, src: str) -> None:
    fam, mod, grid = c["family"], c["model"], c["grid"]
    u_n = grid.get("u", {}).get("n")
    if isinstance(u_n, list) and len(u_n) == 1:      # one size for every control axis
        grid["u"]["n"] = u_n[0]
    if fam == "entropy_sgd":
        d = mod["dim"]
        if mod["loss"] == "gaussian_mixture" and mod["mixture"] is None:
            _fail(src, "model.mixture", "required for loss = 'gaussian_mixture' (weights, centres, widths)")
        if mod["loss"] == "gaussian_mixture":
            mix = mod["mixture"]
            if not isinstance(mix["centres"], list) or not mix["centres"]:
                _fail(src, "model.mixture.centres", f"expected a list of numbers (1-D) or of [c1, c2] pairs (2-D), "
                      f"got {mix['centres']!r:.60}")
            if not (len(mix["weights"]) == len(mix["widths"]) == len(mix["centres"])):
                _fail(src, "model.mixture", "weights, centres and widths must have the same length")
            for i, cen in enumerate(mix["centres"]):
                cl = cen if isinstance(cen, list) else [cen]
                if len(cl) != d:
                    _fail(src, f"model.mixture.centres[{i}]", f"expected {d} coordinate(s), got {cen!r}")
                for v in cl:
                    _number(v, src, f"model.mixture.centres[{i}]")
        n = m = d
        k = d if mod["control"] == "steering" else 1
        _check_control_box(mod["u_box"], k, src, f"control = {mod['control']!r}, dim = {d}")
    elif fam == "lq":
        n = m = 1
        _check_control_box(mod["u_box"], 1, src, "the lq family")
    elif fam == "periodic":
        n = m = mod["m"]
        P = grid["P"]
        if P["values"] is None and (P["box"] is None or P["n"] is None):
            _fail(src, "grid.P", "give either values = [...] or box = [lo, hi] and n")
        if isinstance(grid["y"]["n"], list) and len(grid["y"]["n"]) != 1:
            _fail(src, "grid.y.n", "one size: the same N on every axis of the torus")
        need = {"quadratic": ("V",), "separable": ("K", "V"), "general": ("G",), "control": ("f", "l", "a_box"),
                "metric": ("c",)}
        for key in need[mod["hamiltonian"]]:
            if mod[key] is None:
                _fail(src, f"model.{key}", f"required for hamiltonian = {mod['hamiltonian']!r}")
        return _check_name(c, src)
    else:
        n, m = mod["n"], mod["m"]
        _check_expr_controls(mod, m, src)
    if grid.get("P"):
        _check_P_values(grid["P"]["values"], n, src)
    for axis, dim in (("x", n), ("y", m), ("p", n), ("q", n)):
        spec = grid.get(axis)
        if not spec or dim == 0:
            continue
        box, nn = spec.get("box"), spec["n"]
        if isinstance(nn, list) and len(nn) not in (1, dim):
            _fail(src, f"grid.{axis}.n", f"expected one size or {dim} sizes, got {nn!r}")
        if box is not None and isinstance(box[0], list) and len(box) != dim:
            _fail(src, f"grid.{axis}.box", f"expected {dim} intervals for a {dim}-D variable, got {len(box)}")
    _check_name(c, src)


def _check_control_box(box, k: int, src: str, what: str) -> None:
    """The lq and entropy_sgd families take one interval u_box = [u_min, u_max] (for every component)."""
    if isinstance(box[0], list):
        _fail(src, "model.u_box", f"{what} has {k} control component(s) and takes one interval [u_min, u_max] "
              f"(applied to every component), got {len(box)} rows")


def _check_expr_controls(mod: dict, m: int, src: str) -> None:
    """expr family: b and tau exactly when there is a fast variable; at most one control set."""
    for key in ("b", "tau"):
        if m >= 1 and mod[key] is None:
            _fail(src, f"model.{key}", f"required when m >= 1 (the fast {'drift' if key == 'b' else 'noise'}); "
                  "m = 0 makes a plain HJB problem without it")
        if m == 0 and mod[key] is not None:
            _fail(src, f"model.{key}", "m = 0 has no fast variable: remove b and tau (or set m >= 1)")
    given = [k for k in ("u_box", "u_ball", "u_list") if mod[k] is not None]
    if len(given) > 1:
        _fail(src, f"model.{given[1]}", f"give one control set: {' or '.join(given)}, not both")
    if mod["u_ball"] is not None and len(mod["u_ball"]["centre"]) not in (1, 2):
        _fail(src, "model.u_ball.centre", "a ball control set has k = 1 or 2 components")
    lst = mod["u_list"]
    if lst is not None:
        rows = lst if isinstance(lst, list) else None
        ok = bool(rows) and (all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rows) or all(
            isinstance(r, list) and r and len(r) == len(rows[0]) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in r) for r in rows))
        if not ok:
            _fail(src, "model.u_list", f"expected a non-empty list of numbers or of equal-length lists of numbers, "
                  f"got {lst!r}")
        if len(rows) != len({tuple(r) if isinstance(r, list) else r for r in rows}):
            _fail(src, "model.u_list", "repeated control")


def _check_P_values(vals, n: int, src: str) -> None:
    key = "grid.P.values"
    if not isinstance(vals, list) or not vals:
        _fail(src, key, f"expected a non-empty list of numbers or {n}x{n} matrices, got {vals!r}")
    for i, v in enumerate(vals):
        if isinstance(v, list):
            if len(v) != n or any(not isinstance(r, list) or len(r) != n for r in v):
                _fail(src, f"{key}[{i}]", f"expected a {n}x{n} matrix, got {v!r}")
            M = [[_number(x, src, f"{key}[{i}]") for x in r] for r in v]
            if any(abs(M[a][b] - M[b][a]) > 1e-12 * (1 + abs(M[a][b])) for a in range(n) for b in range(n)):
                _fail(src, f"{key}[{i}]", f"a Hessian must be symmetric, got {v!r}")
        else:
            _number(v, src, f"{key}[{i}]")


def _check_name(c: dict, src: str) -> None:
    if not c["name"].replace("_", "").replace("-", "").replace(".", "").isalnum():
        _fail(src, "name", f"{c['name']!r}: use letters, digits, '_', '-' and '.' only")


def validate(raw: dict, source: str = "<dict>") -> dict:
    """Validate a raw case dict; returns a new dict with every default filled in. Every mistake is reported
    at once (:class:`CaseErrors`, one line each); the consistency checks between keys run when the keys
    themselves are valid."""
    if not isinstance(raw, dict):
        _fail(source, "", "a case must be a table")
    fam = raw.get("family")
    schema = {k: s for k, s in TOP.items() if k != "model"}
    if fam == "periodic":
        schema["grid"] = Spec("table", REQUIRED, "torus grid and P values", table=PERIODIC_GRID)
    errors, top = [], None
    try:
        top = _validate_table({k: v for k, v in raw.items() if k != "model"}, schema, source, "")
    except CaseError as e:
        errors.extend(_lines(e))
    if "model" not in raw:
        errors.append(f"{source}: model: missing required table [model]")
    elif isinstance(fam, str) and fam in MODEL:
        try:
            model = _validate_value(raw["model"], Spec("table", table=MODEL[fam]), source, "model")
            if top is not None:
                top["model"] = model
        except CaseError as e:
            errors.extend(_lines(e))
    if errors:
        raise CaseErrors(errors)
    try:
        _check_consistency(top, source)
    except RecursionError:
        _fail(source, "", "a value is nested too deeply")
    return top


# ---------------------------------------------------------------------------------------------------
# loading and overrides

def parse_override(text: str) -> tuple[list[str], Any]:
    """``'model.gamma=0.3'`` -> (['model', 'gamma'], 0.3). Values are TOML values; bare words are strings."""
    if "=" not in text:
        raise CaseError(f"--set {text}: expected key=value, e.g. --set model.gamma=0.3")
    key, val = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise CaseError(f"--set {text}: bad key {key!r}")
    try:
        value = tomllib.loads(f"v = {val.strip()}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        value = val.strip()
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    raw = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise CaseError(f"--set {text}: {part!r} is not a table")
            node = child
        node[path[-1]] = value
    return raw


#: a case file is a few KB; anything larger than this is not read (a device, a binary, a data file)
MAX_CASE_BYTES = 1 << 20


def read_case_file(path: str | Path) -> tuple[dict, str]:
    """The parsed TOML and its text. Refuses (CaseError, one line) a missing file, a folder, anything that
    is not a regular file (``/dev/zero``, a FIFO), a file above :data:`MAX_CASE_BYTES`, binary or non-UTF-8
    text, TOML syntax errors and nesting too deep to parse."""
    path = Path(path)
    try:
        if not path.exists():
            raise CaseError(f"{path}: case file not found")
        if path.is_dir():
            raise CaseError(f"{path}: is a folder, not a case file")
        if not path.is_file():
            raise CaseError(f"{path}: not a regular file (a device, FIFO or socket): give a TOML case file")
        with open(path, "rb") as f:
            data = f.read(MAX_CASE_BYTES + 1)
    except OSError as e:
        raise CaseError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) > MAX_CASE_BYTES:
        raise CaseError(f"{path}: larger than {MAX_CASE_BYTES >> 20} MiB: not a case file")
    if b"\0" in data:
        raise CaseError(f"{path}: binary data (NUL bytes): not a TOML case file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CaseError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}): not a TOML case file") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        raise CaseError(f"{path}: TOML syntax error: {e}") from None
    except RecursionError:
        raise CaseError(f"{path}: TOML nested too deeply to read") from None


def load_case(source: str | Path | dict, overrides: list[str] | None = None) -> Case:
    """Load and validate a case from a TOML file path or a dict, applying ``key=value`` overrides."""
    overrides = list(overrides or [])
    if isinstance(source, dict):
        raw, text, src = source, None, "<dict>"
    else:
        raw, text = read_case_file(source)
        src = str(source)
    if overrides:
        raw = apply_overrides(raw, overrides)
    v = validate(raw, src)
    if text is None:
        from .provenance import to_toml
        text = to_toml(source)
    if overrides:          # a comment per override, one line each whatever the value holds
        text += "\n# command-line overrides:\n" + "".join(
            "# --set " + o.replace("\r", "\\r").replace("\n", "\\n") + "\n" for o in overrides)
    return Case(name=v["name"], description=v["description"], family=v["family"], model=v["model"],
                grid=v["grid"], time=v["time"], run=v["run"], study=v["study"], source=src, text=text,
                overrides=overrides)


def schema_text() -> str:
    """The schema as indented text (``hjbsolve check --schema``)."""
    out = []

    def emit(schema, indent):
        for k, s in schema.items():
            dflt = "required" if s.default is REQUIRED else f"default {s.default!r}"
            ch = f"; one of {', '.join(map(str, s.choices))}" if s.choices else ""
            out.append(f"{'  ' * indent}{k} ({s.kind}, {dflt}{ch}): {s.doc}")
            if s.table:
                emit(s.table, indent + 1)

    emit({k: v for k, v in TOP.items() if k != "model"}, 0)
    for fam, sch in MODEL.items():
        out.append(f"model (family = {fam!r}):")
        emit(sch, 1)
    out.append("grid (family = 'periodic'):")
    emit(PERIODIC_GRID, 1)
    return "\n".join(out)
