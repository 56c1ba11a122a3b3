"""Case files, the CLI and the HDF5 file: bad input gives one line and exit code 2; results read back."""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import hjbsolve
from hjbsolve.cli import default_case_path, main

SMALL = """
name = "small"
family = "entropy_sgd"
[model]
loss = "quadratic"
gamma = 0.5
beta = 4.0
control = "steering"
u_box = [-1.0, 1.0]
[grid]
x = { box = [-2.0, 2.0], n = 21 }
y = { n = 101 }
p = { box = [-2.0, 2.0], n = 9 }
u = { n = 5 }
[time]
T = 1.0
dt = 0.1
[run]
eps = [0.0]
"""

EXPR = """
name = "ou"
family = "expr"
[model]
n = 1
m = 1
params = { theta = 2.0, s = 0.5 }
a = "-(x - y) + u"
b = "-theta*(y - x)"
tau = "s"
l = "0.5*u**2"
g = "x**2"
u_box = [-1.0, 1.0]
[grid]
x = { box = [-1.0, 1.0], n = 11 }
y = { box = [-4.0, 4.0], n = 81 }
p = { box = [-1.0, 1.0], n = 5 }
"""


def write(tmp_path, text, name="case.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def run_cli(args, capsys):
    code = main(list(map(str, args)))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1, err
    assert lines[0].startswith("hjbsolve: error: ")
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


# --------------------------------------------------------------------------------- bad input
BAD = [
    # (replace this, by that, expected fragments of the message)
    ('gamma = 0.5', 'gamma = -0.5', ["model.gamma", "must be > 0"]),
    ('beta = 4.0', 'beta = 0', ["model.beta", "must be > 0"]),
    ('eps = [0.0]', 'eps = [0.1, -0.01]', ["run.eps", ">= 0"]),
    ('n = 21', 'n = 2', ["grid.x.n", ">= 3"]),
    ('T = 1.0', 'T = 0.0', ["time.T", "> 0"]),
    ('box = [-2.0, 2.0], n = 21', 'box = [2.0, -2.0], n = 21', ["grid.x.box", "lo >= hi"]),
    ('gamma = 0.5', 'gama = 0.5', ["model.gama", "unknown key", "did you mean 'gamma'"]),
    ('gamma = 0.5', 'gamma = "big"', ["model.gamma", "expected a number"]),
    ('loss = "quadratic"', 'loss = "quadratik"', ["model.loss", "not one of", "did you mean 'quadratic'"]),
    ('family = "entropy_sgd"', 'family = "entropy"', ["family", "entropy_sgd, lq, expr"]),
    ('dt = 0.1', 'dt = 0.1\nsteps = 3', ["time.steps", "unknown key"]),
    ('name = "small"', 'description = "x"', ["name", "missing required key"]),
    ('control = "steering"', 'control = 3', ["model.control", "expected a string"]),
    ('u = { n = 5 }', 'u = { n = 5 }\nP = { values = [[[1.0, 2.0], [2.0, 1.0]]] }', ["grid.P.values[0]", "1x1 matrix"]),
    ('u = { n = 5 }', 'u = { n = 5 }\nP = { values = ["big"] }', ["grid.P.values[0]", "expected a number"]),
]


@pytest.mark.parametrize("old,new,needles", BAD)
def test_bad_case_values(tmp_path, capsys, old, new, needles):
    assert old in SMALL
    case = write(tmp_path, SMALL.replace(old, new))
    out = tmp_path / "out.h5"
    code, _, err = run_cli(["run", case, "-o", out], capsys)
    assert_one_line_error(code, err, str(case), *needles)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [case]            # no partial or temporary file


def test_missing_case_file(tmp_path, capsys):
    code, _, err = run_cli(["run", tmp_path / "nope.toml"], capsys)
    assert_one_line_error(code, err, "nope.toml", "not found")


def test_toml_syntax_error_names_the_line(tmp_path, capsys):
    case = write(tmp_path, SMALL.replace("beta = 4.0", "beta = = 4.0"))
    code, _, err = run_cli(["check", case], capsys)
    assert_one_line_error(code, err, "TOML syntax error", "line 7")


BAD_FORMULAS = [
    ('a = "-(x - y) + u"', 'a = "x.real + u"', ["model.a", "x.real"]),
    ('a = "-(x - y) + u"', 'a = "__import__(1)"', ["model.a", "__import__"]),
    ('b = "-theta*(y - x)"', 'b = "-thet*(y - x)"', ["model.b", "thet"]),
    ('l = "0.5*u**2"', 'l = "0.5*u**"', ["model.l", "syntax"]),
    ('g = "x**2"', 'g = "x**2 + u"', ["model.g", "u"]),
    ('a = "-(x - y) + u"', 'a = "[x for x in y]"', ["model.a"]),
    ('a = "-(x - y) + u"', "a = \"'abc'\"", ["model.a", "abc"]),
    ('a = "-(x - y) + u"', 'a = "lambda: 1"', ["model.a", "lambda"]),
]


@pytest.mark.parametrize("old,new,needles", BAD_FORMULAS)
def test_bad_formulas(tmp_path, capsys, old, new, needles):
    assert old in EXPR
    case = write(tmp_path, EXPR.replace(old, new))
    code, _, err = run_cli(["check", case], capsys)
    assert_one_line_error(code, err, *needles)


def test_formula_nan_on_the_grid_names_coefficient_and_point(tmp_path, capsys):
    case = write(tmp_path, EXPR.replace('g = "x**2"', 'g = "log(x)"'))
    out = tmp_path / "out.h5"
    code, _, err = run_cli(["run", case, "-o", out], capsys)
    assert_one_line_error(code, err, "coefficient g", "nan", "x = [-1.0]")
    assert not out.exists()


def test_unwritable_output(tmp_path, capsys):
    case = write(tmp_path, SMALL)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = run_cli(["run", case, "-o", blocker / "out.h5"], capsys)
    assert_one_line_error(code, err, "cannot write", "out.h5")


def test_failed_run_keeps_existing_result(tmp_path, capsys):
    good = write(tmp_path, SMALL)
    out = tmp_path / "res.h5"
    assert run_cli(["run", good, "-o", out, "-q"], capsys)[0] == 0
    before = out.read_bytes()
    bad = write(tmp_path, EXPR.replace('g = "x**2"', 'g = "1/(x - x)"'), "bad.toml")
    code, _, err = run_cli(["run", bad, "-o", out], capsys)
    assert code == 2
    assert out.read_bytes() == before


def test_set_override_and_bad_override(tmp_path, capsys):
    case = write(tmp_path, SMALL)
    code, out, _ = run_cli(["check", case, "--set", "model.gamma=0.25", "--set", "grid.y.n=51"], capsys)
    assert code == 0 and "/51" in out
    code, _, err = run_cli(["check", case, "--set", "model.gamma=-1"], capsys)
    assert_one_line_error(code, err, "model.gamma", "> 0")
    code, _, err = run_cli(["check", case, "--set", "model.gama=1"], capsys)
    assert_one_line_error(code, err, "did you mean 'gamma'")


# --------------------------------------------------------------------------------- runs and files
def test_run_writes_self_describing_file(tmp_path, capsys):
    case = write(tmp_path, SMALL)
    out = tmp_path / "r.h5"
    code, stdout, _ = run_cli(["run", case, "-o", out], capsys)
    assert code == 0 and "wrote" in stdout
    with h5py.File(out) as f:
        for name in ("x", "y", "p"):
            assert h5py.h5ds.is_scale(f[name].id)
        assert [d.label or list(d.keys())[0] for d in f["hbar"].dims] == ["x", "p"]
        assert "gamma = 0.5" in f.attrs["case_text"]
        assert f.attrs["hjbsolve_version"] == hjbsolve.__version__
        assert "sup convention" in f.attrs["convention_hamiltonian"]
        assert f.attrs["time_cell_stage_s"] > 0
        mu = f["mu"][...]
        ybar = f["ybar"][...]
        x = f["x"][...]
    assert np.allclose(mu.sum(axis=1), 1.0)
    assert np.abs(ybar[:, 0] - x / (1 + 0.5)).max() < 1e-10      # quadratic loss a = 1
    xr = pytest.importorskip("xarray")
    ds = xr.open_dataset(out, engine="h5netcdf")
    assert ds["hbar"].dims == ("x", "p")
    assert np.allclose(ds["x"].values, x)
    assert np.allclose(ds["ybar"].values, ybar)
    assert "convention_pde" in ds.attrs
    ds.close()
    code, stdout, _ = run_cli(["info", out], capsys)
    assert code == 0 and "hbar" in stdout and "mu" in stdout


def test_python_api_round_trip(tmp_path):
    import tomllib
    case = hjbsolve.load_case(tomllib.loads(SMALL))
    result = hjbsolve.run(case)
    path = tmp_path / "api.h5"
    result.save(path)
    again = hjbsolve.Result.load(path)
    assert again.case_name == "small"
    for name in ("mu", "ybar", "abar", "gbar", "hbar", "feedback"):
        assert np.array_equal(getattr(again.cell, name), getattr(result.cell, name)), name
    assert again.cell.xgrid == result.cell.xgrid


def test_expr_family_runs_and_matches_ou_law(tmp_path, capsys):
    """expr: dY = -theta (Y - x) + sqrt(2) s dW, mu_x = N(x, s^2/theta): ybar = x, gbar = x^2."""
    case = write(tmp_path, EXPR)
    out = tmp_path / "e.h5"
    assert run_cli(["run", case, "-o", out, "-q"], capsys)[0] == 0
    r = hjbsolve.Result.load(out)
    x = r.cell.xgrid.axes[0]
    assert np.abs(r.cell.ybar[:, 0] - x).max() < 1e-12
    assert np.abs(r.cell.gbar - x**2).max() < 1e-12


def test_check_and_schema(capsys):
    code, out, _ = run_cli(["check", default_case_path()], capsys)
    assert code == 0 and "ok" in out
    code, out, _ = run_cli(["check", "--schema"], capsys)
    assert code == 0 and "gamma" in out and "family" in out


def test_module_entry_point_and_default_case(tmp_path):
    """`python -m hjbsolve run` with no case runs the packaged default case."""
    out = tmp_path / "default.h5"
    env = dict(os.environ)
    p = subprocess.run([sys.executable, "-m", "hjbsolve", "run", "-o", str(out), "-q"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    r = hjbsolve.Result.load(out)
    assert r.case_name == "entropy_sgd_double_well"
    assert r.cell.hbar.shape == (201, 81)
    p = subprocess.run([sys.executable, "-m", "hjbsolve", "run", str(tmp_path / "missing.toml")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_interrupted_run_keeps_finished_stages_and_existing_result(tmp_path, capsys, monkeypatch):
    """Ctrl-C during the second eps: the existing result is untouched, the cell stage and the first eps
    are in <output>.partial.h5, and no temporary file is left."""
    import hjbsolve.value as value_mod
    case = write(tmp_path, SMALL.replace("eps = [0.0]", "eps = [0.1, 0.0]").replace("n = 101", "n = 41"))
    out = tmp_path / "res.h5"
    out.write_bytes(b"an earlier result")
    real = value_mod.value_function
    calls = []

    def interrupted(*a, **kw):
        calls.append(kw.get("eps"))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(value_mod, "value_function", interrupted)
    code = main(["run", str(case), "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted" in err and "res.partial.h5" in err
    assert out.read_bytes() == b"an earlier result"
    partial = hjbsolve.Result.load(tmp_path / "res.partial.h5")
    assert "eps_0.1" in partial.extra_groups and "eps_0" not in partial.extra_groups
    assert partial.cell is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.toml", "res.h5", "res.partial.h5"]
    # a later complete run replaces the result and removes the partial file
    monkeypatch.setattr(value_mod, "value_function", real)
    assert main(["run", str(case), "-o", str(out), "-q"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.toml", "res.h5"]
    assert set(hjbsolve.Result.load(out).extra_groups) == {"eps_0.1", "eps_0"}


def test_plot_command(tmp_path, capsys):
    case = write(tmp_path, SMALL.replace("n = 101", "n = 41"))
    out = tmp_path / "r.h5"
    assert main(["run", str(case), "-o", str(out), "-q"]) == 0
    assert main(["plot", str(out), "--list"]) == 0
    listed = capsys.readouterr().out
    assert "hbar" in listed and "value" in listed
    png = tmp_path / "h.png"
    assert main(["plot", str(out), "--what", "hbar", "-o", str(png), "--opt", "n_curves=3", "-q"]) == 0
    assert png.stat().st_size > 1000
    assert main(["plot", str(out), "--what", "convergence"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "kinds available" in err[0]


def test_one_interval_box_applies_to_every_axis(tmp_path, capsys):
    text = SMALL.replace('[model]', '[model]\ndim = 2').replace("n = 101", "n = 21").replace(
        "box = [-2.0, 2.0], n = 21", "box = [-2.0, 2.0], n = 11")
    case = write(tmp_path, text + "\n")
    code, out, _ = run_cli(["check", case], capsys)
    assert code == 0 and "[-2, 2]/11 x [-2, 2]/11" in out


LQ_SMALL = """
name = "lq_sim"
family = "lq"
[model]
sigma = 0.3
tau = 0.5
u_box = [-10.0, 10.0]
[grid]
x = { box = [-3.0, 3.0], n = 121 }
y = { box = [-4.0, 4.0], n = 41 }
[time]
T = 0.5
dt = 0.025
[run]
eps = [0.1]
"""


def test_simulate_command(tmp_path, capsys):
    case = write(tmp_path, LQ_SMALL)
    out = tmp_path / "lq.h5"
    assert main(["run", str(case), "-o", str(out), "-q"]) == 0
    assert main(["simulate", str(out), "-n", "400", "--x0", "1.0", "--y0", "0.0", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert "simulation_eps_0.1" in text and "cost of the feedback" in text and "V from the PDE" in text
    from hjbsolve import store
    grp = store.read(out).groups["simulation_eps_0.1"]
    assert grp.attrs["N"] == 400 and grp.variables["X_mean"].data.shape[0] == grp.coords["s"].data.size
    # measured: MC 0.861 (se 0.018), PDE 0.882, exact (Riccati) 0.873: the cost of the computed feedback is
    # the exact value within 4 standard errors, and the PDE value is within its discretisation error
    from hjbsolve.case import load_case
    from hjbsolve.exact import lq_value
    a = grp.attrs
    exact = lq_value(load_case(case).model, 0.1, 0.5, [1.0], [0.0])[0, 0]
    assert abs(a["total_cost_mean"] - exact) < 4 * a["total_cost_se"]
    assert abs(a["value_pde"] - exact) < 0.015
    assert main(["simulate", str(tmp_path / "none.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("not found" in err[0] or "no such file" in err[0])


def test_effective_feedback_on_a_2d_fast_grid_is_stored(tmp_path, capsys):
    """eps = 0 with m = 2: the extended feedback u*(x, y) is stored with the shape of the y grid (it used to
    come back with y flattened and the write failed)."""
    text = SMALL.replace('[model]', '[model]\ndim = 2').replace("box = [-2.0, 2.0], n = 21", "box = [-1.0, 1.0], n = 7")
    text = text.replace("y = { n = 101 }", "y = { n = 9 }").replace("p = { box = [-2.0, 2.0], n = 9 }", "")
    case = write(tmp_path, text.replace("dt = 0.1", "dt = 0.25"))
    out = tmp_path / "r.h5"
    assert main(["run", str(case), "-o", str(out), "-q"]) == 0
    from hjbsolve import store
    fb = store.read(out).groups["eps_0"].variables["feedback"]
    assert fb.dims == ("x1", "x2", "y1", "y2", "control") and fb.data.shape == (7, 7, 9, 9, 2)
