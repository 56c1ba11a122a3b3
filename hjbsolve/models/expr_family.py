"""The ``expr`` family: every coefficient given as a formula of the safe expression language.

When the formulas are control-affine with a quadratic control cost (``a = a0 + B u``,
``l = l0 + c |u - u_ref|^2 / 2``, sigma free of u) -- detected by probing, see
:func:`detect_affine_quadratic` -- the model carries that structure and the sup over u is taken in closed
form (``grid.u.exact = false`` keeps the control grid).

Variables: ``x`` (n slow components), ``y`` (m fast components), ``u`` (k controls, only in a, sigma, l);
parameters from ``model.params``. Vector coefficients are lists of formulas; matrix coefficients
(sigma, tau) are a scalar formula (times the identity), a list (the diagonal) or a list of rows.
"""

from __future__ import annotations

import numpy as np

from ..errors import CaseError
from ..expr import compile_expression, compile_matrix, compile_vector
from ..model import AffineQuadratic, ControlSet, Model


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


def control_set(p: dict, u_nodes=21, radii: int = 5, directions: int = 32) -> ControlSet:
    """The control set of an expr model: u_box (tensor grid of u_nodes per axis), u_ball (the centre plus
    ``radii`` circles of ``directions`` nodes, :func:`hjbsolve.sl.controls.ball_controls`), u_list (the
    points), or none (no control, k = 0)."""
    from ..sl.controls import ball_controls, list_controls
    if p.get("u_ball") is not None:
        ball = p["u_ball"]
        k = len(ball["centre"])
        pts = ball_controls(float(ball["radius"]), k=k, n_radii=radii, n_dirs=directions, centre=ball["centre"])
        return ControlSet.from_points(pts, "ball")
    if p.get("u_list") is not None:
        return ControlSet.from_points(list_controls(p["u_list"]), "list")
    box = p.get("u_box")
    if box is None:
        return ControlSet((), (), ())
    rows = box if isinstance(box[0], list) else [box]
    nn = u_nodes if isinstance(u_nodes, (list, tuple)) else [u_nodes] * len(rows)
    if len(nn) != len(rows):
        nn = [nn[0]] * len(rows)
    return ControlSet(tuple(r[0] for r in rows), tuple(r[1] for r in rows), tuple(int(v) for v in nn))


def build(p: dict, u_nodes=21, where: str = "<case>", radii: int = 5, directions: int = 32) -> Model:
    n, m = int(p["n"]), int(p["m"])
    params = dict(p["params"])
    controls = control_set(p, u_nodes, radii, directions)
    k = controls.k
    vx = {"x": n, "y": m, "u": k}
    vfast = {"x": n, "y": m, "u": 0}
    a = _vector(p["a"], n, vx, params, f"{where}: model.a")
    sig, sig_rows = _matrix(p["sigma"], n, vx, params, f"{where}: model.sigma")
    if m:
        b = _vector(p["b"], m, vfast, params, f"{where}: model.b")
        tau, _ = _matrix(p["tau"], m, vfast, params, f"{where}: model.tau")
    l = compile_expression(p["l"], vx, params, where=f"{where}: model.l")
    g = compile_expression(p["g"], vfast, params, where=f"{where}: model.g")

    def ev(ce, x, y, u=None):
        return ce.evaluate(x=x, y=y, u=u) if (u is not None and k) else ce.evaluate(x=x, y=y)

    def no_fast(x, y, *shape):
        return np.zeros(np.broadcast_shapes(x.shape[:-1], y.shape[:-1]) + shape)

    sigma_zero = all(s.strip() in ("0", "0.0") for r in sig_rows for s in r)
    affine = None
    # the closed-form maximiser clips to a box: ball and list sets use their nodes
    if k and controls.points is None and sigma_independent_of_u(sig_rows):
        affine = detect_affine_quadratic(lambda x, y, u: ev(a, x, y, u), lambda x, y, u: ev(l, x, y, u),
                                         n, m, controls)
    u_ref = p.get("u_ref")
    if k and u_ref is not None and len(u_ref) != k:
        raise CaseError(f"{where}: model.u_ref: expected {k} value(s)")
    return Model(family="expr", n=n, m=m, controls=controls,
                 a=lambda x, y, u: ev(a, x, y, u), sigma=lambda x, y, u: ev(sig, x, y, u),
                 b=(lambda x, y: ev(b, x, y)) if m else (lambda x, y: no_fast(x, y, 0)),
                 tau=(lambda x, y: ev(tau, x, y)) if m else (lambda x, y: no_fast(x, y, 0, 0)),
                 l=lambda x, y, u: ev(l, x, y, u), g=lambda x, y: ev(g, x, y),
                 params=dict(p), sigma_zero=sigma_zero, affine=affine,
                 u_ref=tuple(u_ref) if u_ref is not None else None)


