"""Value stage: truncated boxes, failures, warnings, stored results."""

import warnings

import numpy as np
import pytest

from hjbsolve import store
from hjbsolve.effective import cell_stage
from hjbsolve.errors import NumericalError
from hjbsolve.grid import Grid
from hjbsolve.models import lq
from hjbsolve.sl import ControlProblem, box_controls, solve_hjb
from hjbsolve.value import TimeStepWarning, YBoxWarning, value_function

PARAMS = dict(a11=0.5, a12=1.0, a21=1.0, a22=-2.0, b=1.0, sigma=0.3, tau=0.5, r=1.0, q=1.0, s=0.5, g0=1.0,
              u_box=[-10.0, 10.0])


def _cell(L, h=0.02, ny=61, ybox=None, params=PARAMS):
    model = lq.build(params)
    xg = Grid.from_box([-L, L], int(round(2 * L / h)) + 1)
    box = ybox if ybox is not None else model.y_box_hint(Grid.from_box([-4, 4], 9).flat_points())
    yg = Grid.from_box(box, ny)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model, cell_stage(model, xg, yg)


def _window(res, lo=-1.0, hi=1.0):
    x = res.xgrid.axes[0]
    sel = (x >= lo - 1e-12) & (x <= hi + 1e-12)
    return res.V[-1][sel] if res.V.ndim == 2 else res.V[-1][sel]


@pytest.mark.parametrize("extrapolation, tol", [("linear", 2e-4), ("clamp", 2e-3)])
def test_box_enlargement_effective(extrapolation, tol):
    """Box [-2, 2] -> [-4, 4] at the same spacing: the values on |x| <= 1 move by less than tol."""
    out = []
    for L in (2.0, 4.0):
        model, cell = _cell(L)
        out.append(_window(value_function(model, cell, 0.0, 1.0, 0.05, extrapolation=extrapolation)))
    assert np.abs(out[0] - out[1]).max() < tol


def test_box_enlargement_veps():
    """V^eps (eps = 0.05): x box [-2, 2] -> [-3, 3], same y box and spacings: window values move < 2e-4."""
    out = []
    for L in (2.0, 3.0):
        model, cell = _cell(L, h=0.04, ny=41)
        res = value_function(model, cell, 0.05, 1.0, 0.04)
        out.append(_window(res))
    assert np.abs(out[0] - out[1]).max() < 2e-4


