r"""Tests of the numerical Hamiltonians added for metric, general and nonconvex G
(hjbsolve.cell.ergodic.fluxes, .nonconvex): errors against exact values, observed orders.

Metric, checkerboard (speed c = 2 where sin(2 pi y1) sin(2 pi y2) > 0, else 1), G = c(y) |q|:
the fast cells are closed squares that touch only at their corners and their edges are
travelled at the larger speed (the lower semicontinuous travel cost 1/c of the control
problem), so a path through them runs from corner to corner along sides and diagonals; a slow
cell is never worth crossing (its boundary, at speed 2, is at most as long in time as any
chord at speed 1). The travel time is therefore phi(x) = (|x|_inf + (sqrt 2 - 1)
min(|x1|, |x2|)) / 2 between corners (scripts/checkerboard_metric.py: Dijkstra with 16
directions finds no faster path), a regular octagon with vertices at radius 2, and
    Hbar(P) = max_{phi(x) <= 1} P.x = 2 max(|P1|, |P2|, (|P1| + |P2|) / sqrt 2)   (|q|_2),
    Hbar(P) = 2 |P|_1 (G = c |q|_1, B the box),  Hbar(P) = 2 |P|_inf (G = c |q|_inf, B the cross):
the staircase of diagonal and axis moves has the shortest l_inf (resp. l_1) length, so these
two equal the fast homogeneous values. 1-D: Hbar(P) = |P| / int_0^1 dy / c(y).
"""

import math
from pathlib import Path

import numpy as np
import pytest
from numba import njit

import hjbsolve
from hjbsolve.case import load_case
from hjbsolve.cell.ergodic import PeriodicHamiltonian, solve_ergodic
from hjbsolve.errors import CaseError, HJBError

TWO_PI = 2.0 * np.pi
ROOT2 = math.sqrt(2.0)


def _order(e1, e2, ratio=2.0):
    return math.log(e1 / e2) / math.log(ratio)


@njit
def checker(y):
    return 2.0 if np.sin(TWO_PI * y[0]) * np.sin(TWO_PI * y[1]) > 0 else 1.0


@njit
def checker_1d(y):
    return 2.0 if np.sin(TWO_PI * y[0]) > 0 else 1.0


@njit
def speed_smooth(y):
    return 1.5 + 0.5 * np.sin(TWO_PI * y[0]) * np.cos(TWO_PI * y[1])


@njit
def speed_const(y):
    return 1.7


def octagon(P):
    a, b = abs(P[0]), abs(P[1])
    return 2.0 * max(a, b, (a + b) / ROOT2)


# ------------------------------------------------------------------------------------------
# metric Hamiltonians
# ------------------------------------------------------------------------------------------


def test_metric_checkerboard_euclidean_exact_off_ties():
    """Where the optimal average velocity is an axis or a diagonal direction (every P off the
    tie lines |P1| + |P2| = sqrt 2 max), the 9-point cone scheme moves exactly along it."""
    H = PeriodicHamiltonian.metric(checker, "l2")
    for P in [(1.0, 0.0), (0.6, 0.3), (-0.2, 0.9), (0.5, 0.5)]:
        r = solve_ergodic(H, P, 32, 0.0, 2)
        assert abs(r.hbar - octagon(P)) <= 1e-11, (P, r.hbar, octagon(P))


def test_metric_checkerboard_euclidean_tie_first_order():
    """P on a tie line (axis and diagonal equally good: P = (cos pi/8, sin pi/8)): first order,
    from above; the target 1e-2 of the issue is met at N = 64."""
    H = PeriodicHamiltonian.metric(checker, "l2")
    P = (math.cos(math.pi / 8), math.sin(math.pi / 8))
    e = [solve_ergodic(H, P, N, 0.0, 2).hbar - octagon(P) for N in (16, 32, 64)]
    assert all(x > 0 for x in e), e
    assert e[2] <= 4e-3, e
    assert 0.85 <= _order(e[0], e[1]) <= 1.2 and 0.85 <= _order(e[1], e[2]) <= 1.2, e


@pytest.mark.parametrize("norm, exact", [("l1", lambda P: 2 * (abs(P[0]) + abs(P[1]))),
                                         ("linf", lambda P: 2 * max(abs(P[0]), abs(P[1])))])