def sigma_independent_of_u(rows) -> bool:
    """True when no entry of the sigma formulas mentions the control (closed-form sup needs it)."""
    import re
    return not any(re.search(r"\bu\d*\b|\bu\[", t) for r in rows for t in r)


def detect_affine_quadratic(a, l, n: int, m: int, controls: ControlSet, samples: int = 64,
                            rtol: float = 1e-9, seed: int = 12345):
    """Probe the formulas for ``a = a0(x, y) + B(x, y) u`` and ``l = l0(x, y) + c |u - u_ref|^2 / 2`` (c > 0,
    u_ref constant), at random points (x, y) and random controls in the box; return the
    :class:`~hjbsolve.model.AffineQuadratic` structure, or None when any probe disagrees.

    The probes are a check, not a proof: formulas that are affine / quadratic on the probes but not
    elsewhere would be misread, which is why every probe must agree to ``rtol`` and the user can turn
    the closed-form sup off (``grid.u.exact = false``)."""
    k = controls.k
    lo, hi = np.asarray(controls.lo, float), np.asarray(controls.hi, float)
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=2.0, size=(samples, n))
    y = rng.normal(scale=2.0, size=(samples, m))
    u1 = lo + (hi - lo) * rng.random((samples, k))
    u2 = lo + (hi - lo) * rng.random((samples, k))
    z = np.zeros((samples, k))
    E = np.eye(k)
    with np.errstate(all="ignore"):
        try:
            a0 = a(x, y, z)
            B = np.stack([a(x, y, np.broadcast_to(E[i], (samples, k))) - a0 for i in range(k)], axis=-1)
            lin = lambda u: a0 + np.einsum("sdk,sk->sd", B, u)
            l0 = l(x, y, z)
            lu = [l(x, y, np.broadcast_to(E[i], (samples, k))) for i in range(k)]
            lm = [l(x, y, np.broadcast_to(-E[i], (samples, k))) for i in range(k)]
        except Exception:
            return None
        if not all(np.all(np.isfinite(v)) for v in (a0, B, l0, *lu, *lm)):
            return None
        scale_a = 1.0 + np.abs(a0).max() + np.abs(B).max()
        for u in (u1, u2, 0.5 * (u1 + u2)):
            if np.abs(a(x, y, u) - lin(u)).max() > rtol * scale_a * (1 + np.abs(u).max()):
                return None
        # l(u) - l(0) = g.u + c |u|^2 / 2 with constant c > 0 and g = -c u_ref constant
        c_i = [lu[i] + lm[i] - 2 * l0 for i in range(k)]          # = c for every axis
        c = float(np.mean(c_i[0]))
        if not c > 0 or any(np.abs(ci - c).max() > rtol * (1 + abs(c)) for ci in c_i):
            return None
        g = np.stack([(lu[i] - lm[i]) / 2 for i in range(k)], axis=-1)    # (samples, k)
        if np.abs(g - g[:1]).max() > rtol * (1 + np.abs(g).max()):
            return None
        u_ref = -g[0] / c
        scale_l = 1.0 + np.abs(l0).max() + c * (1 + np.abs(u1).max()) ** 2
        quad = lambda u: l0 + u @ g[0] + 0.5 * c * np.sum(u * u, axis=-1)
        for u in (u1, u2):
            if np.abs(l(x, y, u) - quad(u)).max() > rtol * scale_l:
                return None

    def a0f(xx, yy):
        lead = np.broadcast_shapes(xx.shape[:-1], yy.shape[:-1])
        return np.broadcast_to(a(xx, yy, np.zeros(lead + (k,))), lead + (n,))

    def Bf(xx, yy):
        lead = np.broadcast_shapes(xx.shape[:-1], yy.shape[:-1])
        base = a(xx, yy, np.zeros(lead + (k,)))
        return np.stack([np.broadcast_to(a(xx, yy, np.broadcast_to(E[i], lead + (k,))), lead + (n,)) - base
                         for i in range(k)], axis=-1)

    def l0f(xx, yy):
        lead = np.broadcast_shapes(xx.shape[:-1], yy.shape[:-1])
        return np.broadcast_to(l(xx, yy, np.broadcast_to(u_ref, lead + (k,))), lead)

    return AffineQuadratic(a0f, Bf, l0f, c, tuple(float(v) for v in u_ref))
