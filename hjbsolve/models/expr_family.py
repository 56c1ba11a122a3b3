"""The ``expr`` family: every coefficient given as a formula of the safe expression language.

Variables: ``x`` (n slow components), ``y`` (m fast components), ``u`` (k controls, only in a, sigma, l);
parameters from ``model.params``. Vector coefficients are lists of formulas; matrix coefficients
(sigma, tau) are a scalar formula (times the identity), a list (the diagonal) or a list of rows.
"""

from __future__ import annotations

import numpy as np

from ..errors import CaseError
from ..expr import compile_expression, compile_matrix, compile_vector
from ..model import ControlSet, Model


def _vector(text, dim, variables, params, where):
    texts = [text] if isinstance(text, str) else text
    if any(not isinstance(t, str) for t in texts) or len(texts) != dim:
        raise CaseError(f"{where}: expected {dim} formula(s), got {len(texts)}")
    return compile_vector(texts, variables, params, where=where)


def _matrix(text, dim, variables, params, where):
    if isinstance(text, str):
        rows = [[text if i == j else "0" for j in range(dim)] for i in range(dim)]
    elif all(isinstance(t, str) for t in text):
        if len(text) != dim:
            raise CaseError(f"{where}: expected a scalar, {dim} diagonal entries or a {dim}x{dim} matrix")
        rows = [[text[i] if i == j else "0" for j in range(dim)] for i in range(dim)]
    else:
        if len(text) != dim or any(len(r) != dim for r in text):
            raise CaseError(f"{where}: expected a {dim}x{dim} matrix")
        rows = text
    return compile_matrix(rows, variables, params, where=where), rows


def build(p: dict, u_nodes: int = 21, where: str = "<case>") -> Model:
    n, m = int(p["n"]), int(p["m"])
    params = dict(p["params"])
    box = p["u_box"]
    if box is None:
        controls, k = ControlSet((), (), ()), 0
    else:
        rows = box if isinstance(box[0], list) else [box]
        controls = ControlSet(tuple(r[0] for r in rows), tuple(r[1] for r in rows), (u_nodes,) * len(rows))
        k = len(rows)
    vx = {"x": n, "y": m, "u": k}
    vfast = {"x": n, "y": m, "u": 0}
    a = _vector(p["a"], n, vx, params, f"{where}: model.a")
    sig, sig_rows = _matrix(p["sigma"], n, vx, params, f"{where}: model.sigma")
    b = _vector(p["b"], m, vfast, params, f"{where}: model.b")
    tau, _ = _matrix(p["tau"], m, vfast, params, f"{where}: model.tau")
    l = compile_expression(p["l"], vx, params, where=f"{where}: model.l")
    g = compile_expression(p["g"], vfast, params, where=f"{where}: model.g")

    def ev(ce, x, y, u=None):
        return ce.evaluate(x=x, y=y, u=u) if (u is not None and k) else ce.evaluate(x=x, y=y)

    sigma_zero = all(s.strip() in ("0", "0.0") for r in sig_rows for s in r)
    u_ref = p.get("u_ref")
    if k and u_ref is not None and len(u_ref) != k:
        raise CaseError(f"{where}: model.u_ref: expected {k} value(s)")
    return Model(family="expr", n=n, m=m, controls=controls,
                 a=lambda x, y, u: ev(a, x, y, u), sigma=lambda x, y, u: ev(sig, x, y, u),
                 b=lambda x, y: ev(b, x, y), tau=lambda x, y: ev(tau, x, y),
                 l=lambda x, y, u: ev(l, x, y, u), g=lambda x, y: ev(g, x, y),
                 params=dict(p), sigma_zero=sigma_zero,
                 u_ref=tuple(u_ref) if u_ref is not None else None)
