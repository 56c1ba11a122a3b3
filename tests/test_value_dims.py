"""V^eps in the other admissible dimensions (n + m <= 3): m = 2 (sparse LU fast step) and n = 2 (bilinear
slow step, tridiagonal fast step): asymptotic preservation and sanity of the values."""

import warnings

import numpy as np
import pytest

from hjbsolve.effective import cell_stage
from hjbsolve.grid import Grid
from hjbsolve.models import expr_family
from hjbsolve.value import value_function


def _model(p, nu):
    return expr_family.build(p, u_nodes=nu, where="test")


@pytest.fixture(scope="module")
def m2():
    p = {"n": 1, "m": 2, "params": {"k": 1.0}, "a": "-x + u + y[0]", "sigma": "0.2", "b": ["-y[0]", "-2*y[1] + 0.3*x"],
         "tau": "0.5", "l": "0.5*u**2 + 0.5*x**2 + 0.5*y[1]**2", "g": "0.5*x**2", "u_box": [-4, 4], "u_ref": None}
    model = _model(p, 41)
    xg = Grid.from_box([-2, 2], 41)
    yg = Grid.from_box([[-2.5, 2.5], [-2.5, 2.5]], 21)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model, cell_stage(model, xg, yg)


def test_m2_asymptotic_preserving(m2):
    model, cell = m2
    r0 = value_function(model, cell, 0.0, 0.5, 0.05, effective_scheme="per_y")
    r1 = value_function(model, cell, 1e-9, 0.5, 0.05)
    assert r1.V.shape == (5, 41, 21, 21)
    assert np.abs(r1.V - r0.V[..., None, None]).max() < 1e-5 * np.abs(r0.V).max()


def test_m2_finite_and_close_to_the_limit(m2):
    model, cell = m2
    r = value_function(model, cell, 0.1, 0.5, 0.05)
    assert np.all(np.isfinite(r.V)) and r.feedback.shape == (41, 21, 21, 1)
    assert r.V.min() >= -1e-12           # all costs are non-negative
    # small eps: close to the effective value on the bulk of mu_x
    r0 = value_function(model, cell, 0.0, 0.5, 0.05, effective_scheme="per_y")
    r3 = value_function(model, cell, 1e-3, 0.5, 0.05)
    Y1, Y2 = np.meshgrid(*cell.ygrid.axes, indexing="ij")
    bulk = (np.abs(Y1) <= 1) & (np.abs(Y2) <= 1)
    assert np.abs(r3.V[-1] - r0.V[-1][:, None, None])[:, bulk].max() < 0.02


def test_n2_veps_and_effective():
    p = {"n": 2, "m": 1, "params": {}, "a": ["u[0] - x[0] + y", "u[1] - x[1]"], "sigma": "0", "b": "-y + 0.5*x[0]",
         "tau": "0.5", "l": "0.5*(u[0]**2 + u[1]**2) + 0.5*(x[0]**2 + x[1]**2)", "g": "0.5*(x[0]**2 + x[1]**2)",
         "u_box": [[-2, 2], [-2, 2]], "u_ref": None}
    model = _model(p, 9)
    xg = Grid.from_box([[-1.5, 1.5], [-1.5, 1.5]], 21)
    yg = Grid.from_box([-2.5, 2.5], 21)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cell = cell_stage(model, xg, yg)
        r0 = value_function(model, cell, 0.0, 0.4, 0.1, effective_scheme="per_y")
        r1 = value_function(model, cell, 1e-10, 0.4, 0.1)
        ra = value_function(model, cell, 0.0, 0.4, 0.1, blind=True, n_p=21)
    assert r1.V.shape == (5, 21, 21, 21) and r1.feedback.shape == (21, 21, 21, 2)
    assert np.abs(r1.V - r0.V[..., None]).max() < 1e-8 * np.abs(r0.V).max()
    # averaged (p-family) and per-y effective schemes agree up to the fan and control-grid errors
    assert np.abs(ra.V[-1] - r0.V[-1]).max() < 0.05
    assert np.all(ra.V_blind[-1] >= ra.V[-1] - 1e-3)
