"""Plain HJB problems (no fast variable, m = 0) written as case files and run by the CLI, against closed
forms: Hopf-Lax (box controls, closed-form min), a ball of controls, an explicit list; case validation."""

import h5py
import numpy as np
import pytest

from hjbsolve.cli import main

HOPF_LAX = """
name = "hopf_lax"
family = "expr"
[model]
n = 1
m = 0
a = "u"
l = "0.5*u**2"
g = "0.5*x**2"
u_box = [-5.0, 5.0]
[grid]
x = {{ box = [-3.0, 3.0], n = {n} }}
[time]
T = 1.0
dt = 0.1
"""

BALL = """
name = "ball"
family = "expr"
[model]
n = 2
m = 0
a = ["u1", "u2"]
g = "sqrt(x1**2 + x2**2)"
u_ball = {{ radius = 1.0, centre = [0.0, 0.0] }}
[grid]
x = {{ box = [[-3.0, 3.0], [-3.0, 3.0]], n = {n} }}
u = {{ directions = 64, radii = 2 }}
[time]
T = 1.0
dt = {dt}
"""

LIST = """
name = "list"
family = "expr"
[model]
n = 1
m = 0
a = "u"
l = "0.5*abs(u)"
g = "abs(x)"
u_list = [-1.0, 0.0, 1.0]
[grid]
x = { box = [-3.0, 3.0], n = 301 }
[time]
T = 1.0
dt = 0.02
"""


def run_case(tmp_path, text, name="c"):
    case = tmp_path / f"{name}.toml"
    case.write_text(text)
    out = tmp_path / f"{name}.h5"
    assert main(["run", str(case), "-o", str(out), "-q"]) == 0
    with h5py.File(out) as f:
        g = f["eps_0"]
        axes = [g[k][:] for k in ("x", "x1", "x2") if k in g]
        return g["V"][-1], axes, dict(g.attrs)


def test_hopf_lax_case_second_order_in_dx(tmp_path):
    """V(1, x) = x²/4 (Hopf-Lax): the characteristics are exact, so at fixed dt the error is the
    interpolation's, O(dx²/dt): order 2 under dx refinement."""
    errs = []
    for n in (61, 121, 241):
        V, (x,), attrs = run_case(tmp_path, HOPF_LAX.format(n=n), f"hl{n}")
        w = np.abs(x) <= 1.5
        errs.append(np.abs(V[w] - x[w] ** 2 / 4).max())
    assert "plain HJB" in attrs["problem"] and "closed-form" in attrs["control_set"]
    orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert errs[-1] < 8e-4 and orders.min() > 1.8, (errs, orders)


def test_ball_controls_case(tmp_path):
    """|u| <= 1, l = 0, g = |x|: V(t, x) = max(|x| - t, 0); the error, largest at the kink |x| = t, shrinks
    under refinement (6.3e-2, 4.5e-2: about order 1/2 there)."""
    errs = []
    for n, dt in ((61, 0.1), (121, 0.05)):
        V, (x1, x2), attrs = run_case(tmp_path, BALL.format(n=n, dt=dt), f"b{n}")
        R = np.hypot(*np.meshgrid(x1, x2, indexing="ij"))
        w = R <= 2.0
        errs.append(np.abs(V[w] - np.maximum(R[w] - 1.0, 0.0)).max())
    assert attrs["control_set"].startswith("ball: 129 points")
    assert errs[1] < 0.05 and errs[1] < 0.75 * errs[0], errs


def test_list_controls_case_exact(tmp_path):
    """u in {-1, 0, 1}, l = |u|/2, g = |x|: V(1, x) = min(|x|, 1)/2 + (|x| - 1)+ (nodes on the kinks: exact)."""
    V, (x,), attrs = run_case(tmp_path, LIST)
    ex = 0.5 * np.minimum(np.abs(x), 1.0) + np.maximum(np.abs(x) - 1.0, 0.0)
    w = np.abs(x) <= 2
    assert np.abs(V[w] - ex[w]).max() < 1e-12
    assert attrs["control_set"] == "list: 3 points in R^1"


@pytest.mark.parametrize("edit, key", [
    ('b = "-y"\n', "model.b"),
    ('u_ball = { radius = 1.0, centre = [0.0, 0.0, 0.0] }\n', "model.u_ball.centre"),
    ('u_box = [-1.0, 1.0]\n', "model.u_list: give one control set"),
    ('u_list = [1.0, [2.0]]\n', "model.u_list"),
    ('u_list = [1.0, 1.0]\n', "model.u_list"),
])
def test_plain_case_errors_name_the_key(tmp_path, capsys, edit, key):
    text = LIST if "u_box" in edit else LIST.replace("u_list = [-1.0, 0.0, 1.0]\n", "")
    text = text.replace('g = "abs(x)"\n', 'g = "abs(x)"\n' + edit)
    case = tmp_path / "bad.toml"
    case.write_text(text)
    assert main(["check", str(case)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0] and "bad.toml" in err[0], err


def test_fast_keys_required_with_a_fast_variable(tmp_path, capsys):
    case = tmp_path / "bad.toml"
    case.write_text(LIST.replace("m = 0", "m = 1"))
    assert main(["check", str(case)]) == 2
    assert "model.b: required when m >= 1" in capsys.readouterr().err


def test_check_evaluates_the_formulas(tmp_path, capsys):
    case = tmp_path / "nan.toml"
    case.write_text(LIST.replace('l = "0.5*abs(u)"', 'l = "log(x)"'))
    assert main(["check", str(case)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nan.toml: model.l: not finite" in err[0] and "x = [-3.0]" in err[0], err
    case.write_text(LIST)
    assert main(["check", str(case)]) == 0
    assert "no fast variable" in capsys.readouterr().out


def test_simulate_refuses_plain_problems(tmp_path, capsys):
    run_case(tmp_path, LIST, "p")
    assert main(["simulate", str(tmp_path / "p.h5"), "-n", "10"]) == 2
    assert "m = 0" in capsys.readouterr().err


def test_python_api_value_accessor(tmp_path):
    import hjbsolve
    case = tmp_path / "l.toml"
    case.write_text(LIST)
    res = hjbsolve.run(hjbsolve.load_case(case))
    v = res.value()
    assert v["dims"] == ("t", "x") and v["V"].shape == (len(v["t"]), len(v["x"]))
    ex = 0.5 * np.minimum(np.abs(v["x"]), 1.0) + np.maximum(np.abs(v["x"]) - 1.0, 0.0)
    assert np.abs(v["V"][-1] - ex)[np.abs(v["x"]) <= 2].max() < 1e-12
    with pytest.raises(KeyError, match="eps = 0.1.*eps_0"):
        res.value(0.1)


ANISO = """
name = "aniso"
family = "expr"
[model]
n = 1
m = 2
a = "-x + y1"
b = ["-y1", "-y2"]
tau = [["1.0", "0.9"], ["0.9", "1.0"]]
[grid]
x = { box = [-1.0, 1.0], n = 5 }
y = { box = [[-6.0, 6.0], [-6.0, 6.0]], n = [41, 45] }
"""


def test_check_refuses_a_y_grid_the_monotone_stencil_cannot_use(tmp_path, capsys):
    case = tmp_path / "aniso.toml"
    case.write_text(ANISO)
    assert main(["check", str(case)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "aniso.toml: grid.y: " in err[0] and "h_1/h_2 lies in" in err[0], err
    case.write_text(ANISO.replace("n = [41, 45]", "n = 41"))
    assert main(["check", str(case)]) == 0