def test_nan_detection_keeps_partial_results():
    """Strongly expanding drift with linear extrapolation: V grows geometrically until it overflows; the driver
    raises NumericalError naming the stage, eps and step, and keeps the finished outputs."""
    prob = ControlProblem(n=1, a=lambda x, u: 50.0 * x + 0 * u, l=lambda x, u: 0 * x[..., 0] + 0 * u[..., 0],
                          g=lambda x: x[..., 0] ** 2, controls=box_controls(0, 0, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NumericalError) as info:
            solve_hjb(prob, Grid.from_box([-3, 3], 61), T=30.0, dt=0.1, output_times=[0.0, 0.1, 30.0])
    msg = str(info.value)
    assert "eps = 0" in msg and "step" in msg and "plain" in msg
    part = info.value.partial
    assert part.V.shape[0] == 2 and np.all(np.isfinite(part.V))


def test_dt_warning_recommends_a_step():
    model, cell = _cell(3.0, h=0.0125, ny=41)
    with pytest.warns(TimeStepWarning, match="recommended dt"):
        value_function(model, cell, 0.0, 1.0, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TimeStepWarning)
        value_function(model, cell, 0.0, 1.0, 0.05)


def test_y_box_warning_names_the_side():
    p = dict(PARAMS, a21=2.0)         # mu_x = N(x, 0.125): at x = -2 the box [-3, 5] cuts 2e-3 on the low side
    model = lq.build(p)
    xg = Grid.from_box([-2.0, 2.0], 41)
    with pytest.warns(YBoxWarning, match="cell stage.*low side") as rec:
        cell = cell_stage(model, xg, Grid.from_box([-3.0, 5.0], 81))
    assert not any("high side" in str(w.message) for w in rec)
    # the value stage checks the laws it computes on its own y grid (the cell's were checked already)
    with pytest.warns(YBoxWarning, match="value stage.*low side"):
        value_function(model, cell, 0.1, 0.2, 0.1, ygrid=Grid.from_box([-3.0, 5.0], 41))


def test_y_box_that_does_not_hold_the_law_is_refused():
    p = dict(PARAMS, a21=2.0)         # at x = -2 the law is centred at -2, outside the box [-1, 3]
    with pytest.raises(NumericalError, match="not confined by the y box.*low side"):
        _cell(2.0, h=0.1, ny=41, ybox=[-1.0, 3.0], params=p)


def test_to_group_round_trip(tmp_path):
    model, cell = _cell(2.0, h=0.1, ny=21)
    res = value_function(model, cell, 0.1, 0.5, 0.05)
    grp = res.to_group()
    assert grp.variables["V"].dims == ("t", "x", "y")
    assert grp.variables["feedback"].dims == ("x", "y", "control")
    for key in ("scheme", "order_time", "dt", "splitting", "extrapolation", "eps"):
        assert key in grp.attrs
    path = tmp_path / "v.h5"
    store.write(path, store.Group(groups={"eps_0.1": grp}))
    back = store.read(path).groups["eps_0.1"]
    assert np.allclose(back.variables["V"].data, res.V)
    assert np.allclose(back.coords["t"].data, res.t_out)
    r0 = value_function(model, cell, 0.0, 0.5, 0.05, blind=True)
    g0 = r0.to_group()
    assert g0.variables["V"].dims == ("t", "x")
    assert g0.variables["feedback"].dims == ("x", "y", "control")
    assert g0.variables["V_blind"].dims == ("t", "x")
    store.write(tmp_path / "v0.h5", g0)


def test_output_times_and_timings():
    model, cell = _cell(2.0, h=0.1, ny=21)
    res = value_function(model, cell, 0.0, 1.0, 0.1, output_times=[0.0, 0.33, 1.0])
    assert np.allclose(res.t_out, [0.0, 0.3, 1.0])
    assert res.V.shape == (3, 41)
    assert np.allclose(res.V[0], cell.gbar)
    assert "averaged_steps" in res.timings and "total" in res.timings


def test_suggest_slow_box():
    from hjbsolve.sl.build import suggest_slow_box
    model = lq.build(dict(PARAMS, u_box=[-1.0, 1.0]))
    box = suggest_slow_box(model, [-1, 1], 0.5)
    # drift on the window (y = 0): 0.5 |x| + |u| <= 1.5 -> margin 0.75 + 4 sqrt(1) 0.3 = 1.95
    assert np.allclose(box, [[-2.95, 2.95]])
    assert np.allclose(suggest_slow_box(model, [-1, 1], 100.0), [[-4.0, 4.0]])   # capped


def test_control_grid_warning_compares_with_the_scheme_error():
    """The control grid's error estimate T c du^2/8 is stated, and warned about only above both 1e-3 and the
    scheme's own (interpolation) error estimate; the text names the grid.u.n that would bring it below."""
    import warnings as w

    from hjbsolve.models import lq as lqm
    from hjbsolve.value import ControlGridWarning, _control_grid_check
    model = lqm.build(dict(a11=0.5, a12=1.0, a21=1.0, a22=-2.0, b=1.0, sigma=0.3, tau=0.5, r=1.0, q=1.0, s=0.5,
                           g0=1.0, u_box=[-10.0, 10.0]))
    coarse, fine = np.linspace(-10, 10, 11)[:, None], np.linspace(-10, 10, 2001)[:, None]
    with pytest.warns(ControlGridWarning, match=r"T c du\^2/8 = 0.5.*set grid.u.n >= 225"):
        text = _control_grid_check(model, coarse, 1.0, "test", scheme_err=0.0)
    assert "spacing 2" in text and "0.5" in text
    with w.catch_warnings():
        w.simplefilter("error", ControlGridWarning)
        _control_grid_check(model, coarse, 1.0, "test", scheme_err=1.0)     # the scheme's error is larger
        _control_grid_check(model, fine, 1.0, "test", scheme_err=0.0)       # 1.25e-5 < 1e-3
