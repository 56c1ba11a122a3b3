"""Monte Carlo of the two-scale system (hjbsolve.simulate): exact moments of the linear Entropy-SGD system,
the cost of the computed feedback against V^eps (LQ), reproducibility, convergence in law, stored layout.

Monte Carlo checks use 4 standard errors; each also asserts that the confidence interval is narrow enough
for the check to mean something (a relative width, or a known error that it detects)."""

import math
import tomllib
from pathlib import Path

import numba
import numpy as np
import pytest

from hjbsolve import simulate as S
from hjbsolve import store
from hjbsolve.case import load_case
from hjbsolve.exact import lq_value

CASES = Path(__file__).resolve().parent.parent / "hjbsolve" / "cases"

LQ = dict(a11=0.5, a12=1.0, a21=1.0, a22=-2.0, b=1.0, sigma=0.3, tau=0.5, r=1.0, q=1.0, s=0.5, g0=1.0,
          u_box=[-10.0, 10.0])


def lq_case(nx=481, ny=101, dt=0.02, eps=(0.1, 0.0)):
    return load_case({"name": "lq_sim", "family": "lq", "model": dict(LQ),
                      "grid": {"x": {"box": [-3.0, 3.0], "n": nx}, "y": {"n": ny}},
                      "time": {"T": 1.0, "dt": dt}, "run": {"eps": list(eps)}})


def esgd_case(loss="quadratic", gamma=1.0, beta=2.0, eps=(0.1,), T=1.0, **extra):
    model = {"loss": loss, "gamma": gamma, "beta": beta, "terminal": "zero", **extra}
    return load_case({"name": "esgd_sim", "family": "entropy_sgd", "model": model,
                      "grid": {"x": {"box": [-3.0, 3.0], "n": 61}, "y": {"n": 121}},
                      "time": {"T": T, "dt": 0.01}, "run": {"eps": list(eps)}})


# ------------------------------------------------------------------------------------------------------------


def test_normal_deviates():
    z = S.normal_samples(7, 200, 1000).ravel()
    n = z.size
    assert abs(z.mean()) < 4 / math.sqrt(n)
    assert abs(z.var() - 1) < 4 * math.sqrt(2 / n)
    assert abs(np.mean(z**4) - 3) < 4 * math.sqrt(96 / n)
    assert abs(np.mean(np.abs(z) > 3.0) - 0.0026998) < 4 * math.sqrt(0.0027 / n)   # the ziggurat tail
    assert np.array_equal(z, S.normal_samples(7, 200, 1000).ravel())
    assert not np.array_equal(z[:1000], S.normal_samples(8, 1, 1000).ravel())


def test_linear_system_mean_and_covariance():
    """Chaudhari's system on f = a y^2/2: (X, Y) is Gaussian, m' = A m, C' = AC + CA^T + 2D (docs/mathematics.md §1)."""
    a, gamma, beta, eps = 1.0, 1.0, 2.0, 0.1
    case = esgd_case(quadratic_a=a, gamma=gamma, beta=beta)
    dyn = S.prepare(case, eps)
    x0, y0 = 1.5, -0.5
    N = 10000
    # lambda ds / eps = 20 * 2.5e-4 = 0.005: the Euler bias of the fast variance is 0.25 %, below 1/4 of a se
    sim = S.simulate(dyn, [x0], [y0], n_paths=N, ds=2.5e-4, seed=11, n_record=11)
    A, Dm = S.entropy_sgd_linear(a, gamma, beta, eps)
    m, C = S.linear_moments(A, Dm, [x0, y0], np.zeros((2, 2)), sim.s)
    Z = np.concatenate([sim.X, sim.Y], axis=2)                     # (N, R, 2)
    for r in (1, 3, 10):                                           # s = 0.1, 0.3, 1
        mean = Z[:, r].mean(axis=0)
        cov = np.cov(Z[:, r].T)
        se_m = np.sqrt(np.diag(C[r]) / N)
        se_c = np.sqrt((np.outer(np.diag(C[r]), np.diag(C[r])) + C[r] ** 2) / N)
        assert np.all(np.abs(mean - m[r]) < 4 * se_m), (sim.s[r], mean, m[r], se_m)
        assert np.all(np.abs(cov - C[r]) < 4 * se_c), (sim.s[r], cov, C[r], se_c)
        # a real check: the interval is a few per cent of every variance
        assert np.all(4 * np.diag(se_c) < 0.06 * np.diag(C[r]))
    # ... and it has the power to see the Euler bias at ds = eps/10: the chain's fast variance is too large by
    # the factor 1/(1 - lambda ds/(2 eps)) (lambda ds/eps = 0.2 here: about +10 %)
    with pytest.warns(S.FastStepWarning, match="biased"):
        coarse = S.simulate(dyn, [x0], [y0], n_paths=N, ds=1.0, seed=12, n_record=11)
    assert coarse.ds == pytest.approx(eps / 10)
    vy = coarse.Y[:, -1, 0].var(ddof=1)
    assert vy - C[-1][1, 1] > 4 * math.sqrt(2 / N) * C[-1][1, 1]


