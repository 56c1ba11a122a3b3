r"""Tests of hjbsolve.cell.ergodic: nonlinear ergodic cell problems on the torus.

Model: G(y, q) = |q|^2/2 + V(y), V(y) = cos(2 pi y) (1-D), cell problem
    -nu chi'' + |P + chi'|^2/2 + V = Hbar(P).

nu = 0, exact: Hbar = max V = 1 for |P| <= P0 = int_0^1 sqrt(2(1 - V)) = 4/pi, otherwise
|P| = int_0^1 sqrt(2(Hbar - V(y))) dy (root-finding on a high-accuracy quadrature; the closed
form (2/pi) sqrt(2(H+1)) E(2/(H+1)), E the complete elliptic integral of the second kind in the
parameter convention of scipy.special.ellipe, is used as a cross-check of the quadrature).

nu > 0, Hopf-Cole: put u = P.y + chi, so -nu Lap u + |Du|^2/2 + V = Hbar. With
u = -2 nu log w: -nu Lap u = 2 nu^2 (Lap w / w - |Dw|^2 / w^2), |Du|^2/2 = 2 nu^2 |Dw|^2/w^2,
hence 2 nu^2 Lap w + (V - Hbar) w = 0, i.e. -2 nu^2 Lap w - V w = -Hbar w with w > 0. Writing
w = exp(-P.y / (2 nu)) phi with phi periodic (Dw = e(Dphi - P phi/(2 nu)),
Lap w = e(Lap phi - (P/nu).Dphi + |P|^2/(4 nu^2) phi)):
    L_P phi := -2 nu^2 Lap phi + 2 nu P.Dphi - V phi = (|P|^2/2 - Hbar) phi,
so Hbar(P) = |P|^2/2 - lambda_1(L_P), lambda_1 the principal (real, smallest real part,
positive eigenfunction) eigenvalue of the non-self-adjoint periodic operator L_P. In the
Fourier basis e^{2 pi i k.y}: L_P = diag(8 pi^2 nu^2 |k|^2 + 4 pi i nu P.k) - (convolution
with the Fourier coefficients of V); a dense eigen-solve of the truncated matrix (1-D: 129
modes; 2-D: 17 x 17 modes, converged to ~1e-11, small enough to stay fast on a busy machine).
"""

import warnings

import numpy as np
import pytest
import scipy.linalg as sla
from numba import njit
from scipy.integrate import IntegrationWarning, quad
from scipy.optimize import brentq
from scipy.special import ellipe

from hjbsolve.cell.ergodic import (
    ErgodicResult,
    NonConvexHamiltonianError,
    NonPeriodicHamiltonianError,
    PeriodicHamiltonian,
    effective_hamiltonian_table,
    long_time_ergodic,
    solve_ergodic,
)
from hjbsolve.errors import HJBError, NumericalError

P0 = 4.0 / np.pi
TWO_PI = 2.0 * np.pi


# ------------------------------------------------------------------------------------------
# model data (numba)
# ------------------------------------------------------------------------------------------


@njit
def V1(y):
    return np.cos(TWO_PI * y[0])


@njit
def V2sep(y):
    return np.cos(TWO_PI * y[0]) + np.cos(TWO_PI * y[1])


@njit
def V2cross(y):
    return np.cos(TWO_PI * y[0]) + np.cos(TWO_PI * y[1]) + 0.5 * np.cos(TWO_PI * (y[0] - y[1]))


@njit
def V1_two_wells(y):
    return np.cos(2.0 * TWO_PI * y[0])


@njit
def K_half_square(s):
    return 0.5 * s * s


@njit
def dK_half_square(s):
    return s


@njit
def G1(y, q):
    return 0.5 * q[0] * q[0] + np.cos(TWO_PI * y[0])


@njit
def G_concave(y, q):
    return -0.5 * q[0] * q[0] + np.cos(TWO_PI * y[0])


@njit
def K_concave(s):
    return -0.5 * s * s


