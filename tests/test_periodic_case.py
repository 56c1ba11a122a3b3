"""The periodic family end to end: case -> cell problems -> file, against docs/mathematics.md §4, and bad input."""

import numpy as np
import pytest
from scipy import integrate, optimize

import hjbsolve
from hjbsolve import store
from hjbsolve.cli import main

CASE = """
name = "cos"
family = "periodic"
[model]
m = 1
nu = 0.0
V = "A*cos(2*pi*y)"
params = { A = 1.0 }
[grid]
y = { n = 100 }
P = { box = [-3.0, 3.0], n = 25 }
"""


def hbar_exact(P, A=1.0):
    """|P + chi'|^2/2 + A cos(2 pi y) = Hbar: max V for |P| <= P0, else |P| = ∫ sqrt(2(Hbar - V))."""
    V = lambda y: A * np.cos(2 * np.pi * y)
    vmax = A
    P0 = integrate.quad(lambda y: np.sqrt(2 * (vmax - V(y))), 0, 1, epsabs=1e-14, limit=200)[0]
    if abs(P) <= P0:
        return vmax
    F = lambda H: integrate.quad(lambda y: np.sqrt(2 * (H - V(y))), 0, 1, epsabs=1e-14, limit=200)[0] - abs(P)
    return optimize.brentq(F, vmax, vmax + P**2, xtol=1e-15)


def run(tmp_path, text, capsys=None):
    case = tmp_path / "c.toml"
    case.write_text(text)
    out = tmp_path / "c.h5"
    code = main(["run", str(case), "-o", str(out), "-q"])
    return code, out


def test_first_order_cos_case_against_exact(tmp_path):
    code, out = run(tmp_path, CASE)
    assert code == 0
    r = hjbsolve.Result.load(out)
    g = store.read(out)
    P = g.coords["P"].data
    hb = g.variables["hbar"].data
    ex = np.array([hbar_exact(p) for p in P])
    assert np.abs(hb - ex).max() <= 1e-4                     # the bound at N = 100
    assert np.all(np.diff(hb, 2) >= -1e-12)                  # convex in P
    assert np.abs(hb - hb[::-1]).max() < 1e-10               # even in P (V symmetric)
    chi = g.variables["chi"].data
    assert chi.shape == (25, 100) and np.abs(chi[:, 0]).max() == 0.0     # normalisation chi(y_0) = 0
    # Lbar = sup_P {-qP - Hbar}: at q = 0 it is -min Hbar = -1
    q = g.coords["q"].data
    lb = g.variables["lbar"].data
    assert abs(np.interp(0.0, q, lb) + 1.0) < 1e-9
    assert r.case_name == "cos"


def test_general_form_matches_quadratic_form(tmp_path):
    """The same G written as a general formula (Lax-Friedrichs where not centred) with nu > 0: the
    centred branch is used everywhere and both forms agree."""
    visc = CASE.replace("nu = 0.0", "nu = 0.3").replace("n = 25", "n = 5")
    code, out = run(tmp_path, visc)
    assert code == 0
    gen = visc.replace('V = "A*cos(2*pi*y)"', 'hamiltonian = "general"\nG = "0.5*q**2 + A*cos(2*pi*y)"')
    (tmp_path / "g").mkdir()
    code, out2 = run(tmp_path / "g", gen)
    assert code == 0
    a = store.read(out).variables["hbar"].data
    b = store.read(out2).variables["hbar"].data
    assert np.abs(a - b).max() < 1e-9


@pytest.mark.parametrize("change,needles", [
    (('V = "A*cos(2*pi*y)"', 'V = "y"'), ["c.toml", "model", "not 1-periodic"]),
    (('V = "A*cos(2*pi*y)"', 'hamiltonian = "general"'), ["model.G", "required"]),
    (('n = 100', 'n = 2'), ["grid.y.n", ">= 4"]),
    (('P = { box = [-3.0, 3.0], n = 25 }', 'P = { n = 25 }'), ["grid.P", "values"]),
])
def test_periodic_bad_input(tmp_path, capsys, change, needles):
    code, out = run(tmp_path, CASE.replace(*change))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and not out.exists()
    for n in needles:
        assert n in err[0], (n, err[0])


def test_nonconvex_general_accepted(tmp_path):
    """A concave G = -q^2/2 + cos(2 pi y) (refused before): solved by the nonconvex path
    (cell/ergodic/nonconvex.py); u -> -u maps it to |q|^2/2 - cos(2 pi y), a half-period shift of
    the quadratic case, so Hbar(P) = -Hbar_quadratic(P); no Lbar (Hbar need not be convex)."""
    text = CASE.replace("n = 25", "n = 7")
    code, out = run(tmp_path, text.replace('V = "A*cos(2*pi*y)"',
                                           'hamiltonian = "general"\nG = "-0.5*q**2 + A*cos(2*pi*y)"'))
    assert code == 0
    (tmp_path / "q").mkdir()
    code, outq = run(tmp_path / "q", text)
    g = store.read(out)
    assert "lbar" not in g.variables and "not convex" in g.attrs["lbar_note"]
    assert np.abs(g.variables["hbar"].data + store.read(outq).variables["hbar"].data).max() < 1e-10


def test_lbar_for_a_list_of_P_values(tmp_path):
    """P given as an unsorted list (m = 1): Lbar(q) = max_i {-q P_i - Hbar(P_i)} over the listed values."""
    text = CASE.replace("P = { box = [-3.0, 3.0], n = 25 }", "P = { values = [2.0, -1.5, 0.0, 3.0, -3.0, 1.0] }")
    code, out = run(tmp_path, text)
    assert code == 0
    g = store.read(out)
    P = g.variables["P_values"].data[:, 0]
    hb = g.variables["hbar"].data
    q = g.coords["q"].data
    brute = np.max(-q[:, None] * P[None, :] - hb[None, :], axis=1)
    assert np.abs(g.variables["lbar"].data - brute).max() < 1e-12
