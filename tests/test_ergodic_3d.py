r"""Cell problems on T^3 (m = 3): separable potentials against sums of 1-D values, a non-separable
viscous potential against the Hopf-Cole / Fourier reference (tests/test_ergodic.py: Hbar = |P|^2/2 -
lambda_1(L_P), here with 9^3 modes, converged to ~1e-11), and the case/CLI path.
The linear solver is GMRES with an FFT (circulant-average) preconditioner on the bordered system."""

import numpy as np
import pytest
from numba import njit

from hjbsolve import store
from hjbsolve.cell.ergodic import PeriodicHamiltonian, solve_ergodic
from hjbsolve.cli import main
from hjbsolve.errors import HJBError

from .test_ergodic import HQ1, hbar_hopf_cole

TWO_PI = 2.0 * np.pi
P3 = np.array([0.5, 1.0, -0.3])


@njit
def V3sep(y):
    return np.cos(TWO_PI * y[0]) + np.cos(TWO_PI * y[1]) + np.cos(TWO_PI * y[2])


@njit
def V3cross(y):
    return (np.cos(TWO_PI * y[0]) + np.cos(TWO_PI * y[1]) + np.cos(TWO_PI * y[2])
            + 0.5 * np.cos(TWO_PI * (y[0] - y[1])) + 0.5 * np.cos(TWO_PI * (y[1] - y[2])))


def vhat_3d_cross():
    vh = {}
    for k in range(3):
        for s in (1, -1):
            d = [0, 0, 0]
            d[k] = s
            vh[tuple(d)] = 0.5
    for d in [(1, -1, 0), (-1, 1, 0), (0, 1, -1), (0, -1, 1)]:
        vh[d] = 0.25
    return vh


def test_3d_separable_is_the_sum_of_1d():
    N, nu = 16, 0.5
    r = solve_ergodic(PeriodicHamiltonian.quadratic(V3sep), P3, N, nu, 3)
    one = sum(solve_ergodic(HQ1, p, N, nu, 1).hbar for p in P3)
    assert abs(r.hbar - one) < 1e-12
    assert r.chi.shape == (N, N, N) and r.chi.flat[0] == 0.0


def test_3d_nonseparable_viscous_hopf_cole():
    """Centred scheme, second order: errors 8.1e-3, 2.0e-3 at N = 8, 16 (order 2.0)."""
    ref = hbar_hopf_cole(P3, 0.5, vhat_3d_cross(), 4)
    ham = PeriodicHamiltonian.quadratic(V3cross)
    e8, e16 = (abs(solve_ergodic(ham, P3, N, 0.5, 3).hbar - ref) for N in (8, 16))
    assert e16 <= 2.2e-3
    assert abs(np.log2(e8 / e16) - 2.0) < 0.1


def test_3d_general_refused():
    @njit
    def G(y, q):
        return 0.5 * (q[0] ** 2 + q[1] ** 2 + q[2] ** 2)
    with pytest.raises(HJBError, match="limited to m <= 2"):
        solve_ergodic(PeriodicHamiltonian.general(G), P3, 8, 0.5, 3)


def test_3d_case_end_to_end(tmp_path):
    case = tmp_path / "c.toml"
    case.write_text("""
name = "cube"
family = "periodic"
[model]
m = 3
nu = 0.5
V = "cos(2*pi*y1) + cos(2*pi*y2) + cos(2*pi*y3)"
[grid]
y = { n = 16 }
P = { values = [[0.5, 1.0, -0.3], [0.0, 0.0, 0.0]] }
""")
    out = tmp_path / "c.h5"
    assert main(["cell", str(case), "-o", str(out), "-q"]) == 0
    g = store.read(out)
    hb = g.variables["hbar"].data
    one = [sum(solve_ergodic(HQ1, p, 16, 0.5, 1).hbar for p in P) for P in (P3, np.zeros(3))]
    assert np.abs(hb - one).max() < 1e-12
    assert g.variables["chi"].data.shape == (2, 16, 16, 16)
    assert np.all(np.isfinite(g.variables["hbar_error_estimate"].data))
