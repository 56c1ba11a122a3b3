"""The ``periodic`` family: nonlinear ergodic cell problems on the torus T^m (docs/mathematics.md §3),

    -nu Δchi(y) + G(y, P + Dchi(y)) = Hbar(P),     y in [0, 1)^m, m = 1, 2 or 3 (3: not for "general"),

with G given by formulas of the safe expression language (convex in q, or, for "general" and
"separable", not: then Hbar may be nonconvex and no Lbar is computed):

    hamiltonian = "quadratic"   G = |q|^2/2 + V(y)                 (V: formula in y)
    hamiltonian = "separable"   G = sum_k K(q_k) + V(y)           (K: formula in s, convex)
    hamiltonian = "general"     G(y, q)                           (formula in y and q)
    hamiltonian = "control"     G = max_a {-f(y, a).q - l(y, a)}  (f: m formulas, l: formula in y, a;
                                                                   a on a tensor grid of a_box)
    hamiltonian = "metric"      G = c(y) |q|  or  c(y) max_(a in B) -a.q   (c: formula in y, may be
                                piecewise constant; norm = l2 / l1 / linf, or control_set = the
                                vertices of a polytope B with 0 inside)

The formulas compile to numba functions that the solver of :mod:`hjbsolve.cell.ergodic` calls.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..cell.ergodic import PeriodicHamiltonian
from ..errors import CaseError, HJBError
from ..expr import compile_expression


def _scalar_of_y(text, m, params, where):
    f = compile_expression(text, {"y": m}, params, where=where).func
    prm = np.asarray(list(params.values()), float)

    @njit
    def V(y):
        return f(y, prm)
    return V


def build(p: dict, where: str = "<case>") -> PeriodicHamiltonian:
    """The PeriodicHamiltonian of a validated ``[model]`` table of a periodic case."""
    m, kind, params = int(p["m"]), p["hamiltonian"], dict(p["params"])
    prm = np.asarray(list(params.values()), float)
    qb = float(p["q_box"])

    def need(key):
        if p.get(key) is None:
            raise CaseError(f"{where}: model.{key}: required for hamiltonian = {kind!r}")
        return p[key]

    if kind == "quadratic":
        return PeriodicHamiltonian.quadratic(_scalar_of_y(need("V"), m, params, f"{where}: model.V"), q_box=qb)
    if kind == "separable":
        fk = compile_expression(need("K"), {"s": 1}, params, where=f"{where}: model.K").func

        @njit
        def K(s):
            a = np.empty(1)
            a[0] = s
            return fk(a, prm)
        return PeriodicHamiltonian.separable(K, _scalar_of_y(need("V"), m, params, f"{where}: model.V"), q_box=qb)
    if kind == "general":
        fg = compile_expression(need("G"), {"y": m, "q": m}, params, where=f"{where}: model.G").func

        @njit
        def G(y, q):
            return fg(y, q, prm)
        return PeriodicHamiltonian.general(G, q_box=qb)
    if kind == "metric":
        return _metric(p, m, params, where)
    # control
    box = need("a_box")
    rows = box if isinstance(box[0], list) else [box]
    k = len(rows)
    texts = need("f")
    texts = [texts] if isinstance(texts, str) else list(texts)
    if len(texts) != m:
        raise CaseError(f"{where}: model.f: expected {m} formula(s) (one per fast axis), got {len(texts)}")
    fs = [compile_expression(t, {"y": m, "a": k}, params, where=f"{where}: model.f").func for t in texts]
    fl = compile_expression(need("l"), {"y": m, "a": k}, params, where=f"{where}: model.l").func
    if m == 1:
        f0 = fs[0]

        @njit
        def f(y, a):
            out = np.empty(1)
            out[0] = f0(y, a, prm)
            return out
    elif m == 2:
        f0, f1 = fs

        @njit
        def f(y, a):
            out = np.empty(2)
            out[0] = f0(y, a, prm)
            out[1] = f1(y, a, prm)
            return out
    else:
        f0, f1, f2 = fs

        @njit
        def f(y, a):
            out = np.empty(3)
            out[0] = f0(y, a, prm)
            out[1] = f1(y, a, prm)
            out[2] = f2(y, a, prm)
            return out

    @njit
    def l(y, a):
        return fl(y, a, prm)

    n_a = p["a_n"] if isinstance(p["a_n"], list) else [p["a_n"]] * k
    axes = [np.linspace(lo, hi, na) for (lo, hi), na in zip(rows, n_a)]
    A = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, k)
    return PeriodicHamiltonian.control(f, l, A if k > 1 else A[:, 0])


def _metric(p, m, params, where):
    """G = c(y) |q| (model.norm) or c(y) max_(a in B) -a.q (model.control_set: polytope vertices)."""
    c = _scalar_of_y(p["c"], m, params, f"{where}: model.c")
    B = p.get("control_set")
    if B is None:
        return PeriodicHamiltonian.metric(c, p.get("norm", "l2"))
    key = f"{where}: model.control_set"
    ok = (isinstance(B, list) and len(B) >= m + 1 and all(
        isinstance(v, list) and len(v) == m and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                    and math.isfinite(x) for x in v) for v in B))
    if not ok:
        raise CaseError(f"{key}: expected a list of at least {m + 1} vertices, each a list of {m} numbers "
                        f"(e.g. [[1, 0], [0, 1], [-1, -1]] for m = 2)")
    ham = PeriodicHamiltonian.metric(c, B=B)
    try:
        ham.control_set(m)
    except HJBError as exc:
        raise CaseError(f"{key}: {str(exc).split(': ', 1)[1]}") from None
    return ham


def P_values(grid: dict, m: int) -> tuple[np.ndarray, list]:
    """The P nodes (K, m) and the per-axis P coordinates (tensor grid), or explicit values (one axis)."""
    spec = grid["P"]
    if spec.get("values") is not None:
        vals = np.asarray(spec["values"], float).reshape(-1, m)
        return vals, ([vals[:, 0]] if m == 1 else [np.arange(len(vals))])
    box, n = spec["box"], spec["n"]
    rows = box if isinstance(box[0], list) else [box] * m
    ns = n if isinstance(n, list) else [n] * m
    axes = [np.linspace(lo, hi, k) for (lo, hi), k in zip(rows, ns)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, m), axes
