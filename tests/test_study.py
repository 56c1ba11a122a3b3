"""Convergence studies: planning, errors against exact / limit / finest references, fitted orders,
executors (in-process, dask LocalCluster), resume, and the bad inputs."""

import time

import numpy as np
import pytest

from hjbsolve.case import load_case
from hjbsolve.cli import main
from hjbsolve.errors import HJBError
from hjbsolve.exact import lq_value
from hjbsolve.study import (RESOLVED_RATIO, _final_value, analyse, connect, execute, fit_order, parse_vary, plan,
                            run_study)

LQ = """
name = "lq_small"
family = "lq"
[model]
a11 = 0.0
a12 = 1.0
a21 = 1.0
a22 = -1.0
b = 1.0
tau = 0.5
r = 1.0
q = 1.0
s = 0.5
g0 = 1.0
u_box = [-10.0, 10.0]
[grid]
x = { box = [-3.0, 3.0], n = 41 }
y = { box = [-6.0, 6.0], n = 49 }
[time]
T = 0.5
dt = 0.05
[run]
eps = [0.0]
output_times = [0.5]
"""


@pytest.fixture
def case(tmp_path):
    p = tmp_path / "lq.toml"
    p.write_text(LQ)
    return load_case(p)


def test_fit_order_on_an_exact_power_law():
    h = np.array([0.4, 0.2, 0.1, 0.05])
    k, spread = fit_order(h, 3.0 * h**1.5)
    assert abs(k - 1.5) < 1e-12 and spread < 1e-10
    k, spread = fit_order(h, 3.0 * h**2 * np.array([1.0, 1.1, 0.9, 1.05]))
    assert abs(k - 2.0) < 0.2 and spread > 0


def test_vary_errors_list_the_keys(case):
    with pytest.raises(HJBError, match=r"model\.gama.*did you mean 'model\.gamma'|no such key.*keys that can vary"):
        parse_vary(["model.gama=1,2"], case.as_dict())
    with pytest.raises(HJBError) as e:
        parse_vary(["bogus=1,2"], case.as_dict())
    assert "keys that can vary" in str(e.value) and "eps" in str(e.value) and "model.a12" in str(e.value)


def test_eps_study_errors_are_v_eps_minus_v_on_the_window(case, tmp_path):
    """|V^eps - V| from the study equals the same quantity recomputed from the run files; the
    discretisation error column is that of the difference, |(V^eps_h - V_h) - (V^eps - V)|, from the Riccati
    solutions; the limit V_h is the per-y scheme (the eps -> 0 limit of the V^eps scheme)."""
    res = run_study(case, ["eps=0.1,0.01"], str(tmp_path / "runs"))
    assert res.reference == "limit" and res.parameter == "eps"
    Vl, xa, _, T = _final_value(str(tmp_path / "runs" / "run_000_eps=0.1_limit.h5"), 0.0)
    for i, r in enumerate(res.runs):
        V, xa, ya, T = _final_value(r.path, r.eps)
        mx = (xa[0] >= -1) & (xa[0] <= 1)
        my = (ya[0] >= -1) & (ya[0] <= 1)
        diff = (V - Vl[:, None])[np.ix_(mx, my)]
        assert res.err_max[i] == pytest.approx(np.abs(diff).max(), rel=1e-12)
        ex = lq_value(case.model, r.eps, T, xa[0], ya[0]) - lq_value(case.model, 0.0, T, xa[0])[:, None]
        assert res.disc_max[i] == pytest.approx(np.abs((V - Vl[:, None] - ex)[np.ix_(mx, my)]).max(), rel=1e-12)
    # V^eps -> V: the eps-error decreases with eps
    assert res.err_max[1] < res.err_max[0]
    assert "fitted order" in res.table()


def test_eps_study_fits_only_resolved_runs(case, tmp_path, monkeypatch):
    """An eps-error within RESOLVED_RATIO x the discretisation error of the difference does not measure the
    eps-rate: such runs are marked and left out of the fitted order, and the table says which. With the limit
    from the same scheme this coarse grid resolves every eps (|V^eps_h - V_h| is 15-20x the error of the
    difference); a stricter ratio between the observed ones exercises the rule on the same runs."""
    import hjbsolve.study as study
    vary = [("eps", [0.3, 0.1, 0.01, 0.001])]
    res = run_study(case, ["eps=0.3,0.1,0.01,0.001"], str(tmp_path / "runs"))
    ratio = res.err_max / res.disc_max
    assert np.all(ratio > RESOLVED_RATIO) and np.all(res.resolved), ratio
    for strict in (np.sort(ratio)[1:3].mean(), np.sort(ratio)[0:2].mean()):  # two resolved runs left, then three
        monkeypatch.setattr(study, "RESOLVED_RATIO", float(strict))
        res = analyse(case, res.runs, vary, {"x": [-1.0, 1.0], "y": [-1.0, 1.0]})
        expect = res.err_max > strict * res.disc_max
        np.testing.assert_array_equal(res.resolved, expect)
        use = np.flatnonzero(expect)
        assert res.fits[0]["max"][0] == pytest.approx(fit_order(res.param[use], res.err_max[use])[0])
        assert "left out of the fit" in res.table() and "(not resolved)" in res.table()


