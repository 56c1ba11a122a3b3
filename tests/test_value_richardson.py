"""Richardson extrapolation in dt of the first-order V^eps scheme, on the LQ family (Riccati solutions).

The Lie splitting (slow SL step at frozen y, implicit-Euler fast step) and its eps -> 0 limit, the per-y
scheme, have the error ``C(dt/eps) dt + O(dt^2) + O(dx^2/dt) + O(dy^2)`` with C bounded uniformly in eps
(asymptotic preserving). ``richardson=True`` returns ``2 V_{dt/2} - V_dt``: second order where C does not
depend on dt (eps >> dt: Lie splitting constant; eps << dt: the fan constant (1/2) Var_pi(a*) D^2V), and
the interpolation term grows to 0.45 dx^2/dt, hence dx ∝ dt^1.5 in the order tests.
Grids: x in [-2, 2], y in [-2.5, 2.5] (5 standard deviations of the Gibbs law beyond its means), window
|x|, |y| <= 1.
"""

import numpy as np
import pytest

from hjbsolve.effective import cell_stage
from hjbsolve.grid import Grid
from hjbsolve.models import lq
from hjbsolve.value import value_function

from .test_value_lq import PARAMS, T, eff_error, eps_error, lq_eps_study

# the y box cuts ~1e-5 of mu_x at the ends of the x box (|x| = 2), far from the window: the cell stage's
# warning about it is expected here
pytestmark = pytest.mark.filterwarnings("ignore::hjbsolve.cell.invariant.BoxWarning")

#: y box half-width: the Gibbs means -a21 x / a22 reach +-1 on the x box, the standard deviation is 0.35
YB = 2.5


def solve(eps, dt, nx, ny, **kw):
    model = lq.build(PARAMS)
    cell = cell_stage(model, Grid.from_box([-2.0, 2.0], nx), Grid.from_box([-YB, YB], ny))
    if eps == 0:
        kw.setdefault("effective_scheme", "per_y")
    return value_function(model, cell, eps, T, dt, richardson=True, **kw)


def error(res):
    return eps_error(res, res.eps) if res.eps > 0 else eff_error(res)


def orders(errs):
    return np.log2(np.array(errs[:-1]) / np.array(errs[1:]))


@pytest.mark.parametrize("eps, ny", [(0.1, 151), (0.001, 61)])
def test_richardson_second_order_in_dt(eps, ny):
    """(dt, nx) = (0.2, 101) -> (0.1, 285) (dx ∝ dt^1.5): observed order >= 1.8 (measured 1.88 at eps = 0.1,
    1.84 at eps = 0.001); the monotone V_{dt/2} stays first order, ~4x less accurate at dt = 0.1."""
    errs, mono = [], []
    for dt, nx in ((0.2, 101), (0.1, 285)):
        res = solve(eps, dt, nx, ny)
        errs.append(error(res))
        raw = res.V_monotone[-1] - res.V[-1]
        mono.append(float(np.abs(raw[..., None] if raw.ndim == 1 else raw).max()))
    assert orders(errs).min() >= 1.8, (errs, orders(errs))
    assert errs[-1] < 3e-3 and mono[-1] > 3 * errs[-1], (errs, mono)


