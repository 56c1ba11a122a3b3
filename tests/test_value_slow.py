"""Longer refinement studies of the value stage (``pytest -m slow``; tables: scripts/study_value.py)."""

import numpy as np
import pytest

from hjbsolve.value import value_function

from .test_value_lq import T, eff_error, eps_error, setup

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("eps", [0.1, 0.01, 0.001])
def test_veps_four_levels(eps):
    """(dt = dx) from 0.04 to 0.005: order >= 0.9 at every level, error < 2.5e-3 at the finest."""
    errs = []
    for dt, nx, ny in ((0.04, 126, 161), (0.02, 251, 161), (0.01, 501, 161), (0.005, 1001, 161)):
        model, cell = setup(nx, ny)
        errs.append(eps_error(value_function(model, cell, eps, T, dt), eps))
    orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert orders.min() >= 0.9 and errs[-1] < 2.5e-3, (errs, orders)


def test_uniform_in_eps_fine_grid():
    model, cell = setup(501, 121)
    e0 = eff_error(value_function(model, cell, 0.0, T, 0.01, effective_scheme="per_y"))
    errs = [eps_error(value_function(model, cell, eps, T, 0.01), eps) for eps in (0.1, 0.03, 0.01, 0.003, 1e-3, 1e-4)]
    assert max(errs) <= 1.2 * e0, (errs, e0)
