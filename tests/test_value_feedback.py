"""The value stage's feedback at every stored time drives the Monte Carlo paths (LQ family).

The cost of a feedback is at least the value; for the computed feedback it must agree with the PDE value
V^eps(T, x0, y0) within the Monte Carlo confidence interval plus the stated discretisation error of V
(|V - V_monotone|, the Richardson estimate) and the Euler bias of the paths.
"""

import numpy as np
import pytest

from hjbsolve.case import load_case
from hjbsolve.models import build_model
from hjbsolve.runner import run_values
from hjbsolve.simulate import MODE_STORED, prepare, simulate, stored_values

from .test_value_lq import PARAMS

#: the LQ family of tests/test_value_lq.py, Richardson, the limit of the same scheme, 11 uniform stored times
CASE = {"name": "lq_feedback", "family": "lq", "model": PARAMS,
        "grid": {"x": {"box": [-2.0, 2.0], "n": 201}, "y": {"box": [-3.0, 3.0], "n": 61}},
        "time": {"T": 1.0, "dt": 0.1},
        "run": {"eps": [0.1, 0.0], "richardson": True, "effective_scheme": "per_y",
                "output_times": [0.1 * i for i in range(11)]}}


@pytest.fixture(scope="module")
def stored():
    case = load_case(CASE)
    model = build_model(case)
    from hjbsolve.effective import cell_stage
    from hjbsolve.runner import fast_grid, slow_grid
    xg = slow_grid(case, model)
    cell = cell_stage(model, xg, fast_grid(case, model, xg))

    class R:                       # what stored_values reads of a loaded result file
        extra_groups = run_values(case, model, cell)
    return case, model, cell, stored_values(R)


def test_feedback_is_stored_at_every_output_time(stored):
    case, model, cell, values = stored
    for eps in (0.1, 0.0):
        v = values[eps]
        assert v.feedback_t.dtype == np.float32 and v.feedback_t.shape[0] == len(v.t_out) == 11
        assert v.feedback_t.shape[1:3] == (201, 61)
        # the feedback changes with the time remaining (the Riccati gain grows from g0 = 1)
        assert np.abs(v.feedback_t[-1] - v.feedback_t[1]).max() > 0.05


@pytest.mark.parametrize("eps", [0.1, 0.0])
def test_monte_carlo_cost_of_the_stored_feedback_matches_the_value(stored, eps):
    """x0 = 0.5, y0 = <y>_x0, 20000 paths, ds = 0.005: |E J - V| <= 1.96 se + |V - V_monotone| + 0.005
    (Euler bias of the paths, O(ds)), |V - V_monotone| at the node nearest to (x0, y0). Measured: eps = 0.1
    E J = 0.4895 ± 0.0046 (95 %), V = 0.4941, |V - V_monotone| = 1.5e-3; eps = 0: 0.4841 ± 0.0045, V = 0.4864."""
    case, model, cell, values = stored
    dyn = prepare(case, eps, model, cell, value=values[eps])
    assert dyn.value is values[eps]                            # nothing recomputed
    if eps > 0:
        assert dyn.mode == MODE_STORED and "stored" in dyn.source
    else:
        assert "stored by the effective value stage" in dyn.source
    sim = simulate(dyn, np.array([0.5]), n_paths=20000, ds=0.005, seed=3)
    J, se = sim.total_cost()
    v = values[eps]
    i = int(np.argmin(np.abs(np.linspace(-2.0, 2.0, 201) - 0.5)))
    node = (i, int(np.argmin(np.abs(np.linspace(-3.0, 3.0, 61) - sim.y0[0])))) if eps > 0 else (i,)
    disc = abs(float(v.V[-1][node] - v.V_monotone[-1][node]))      # the Richardson error estimate at x0
    assert sim.value_pde is not None and disc < 0.01
    print(f"eps = {eps}: E J = {J:.4f} ± {1.96 * se:.4f}, V = {sim.value_pde:.4f}, |V - V_monotone| = {disc:.1e}")
    assert abs(J - sim.value_pde) <= 1.96 * se + disc + 0.005, (J, se, sim.value_pde, disc)


@pytest.mark.slow
def test_learning_rate_case_cost_matches_the_value(tmp_path):
    """cases/esgd_double_well_learning_rate_1d.toml, eps = 0.1, 801 x 301 nodes, dt = 0.04 with Richardson,
    six stored times; 20000 paths from x0 = 1.8 with the bias-controlled fast resolution. Measured: cost
    -0.1568 ± 0.0008 against V = -0.1559 (V_monotone -0.1565). (On the case's 201 x-nodes the PDE value lies
    0.010 above: the O(dx^2/dt) interpolation term.)"""
    from hjbsolve.simulate import simulate_file
    from hjbsolve.store import read
    out = tmp_path / "lr.h5"
    from hjbsolve.cli import main
    assert main(["run", "-q", "hjbsolve/cases/esgd_double_well_learning_rate_1d.toml", "--set", "run.richardson=true",
                 "--set", "time.dt=0.04", "--set", "grid.x.n=801", "--set", "run.eps=[0.1]",
                 "--set", "run.output_times=[0.0,0.2,0.4,0.6,0.8,1.0]", "-o", str(out)]) == 0
    g = simulate_file(out, n_paths=20000, x0=[1.8], fast_resolution="auto", output=tmp_path / "sim.h5")
    s = g["simulation_eps_0.1"].attrs
    assert "stored by the V^eps value stage" in s["feedback_source"]
    v = read(out).groups["eps_0.1"]
    x, y = v.coords["x"].data, v.coords["y"].data
    node = (int(np.argmin(np.abs(x - 1.8))), int(np.argmin(np.abs(y - s["y0"][0]))))
    disc = abs(float(v.variables["V"].data[-1][node] - v.variables["V_monotone"].data[-1][node]))
    gap = abs(s["total_cost_mean"] - s["value_pde"])
    assert gap <= 1.96 * s["total_cost_se"] + disc + 0.002, (s["total_cost_mean"], s["value_pde"], disc)