def test_value_by_monte_carlo_matches_pde_lq():
    """Cost of the value stage's feedback, by simulation, against V^eps(T, x0, y0) of the PDE solver and the
    Riccati V^eps (eps = 0.1), and the effective system against V(T, x0) (eps = 0)."""
    case = lq_case()
    x0, y0 = 1.0, 0.5
    for eps in (0.1, 0.0):
        dyn = S.prepare(case, eps)
        sim = S.simulate(dyn, [x0], [y0] if eps else None, n_paths=10000, seed=5)
        J, se = sim.total_cost()
        exact = float(np.ravel(lq_value(case.model, eps, 1.0, np.array([x0]), np.array([y0])))[0])
        assert abs(J - sim.value_pde) < 4 * se, (eps, J, se, sim.value_pde)
        assert abs(J - exact) < 4 * se, (eps, J, se, exact)
        assert 4 * se < 0.025 * exact                              # narrow: 2.5 % of the value
        # the check discriminates: u = 0 (the reference control) costs far more
        ref = S.simulate(S.prepare(case, eps, feedback="reference"), [x0], [y0] if eps else None,
                         n_paths=2000, seed=6)
        Jr, ser = ref.total_cost()
        assert Jr - J > 10 * (se + ser)


@pytest.mark.filterwarnings("ignore::hjbsolve.simulate.FastStepWarning")
def test_reproducible_and_independent_of_threads():
    case = lq_case(nx=61, ny=41, dt=0.05)
    dyn = S.prepare(case, 0.05)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = S.simulate(dyn, [0.5], [0.0], n_paths=300, seed=42, n_keep=5)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        b = S.simulate(dyn, [0.5], [0.0], n_paths=300, seed=42, n_keep=5)
    finally:
        numba.set_num_threads(before)
    for f in ("X", "Y", "C", "G", "U"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    c = S.simulate(dyn, [0.5], [0.0], n_paths=300, seed=43, n_keep=5)
    assert not np.array_equal(a.X, c.X)
    # a path does not depend on how many others are simulated with it
    d = S.simulate(dyn, [0.5], [0.0], n_paths=40, seed=42)
    assert np.array_equal(d.X, a.X[:40])


def test_convergence_in_law_trend():
    """Double well (uncontrolled), from x0 = y0 = 1.5: E phi(X^eps_T) -> E phi(Xbar_T) at T = 0.5; the gap at
    eps = 0.01 is smaller than at eps = 0.3 by more than the confidence interval, for phi = x, x^2, tanh(x)
    (measured: 0.027, 0.074, 0.0059 at eps = 0.3 against 0.001, 0.002, 0.0002, with 4 se of 0.005, 0.012,
    0.0013)."""
    case = esgd_case(loss="double_well", gamma=0.5, beta=4.0, eps=(0.3, 0.01), T=0.5)
    # 100 steps per unit eps: the Euler chain's fast law is then close enough to mu_x (fast rate ~ 4)
    rows = S.convergence_in_law(case, [0.3, 0.01], x0=[1.5], y0=[1.5], n_paths=4000, seed=3, fast_resolution=100)
    text = S.format_table(rows)
    assert "tanh(x)" in text
    by = {(r["phi"], r["eps"]): r for r in rows}
    for phi in ("x", "x^2", "tanh(x)"):
        big, small = by[(phi, 0.3)], by[(phi, 0.01)]
        assert abs(big["diff"]) - abs(small["diff"]) > 4 * math.hypot(big["se_diff"], small["se_diff"]), (phi, text)
        assert abs(small["diff"]) < 4 * small["se_diff"] + 0.015, (phi, text)   # O(eps) + MC


def test_stored_group_layout(tmp_path):
    from hjbsolve.runner import run
    case = lq_case(nx=41, ny=31, dt=0.05, eps=(0.1, 0.0))
    path = tmp_path / "lq.h5"
    run(case).save(path)
    groups = S.simulate_file(path, n_paths=400, seed=1, x0=[0.5], y0=[0.0], n_keep=7)
    assert set(groups) == {"simulation_eps_0.1", "simulation_eps_0"}
    root = store.read(path)
    assert {"eps_0.1", "eps_0", "simulation_eps_0.1", "simulation_eps_0"} <= set(root.groups)
    g = root.groups["simulation_eps_0.1"]
    R = len(g.coords["s"].data)
    assert g.coords["s"].data[0] == 0.0 and g.coords["s"].data[-1] == pytest.approx(1.0)
    v = g.variables
    assert v["X_paths"].dims == ("path", "s", "slow") and v["X_paths"].data.shape == (7, R, 1)
    assert v["Y_paths"].dims == ("path", "s", "fast") and v["U_paths"].dims == ("path", "s", "control")
    assert v["X_mean"].dims == ("s", "slow") and v["X_cov"].dims == ("s", "slow", "slow_")
    assert v["X_quantiles"].dims == ("quantile", "s", "slow")
    assert v["running_cost_mean"].dims == ("s",) and v["running_cost_se"].dims == ("s",)
    a = g.attrs
    for key in ("eps", "ds", "N", "seed", "feedback_source", "total_cost_mean", "total_cost_se",
                "total_cost_ci95_lo", "total_cost_ci95_hi", "value_pde", "x0", "y0"):
        assert key in a, key
    assert a["N"] == 400 and a["eps"] == 0.1 and a["ds"] <= 0.01 + 1e-15
    assert a["total_cost_ci95_lo"] < a["total_cost_mean"] < a["total_cost_ci95_hi"]
    e = root.groups["simulation_eps_0"]
    assert "Y_paths" not in e.variables and e.attrs["eps"] == 0.0
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    with xr.open_dataset(path, engine="h5netcdf", group="simulation_eps_0.1") as ds:
        assert ds["X_mean"].dims == ("s", "slow")


def test_esgd_case_library_loads():
    files = sorted(CASES.glob("esgd_*.toml"))
    assert len(files) >= 6
    for f in files:
        text = f.read_text()
        assert text.startswith("#"), f"{f.name}: no comment header"
        case = load_case(f)
        assert case.family == "entropy_sgd"
        assert tomllib.loads(text)["name"] == case.name


def test_grid_argmax_matches_closed_form_feedback():
    """The argmax over the control grid (u.exact = false) and the closed-form affine feedback give the same cost
    (the latter: the value stage's own minimiser u*(t, x, y), stored at every step of the dense value)."""
    costs = {}
    for exact in (True, False):
        case = load_case({"name": "lq_grid", "family": "lq", "model": dict(LQ, u_box=[-4.0, 4.0]),
                          "grid": {"x": {"box": [-3.0, 3.0], "n": 121}, "y": {"n": 61}, "u": {"n": 81, "exact": exact}},
                          "time": {"T": 1.0, "dt": 0.05}, "run": {"eps": [0.1]}})
        dyn = S.prepare(case, 0.1)
        assert dyn.mode == (S.MODE_STORED if exact else S.MODE_GRID)
        sim = S.simulate(dyn, [1.0], [0.5], n_paths=2000, seed=9)
        costs[exact] = sim.total_cost()
        assert sim.U.shape[2] == 1 and np.all(np.abs(sim.U) <= 4.0)
    (ja, sa), (jg, _) = costs[True], costs[False]
    # same seed, so nearly the same paths: the difference is the control grid's (and the value stage's minimisation)
    assert abs(ja - jg) < 0.01 * ja, (ja, jg)
    assert 4 * sa < 0.1 * ja


def test_simulate_case_file_uncontrolled(tmp_path):
    """A case file (.toml) is simulated directly; uncontrolled, no value function is needed."""
    src = tmp_path / "q.toml"
    src.write_text('name = "q"\nfamily = "entropy_sgd"\n[model]\nloss = "quadratic"\ngamma = 1.0\nbeta = 2.0\n'
                   '[grid]\nx = { box = [-2.0, 2.0], n = 21 }\ny = { n = 41 }\n[time]\nT = 0.5\n[run]\neps = [0.1, 0.0]\n')
    out = tmp_path / "sim.h5"
    groups = S.simulate_file(src, n_paths=200, output=out, x0=[1.0])
    assert set(groups) == {"simulation_eps_0.1", "simulation_eps_0"}
    g = store.read(out).groups["simulation_eps_0"]
    # uncontrolled effective system: Xbar' = -a Xbar / (1 + a gamma) (a = 1, gamma = 1), deterministic
    s = g.coords["s"].data
    assert np.allclose(g.variables["X_mean"].data[:, 0], np.exp(-s / 2), atol=2e-3)
    assert g.attrs["feedback_source"].startswith("uncontrolled")


@pytest.mark.parametrize("exact", [True, False])
def test_effective_tables_do_not_depend_on_the_chunking(monkeypatch, exact):
    """The effective system's tables are built over chunks of x nodes (bounded memory): one node per chunk
    gives the same tables as one chunk."""
    case = load_case({"name": "lq_chunks", "family": "lq", "model": dict(LQ, u_box=[-4.0, 4.0]),
                      "grid": {"x": {"box": [-3.0, 3.0], "n": 31}, "y": {"n": 21}, "u": {"n": 9, "exact": exact}},
                      "time": {"T": 0.5, "dt": 0.05}, "run": {"eps": [0.0]}})
    whole = S.prepare(case, 0.0).dyn
    monkeypatch.setattr(S, "CHUNK_ENTRIES", 1)
    np.testing.assert_array_equal(S.prepare(case, 0.0).dyn, whole)