@njit
def G2_locally_nonconvex(y, q):
    # Hessian [[1, c], [c, 1]], c = 0.6 + 0.9 cos(2 pi y1): indefinite only near y1 = 0
    c = 0.6 + 0.9 * np.cos(TWO_PI * y[0])
    return 0.5 * (q[0] * q[0] + q[1] * q[1]) + c * q[0] * q[1]


@njit
def V_not_periodic(y):
    return y[0]


@njit
def G_not_periodic(y, q):
    return 0.5 * q[0] * q[0] + y[0] * (1.0 - y[0]) + 0.1 * y[0]


@njit
def f_ctrl(y, a):
    return a.copy()


@njit
def l_ctrl(y, a):
    return 0.5 * a[0] * a[0] - np.cos(TWO_PI * y[0])


HQ1 = PeriodicHamiltonian.quadratic(V1)


# ------------------------------------------------------------------------------------------
# references
# ------------------------------------------------------------------------------------------


def _P_of_H_quad(H):
    """int_0^1 sqrt(2(H - cos 2 pi y)) dy = (2/pi) int_0^{pi/2} sqrt(2(H-1) + 4 sin^2 t) dt.

    Adaptive Gauss-Kronrod on pieces split geometrically from t = sqrt(2(H-1)) (the width of
    the near-kink at t = 0 when H -> 1), accurate to ~1e-15."""
    eps = np.sqrt(max(2.0 * (H - 1.0), 0.0))
    pts = [0.0]
    t = eps
    while 0.0 < t < np.pi / 4:
        pts.append(t)
        t *= 8.0
    pts.append(np.pi / 2)

    def f(t):
        return np.sqrt(2.0 * (H - 1.0) + 4.0 * np.sin(t) ** 2)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IntegrationWarning)  # asks for more than 1e-16
        val = sum(quad(f, a, b, epsabs=1e-16, epsrel=1e-15, limit=200)[0]
                  for a, b in zip(pts[:-1], pts[1:]))
    return 2.0 / np.pi * val


def _P_of_H_elliptic(H):
    return 2.0 / np.pi * np.sqrt(2.0 * (H + 1.0)) * ellipe(2.0 / (H + 1.0))


def hbar_exact_nu0(P):
    P = abs(float(P))
    if P <= P0:
        return 1.0
    lo, hi = max(1.0, 0.5 * P * P - 1.0), 1.0 + 0.5 * P * P + 1e-9
    return brentq(lambda H: _P_of_H_quad(H) - P, lo, hi, xtol=1e-15, rtol=1e-15, maxiter=500)


def hbar_hopf_cole(P, nu, vhat, modes):
    """Hbar(P) = |P|^2/2 - lambda_1(L_P), Fourier modes |k_i| <= modes (dense eigen-solve)."""
    P = np.atleast_1d(np.asarray(P, dtype=float))
    m = P.size
    k1 = np.arange(-modes, modes + 1)
    ks = np.stack([g.ravel() for g in np.meshgrid(*([k1] * m), indexing="ij")], axis=1)
    index = {tuple(k): i for i, k in enumerate(ks)}
    A = np.diag(8 * np.pi**2 * nu**2 * np.sum(ks**2, axis=1) + 4j * np.pi * nu * ks @ P)
    for d, v in vhat.items():  # (V phi)_k = sum_d vhat_d c_{k - d}
        for i, k in enumerate(ks):
            j = index.get(tuple(k - np.array(d)))
            if j is not None:
                A[i, j] -= v
    ev = sla.eigvals(A)
    lam = ev[np.argmin(ev.real)]
    assert abs(lam.imag) < 1e-9
    return 0.5 * float(P @ P) - lam.real


VHAT_1D = {(1,): 0.5, (-1,): 0.5}
VHAT_2D_CROSS = {(1, 0): 0.5, (-1, 0): 0.5, (0, 1): 0.5, (0, -1): 0.5, (1, -1): 0.25,
                 (-1, 1): 0.25}

P_GRID = np.unique(np.concatenate([np.linspace(0.0, 3.0, 31), [P0]]))