def test_grid_study_against_exact_converges(case, tmp_path):
    """eps = 0, refinement of x, y and dt together (dt ∝ dx), against the Riccati solution. The SL error
    is O(dt^2 + dx^2/dt), first order when dt ∝ dx: measured 0.87 then 0.98 pairwise, fit 0.93."""
    res = run_study(case, ["grid=1,2,4"], str(tmp_path / "g"))
    assert res.reference == "exact" and res.parameter == "dx"
    assert np.all(np.diff(res.err_max) < 0)
    k, spread = res.fits[0]["max"]
    assert k >= 0.85 and res.pairwise(res.err_max)[-1] >= 0.9, res.table()
    assert res.err_max[-1] < 8e-3


def test_finest_reference_interpolates_and_says_so(case, tmp_path):
    res = run_study(case, ["grid=1,2"], str(tmp_path / "f"), reference="finest")
    assert res.err_max[-1] == 0.0 and res.err_max[0] > 0
    assert any("interpolated" in n for n in res.notes)


def test_finest_reference_fits_successive_differences(case, tmp_path):
    """Against the finest run the errors steepen (e_i = C h^k (1 - (h_f/h_i)^k)); the fit uses the differences
    of successive runs instead, and agrees with the fit against the exact solution."""
    fin = run_study(case, ["grid=1,2,4"], str(tmp_path / "f"), reference="finest")
    ex = run_study(case, ["grid=1,2,4"], str(tmp_path / "e"), reference="exact")
    d = fin.succ_max[:, 0]
    assert np.isnan(d[-1]) and np.all(d[:-1] > 0)
    k_fin, k_ex = fin.fits[0]["max"][0], ex.fits[0]["max"][0]
    naive = fit_order(fin.param[:2], fin.err_max[:2])[0]
    assert abs(k_fin - k_ex) < 0.25 < abs(naive - k_ex), (k_fin, k_ex, naive)
    assert "succ_diff_max" in fin.table()


def test_dask_local_cluster_matches_local_and_resume_skips(case, tmp_path):
    import distributed          # a test dependency: the dask path must run in CI, not be skipped
    vary = parse_vary(["eps=0.1,0.0"], case.as_dict())
    local = plan(case, vary, str(tmp_path / "local"))
    execute(local)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as lc:
        with distributed.Client(lc) as client:
            remote = plan(case, vary, str(tmp_path / "dask"))
            execute(remote, scheduler=client)
    w = {"x": [-1.0, 1.0], "y": [-1.0, 1.0]}
    a, b = analyse(case, local, vary, w), analyse(case, remote, vary, w)
    assert np.array_equal(a.err_max, b.err_max) and np.array_equal(a.err_l2, b.err_l2)
    for r1, r2 in zip(local, remote):
        assert np.array_equal(_final_value(r1.path, r1.eps)[0], _final_value(r2.path, r2.eps)[0])
    before = [p.stat().st_mtime_ns for p in map(lambda r: __import__("pathlib").Path(r.path), local)]
    execute(local, resume=True)
    after = [p.stat().st_mtime_ns for p in map(lambda r: __import__("pathlib").Path(r.path), local)]
    assert before == after


def test_unreachable_scheduler_fails_fast():
    t0 = time.perf_counter()
    with pytest.raises(HJBError, match="cannot reach the dask scheduler"):
        connect("tcp://127.0.0.1:9", timeout=2.0)
    assert time.perf_counter() - t0 < 10


def test_study_cli(tmp_path, capsys):
    case = tmp_path / "lq.toml"
    case.write_text(LQ + '\n[study]\nvary = { eps = [0.1, 0.01] }\n')
    out = tmp_path / "s.h5"
    assert main(["study", str(case), "-o", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert "err_max" in text and "fitted order" in text
    assert out.exists() and (tmp_path / "s.csv").exists()
    assert main(["study", str(case), "--vary", "model.nope=1,2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "keys that can vary" in err[0]


def test_law_study_cli(tmp_path, capsys):
    """hjbsolve study --law: E phi(X^eps_T) - E phi(Xbar_T) shrinks as eps -> 0, beyond its Monte Carlo CI."""
    from hjbsolve import store
    out = tmp_path / "law.h5"
    case = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "cases" / "esgd_double_well_1d.toml")
    code = main(["study", case, "--law", "--vary", "eps=0.3,0.03", "--paths", "3000", "--x0", "0.4",
                 "-o", str(out), "-q"])
    assert code == 0
    text = capsys.readouterr().out
    assert "fitted rate for phi = x" in text
    g = store.read(out)
    eps, diff, se = (g.variables[k].data for k in ("eps", "diff", "se_diff"))
    phi = g.attrs["phi"]
    x = [i for i, p in enumerate(phi) if p == "x"]
    big, small = (x[0], x[1]) if eps[x[0]] > eps[x[1]] else (x[1], x[0])
    assert abs(diff[big]) - abs(diff[small]) > 4 * np.hypot(se[big], se[small])
    assert main(["study", case, "--law", "--vary", "grid=1,2"]) == 2