def test_richardson_is_two_runs_of_the_monotone_scheme():
    """V = 2 V_{dt/2} - V_dt exactly, V_monotone = V_{dt/2}; the feedback is the fine run's at every
    stored time (float32), and both are in the stored group."""
    times = [0.0, 0.4, 1.0]
    res = solve(0.1, 0.2, 41, 31, output_times=times)
    model = lq.build(PARAMS)
    cell = cell_stage(model, Grid.from_box([-2.0, 2.0], 41), Grid.from_box([-YB, YB], 31))
    fine = value_function(model, cell, 0.1, T, 0.1, output_times=times)
    coarse = value_function(model, cell, 0.1, T, 0.2, output_times=times)
    np.testing.assert_array_equal(res.V_monotone, fine.V)
    np.testing.assert_allclose(res.V, 2 * fine.V - coarse.V, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(res.feedback_t, fine.feedback_t)
    assert res.feedback_t.dtype == np.float32 and res.feedback_t.shape == (3, 41, 31, 1)
    g = res.to_group()
    assert g.variables["V_monotone"].dims == ("t", "x", "y") and g.variables["feedback_t"].dims[0] == "t"
    assert "Richardson" in g.attrs["time_scheme"] and g.attrs["dt_fine"] == pytest.approx(0.1)
    assert g.attrs["richardson_change_max"] > 0


def test_richardson_uniform_in_eps():
    """285 x 81 nodes, dt = 0.1: max over eps in {1, 0.1, 0.03, 0.01, 0.003, 0.001} of the error <= 1.2 x the
    error of the eps -> 0 limit of the same scheme (per-y, extrapolated) (measured 0.999: eps = 1 2.30e-3,
    limit 2.32e-3)."""
    e0 = error(solve(0.0, 0.1, 285, 81))
    errs = [error(solve(eps, 0.1, 285, 81)) for eps in (1.0, 0.1, 0.03, 0.01, 0.003, 0.001)]
    assert max(errs) <= 1.2 * e0, (errs, e0)
    assert e0 < 3e-3


def test_eps_study_measures_the_exact_rate(tmp_path):
    """cases/lq.toml, 241 x 101 nodes, dt = 0.05, Richardson: the fitted max-norm rate over eps in
    [1e-3, 3e-2] is within 0.03 of the rate of the exact |V^eps - V| (Riccati) on the same window (measured
    0.961 against 0.965); the limit is the same scheme's (per-y, extrapolated) and every run is resolved."""
    res, exact_rate = lq_eps_study(str(tmp_path / "runs"))
    assert abs(res.fits[0]["max"][0] - exact_rate) <= 0.03, (res.table(), exact_rate)
    assert np.all(res.resolved) and any("same scheme" in n for n in res.notes)


@pytest.mark.slow
@pytest.mark.parametrize("eps", [1.0, 0.1, 0.01, 0.001, 0.0])
def test_richardson_accuracy_target(eps):
    """641 x 151 nodes, dt = 0.05 (V at dt and dt/2): error <= 1e-3 on |x|, |y| <= 1 for every eps and the
    limit (measured 7.3e-4, 7.0e-4, 7.4e-4, 7.4e-4, 7.5e-4; about 5 CPU-seconds per eps:
    python scripts/bench_value.py --accuracy)."""
    assert error(solve(eps, 0.05, 641, 151)) <= 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("eps, ny", [(0.1, 151), (0.001, 61)])
def test_richardson_order_three_levels(eps, ny):
    """(dt, nx) = (0.2, 101), (0.1, 285), (0.05, 801): orders >= 1.8 at both levels (measured 1.88, 1.88 at
    eps = 0.1; 1.84, 1.90 at eps = 0.001), error < 1e-3 at the finest."""
    errs = [error(solve(eps, dt, nx, ny)) for dt, nx in ((0.2, 101), (0.1, 285), (0.05, 801))]
    assert orders(errs).min() >= 1.8 and errs[-1] < 1e-3, (errs, orders(errs))


def test_richardson_plain_grid_min_with_noise():
    """A plain 1-D LQ problem with slow noise minimised over an 801-node control grid is first order (frozen
    control); extrapolated it is second order: (dt, nx) = (0.2, 121), (0.1, 341), (0.05, 961) on [-3, 3],
    measured 1.93e-2, 8.9e-3, 4.3e-3 (orders 1.1) against 4.5e-3, 1.1e-3, 2.9e-4 (orders 2.03, 1.91)."""
    from hjbsolve.sl import solve_hjb

    from .test_value_plain import lq_exact, lq_problem
    P, S = lq_exact()
    prob = lq_problem(nu=801)
    errs = {False: [], True: []}
    for dt, nx in ((0.2, 121), (0.1, 341), (0.05, 961)):
        g = Grid.from_box([-3, 3], nx)
        x = g.axes[0]
        for rich in (False, True):
            res = solve_hjb(prob, g, 1.0, dt, minimize="grid", richardson=rich)
            errs[rich].append(np.abs(res.V[-1] - (P * x * x / 2 + S))[np.abs(x) <= 1].max())
    assert orders(errs[False]).max() < 1.3 and orders(errs[True]).min() >= 1.8, errs
    assert errs[True][-1] < 0.1 * errs[False][-1]
