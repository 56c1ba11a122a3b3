"""Entropy-SGD (Chaudhari et al. 2018) as a two-scale control problem (docs/mathematics.md §1), n = m = d.

    slow   a = -(x - y)/gamma            (control "none")
           a = -(x - y)/gamma + u        (control "steering", u in a box of R^d)
           a = -u (x - y)/gamma          (control "learning_rate", u in [u_min, u_max])
           sigma = sigma_slow * I        (default 0: Chaudhari's slow equation is deterministic)
    fast   b = -(grad f(y) + (y - x)/gamma),  tau = I / sqrt(beta)
    cost   l = control_cost |u - u_ref|^2 / 2 + state_cost f(x),   g = f(x) | f(y) | 0

The fast law is the Gibbs law mu_x ∝ exp(-U), ``U(x, y) = beta (f(y) + |y - x|^2 / (2 gamma))``, and the
averaged uncontrolled slow drift is ``-(x - <y>_x)/gamma = -grad f_gamma(x)``.
"""

from __future__ import annotations

import numpy as np

from ..cell.box import gibbs_box
from ..model import AffineQuadratic, ControlSet, Model, constant_matrix
from .losses import LOSSES, GaussianMixture

CONTROLS = ("none", "steering", "learning_rate")
TERMINALS = ("loss", "replica", "zero")


def make_loss(p: dict):
    name = p["loss"]
    if name == "quadratic":
        return LOSSES[name](a=p["quadratic_a"])
    if name == "rastrigin":
        return LOSSES[name](A=p["rastrigin_A"])
    if name == "gaussian_mixture":
        mix = p["mixture"]
        return GaussianMixture(tuple(mix["weights"]), tuple(map(tuple, np.atleast_2d(
            np.asarray(mix["centres"], float).reshape(len(mix["weights"]), -1)))), tuple(mix["widths"]), p["beta"])
    return LOSSES[name]()


def build(p: dict, u_nodes: int = 21) -> Model:
    """Model from the validated ``[model]`` table ``p`` of an entropy_sgd case."""
    d, gamma, beta = int(p["dim"]), float(p["gamma"]), float(p["beta"])
    loss = make_loss(p)
    control, c = p["control"], float(p["control_cost"])
    lam = float(p["state_cost"])

    def gradient_step(x, y):
        return -(x - y) / gamma

    a0 = gradient_step          # drift at u = 0 (none, steering); the learning rate scales it instead

    if control == "none":
        controls = ControlSet((), (), ())
        u_ref = ()

        def B(x, y):
            return np.zeros(np.broadcast_shapes(x.shape, y.shape) + (0,))
    elif control == "steering":
        lo, hi = p["u_box"]
        controls = ControlSet((lo,) * d, (hi,) * d, (u_nodes,) * d)
        u_ref = (float(p.get("u_ref") or 0.0),) * d

        def B(x, y):
            lead = np.broadcast_shapes(x.shape[:-1], y.shape[:-1])
            return np.broadcast_to(np.eye(d), lead + (d, d))
    else:  # learning_rate: a = u * gradient_step, no offset
        lo, hi = p["u_box"]
        controls = ControlSet((lo,), (hi,), (u_nodes,))
        u_ref = (float(1.0 if p.get("u_ref") is None else p["u_ref"]),)

        def a0(x, y):
            return np.zeros(np.broadcast_shapes(x.shape, y.shape))

        def B(x, y):
            return gradient_step(x, y)[..., None]

    def l0(x, y):
        lead = np.broadcast_shapes(x.shape[:-1], y.shape[:-1])
        if lam == 0.0:
            return np.zeros(lead)
        return np.broadcast_to(lam * loss.f(x), lead)

    def a(x, y, u):
        return a0(x, y) + np.einsum("...ij,...j->...i", B(x, y), u)

    def l(x, y, u):
        du = u - np.asarray(u_ref)
        return l0(x, y) + 0.5 * c * np.sum(du * du, axis=-1)

    def b(x, y):
        return -(loss.grad(y) + (y - x) / gamma)

    def potential(x, y):
        return beta * (loss.f(y) + np.sum((y - x) ** 2, axis=-1) / (2 * gamma))

    terminal = p["terminal"]

    def g(x, y):
        lead = np.broadcast_shapes(x.shape[:-1], y.shape[:-1])
        if terminal == "loss":
            return np.broadcast_to(loss.f(x), lead)
        if terminal == "replica":
            return np.broadcast_to(loss.f(y), lead)
        return np.zeros(lead)

    s = float(p["sigma"])
    sigma = constant_matrix(s, d)

    def y_box_hint(x_nodes):
        guess = np.stack([x_nodes.min(axis=0) - 3, x_nodes.max(axis=0) + 3], axis=-1)
        return gibbs_box(potential, x_nodes, d, guess)

    exact = {"loss": loss}
    return Model(family="entropy_sgd", n=d, m=d, controls=controls, a=a, sigma=sigma, b=b,
                 tau=constant_matrix(1.0 / np.sqrt(beta), d), l=l, g=g, params=dict(p),
                 potential=potential, affine=AffineQuadratic(a0, B, l0, c, u_ref), sigma_zero=(s == 0.0),
                 y_box_hint=y_box_hint, exact=exact)