def test_metric_checkerboard_polytope_norms(norm, exact):
    H = PeriodicHamiltonian.metric(checker, norm)
    Bv = ([[1, 1], [-1, 1], [-1, -1], [1, -1]] if norm == "l1"
          else [[1, 0], [0, 1], [-1, 0], [0, -1]])
    HB = PeriodicHamiltonian.metric(checker, B=Bv)
    for P in [(1.0, 0.0), (0.6, 0.3), (0.7, -0.7)]:
        r = solve_ergodic(H, P, 32, 0.0, 2, tol=1e-10)
        assert abs(r.hbar - exact(P)) <= 1e-9, (P, r.hbar, exact(P))
        rb = solve_ergodic(HB, P, 32, 0.0, 2, tol=1e-10)
        assert abs(rb.hbar - r.hbar) <= 1e-9


def test_metric_constant_speed_any_polytope():
    """Constant speed: chi = 0, Hbar = c max_{a in B} (-a.P) exactly (a non-symmetric B: the
    triangle conv{(1, 0), (0, 1), (-1, -1)}, and the Euclidean ball)."""
    tri = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    Ht = PeriodicHamiltonian.metric(speed_const, B=tri)
    Hb = PeriodicHamiltonian.metric(speed_const, "l2")
    for P in [(0.3, -0.8), (-1.0, 0.25), (0.9, 0.9)]:
        assert abs(solve_ergodic(Ht, P, 16, 0.0, 2).hbar - 1.7 * np.max(-tri @ P)) <= 1e-12
        assert abs(solve_ergodic(Hb, P, 16, 0.0, 2).hbar - 1.7 * np.hypot(*P)) <= 1e-12


def test_metric_1d_harmonic_mean():
    """1-D: Hbar = |P| / int 1/c (travel at the local speed); c = 2 on (0, 1/2), 1 on (1/2, 1):
    int 1/c = 3/4. The step speeds are taken at the midpoints: exact on a grid holding the
    interfaces."""
    H = PeriodicHamiltonian.metric(checker_1d, "l2")
    for P in (0.4, -1.3):
        assert abs(solve_ergodic(H, P, 64, 0.0, 1).hbar - abs(P) / 0.75) <= 1e-12


def test_metric_viscous_smooth_speed_first_order():
    """nu > 0 with the upwind metric flux (first order): errors against a fine-grid Richardson
    value shrink at order ~1 (the metric flux adds no centred branch)."""
    H = PeriodicHamiltonian.metric(speed_smooth, "l2")
    P = (0.8, 0.3)
    hb = {N: solve_ergodic(H, P, N, 0.05, 2).hbar for N in (16, 32, 64)}
    d1, d2 = hb[32] - hb[16], hb[64] - hb[32]
    assert 0.7 <= _order(abs(d1), abs(d2)) <= 1.4, hb


def test_metric_case_file_and_bad_control_set(tmp_path):
    case = load_case(Path(hjbsolve.__file__).parent / "cases" / "periodic_checkerboard.toml")
    from hjbsolve.models.periodic import build
    ham = build(case.model, where=case.source)
    assert ham.kind == "metric"
    ham.check_periodic(2)  # the where() formula's round-off on the edges does not matter
    bad = tmp_path / "bad.toml"
    bad.write_text(case_text("[[1, 0], [0, 1], [1, 1]]"))
    with pytest.raises(CaseError, match=r"model.control_set: .*0 in its interior"):
        build(load_case(str(bad)).model, where=str(bad))
    bad.write_text(case_text("[[1, 0], [0]]"))
    with pytest.raises(CaseError, match=r"model.control_set: expected a list"):
        build(load_case(str(bad)).model, where=str(bad))
    with pytest.raises(HJBError, match="norm must be"):
        PeriodicHamiltonian.metric(checker, "l3")


def case_text(B):
    return f'''name = "bad"
family = "periodic"
[model]
m = 2
hamiltonian = "metric"
c = "1 + 0*y1"
control_set = {B}
[grid]
y = {{ n = 8 }}
P = {{ values = [[0.1, 0.2]] }}
'''
