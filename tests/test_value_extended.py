"""Extended controls matter: a model whose optimal control depends on the fast state.

    dX = u ds,  dY = -(theta/eps) Y ds + sqrt(2/eps) tau dW,  l = u^2/2 + u y + q x^2/2,  g = g0 x^2/2

H(x, y, p) = sup_u {-u p - u^2/2 - u y} - q x^2/2 = (p + y)^2/2 - q x^2/2 (maximiser u* = -(p + y)), and
mu = N(0, tau^2/theta), so Hbar = p^2/2 + tau^2/(2 theta) - q x^2/2 and

    V(t, x) = P(t) x^2/2 - t tau^2/(2 theta),     P' = q - P^2,  P(0) = g0     (extended controls)

A y-blind control gets sup_u E[...] = p^2/2 - q x^2/2 only: V_blind = P(t) x^2/2, larger by t tau^2/(2 theta).
"""

import numpy as np
import pytest

from hjbsolve.effective import cell_stage
from hjbsolve.grid import Grid
from hjbsolve.models import expr_family
from hjbsolve.value import value_function

TH, TAU, Q, G0, L = 1.0, 0.5, 0.5, 1.0, 5.0
T = 1.0


def P(t):
    s = np.sqrt(Q)
    return s * (G0 + s * np.tanh(s * t)) / (s + G0 * np.tanh(s * t))


@pytest.fixture(scope="module")
def problem():
    p = {"n": 1, "m": 1, "params": {"theta": TH, "tau": TAU, "q": Q, "g0": G0}, "a": "u", "sigma": "0",
         "b": "-theta*y", "tau": "tau", "l": "0.5*u**2 + u*y + 0.5*q*x**2", "g": "0.5*g0*x**2",
         "u_box": [-L, L], "u_ref": None}
    model = expr_family.build(p, u_nodes=201, where="test")
    xg = Grid.from_box([-2.5, 2.5], 201)
    yg = Grid.from_box([-3.0, 3.0], 121)
    return model, cell_stage(model, xg, yg)


def test_extended_and_blind_values_averaged_scheme(problem):
    """Averaged scheme (extended: family of maximisers alpha_p, min over p), dx = 0.025, dt = 0.1, 201 controls:
    both values within 2e-3 of their closed forms on |x| <= 1; the blind one larger by ~ T tau^2/(2 theta)."""
    model, cell = problem
    res = value_function(model, cell, 0.0, T, 0.1, blind=True)
    x = cell.xgrid.axes[0]
    w = np.abs(x) <= 1
    V_ext = P(T) * x * x / 2 - T * TAU**2 / (2 * TH)
    V_bl = P(T) * x * x / 2
    assert np.abs(res.V[-1] - V_ext)[w].max() < 2e-3
    assert np.abs(res.V_blind[-1] - V_bl)[w].max() < 2e-3
    gap = res.V_blind[-1] - res.V[-1]
    assert gap[w].min() > 0.1 and np.abs(gap[w] - T * TAU**2 / (2 * TH)).max() < 3e-3
    # the extended feedback depends on y: u*(x, y) = -(P x + y)
    fb = res.feedback[..., 0]
    X, Y = np.meshgrid(x, cell.ygrid.axes[0], indexing="ij")
    win = (np.abs(X) <= 1) & (np.abs(Y) <= 1.5)
    assert np.abs(fb - (-(P(T) * X + Y)))[win].max() < 0.1
    assert res.feedback_blind.shape == (201, 1)


def test_per_y_scheme_and_its_fan_error(problem):
    """Per-y feet: the blind value has no fan (a = u is the same for all y) and stays accurate; the extended one
    carries the spurious diffusion (dt/2) Var_pi(u*) V'' = (dt/2)(tau^2/theta) P(t): predicted error
    (dt/8) ∫_0^T P, matched within 25%."""
    model, cell = problem
    x = cell.xgrid.axes[0]
    w = np.abs(x) <= 1
    dt = 0.1
    res = value_function(model, cell, 0.0, T, dt, effective_scheme="per_y", blind=True)
    err = res.V[-1] - (P(T) * x * x / 2 - T * TAU**2 / (2 * TH))
    s = np.linspace(0, T, 2001)
    predicted = dt / 2 * TAU**2 / TH * np.trapezoid(P(s), s)
    assert abs(err[w].mean() - predicted) < 0.25 * predicted
    assert np.abs(res.V_blind[-1] - P(T) * x * x / 2)[w].max() < 2e-3
    assert (res.V_blind[-1] - res.V[-1])[w].min() > 0.1