@pytest.fixture(scope="module")
def exact_nu0():
    return np.array([hbar_exact_nu0(P) for P in P_GRID])


def _order(e_coarse, e_fine, ratio=2.0):
    return np.log(e_coarse / e_fine) / np.log(ratio)


# ------------------------------------------------------------------------------------------
# references are what they claim
# ------------------------------------------------------------------------------------------


def test_references_self_consistent():
    for H in (1.0, 1.0 + 1e-9, 1.05, 1.7, 4.0):
        assert abs(_P_of_H_quad(H) - _P_of_H_elliptic(H)) < 1e-14
    assert abs(_P_of_H_quad(1.0) - P0) < 1e-14
    for nu in (0.5, 0.05):
        for P in (0.0, 2.0):
            a = hbar_hopf_cole(P, nu, VHAT_1D, 48)
            b = hbar_hopf_cole(P, nu, VHAT_1D, 64)
            assert abs(a - b) < 1e-12
    a = hbar_hopf_cole((0.5, 1.0), 0.5, VHAT_2D_CROSS, 6)
    b = hbar_hopf_cole((0.5, 1.0), 0.5, VHAT_2D_CROSS, 8)
    assert abs(a - b) < 1e-10


# ------------------------------------------------------------------------------------------
# nu = 0: exact formula
# ------------------------------------------------------------------------------------------


def test_nu0_node_grid_exact(exact_nu0):
    errs = {}
    for N in (100, 800):
        H = effective_hamiltonian_table(HQ1, P_GRID, N, 0.0, 1)
        errs[N] = np.max(np.abs(H - exact_nu0))
    assert errs[100] <= 1e-4, errs
    assert errs[800] <= 1e-6, errs
    # the discrete problem has Hbar = max_i V(y_i) = 1 exactly on the flat part |P| < P0_h
    H = effective_hamiltonian_table(HQ1, [0.0, 0.5, 1.0], 100, 0.0, 1)
    assert np.max(np.abs(H - 1.0)) <= 1e-13


def test_nu0_shifted_grid_order(exact_nu0):
    errs = []
    Ns = (200, 400, 800)
    for N in Ns:
        H = effective_hamiltonian_table(HQ1, P_GRID, N, 0.0, 1, offset=0.5 / N)
        errs.append(np.max(np.abs(H - exact_nu0)))
    assert errs[-1] <= 1e-5, errs
    orders = [_order(errs[i], errs[i + 1]) for i in range(len(Ns) - 1)]
    assert min(orders) >= 1.8, (errs, orders)


def test_cold_start_matches_table():
    Ps = [0.0, 1.0, P0, 2.5]
    H = effective_hamiltonian_table(HQ1, Ps, 200, 0.0, 1)
    for P, Ht in zip(Ps, H):
        r = solve_ergodic(HQ1, P, 200, 0.0, 1)
        assert abs(r.hbar - Ht) <= 1e-12


@pytest.mark.parametrize("nu", [0.0, 0.01])
def test_two_equal_wells_identity(nu):
    """V = cos(4 pi y) has two equal maxima: for |P| < P0 and nu = 0 the discrete policy has two
    absorbing classes (singular ergodic Newton system; solved by the vanishing discount).
    chi(y) = chi~(2y)/2 maps the cos(2 pi y) problem on N/2 nodes with viscosity 2 nu exactly
    onto it, so the two discrete Hbar coincide."""
    hw = PeriodicHamiltonian.quadratic(V1_two_wells)
    Ps = [0.0, 0.3, 1.0, P0, 1.6, 2.5]
    Hw = effective_hamiltonian_table(hw, Ps, 200, nu, 1)
    H1 = effective_hamiltonian_table(HQ1, Ps, 100, 2 * nu, 1)
    assert np.max(np.abs(Hw - H1)) <= 1e-11
    for P in (0.3, 2.5):  # cold starts, shifted grids (y -> 2y doubles the offset)
        assert abs(solve_ergodic(hw, P, 200, nu, 1, offset=0.5 / 200).hbar
                   - solve_ergodic(HQ1, P, 100, 2 * nu, 1, offset=0.5 / 100).hbar) <= 1e-11


@njit
def V1_two_maxima(y):
    return np.sin(TWO_PI * y[0]) + 0.5 * np.cos(2.0 * TWO_PI * y[0])


def _V_two_maxima(y):
    return np.sin(TWO_PI * y) + 0.5 * np.cos(2.0 * TWO_PI * y)


def _P_of_H_two_maxima(H):
    """int_0^1 sqrt(2(H - V)) dy for V = sin(2 pi y) + cos(4 pi y)/2 (max V = 0.75 at y = 1/12
    and 5/12, where the integrand has its (near-)kinks: quad breakpoints)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IntegrationWarning)
        return quad(lambda y: np.sqrt(max(2.0 * (H - _V_two_maxima(y)), 0.0)), 0.0, 1.0,
                    points=[1.0 / 12.0, 5.0 / 12.0], epsabs=1e-15, epsrel=1e-14, limit=400)[0]


def test_two_unequal_discrete_maxima_shifted_grid_nu0():
    """Regression (failed at N = 400, 800 with 'did not converge ... discounted problem').

    V = sin(2 pi y) + cos(4 pi y)/2 has two global maxima, V = 0.75 at y = 1/12 and 5/12. On a
    grid shifted by 0.37 h they are missed by different amounts: the discrete maxima differ by
    delta = O(h^2), both are absorbing classes of the nu = 0 policy for |P| < P0, and when the
    vanishing discount reaches lambda ~ delta the basins reorganise, kinks of the corrector
    crossing O(N) nodes (one per policy iteration). Exact: Hbar = 0.75 for |P| <= P0 =
    int sqrt(2(0.75 - V)), else |P| = int sqrt(2(Hbar - V)). The discrete problem is the
    periodic rectangle rule of that integral: Hbar_h = max_j V(y_j) on the flat part (error
    O(h^2), here exactly 4x smaller per doubling: one maximiser sits 0.037 h off the grid for
    both N), O(h^2) at the kink P = +-P0, spectrally accurate for |P| > P0."""
    P0w = _P_of_H_two_maxima(0.75)

    def exact(P):
        if abs(P) <= P0w:
            return 0.75
        return brentq(lambda H: _P_of_H_two_maxima(H) - abs(P), 0.75, 0.75 + 0.5 * P * P + 2.0,
                      xtol=1e-15, rtol=1e-15, maxiter=500)

    # the reference is what it claims: rectangle rule (spectral for H > max V) and quad agree
    yy = (np.arange(4096) + 0.5) / 4096
    assert abs(np.mean(np.sqrt(2.0 * (1.5 - _V_two_maxima(yy)))) - _P_of_H_two_maxima(1.5)) < 1e-13
    assert 1.0 < P0w < 1.03

    ham = PeriodicHamiltonian.quadratic(V1_two_maxima)
    flat = [-0.5, 0.0, 0.3, 0.9]
    outside = [-2.5, -1.3, 1.2, 1.6, 2.0, 3.0]
    edge = [-P0w, P0w]
    err_flat, err_edge = {}, {}
    for N in (400, 800):
        off = 0.37 / N
        vmax_h = float(np.max(_V_two_maxima(off + np.arange(N) / N)))
        gap = 0.75 - vmax_h
        assert gap > 0.0
        res = {P: solve_ergodic(ham, P, N, 0.0, 1, offset=off) for P in flat + outside + edge}
        for P, r in res.items():  # converged (cold starts: the path that failed), certified
            assert r.stages[-1][3] == "ok" and r.residual <= 1e-11, (N, P, r.stages)
        for P in flat:
            # the discrete flat value is max_j V(y_j): 0.75 up to the gap of the grid
            assert abs(res[P].hbar - vmax_h) <= 1e-11, (N, P, res[P].hbar, vmax_h)
            assert abs(res[P].hbar - exact(P)) <= gap + 1e-11
        for P in outside:
            assert abs(res[P].hbar - exact(P)) <= 1e-11, (N, P, res[P].hbar - exact(P))
        err_flat[N] = max(abs(res[P].hbar - exact(P)) for P in flat)
        err_edge[N] = max(abs(res[P].hbar - exact(P)) for P in edge)
        # a table (warm starts along P) gives the same values
        H = effective_hamiltonian_table(ham, flat + outside, N, 0.0, 1, offset=off)
        assert np.max(np.abs(H - [res[P].hbar for P in flat + outside])) <= 1e-11
    assert err_flat[800] <= 1e-7 and err_edge[800] <= 5e-7, (err_flat, err_edge)
    assert 1.9 <= _order(err_flat[400], err_flat[800]) <= 2.1, err_flat
    assert 1.8 <= _order(err_edge[400], err_edge[800]) <= 2.4, err_edge


# ------------------------------------------------------------------------------------------
# nu > 0: Hopf-Cole
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nu", [0.5, 0.05])
def test_viscous_hopf_cole(nu):
    Ps = (0.0, 1.0, 2.0)
    ref = np.array([hbar_hopf_cole(P, nu, VHAT_1D, 64) for P in Ps])
    errs = []
    for N in (100, 200, 400):
        H = np.array([solve_ergodic(HQ1, P, N, nu, 1).hbar for P in Ps])
        errs.append(np.max(np.abs(H - ref)))
    assert errs[-1] <= 1e-5, errs
    assert min(_order(errs[0], errs[1]), _order(errs[1], errs[2])) >= 1.8, errs


def test_viscous_result_satisfies_centred_scheme():
    """The returned chi solves -nu D+D- chi + |P + D0 chi|^2/2 + V = Hbar (all nodes centred
    here: h |q| / nu << 2), checked with plain numpy."""
    N, nu, P = 128, 0.05, 0.7
    r = solve_ergodic(HQ1, P, N, nu, 1, offset=0.25 / N)
    assert isinstance(r, ErgodicResult)
    assert r.chi.shape == (N,) and r.chi[0] == 0.0
    assert np.allclose(r.y, 0.25 / N + np.arange(N) / N)
    assert r.centred_fraction == 1.0 and r.iterations >= 1 and len(r.residual_history) >= 2
    h = 1.0 / N
    c = r.chi
    lap = (np.roll(c, -1) - 2 * c + np.roll(c, 1)) / h**2
    q = P + (np.roll(c, -1) - np.roll(c, 1)) / (2 * h)
    res = -nu * lap + 0.5 * q**2 + np.cos(TWO_PI * r.y) - r.hbar
    assert np.max(np.abs(res)) <= 1e-9


# ------------------------------------------------------------------------------------------
# 2-D
# ------------------------------------------------------------------------------------------


def test_2d_separable_nu0(exact_nu0):
    N = 100
    h2 = PeriodicHamiltonian.quadratic(V2sep)
    H1 = effective_hamiltonian_table(HQ1, P_GRID, N, 0.0, 1)
    err1d = np.max(np.abs(H1 - exact_nu0))
    for P in [(0.0, 0.0), (0.5, 2.0), (P0, 1.0), (2.5, -1.5)]:
        r = solve_ergodic(h2, P, N, 0.0, 2)
        assert r.chi.shape == (N, N)
        a = solve_ergodic(HQ1, P[0], N, 0.0, 1).hbar
        b = solve_ergodic(HQ1, P[1], N, 0.0, 1).hbar
        assert abs(r.hbar - (a + b)) <= 1e-10  # the discrete problem separates exactly
        err = abs(r.hbar - hbar_exact_nu0(P[0]) - hbar_exact_nu0(P[1]))
        assert err <= 2.0 * err1d, (P, err, err1d)


def test_2d_nonseparable_viscous_hopf_cole():
    nu = 0.5
    h2 = PeriodicHamiltonian.quadratic(V2cross)
    # 1-D error at the same N per axis and nu sets the scale; the 2-D potential has three
    # cosine modes (amplitudes 1, 1, 0.5), observed ratio ~2.2: tolerance 3x the 1-D error
    err1d = max(abs(solve_ergodic(HQ1, P, 64, nu, 1).hbar - hbar_hopf_cole(P, nu, VHAT_1D, 48))
                for P in (0.0, 1.0, 2.0))
    errs = {32: [], 64: []}
    for P in [(0.0, 0.0), (0.5, 1.0), (2.0, -1.0)]:
        ref = hbar_hopf_cole(P, nu, VHAT_2D_CROSS, 8)  # 17^2 modes: converged to ~1e-11
        for N in (32, 64):
            errs[N].append(abs(solve_ergodic(h2, P, N, nu, 2).hbar - ref))
    e32, e64 = max(errs[32]), max(errs[64])
    assert e64 <= 3.0 * err1d, (e64, err1d)
    assert _order(e32, e64) >= 1.8, (e32, e64)


# ------------------------------------------------------------------------------------------
# structure of Hbar(P)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nu,offset", [(0.0, 0.0), (0.0, 0.005), (0.5, 0.0), (0.02, 0.0)])
def test_convex_and_even(nu, offset):
    N = 100
    Ps = np.linspace(-3.0, 3.0, 61)
    H = effective_hamiltonian_table(HQ1, Ps, N, nu, 1, offset=offset)
    assert np.min(H[2:] - 2 * H[1:-1] + H[:-2]) >= -1e-12
    # even up to the solver accuracy (|Hbar - Hbar_h| <= final residual <= tol = 1e-12)
    assert np.max(np.abs(H - H[::-1])) <= 1e-11


# ------------------------------------------------------------------------------------------
# other forms of G
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nu", [0.0, 0.5])
def test_control_form_matches_quadratic(nu):
    """max_a {-a q - a^2/2 + V} = |q|^2/2 + V. With A a grid of spacing da containing the
    relevant maximisers' range, the max over A is below the continuous max by at most
    da^2/8, hence (comparison) 0 <= Hbar_a - Hbar_c <= da^2/8."""
    N = 100
    A = np.linspace(-4.0, 4.0, 801)
    da = A[1] - A[0]
    hc = PeriodicHamiltonian.control(f_ctrl, l_ctrl, A)
    for P in (0.0, 0.7, 2.0):
        ha = solve_ergodic(HQ1, P, N, nu, 1).hbar
        hcv = solve_ergodic(hc, P, N, nu, 1).hbar
        assert -1e-12 <= ha - hcv <= da * da / 8 + 1e-12, (P, ha - hcv)


def test_separable_and_general_forms():
    N = 100
    hs = PeriodicHamiltonian.separable(K_half_square, V1)
    hs_d = PeriodicHamiltonian.separable(K_half_square, V1, dK=dK_half_square)
    hg = PeriodicHamiltonian.general(G1)
    for nu in (0.0, 0.5):
        for P in (0.0, 2.0):
            ref = solve_ergodic(HQ1, P, N, nu, 1).hbar
            assert abs(solve_ergodic(hs, P, N, nu, 1).hbar - ref) <= 1e-10
            assert abs(solve_ergodic(hs_d, P, N, nu, 1).hbar - ref) <= 1e-12
    # general G with nu = 0.5: centred everywhere, the same second-order scheme
    assert abs(solve_ergodic(hg, 1.0, N, 0.5, 1).hbar - solve_ergodic(HQ1, 1.0, N, 0.5, 1).hbar) <= 1e-10
    # general G, nu = 0: Godunov's flux from the formula, the quadratic form's flux (it was
    # Lax-Friedrichs, first order: 5e-2 at N = 256)
    for P in (0.0, 1.0, 2.0):
        assert abs(solve_ergodic(hg, P, N, 0.0, 1).hbar - solve_ergodic(HQ1, P, N, 0.0, 1).hbar) <= 1e-13


# ------------------------------------------------------------------------------------------
# slow cross-check
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nu", [0.0, 0.5])
def test_long_time_cross_check(nu):
    N = 50
    for P in (0.0, 0.7, 2.0):
        r = solve_ergodic(HQ1, P, N, nu, 1)
        mid, lo, hi, steps = long_time_ergodic(HQ1, P, N, nu, 1, tol=1e-10)
        assert hi - lo <= 1e-10 and steps > 100
        assert lo - 1e-12 <= r.hbar <= hi + 1e-12, (P, r.hbar, lo, hi)


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------


def test_nonconvex_check_names_point_and_solve_accepts():
    """check_convex names the node and the q; the solver then takes the nonconvex path
    (tests/test_ergodic_fluxes.py checks its values)."""
    Y = np.linspace(0.0, 1.0, 50, endpoint=False)[:, None]
    with pytest.raises(NonConvexHamiltonianError) as ei:
        PeriodicHamiltonian.general(G_concave).check_convex(1, Y, 2.5)
    msg = str(ei.value)
    assert "not convex" in msg and "y = " in msg and "q = " in msg
    assert isinstance(ei.value, HJBError)
    with pytest.raises(NonConvexHamiltonianError, match=r"not convex.*q_0 = "):
        PeriodicHamiltonian.separable(K_concave, V1).check_convex(1, Y, 2.5)
    h = PeriodicHamiltonian.general(G_concave)
    assert abs(solve_ergodic(h, 0.5, 50, 0.1, 1).hbar + solve_ergodic(HQ1, -0.5, 50, 0.1, 1,
                                                                     offset=0.5).hbar) < 1e-9
    assert h.nonconvex
    # a separable G whose V is a plain Python function has no numba G for the Godunov flux
    with pytest.raises(NonConvexHamiltonianError, match="not for this form"):
        solve_ergodic(PeriodicHamiltonian.separable(K_concave, lambda y: 0.0), 0.5, 20, 0.1, 1)


def test_locally_nonconvex_2d_names_node():
    Y = np.stack(np.meshgrid(np.arange(20) / 20, np.arange(20) / 20, indexing="ij"), -1).reshape(-1, 2)
    with pytest.raises(NonConvexHamiltonianError) as ei:
        PeriodicHamiltonian.general(G2_locally_nonconvex).check_convex(2, Y, 2.3)
    msg = str(ei.value)
    # indefinite only where 0.6 + 0.9 cos(2 pi y1) > 1, i.e. |y1| < ~0.13 (mod 1)
    y1 = float(msg.split("y = (")[1].split(",")[0])
    assert min(y1, 1 - y1) < 0.14, msg


def test_not_periodic():
    with pytest.raises(NonPeriodicHamiltonianError, match="axis 0"):
        solve_ergodic(PeriodicHamiltonian.quadratic(V_not_periodic), 0.5, 50, 0.1, 1)
    with pytest.raises(NonPeriodicHamiltonianError):
        solve_ergodic(PeriodicHamiltonian.general(G_not_periodic), 0.5, 50, 0.1, 1)


@pytest.mark.parametrize("nu", [0.5, 0.0])
def test_forced_non_convergence_reports_history(nu):
    with pytest.raises(NumericalError) as ei:
        solve_ergodic(HQ1, 0.5, 50, nu, 1, maxiter=1)
    msg = str(ei.value)
    assert "did not converge" in msg and "Residual history" in msg
    hist = msg.split("Residual history (max-norm): [")[1].split("]")[0].split(", ")
    assert len(hist) >= 2 and all(float(x) > 0 for x in hist)
    if nu > 0:  # the certified bracket (discrete comparison) of the best iterate is reported
        part = msg.split("Best certified bracket")[1].split("):")[1]
        lo, hi = float(part.split("<=")[0]), float(part.split("<=")[2].split("(")[0])
        hbar = solve_ergodic(HQ1, 0.5, 50, nu, 1).hbar
        assert lo <= hbar <= hi


def test_bad_arguments():
    with pytest.raises(HJBError):
        solve_ergodic(HQ1, (0.1, 0.2), 50, 0.1, 1)
    with pytest.raises(HJBError):
        solve_ergodic(HQ1, 0.1, 50, -1.0, 1)
    with pytest.raises(HJBError):
        PeriodicHamiltonian.general(lambda y, q: 0.0)
