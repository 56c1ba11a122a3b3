"""Monte Carlo of the controlled two-scale system and of its effective limit (docs/mathematics.md §2-3).

Convention: ``s`` is the time *elapsed* along a path, ``s in [0, T]``; the value function's argument is the
time *remaining* ``t = T - s`` (package convention, sup convention for the Hamiltonian).

Two-scale system (eps > 0), Euler-Maruyama with step ``ds`` (weak order 1, strong order 1/2)::

    X_{j+1} = X_j + ds a(X_j, Y_j, u_j) + sqrt(2 ds) sigma(X_j, Y_j) xi_j
    Y_{j+1} = Y_j + (ds/eps) b(X_j, Y_j) + sqrt(2 ds/eps) tau(X_j, Y_j) zeta_j          xi, zeta ~ N(0, I)
    J = sum_j ds l(X_j, Y_j, u_j) + g(X_N, Y_N)                                          (left-point rule)

so that ``E J`` estimates the cost of the feedback from ``(x0, y0)``, to compare with ``V^eps(T, x0, y0)``.

Feedback (verification theorem): ``u_j = argmax_u { -a(X_j, Y_j, u).D_xV^eps(T - s_j, X_j, Y_j) - l(X_j, Y_j, u) }``,
in closed form ``clip(u_ref - B^T p / c, U)`` for control-affine models with quadratic cost (``model.affine``;
bang-bang when c = 0), otherwise the max over the control grid. ``D_xV`` comes from centred differences of the
value stage's V (one-sided, second order, at the box faces) on the grid, at *dense* output times
(:func:`dense_value`), interpolated multilinearly in (x, y) and linearly in t. The term
``-tr(sigma sigma^T(u) D_xxV)`` is left out of the argmax (exact when sigma does not depend on u, as in the
entropy_sgd and lq families; a warning is issued otherwise).

Effective system (eps = 0)::

    Xbar_{j+1} = Xbar_j + ds abar(s_j, Xbar_j) + sqrt(2 ds) sbar(s_j, Xbar_j) xi_j,     J = sum_j ds lbar + gbar(Xbar_N)
    abar(s, x) = sum_i mu_x(y_i) a(x, y_i, alpha(y_i)),  alpha(y) = argmax_u { -a(x, y, u).D_xV(T - s, x) - l(x, y, u) }

(the extended feedback of docs/mathematics.md §3: a function of the fast state, averaged against the invariant law mu_x);
likewise ``lbar``, and ``sbar sbar^T = sum_i mu_x(y_i) sigma sigma^T``. These averages are tabulated at the x
nodes and every output time of the eps = 0 value function, then interpolated.

Coefficients inside the numba kernel: the model's (vectorised) callables are tabulated once on the (x, y)
grid of the value stage, then interpolated multilinearly by one shared routine (:func:`_corners` locates
the point and weighs the cell corners, :func:`_interp_col` sums a column);
components constant over the grid are not interpolated. Outside the grid box every table is *extended
linearly* (the boundary cell's multilinear interpolant, extrapolated), so drifts that are linear in the
state (LQ, the quadratic loss) stay exact, and the others are continued with the slope of the last cell.

Time step: ``ds = T / ceil(T / min(ds_user, eps / 10))`` (``fast_resolution = 10`` steps per unit of eps; the
default user step is T/200). For a fast drift of rate lambda the Euler chain is stable for
``lambda ds / eps < 2``, and its invariant law is biased by O(lambda ds / eps), uniformly in eps (the OU chain's
stationary variance is too large by the factor ``1 / (1 - lambda ds / (2 eps))``, 5 % when lambda = 1, 25 % for
the double well at gamma = 0.5, beta = 4 where lambda ~ 4): that bias passes into the averaged slow drift, so
pass a smaller ds (or a larger ``fast_resolution``, or ``'auto'``: :func:`resolution_for`) when comparing
with the effective system. :func:`fast_rates` measures lambda on the tables, and :func:`simulate` issues a
:class:`FastStepWarning` when the bias reaches 10 % or the chain nears instability.

Random numbers: one xoshiro256++ stream per path, seeded from ``(seed, path index)`` by splitmix64, normal
deviates by the 256-layer ziggurat. Paths are independent of the thread count and of the number of paths
simulated with them: the same seed gives bit-identical paths on 1 or 2 threads.

Kernel: one numba function per (n, m) (the dimensions are compile-time constants; cached on disk), parallel
over blocks of :data:`BLOCK` paths advanced step by step together. ``scripts/bench_simulate.py`` measures it.

API: :func:`prepare` (case + eps -> :class:`Dynamics`, computing :func:`dense_value` when the feedback needs
it), :func:`simulate` (-> :class:`Simulation`, ``.to_group()``), :func:`simulate_case`, :func:`simulate_file`
(groups ``simulation_eps_<eps>`` written into a result file), :func:`convergence_in_law` / :func:`law_table`
(E phi(X^eps) against E phi(Xbar) with standard errors), :func:`linear_moments` (exact mean and covariance of a
linear SDE), :func:`entropy_sgd_linear`.
"""

from __future__ import annotations

import math
import time
import tomllib
import warnings
from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange, uint64

from . import store
from .errors import HJBError, NumericalError
from .grid import Grid
from .model import Model

# ------------------------------------------------------------------------------------------------------------
# random numbers: xoshiro256++ per path, ziggurat normals


def _ziggurat_tables():
    """Marsaglia-Tsang ziggurat tables for the standard normal, 256 layers, 52-bit integers (as NumPy)."""
    m1 = 2.0 ** 52
    dn = 3.6541528853610088
    tn = dn
    vn = 0.00492867323399
    q = vn / math.exp(-0.5 * dn * dn)
    ki = np.zeros(256, np.uint64)
    wi = np.zeros(256)
    fi = np.zeros(256)
    ki[0] = np.uint64(int((dn / q) * m1))
    ki[1] = np.uint64(0)
    wi[0] = q / m1
    wi[255] = dn / m1
    fi[0] = 1.0
    fi[255] = math.exp(-0.5 * dn * dn)
    for i in range(254, 0, -1):
        dn = math.sqrt(-2.0 * math.log(vn / dn + math.exp(-0.5 * dn * dn)))
        ki[i + 1] = np.uint64(int((dn / tn) * m1))
        tn = dn
        fi[i] = math.exp(-0.5 * dn * dn)
        wi[i] = dn / m1
    return ki, wi, fi


_ZKI, _ZWI, _ZFI = _ziggurat_tables()
_ZR = 3.6541528853610088
_ZINV_R = 1.0 / _ZR
_MASK52 = np.uint64(0x000FFFFFFFFFFFFF)


@njit(cache=True)
def _splitmix(z):
    z = z + uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> uint64(30))) * uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> uint64(27))) * uint64(0x94D049BB133111EB)
    return z ^ (z >> uint64(31))


@njit(cache=True)
def _seed_state(seed, path, s):
    """State of the xoshiro256++ stream of path ``path`` (4 uint64 words in ``s``)."""
    z = _splitmix(uint64(seed) * uint64(0x632BE59BD9B4E019) ^ _splitmix(uint64(path)))
    for i in range(4):
        z = _splitmix(z)
        s[i] = z


@njit(cache=True, inline="always")
def _next_u64(s):
    result = s[0] + s[3]
    result = ((result << uint64(23)) | (result >> uint64(41))) + s[0]
    t = s[1] << uint64(17)
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = (s[3] << uint64(45)) | (s[3] >> uint64(19))
    return result


@njit(cache=True, inline="always")
def _next_u64_row(S, w):
    """xoshiro256++ step of the stream in row w of the (W, 4) state array S."""
    s0, s1, s2, s3 = S[w, 0], S[w, 1], S[w, 2], S[w, 3]
    result = s0 + s3
    result = ((result << uint64(23)) | (result >> uint64(41))) + s0
    t = s1 << uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    S[w, 0] = s0
    S[w, 1] = s1
    S[w, 2] = s2
    S[w, 3] = (s3 << uint64(45)) | (s3 >> uint64(19))
    return result


@njit(cache=True)
def _next_double(s):
    return (_next_u64(s) >> uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, inline="always")
def _ziggurat_candidate(r):
    """Split a 64-bit draw into the ziggurat layer idx (8 bits), a sign bit and 52 bits rabs; return
    (idx, the candidate x = ±rabs * w_idx, rabs)."""
    idx = np.int64(r & uint64(0xFF))
    r = r >> uint64(8)
    rabs = (r >> uint64(1)) & _MASK52
    x = rabs * _ZWI[idx]
    if r & uint64(1):
        x = -x
    return idx, x, rabs


@njit(cache=True)
def _normal_slow(s, idx, x, rabs):
    """The ziggurat's rare branches (base strip tail, wedges), then fresh draws until one is accepted."""
    while True:
        if idx == 0:
            while True:
                xx = -_ZINV_R * math.log1p(-_next_double(s))
                yy = -math.log1p(-_next_double(s))
                if yy + yy > xx * xx:
                    return -(_ZR + xx) if ((rabs >> uint64(8)) & uint64(1)) else _ZR + xx
        elif (_ZFI[idx - 1] - _ZFI[idx]) * _next_double(s) + _ZFI[idx] < math.exp(-0.5 * x * x):
            return x
        r = _next_u64(s)
        idx, x, rabs = _ziggurat_candidate(r)
        if rabs < _ZKI[idx]:
            return x


@njit(cache=True, inline="always")
def _normal_row(S, w):
    """:func:`_normal` from the stream in row w of the (W, 4) state array S (the same deviates)."""
    r = _next_u64_row(S, w)
    idx, x, rabs = _ziggurat_candidate(r)
    if rabs < _ZKI[idx]:
        return x
    return _normal_slow(S[w], idx, x, rabs)


@njit(cache=True, inline="always")
def _normal(s):
    """A standard normal deviate: the 256-layer ziggurat (NumPy's algorithm); the fast path (about 99% of
    the draws) inline, the rest in :func:`_normal_slow`."""
    r = _next_u64(s)
    idx, x, rabs = _ziggurat_candidate(r)
    if rabs < _ZKI[idx]:
        return x
    return _normal_slow(s, idx, x, rabs)


@njit(cache=True, parallel=True)
def normal_samples(seed, n_paths, n_per_path):
    """``(n_paths, n_per_path)`` normal deviates of the per-path streams (for tests of the generator)."""
    out = np.empty((n_paths, n_per_path))
    for p in prange(n_paths):
        st = np.empty(4, np.uint64)
        _seed_state(seed, p, st)
        for j in range(n_per_path):
            out[p, j] = _normal(st)
    return out


# ------------------------------------------------------------------------------------------------------------
# the shared multilinear interpolation (linear extension outside the box)


@njit(cache=True, inline="always")
def _corners(z, w, lo, inv_h, shape, strides, D, wts, offs):
    """Locate the point ``z[w, :D]`` on a uniform grid: returns the base node (flat index) of its cell and fills
    the 2^D corner weights ``wts[w]`` and offsets ``offs[w]`` of the multilinear interpolant. Outside the box
    the boundary cell is used with a local coordinate outside [0, 1]: its interpolant is extended linearly."""
    base = 0
    wts[w, 0] = 1.0
    offs[w, 0] = 0
    cnt = 1
    for d in range(D):
        r = (z[w, d] - lo[d]) * inv_h[d]
        i = np.int64(math.floor(r)) if (r == r and abs(r) < 1e15) else np.int64(0)
        if i < 0:
            i = 0
        elif i > shape[d] - 2:
            i = shape[d] - 2
        f = r - i
        sd = strides[d]
        base += i * sd
        for q in range(cnt):
            wq = wts[w, q]
            wts[w, q + cnt] = wq * f
            offs[w, q + cnt] = offs[w, q] + sd
            wts[w, q] = wq - wq * f
        cnt *= 2
    return base


@njit(cache=True, inline="always")
def _interp_col(table, base, col, wts, offs, w, ncorner):
    """``sum_corners wts[w] table[base + offs[w], col]``: the multilinear interpolant of column ``col`` of
    ``table`` (rows = grid nodes in C order; ``base``, corner weights and offsets from :func:`_corners`)."""
    acc = 0.0
    for q in range(ncorner):
        acc += wts[w, q] * table[base + offs[w, q], col]
    return acc


@njit(cache=True, parallel=True)
def interp_points(table, lo, inv_h, shape, points):
    """Multilinear interpolation (linear extension outside the box) of ``table`` (nodes, C) at ``points``
    (P, D): the kernel's routine, for use outside the kernel."""
    P, D = points.shape
    C = table.shape[1]
    strides = _strides(shape)
    out = np.zeros((P, C))
    for i in prange(P):
        wts = np.empty((1, 1 << D))
        offs = np.empty((1, 1 << D), np.int64)
        base = _corners(points[i:i + 1], 0, lo, inv_h, shape, strides, D, wts, offs)
        for c in range(C):
            out[i, c] = _interp_col(table, base, c, wts, offs, 0, 1 << D)
    return out


@njit(cache=True)
def _strides(shape):
    D = len(shape)
    st = np.empty(D, np.int64)
    acc = 1
    for d in range(D - 1, -1, -1):
        st[d] = acc
        acc *= shape[d]
    return st


# ------------------------------------------------------------------------------------------------------------
# the path kernel

MODE_FIXED, MODE_AFFINE, MODE_GRID, MODE_TABLE, MODE_STORED = 0, 1, 2, 3, 4
MODE_NAMES = {MODE_FIXED: "fixed control (u = u_ref) or uncontrolled",
              MODE_AFFINE: "optimal feedback, closed-form argmax (control-affine, quadratic cost)",
              MODE_STORED: "optimal feedback u*(t, x, y) stored by the value stage (control-affine model)",
              MODE_GRID: "optimal feedback, argmax over the control grid",
              MODE_TABLE: "effective system: extended feedback averaged with mu_x (tabulated)"}


#: paths advanced together by one thread: their dependency chains (locate, load, interpolate, step) overlap
#: in the CPU, and they share the time slices of the feedback table in cache
BLOCK = 16

_KERNELS: dict = {}


def paths_kernel(n: int, m: int):
    """The path kernel for n slow and m fast components (compiled once per (n, m), cached on disk)."""
    key = (int(n), int(m))
    if key not in _KERNELS:
        _KERNELS[key] = _make_kernel(*key)
    return _KERNELS[key]


def _make_kernel(n, m):
    """Build the kernel with the dimensions n, m as compile-time constants (closure variables: numba caches
    one machine-code version per (n, m), and unrolls the small loops over components and cell corners)."""
    D = n + m
    nc = 1 << D

    @njit(cache=True, parallel=True)
    def kernel(z0, lo, inv_h, shape, stat, cmap, cvals, dyn, nt, t0_tab, inv_dt_tab,
               k, mode, nu, off, u_nodes, c, u_ref, u_lo, u_hi,
               T, ds, nsteps, eps, rec_steps, seed, has_sig, has_tau,
               out_X, out_Y, out_C, out_U):
        """Euler-Maruyama paths (module docstring), in parallel over blocks of BLOCK paths advanced step by
        step together. One random stream per path: the paths depend neither on the blocking nor on the
        thread count.

        Grid: lo, inv_h, shape over the D = n + m state axes (x then y). stat (nodes, Cv): the
        state-dependent columns of the coefficient rows; cmap (Cs,) maps each coefficient component to a
        column (>= 0) or to the constant ``cvals[-1 - cmap]``. Row layout (offsets ``off``): off[0] a | a0 |
        A_j (mode 0 | 1 | 2), off[1] B (mode 1), off[2] l | l0 | L_j, off[3] b, off[4] tau, off[5] sigma |
        sigma_j. dyn (nodes, nt * Cd): per node, D_xV (modes 1, 2) or [abar, lbar, sbar] (mode 3) at the nt
        times remaining ``t0_tab + i / inv_dt_tab``, slice after slice (two slices share a cache line).
        Outputs at the steps ``rec_steps``: X (N, R, n), Y (N, R, m), cumulative running cost C (N, R),
        control U (K, R, k) of the first K paths (the control at the start of the step).
        """
        N = z0.shape[0]
        strides = _strides(shape)
        Cd = dyn.shape[1] // max(nt, 1)
        Cs = cmap.shape[0]
        Cv = stat.shape[1]
        R = rec_steps.shape[0]
        K = out_U.shape[0]
        sq_x = math.sqrt(2.0 * ds)
        sq_y = math.sqrt(2.0 * ds / eps) if m > 0 else 0.0
        dse = ds / eps if m > 0 else 0.0
        vpos = np.empty(Cv, np.int64)
        for cc in range(Cs):
            q = cmap[cc]
            if 0 <= q < Cv:
                vpos[q] = cc
        nblocks = (N + BLOCK - 1) // BLOCK
        for ib in prange(nblocks):
            p0 = ib * BLOCK
            W = min(BLOCK, N - p0)
            st = np.empty((W, 4), np.uint64)
            z = np.empty((W, D))
            wts = np.empty((W, nc))
            offs = np.empty((W, nc), np.int64)
            sv = np.empty((W, Cs))
            dv = np.zeros((W, max(Cd, 1)))
            a = np.empty(n)
            u = np.zeros((W, max(k, 1)))
            xi = np.empty(max(n, m, 1))
            cost = np.zeros(W)
            for w in range(W):
                _seed_state(seed, p0 + w, st[w])
                for d in range(D):
                    z[w, d] = z0[p0 + w, d]
                for cc in range(Cs):
                    q = cmap[cc]
                    if q < 0:
                        sv[w, cc] = cvals[-1 - q]
            r = 0
            ru = 0
            if rec_steps[0] == 0:
                for w in range(W):
                    for i in range(n):
                        out_X[p0 + w, 0, i] = z[w, i]
                    for i in range(m):
                        out_Y[p0 + w, 0, i] = z[w, n + i]
                    out_C[p0 + w, 0] = 0.0
                r = 1
            for j in range(nsteps):
                # time remaining T - s_j: slices kt, kt + 1 of the dyn table
                kt = np.int64(0)
                th = 0.0
                if mode != MODE_FIXED and nt > 1:
                    tr = (T - j * ds - t0_tab) * inv_dt_tab
                    kt = np.int64(tr) if tr > 0.0 else np.int64(0)
                    if kt > nt - 2:
                        kt = nt - 2
                    th = min(max(tr - kt, 0.0), 1.0)
                c0 = kt * Cd
                c1 = c0 + Cd
                rec_u = ru < R and j == rec_steps[ru]
                for w in range(W):
                    bw = _corners(z, w, lo, inv_h, shape, strides, D, wts, offs)
                    for cc in range(Cv):
                        sv[w, vpos[cc]] = _interp_col(stat, bw, cc, wts, offs, w, nc)
                    if mode != MODE_FIXED:
                        if nt == 1:
                            for cc in range(Cd):
                                dv[w, cc] = _interp_col(dyn, bw, cc, wts, offs, w, nc)
                        else:
                            for cc in range(Cd):
                                dv[w, cc] = ((1.0 - th) * _interp_col(dyn, bw, c0 + cc, wts, offs, w, nc)
                                             + th * _interp_col(dyn, bw, c1 + cc, wts, offs, w, nc))
                for w in range(W):
                    so = off[5]
                    if mode == MODE_FIXED:
                        for i in range(n):
                            a[i] = sv[w, off[0] + i]
                        ell = sv[w, off[2]]
                    elif mode == MODE_AFFINE or mode == MODE_STORED:
                        # u = clip(u_ref - B^T p / c), p = D_xV (bang-bang when c = 0); MODE_STORED: dv = u
                        ell = sv[w, off[2]]
                        for i in range(n):
                            a[i] = sv[w, off[0] + i]
                        for jj in range(k):
                            qv = 0.0
                            for i in range(n):
                                qv += sv[w, off[1] + i * k + jj] * dv[w, i]
                            if mode == MODE_STORED:
                                uj = dv[w, jj]
                            elif c > 0.0:
                                uj = u_ref[jj] - qv / c
                            elif qv > 0.0:
                                uj = u_lo[jj]
                            elif qv < 0.0:
                                uj = u_hi[jj]
                            else:
                                uj = u_ref[jj]
                            uj = min(max(uj, u_lo[jj]), u_hi[jj])
                            u[w, jj] = uj
                            du = uj - u_ref[jj]
                            ell += 0.5 * c * du * du
                            for i in range(n):
                                a[i] += sv[w, off[1] + i * k + jj] * uj
                    elif mode == MODE_GRID:
                        best = -1e300
                        jb = 0
                        for jj in range(nu):
                            h = -sv[w, off[2] + jj]
                            for i in range(n):
                                h -= sv[w, off[0] + jj * n + i] * dv[w, i]
                            if h > best:
                                best = h
                                jb = jj
                        for i in range(n):
                            a[i] = sv[w, off[0] + jb * n + i]
                        ell = sv[w, off[2] + jb]
                        so = off[5] + jb * n * n
                        for jj in range(k):
                            u[w, jj] = u_nodes[jb, jj]
                    else:  # MODE_TABLE: dyn = [abar (n), lbar, sbar (n*n)]
                        for i in range(n):
                            a[i] = dv[w, i]
                        ell = dv[w, n]
                    if rec_u and p0 + w < K:
                        for jj in range(k):
                            out_U[p0 + w, ru, jj] = u[w, jj]
                    cost[w] += ds * ell
                    # slow step
                    if has_sig:
                        for i in range(n):
                            xi[i] = _normal_row(st, w)
                    for i in range(n):
                        dx = ds * a[i]
                        if has_sig:
                            acc = 0.0
                            for jj in range(n):
                                sij = dv[w, n + 1 + i * n + jj] if mode == MODE_TABLE else sv[w, so + i * n + jj]
                                acc += sij * xi[jj]
                            dx += sq_x * acc
                        z[w, i] += dx
                    # fast step (coefficients at the old state)
                    if m > 0:
                        if has_tau:
                            for i in range(m):
                                xi[i] = _normal_row(st, w)
                        for i in range(m):
                            dy = dse * sv[w, off[3] + i]
                            if has_tau:
                                acc = 0.0
                                for jj in range(m):
                                    acc += sv[w, off[4] + i * m + jj] * xi[jj]
                                dy += sq_y * acc
                            z[w, n + i] += dy
                if rec_u:
                    ru += 1
                if r < R and j + 1 == rec_steps[r]:
                    for w in range(W):
                        for i in range(n):
                            out_X[p0 + w, r, i] = z[w, i]
                        for i in range(m):
                            out_Y[p0 + w, r, i] = z[w, n + i]
                        out_C[p0 + w, r] = cost[w]
                    r += 1
            # the control recorded at s = T is the one used on the last step
            while ru < R:
                for w in range(W):
                    if p0 + w < K:
                        for jj in range(k):
                            out_U[p0 + w, ru, jj] = u[w, jj]
                ru += 1

    return kernel


# ------------------------------------------------------------------------------------------------------------
# coefficient tables


#: effective dynamics: coefficient entries per chunk of x nodes (bounds the memory)
CHUNK_ENTRIES = 2e7


@dataclass
class Dynamics:
    """What the path kernel reads: coefficient tables on a grid, the feedback, the terminal cost.

    Build it with :func:`two_scale_dynamics` (eps > 0, state (x, y), tables on the (x, y) grid) or
    :func:`effective_dynamics` (eps = 0, state x, tables on the x grid).
    """

    eps: float
    T: float
    n: int
    m: int
    k: int
    mode: int
    grid: Grid
    stat: np.ndarray
    cmap: np.ndarray
    cvals: np.ndarray
    off: np.ndarray
    dyn: np.ndarray
    t_tab: np.ndarray
    u_nodes: np.ndarray
    c: float
    u_ref: np.ndarray
    u_lo: np.ndarray
    u_hi: np.ndarray
    has_sig: bool
    has_tau: bool
    terminal: object                    # (X (N, n), Y (N, m)) -> (N,)
    source: str = ""
    value: object = None                # ValueResult of the feedback (dense), or None
    ybar: object = None                 # x (P, n) -> <y>_x (P, m)
    attrs: dict = field(default_factory=dict)

    def value_at(self, x0, y0=None) -> float | None:
        """V^eps(T, x0, y0) (or V(T, x0)) of the value stage, interpolated; None without a value function."""
        if self.value is None:
            return None
        V = np.asarray(self.value.V[-1], float)
        pt = np.concatenate([np.ravel(x0), np.ravel(y0) if (self.m and y0 is not None) else []])
        return float(_interp_on(self.grid, V.reshape(-1, 1), pt[None, :])[0, 0])


def _interp_on(grid: Grid, table: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The kernel's multilinear interpolation (linear extension outside the box) of node values at points."""
    lo = np.asarray(grid.lo, float)
    return interp_points(np.ascontiguousarray(table, float), lo, 1.0 / grid.h, np.asarray(grid.shape, np.int64),
                         np.ascontiguousarray(np.atleast_2d(points), float))


def _pack(columns: list, nodes: int):
    """Concatenate coefficient columns (nodes, c_i); drop those constant over the grid (cmap / cvals)."""
    full = np.concatenate([np.asarray(c, float).reshape(nodes, -1) for c in columns], axis=1)
    if not np.all(np.isfinite(full)):
        raise NumericalError("a model coefficient is not finite on the simulation grid")
    const = np.all(full == full[:1], axis=0)
    cmap = np.empty(full.shape[1], np.int64)
    cvals = full[0, const].copy()
    cmap[~const] = np.arange(int((~const).sum()))
    cmap[const] = -1 - np.arange(int(const.sum()))
    stat = np.ascontiguousarray(full[:, ~const])
    return stat, cmap, (cvals if cvals.size else np.zeros(1)), np.cumsum([0] + [np.asarray(c).reshape(nodes, -1).shape[1]
                                                                          for c in columns])


def _u_ref(model: Model) -> np.ndarray:
    if model.u_ref is not None:
        return np.asarray(model.u_ref, float)
    if model.affine is not None:
        return np.asarray(model.affine.u_ref, float)
    return 0.5 * (np.asarray(model.controls.lo, float) + np.asarray(model.controls.hi, float))


def _control_kind(model: Model, feedback: str, exact: bool) -> int:
    if feedback not in ("optimal", "reference"):
        raise ValueError("feedback must be 'optimal' or 'reference'")
    if model.k == 0 or feedback == "reference":
        return MODE_FIXED
    return MODE_AFFINE if (exact and model.affine is not None) else MODE_GRID


def _coefficients(model: Model, xgrid: Grid, ygrid: Grid, kind: int, u_nodes: np.ndarray, xs=None):
    """Coefficient arrays on the tensor nodes, leading axes (Nx, Ny) (``xs``: a subset of the x nodes)."""
    xs = xgrid.flat_points() if xs is None else xs
    ys = ygrid.flat_points()
    Nx, Ny, n, m, k = len(xs), len(ys), model.n, model.m, model.k
    X, Y = xs[:, None, :], ys[None, :, :]
    lead = (Nx, Ny)
    out = {"b": np.broadcast_to(model.b(X, Y), lead + (m,)),
           "tau": np.broadcast_to(model.tau(X, Y), lead + (m, m))}
    uref = _u_ref(model)
    U0 = np.broadcast_to(uref, lead + (k,))
    if kind == MODE_AFFINE:
        aff = model.affine
        out["a0"] = np.broadcast_to(aff.a0(X, Y), lead + (n,))
        out["B"] = np.broadcast_to(aff.B(X, Y), lead + (n, k))
        out["l0"] = np.broadcast_to(aff.l0(X, Y), lead)
        out["S"] = np.broadcast_to(model.sigma(X, Y, U0), lead + (n, n))
    elif kind == MODE_GRID:
        U = u_nodes[None, None, :, :]
        X3, Y3 = X[:, :, None, :], Y[:, :, None, :]
        nu = len(u_nodes)
        out["A"] = np.broadcast_to(model.a(X3, Y3, U), lead + (nu, n))
        out["L"] = np.broadcast_to(model.l(X3, Y3, U), lead + (nu,))
        S = np.broadcast_to(model.sigma(X3, Y3, U), lead + (nu, n, n))
        if not np.all(S == S[:, :, :1]):
            warnings.warn("sigma depends on the control: the feedback maximises -a.D_xV - l and leaves out "
                          "-tr(sigma sigma^T D_xxV)", RuntimeWarning, stacklevel=3)
        out["S"] = S
    else:
        out["a"] = np.broadcast_to(model.a(X, Y, U0), lead + (n,))
        out["l"] = np.broadcast_to(model.l(X, Y, U0), lead)
        out["S"] = np.broadcast_to(model.sigma(X, Y, U0), lead + (n, n))
    return out


def value_gradient(value, xgrid: Grid) -> np.ndarray:
    """D_xV at every stored time: centred differences (second-order one-sided at the box faces) along the
    slow axes of ``value.V`` (nt, *xshape[, *yshape]); returns (nt, *xshape[, *yshape], n)."""
    V = np.asarray(value.V, float)
    n = xgrid.ndim
    return np.stack([np.gradient(V, xgrid.h[i], axis=1 + i, edge_order=2) for i in range(n)], axis=-1)


def _stored_feedback(value, kind: int, shape: tuple, k: int):
    """The value stage's feedback at its output times, (nt, *shape, k) float, when the path kernel can use it:
    a control-affine model with the closed-form argmax (the stored control is then evaluated exactly in
    a = a0 + B u and l = l0 + c |u - u_ref|^2 / 2), a value with ``feedback_t`` on ``shape`` (the (x, y) grid;
    eps = 0: the extended feedback) and at least two uniform times. Otherwise None: the feedback is recomputed
    from D_xV."""
    fb = getattr(value, "feedback_t", None) if value is not None else None
    if kind != MODE_AFFINE or fb is None:
        return None
    fb = np.asarray(fb, float)
    nt = len(np.atleast_1d(value.t_out))
    if nt < 2 or fb.size != nt * int(np.prod(shape)) * k:
        return None
    return fb.reshape((nt,) + shape + (k,))


def _time_table(value):
    t = np.asarray(value.t_out, float)
    if len(t) > 2:
        dtt = np.diff(t)
        if np.ptp(dtt) > 1e-9 * max(1.0, dtt.max()):
            raise ValueError("the value function's output times must be uniform (use dense_value)")
    return t


def _box_attrs(grid: Grid) -> np.ndarray:
    return np.array([grid.lo, grid.hi]).T.ravel()


def fast_rates(model: Model, xgrid: Grid, ygrid: Grid, b: np.ndarray) -> tuple[float, float]:
    """Rates of the fast drift, ``lambda(x, y) = max_i sum_j |d b_i / d y_j|`` by differences on the grid:
    (mean over the approximate invariant laws, max over the nodes where they are not negligible). The laws are
    the Gibbs weights ``exp(-(U - min U))`` for models with a potential (``U - min U < 12`` counts), else
    uniform. The Euler chain of the fast variable is stable for ``lambda ds / eps < 2`` and its invariant law is
    biased by O(lambda ds / eps)."""
    Nx, Ny, m = b.shape
    B = np.asarray(b, float).reshape((Nx,) + tuple(ygrid.shape) + (m,))
    rate = np.zeros((Nx,) + tuple(ygrid.shape))
    J = [np.gradient(B, ygrid.h[j], axis=1 + j) for j in range(m)]          # d b / d y_j
    for i in range(m):
        rate = np.maximum(rate, sum(np.abs(J[j][..., i]) for j in range(m)))
    rate = rate.reshape(Nx, Ny)
    if model.potential is not None:
        xs, ys = xgrid.flat_points(), ygrid.flat_points()
        U = np.broadcast_to(model.potential(xs[:, None, :], ys[None, :, :]), (Nx, Ny))
        dU = U - U.min(axis=1, keepdims=True)
        w = np.exp(-dU)
        w /= w.sum(axis=1, keepdims=True)
        mask = dU < 12.0
    else:
        w = np.full((Nx, Ny), 1.0 / Ny)
        mask = np.ones((Nx, Ny), bool)
    return float(np.mean(np.sum(w * rate, axis=1))), float(rate[mask].max())


class FastStepWarning(RuntimeWarning):
    """The time step does not resolve the fast drift's rate: the Euler chain's fast law is biased (by 10 % or
    more in variance for an OU process of rate lambda_mean: ``lambda ds / (2 eps) >= 1/11``) or close to
    unstable (``lambda_max ds / eps > 1``)."""


def two_scale_dynamics(model: Model, xgrid: Grid, ygrid: Grid, eps: float, T: float, value=None,
                       feedback: str = "optimal", exact: bool = True, u_nodes=None) -> Dynamics:
    """Tables for the two-scale system (eps > 0) on the (x, y) grid; ``value`` is a ValueResult of V^eps with
    dense, uniform output times (:func:`dense_value`), needed when the feedback is 'optimal' and k > 0."""
    if eps <= 0:
        raise ValueError("two_scale_dynamics needs eps > 0 (use effective_dynamics for eps = 0)")
    kind = _control_kind(model, feedback, exact)
    u_nodes = np.asarray(model.controls.nodes() if u_nodes is None else u_nodes, float).reshape(-1, max(model.k, 1))
    u_nodes = u_nodes if model.k else np.zeros((1, 0))
    co = _coefficients(model, xgrid, ygrid, kind, u_nodes)
    n, m, k = model.n, model.m, model.k
    nodes = xgrid.size * ygrid.size
    if kind == MODE_AFFINE:       # also for a stored feedback (MODE_STORED below)
        cols = [co["a0"], co["B"], co["l0"], co["b"], co["tau"], co["S"]]
    elif kind == MODE_GRID:
        cols = [co["A"], np.zeros((nodes, 0)), co["L"], co["b"], co["tau"], co["S"]]
    else:
        cols = [co["a"], np.zeros((nodes, 0)), co["l"], co["b"], co["tau"], co["S"]]
    stat, cmap, cvals, off = _pack(cols, nodes)
    grid = Grid(tuple(xgrid.lo) + tuple(ygrid.lo), tuple(xgrid.hi) + tuple(ygrid.hi),
                tuple(xgrid.n) + tuple(ygrid.n))
    stored = _stored_feedback(value, kind, tuple(xgrid.shape) + tuple(ygrid.shape), k)
    if stored is not None:
        t_tab = _time_table(value)
        dyn = np.ascontiguousarray(stored.reshape(len(t_tab), nodes, k).transpose(1, 0, 2).reshape(nodes, -1))
        kind = MODE_STORED
        source = (f"u*(t, x, y) stored by the V^eps value stage at {len(t_tab)} times (linear in t), dt = "
                  f"{value.attrs.get('dt', np.nan):g}")
    elif kind in (MODE_AFFINE, MODE_GRID):
        if value is None:
            raise ValueError("the optimal feedback needs the value function V^eps (dense output times)")
        t_tab = _time_table(value)
        G = value_gradient(value, xgrid)
        if G.shape[1:-1] != tuple(xgrid.shape) + tuple(ygrid.shape):
            raise ValueError("the value function is not on the simulation grid")
        dyn = np.ascontiguousarray(G.reshape(len(t_tab), nodes, n).transpose(1, 0, 2).reshape(nodes, -1))
        source = f"V^eps value stage, {len(t_tab)} output times, dt = {value.attrs.get('dt', np.nan):g}"
    else:
        t_tab, dyn = np.zeros(1), np.zeros((nodes, 1))
        source = "uncontrolled" if k == 0 else f"reference control u = {_u_ref(model).tolist()}"
    S = np.asarray(co["S"])
    tau = np.asarray(co["tau"])
    aff_c = float(model.affine.c) if kind in (MODE_AFFINE, MODE_STORED) else 0.0
    rate_mean, rate_max = fast_rates(model, xgrid, ygrid, np.asarray(co["b"]))

    def terminal(X, Y):
        return np.broadcast_to(model.g(X, Y), X.shape[:-1]).astype(float)

    def ybar(x):
        # <y>_x: the mean of the discrete invariant law mu_x of the cell stage, interpolated in x
        return _ybar_interp(model, xgrid, ygrid, np.atleast_2d(x))

    return Dynamics(eps=float(eps), T=float(T), n=n, m=m, k=k, mode=kind, grid=grid, stat=stat, cmap=cmap,
                    cvals=cvals, off=np.asarray(off[:6], np.int64), dyn=dyn, t_tab=t_tab, u_nodes=u_nodes,
                    c=aff_c, u_ref=_u_ref(model) if k else np.zeros(1),
                    u_lo=np.asarray(model.controls.lo, float) if k else np.zeros(1),
                    u_hi=np.asarray(model.controls.hi, float) if k else np.zeros(1),
                    has_sig=bool(np.any(S != 0)), has_tau=bool(np.any(tau != 0)), terminal=terminal,
                    source=source, value=value, ybar=ybar,
                    attrs={"x_box": _box_attrs(xgrid), "y_box": _box_attrs(ygrid), "x_n": np.asarray(xgrid.n),
                           "y_n": np.asarray(ygrid.n), "fast_rate_mean": rate_mean, "fast_rate_max": rate_max})


def _sqrtm_psd(M: np.ndarray) -> np.ndarray:
    """Symmetric square root of a batch of PSD matrices (..., n, n) (zero stays zero)."""
    w, Q = np.linalg.eigh(0.5 * (M + np.swapaxes(M, -1, -2)))
    return np.einsum("...ij,...j,...kj->...ik", Q, np.sqrt(np.clip(w, 0.0, None)), Q)


def invariant_laws(model: Model, xgrid: Grid, ygrid: Grid) -> np.ndarray:
    """mu (Nx, Ny): the cell stage's discrete invariant laws (no Hbar tables)."""
    from .effective import cell_stage
    return cell_stage(model, xgrid, ygrid, None).mu.reshape(xgrid.size, ygrid.size)


def _ybar_interp(model, xgrid, ygrid, x, mu=None):
    if mu is None:
        mu = _mu_cache(model, xgrid, ygrid)
    yb = mu @ ygrid.flat_points()
    return _interp_on(xgrid, yb, x)


_MU_CACHE: dict = {}


def _mu_cache(model, xgrid, ygrid):
    key = (id(model), xgrid, ygrid)
    if key not in _MU_CACHE:
        _MU_CACHE.clear()
        _MU_CACHE[key] = invariant_laws(model, xgrid, ygrid)
    return _MU_CACHE[key]


def effective_dynamics(model: Model, xgrid: Grid, ygrid: Grid, mu: np.ndarray, T: float, value=None,
                       feedback: str = "optimal", exact: bool = True, u_nodes=None) -> Dynamics:
    """Tables for the effective system (eps = 0) on the x grid: abar, lbar, sbar averaged with ``mu``
    (Nx, Ny) under the extended feedback alpha(y) = argmax_u {-a.D_xV(t, x) - l} at every output time of
    ``value`` (the eps = 0 value function, dense uniform times), or at the reference control."""
    kind = _control_kind(model, feedback, exact)
    u_nodes = np.asarray(model.controls.nodes() if u_nodes is None else u_nodes, float).reshape(-1, max(model.k, 1))
    u_nodes = u_nodes if model.k else np.zeros((1, 0))
    n, k = model.n, model.k
    mu_all = np.asarray(mu, float).reshape(xgrid.size, ygrid.size)
    Nx_all, Ny = xgrid.size, ygrid.size
    xs_all = xgrid.flat_points()
    t_tab = _time_table(value) if kind in (MODE_AFFINE, MODE_GRID) and value is not None else np.zeros(1)
    G_all = None
    stored = _stored_feedback(value, kind, tuple(xgrid.shape) + tuple(ygrid.shape), k)
    if stored is not None:
        stored = stored.reshape(len(t_tab), Nx_all, Ny, k)
    elif kind in (MODE_AFFINE, MODE_GRID):
        if value is None:
            raise ValueError("the optimal extended feedback needs the eps = 0 value function (dense output times)")
        G_all = value_gradient(value, xgrid).reshape(len(t_tab), Nx_all, n)
    # the coefficients live on (x, y[, u]): work in chunks of x nodes so that memory stays bounded
    width = Ny * max(1, len(u_nodes) if kind == MODE_GRID else 1) * (n * n + n * max(k, 1) + n + 2)
    chunk = max(1, int(CHUNK_ENTRIES // max(1, width)))
    blocks = []
    for s0 in range(0, Nx_all, chunk):
        sl = slice(s0, min(s0 + chunk, Nx_all))
        co = _coefficients(model, xgrid, ygrid, kind, u_nodes, xs=xs_all[sl])
        mu = mu_all[sl]
        Nx = mu.shape[0]

        def avg(arr):
            return np.einsum("ij,ij...->i...", mu, arr)

        def sbar_of(S):
            return _sqrtm_psd(avg(np.einsum("...ij,...kj->...ik", S, S))).reshape(Nx, n * n)

        rows = []
        if kind == MODE_AFFINE:
            aff = model.affine
            c = float(aff.c)
            uref = _u_ref(model)
            lo, hi = np.asarray(model.controls.lo, float), np.asarray(model.controls.hi, float)
            a0, B, l0 = np.asarray(co["a0"]), np.asarray(co["B"]), np.asarray(co["l0"])
            sb = sbar_of(np.asarray(co["S"]))
            for it in range(len(t_tab)):
                if stored is not None:
                    u = stored[it, sl]
                else:
                    q = np.einsum("ijnk,in->ijk", B, G_all[it, sl])
                    u = uref - q / c if c > 0 else np.where(q > 0, lo, np.where(q < 0, hi, uref))
                u = np.clip(u, lo, hi)
                a = a0 + np.einsum("ijnk,ijk->ijn", B, u)
                ell = l0 + 0.5 * c * np.sum((u - uref) ** 2, axis=-1)
                rows.append(np.concatenate([avg(a), avg(ell)[:, None], sb], axis=1))
        elif kind == MODE_GRID:
            A, L, S = np.asarray(co["A"]), np.asarray(co["L"]), np.asarray(co["S"])
            for it in range(len(t_tab)):
                h = -np.einsum("ijun,in->iju", A, G_all[it, sl]) - L
                jb = np.argmax(h, axis=2)
                a = np.take_along_axis(A, jb[..., None, None], axis=2)[:, :, 0]
                ell = np.take_along_axis(L, jb[..., None], axis=2)[:, :, 0]
                Sj = np.take_along_axis(S, jb[..., None, None, None], axis=2)[:, :, 0]
                rows.append(np.concatenate([avg(a), avg(ell)[:, None], sbar_of(Sj)], axis=1))
        else:
            rows.append(np.concatenate([avg(np.asarray(co["a"])), avg(np.asarray(co["l"]))[:, None],
                                        sbar_of(np.asarray(co["S"]))], axis=1))
        blocks.append(np.stack(rows, axis=1))
    if stored is not None:
        source = (f"extended feedback alpha(t, x, y) stored by the effective value stage at {len(t_tab)} times "
                  f"(linear in t), dt = {value.attrs.get('dt', np.nan):g}; averaged with mu_x")
    elif kind in (MODE_AFFINE, MODE_GRID):
        source = (f"V effective value stage (eps = 0), {len(t_tab)} output times, dt = "
                  f"{value.attrs.get('dt', np.nan):g}; extended feedback averaged with mu_x")
    else:
        source = "uncontrolled (averaged drift abar)" if k == 0 else \
            f"reference control u = {_u_ref(model).tolist()} (averaged with mu_x)"
    mu, Nx = mu_all, Nx_all
    dyn3 = np.concatenate(blocks, axis=0)                          # (Nx, nt, n + 1 + n*n)
    has_sig = bool(np.any(dyn3[..., n + 1:] != 0))
    dyn = np.ascontiguousarray(dyn3.reshape(Nx, -1))
    ys = ygrid.flat_points()
    gbar = np.einsum("ij,ij->i", mu, np.broadcast_to(model.g(xgrid.flat_points()[:, None, :], ys[None, :, :]),
                                                      (Nx, len(ys))))

    def terminal(X, Y):
        return _interp_on(xgrid, gbar[:, None], X)[:, 0]

    yb = mu @ ys

    def ybar(x):
        return _interp_on(xgrid, yb, np.atleast_2d(x))

    return Dynamics(eps=0.0, T=float(T), n=n, m=0, k=k, mode=MODE_TABLE, grid=xgrid, stat=np.zeros((Nx, 0)),
                    cmap=np.zeros(0, np.int64), cvals=np.zeros(1), off=np.zeros(6, np.int64), dyn=dyn,
                    t_tab=t_tab, u_nodes=u_nodes, c=0.0, u_ref=np.zeros(1), u_lo=np.zeros(1), u_hi=np.zeros(1),
                    has_sig=has_sig, has_tau=False, terminal=terminal, source=source,
                    value=value if kind in (MODE_AFFINE, MODE_GRID) else None, ybar=ybar,
                    attrs={"x_box": _box_attrs(xgrid), "y_box": _box_attrs(ygrid), "x_n": np.asarray(xgrid.n),
                           "y_n": np.asarray(ygrid.n), "control_kind": MODE_NAMES[kind]})


# ------------------------------------------------------------------------------------------------------------
# simulation


#: quantile levels stored by default
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def time_step(T: float, eps: float, ds: float | None = None, fast_resolution: float = 10.0) -> tuple[float, int]:
    """``ds = T / ceil(T / min(ds_user, eps / fast_resolution))`` (eps > 0; default user step T/200).
    Returns (ds, number of steps). See :func:`resolution_for` for a fast_resolution from the drift's rate."""
    ds = float(T / 200.0 if ds is None else ds)
    if ds <= 0:
        raise ValueError("ds must be > 0")
    if eps > 0:
        ds = min(ds, eps / float(fast_resolution))
    nsteps = int(math.ceil(T / ds - 1e-9))
    return T / nsteps, nsteps


def resolution_for(dyn: Dynamics, bias: float = 0.01) -> float:
    """A ``fast_resolution`` (steps per unit eps) for which the Euler chain's fast law is biased by about
    ``bias`` (relative, ``lambda ds / (2 eps)`` with lambda the mean fast rate) and stable on the visited
    region (``lambda_max ds / eps <= 1``); at least 10."""
    lam = float(dyn.attrs.get("fast_rate_mean", 0.0))
    lam_max = float(dyn.attrs.get("fast_rate_max", 0.0))
    return float(max(10.0, lam / (2 * bias), lam_max))


@dataclass
class Simulation:
    """Paths of one system. ``X`` (N, R, n), ``Y`` (N, R, m), cumulative running cost ``C`` (N, R) at the
    record times ``s`` (time elapsed), terminal cost ``G`` (N,), controls ``U`` (K, R, k) of the first K paths."""

    eps: float
    s: np.ndarray
    X: np.ndarray
    Y: np.ndarray
    C: np.ndarray
    G: np.ndarray
    U: np.ndarray
    ds: float
    nsteps: int
    seed: int
    x0: np.ndarray
    y0: np.ndarray
    source: str
    value_pde: float | None = None
    attrs: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def n_paths(self) -> int:
        return self.X.shape[0]

    @property
    def cost(self) -> np.ndarray:
        """Total cost of every path: sum_j ds l + g."""
        return self.C[:, -1] + self.G

    def total_cost(self) -> tuple[float, float]:
        """Monte Carlo estimate of the expected total cost and its standard error."""
        J = self.cost
        return float(J.mean()), float(J.std(ddof=1) / math.sqrt(len(J)))

    def expect(self, phi, component: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """E phi(X_s[component]) and its MC standard error at every record time."""
        v = phi(self.X[:, :, component])
        return v.mean(axis=0), v.std(axis=0, ddof=1) / math.sqrt(v.shape[0])

    def to_group(self, n_keep: int = 20, quantiles=QUANTILES) -> store.Group:
        """Group ``simulation_eps_<eps>`` (see :func:`simulate_case`)."""
        Var = store.Variable
        N, R, n = self.X.shape
        m = self.Y.shape[2]
        K = min(n_keep, N)
        q = np.asarray(quantiles, float)
        sq = math.sqrt(N)
        coords = {"s": Var(self.s, ("s",), {"long_name": "time elapsed s (the value function's t = T - s)"}),
                  "path": Var(np.arange(K), ("path",), {"long_name": "index of a stored sample path"}),
                  "quantile": Var(q, ("quantile",), {"long_name": "quantile level"}),
                  "slow": Var(np.arange(n), ("slow",), {"long_name": "slow component"})}
        v = {"X_paths": Var(self.X[:K], ("path", "s", "slow"), {"long_name": "sample paths of the slow state X"})}
        if m:
            coords["fast"] = Var(np.arange(m), ("fast",), {"long_name": "fast component"})
            v["Y_paths"] = Var(self.Y[:K], ("path", "s", "fast"), {"long_name": "sample paths of the fast state Y"})
        if self.U.shape[2] and self.U.shape[0]:
            k = self.U.shape[2]
            coords["control"] = Var(np.arange(k), ("control",), {"long_name": "control component"})
            v["U_paths"] = Var(self.U[:K], ("path", "s", "control"),
                               {"long_name": "feedback control along the stored paths (at the start of each step)"})
        Xc = self.X - self.X.mean(axis=0)
        v["X_mean"] = Var(self.X.mean(axis=0), ("s", "slow"), {"long_name": "E X_s (Monte Carlo)"})
        v["X_mean_se"] = Var(self.X.std(axis=0, ddof=1) / sq, ("s", "slow"), {"long_name": "MC standard error of E X_s"})
        v["X_cov"] = Var(np.einsum("prs,prt->rst", Xc, Xc) / max(N - 1, 1), ("s", "slow", "slow_"),
                         {"long_name": "Cov X_s (Monte Carlo)"})
        coords["slow_"] = Var(np.arange(n), ("slow_",), {"long_name": "slow component (second axis of X_cov)"})
        v["X_quantiles"] = Var(np.quantile(self.X, q, axis=0), ("quantile", "s", "slow"),
                               {"long_name": "quantiles of X_s over the paths"})
        if m:
            Yc = self.Y - self.Y.mean(axis=0)
            v["Y_mean"] = Var(self.Y.mean(axis=0), ("s", "fast"), {"long_name": "E Y_s (Monte Carlo)"})
            v["Y_cov"] = Var(np.einsum("prs,prt->rst", Yc, Yc) / max(N - 1, 1), ("s", "fast", "fast_"),
                             {"long_name": "Cov Y_s (Monte Carlo)"})
            coords["fast_"] = Var(np.arange(m), ("fast_",), {"long_name": "fast component (second axis of Y_cov)"})
        v["running_cost_mean"] = Var(self.C.mean(axis=0), ("s",),
                                     {"long_name": "E int_0^s l ds (Monte Carlo, left-point rule)"})
        v["running_cost_se"] = Var(self.C.std(axis=0, ddof=1) / sq, ("s",),
                                   {"long_name": "MC standard error of running_cost_mean"})
        Jm, Jse = self.total_cost()
        attrs = {"eps": float(self.eps), "ds": float(self.ds), "nsteps": int(self.nsteps), "N": int(N),
                 "seed": int(self.seed), "T": float(self.s[-1]), "x0": np.asarray(self.x0, float),
                 "feedback_source": self.source, "total_cost_mean": Jm, "total_cost_se": Jse,
                 "total_cost_ci95_lo": Jm - 1.96 * Jse, "total_cost_ci95_hi": Jm + 1.96 * Jse,
                 "terminal_cost_mean": float(self.G.mean()),
                 "scheme": ("Euler-Maruyama, weak order 1: X += ds a + sqrt(2 ds) sigma xi, Y += (ds/eps) b + "
                            "sqrt(2 ds/eps) tau zeta; running cost by the left-point rule"
                            if self.eps > 0 else
                            "Euler-Maruyama (weak order 1) for the effective system: X += ds abar + sqrt(2 ds) sbar xi"),
                 "time_step_rule": (f"ds = T / ceil(T / min(ds_user, eps/{float(self.attrs['fast_resolution']):.4g}))"
                                    if self.attrs.get("fast_resolution") is not None else
                                    "ds = T / ceil(T / min(ds_user, eps/fast_resolution))"),
                 "convention": "s = time elapsed; the feedback uses D_xV(T - s) (t = time remaining); "
                               "total cost estimates V(T, x0[, y0])",
                 "rng": "xoshiro256++ per path seeded by splitmix64(seed, path); ziggurat normals; "
                        "independent of the thread count",
                 "paths_stored": f"the first {K} paths",
                 **{k: v_ for k, v_ in self.attrs.items() if v_ is not None},
                 **{f"time_{k}_s": float(t) for k, t in self.timings.items()}}
        if m:
            attrs["y0"] = np.asarray(self.y0, float)
        if self.value_pde is not None:
            attrs["value_pde"] = float(self.value_pde)
        return store.Group(coords=coords, variables=v, attrs=attrs)


def simulate(dyn: Dynamics, x0, y0=None, n_paths: int = 10000, ds: float | None = None, seed: int = 0,
             n_record: int = 101, n_keep: int = 20, fast_resolution: float = 10.0) -> Simulation:
    """Simulate ``n_paths`` Euler-Maruyama paths of ``dyn`` on [0, T] (module docstring).

    x0: (n,) or per path (N, n); y0: (m,) or (N, m), default <y>_{x0}. ds: see :func:`time_step`
    (``ds <= eps / fast_resolution``; ``'auto'``: :func:`resolution_for`; a :class:`FastStepWarning` when the
    fast drift's rate makes the Euler chain biased or unstable).
    Records at ``n_record`` times evenly spaced in steps (always s = 0 and s = T); controls of the first
    ``n_keep`` paths. Same seed -> bit-identical paths, whatever the thread count.
    """
    t0 = time.perf_counter()
    n, m, k = dyn.n, dyn.m, dyn.k
    N = int(n_paths)
    x0 = np.asarray(x0, float)
    X0 = np.broadcast_to(x0.reshape(-1, n) if x0.ndim > 1 else x0.reshape(1, n), (N, n))
    if m:
        if y0 is None:
            y0 = dyn.ybar(np.atleast_2d(X0[0]))[0] if x0.ndim == 1 else dyn.ybar(X0)
        y0 = np.asarray(y0, float)
        Y0 = np.broadcast_to(y0.reshape(-1, m) if y0.ndim > 1 else y0.reshape(1, m), (N, m))
        z0 = np.ascontiguousarray(np.concatenate([X0, Y0], axis=1))
    else:
        z0 = np.ascontiguousarray(X0)
    if fast_resolution == "auto":
        fast_resolution = resolution_for(dyn)
    ds, nsteps = time_step(dyn.T, dyn.eps, ds, fast_resolution)
    lam, lam_max = dyn.attrs.get("fast_rate_mean", 0.0), dyn.attrs.get("fast_rate_max", 0.0)
    xb = lam * ds / (2 * dyn.eps) if m else 0.0      # OU chain: stationary variance too large by xb / (1 - xb)
    if m and (lam_max * ds / dyn.eps > 1.0 or xb >= 1.0 / 11.0):
        warnings.warn(f"eps = {dyn.eps:g}, ds = {ds:.3g}: the fast drift's rate is {lam:.3g} on average and "
                      f"reaches {lam_max:.3g}: the Euler chain of the fast variable is "
                      + ("close to unstable" if lam_max * ds / dyn.eps > 1.0 else "biased")
                      + f" (lambda ds / eps = {lam * ds / dyn.eps:.2g} on average, {lam_max * ds / dyn.eps:.2g} at most); "
                      f"use fast_resolution >= {resolution_for(dyn):.3g} (or 'auto')", FastStepWarning, stacklevel=2)
    R = max(2, min(int(n_record), nsteps + 1))
    rec = np.unique(np.round(np.linspace(0, nsteps, R)).astype(np.int64))
    R = len(rec)
    K = min(int(n_keep), N)
    out_X = np.empty((N, R, n))
    out_Y = np.empty((N, R, m))
    out_C = np.empty((N, R))
    out_U = np.zeros((K, R, k))
    g = dyn.grid
    t_tab = dyn.t_tab
    nt = len(t_tab)
    inv_dt_tab = 1.0 / (t_tab[1] - t_tab[0]) if nt > 1 else 0.0
    nu = dyn.u_nodes.shape[0]
    un = np.ascontiguousarray(dyn.u_nodes if k else np.zeros((1, 1)))
    paths_kernel(n, m)(z0, np.asarray(g.lo, float), 1.0 / g.h, np.asarray(g.shape, np.int64), dyn.stat, dyn.cmap,
                       dyn.cvals, dyn.dyn, nt, float(t_tab[0]), inv_dt_tab, k, dyn.mode, nu, dyn.off, un,
                       float(dyn.c), dyn.u_ref, dyn.u_lo, dyn.u_hi, float(dyn.T), ds, nsteps,
                       float(dyn.eps) if m else 1.0, rec, np.uint64(seed), dyn.has_sig, dyn.has_tau,
                       out_X, out_Y, out_C, out_U)
    t1 = time.perf_counter()
    G = dyn.terminal(out_X[:, -1], out_Y[:, -1])
    if not (np.all(np.isfinite(out_X[:, -1])) and np.all(np.isfinite(G))):
        raise NumericalError(f"non-finite paths (eps = {dyn.eps:g}, ds = {ds:g}): the Euler step is unstable")
    vp = dyn.value_at(X0[0], z0[0, n:] if m else None) if x0.ndim == 1 and (y0 is None or np.ndim(y0) == 1) else None
    return Simulation(eps=dyn.eps, s=rec * ds, X=out_X, Y=out_Y, C=out_C, G=np.asarray(G, float), U=out_U, ds=ds,
                      nsteps=nsteps, seed=int(seed), x0=x0, y0=z0[0, n:] if m else np.zeros(0), source=dyn.source,
                      value_pde=vp, attrs={**dyn.attrs, "control_kind": MODE_NAMES[dyn.mode],
                                           "fast_resolution": float(fast_resolution)},
                      timings={"paths": t1 - t0, "path_steps_per_s": N * nsteps / max(t1 - t0, 1e-12)})


# ------------------------------------------------------------------------------------------------------------
# from a case or a result file


def _load(case):
    from .case import Case, load_case
    if isinstance(case, Case):
        return case
    if isinstance(case, str) and "\n" in case:
        return load_case(tomllib.loads(case))
    return load_case(case)


def case_grids(case, model: Model, cell=None) -> tuple[Grid, Grid]:
    """The x and y grids of a case (the cell's when given): those of the value stage."""
    if cell is not None:
        return cell.xgrid, cell.ygrid
    from .runner import fast_grid, slow_grid
    xg = slow_grid(case, model)
    return xg, fast_grid(case, model, xg)


def dense_value(case, eps: float, model: Model | None = None, cell=None, dt: float | None = None,
                every: int = 1, xgrid: Grid | None = None, ygrid: Grid | None = None):
    """V^eps (eps > 0) or V (eps = 0) of ``case`` with output at every ``every``-th time step (uniform times
    ``0, every dt, ..., T``): :func:`hjbsolve.value.value_function` with the case's run options."""
    from .models import build_model
    from .value import value_function
    case = _load(case)
    model = model or build_model(case)
    if xgrid is None or ygrid is None:
        xgrid, ygrid = case_grids(case, model, cell)
    T = float(case.time["T"])
    dt = float(dt or case.time["dt"])
    nsteps = max(1, int(round(T / dt)))
    every = max(1, int(every))
    if nsteps % every:
        raise ValueError(f"every = {every} must divide the number of value steps {nsteps}")
    times = np.arange(0, nsteps + 1, every) * (T / nsteps)
    r = case.run
    exact = case.grid["u"]["exact"]
    use_cell = cell if (cell is not None and cell.xgrid == xgrid and cell.ygrid == ygrid) else None
    return value_function(model, use_cell, eps=float(eps), T=T, dt=dt, output_times=times, xgrid=xgrid, ygrid=ygrid,
                          order=r["order"], extrapolation=r["extrapolation"], effective_scheme=r["effective_scheme"],
                          richardson=r["richardson"],
                          u_nodes=None if exact else model.controls.nodes(), minimize="auto" if exact else "grid")


def prepare(case, eps: float, model: Model | None = None, cell=None, feedback: str = "optimal",
            dt: float | None = None, value=None, every: int = 1) -> Dynamics:
    """The :class:`Dynamics` of ``case`` at ``eps`` (eps = 0: the effective system), computing the dense value
    function when the optimal feedback needs it (or using ``value``)."""
    from .models import build_model
    case = _load(case)
    model = model or build_model(case)
    xg, yg = case_grids(case, model, cell)
    T = float(case.time["T"])
    exact = bool(case.grid["u"]["exact"])
    u_nodes = model.controls.nodes()
    if isinstance(value, StoredValue) and _control_kind(model, feedback, exact) != MODE_AFFINE:
        value = None        # a stored feedback serves control-affine models; the others recompute D_xV densely
    needs_value = model.k > 0 and feedback == "optimal"
    if needs_value and value is None:
        value = dense_value(case, eps, model, cell, dt, every, xg, yg)
    if eps > 0:
        return two_scale_dynamics(model, xg, yg, eps, T, value, feedback, exact, u_nodes)
    if cell is not None and cell.xgrid == xg and cell.ygrid == yg:
        mu = np.asarray(cell.mu).reshape(xg.size, yg.size)
    else:
        mu = _mu_cache(model, xg, yg)
    return effective_dynamics(model, xg, yg, mu, T, value, feedback, exact, u_nodes)


@dataclass
class StoredValue:
    """A value group read back from a result file: what the path kernel needs of a ValueResult."""

    eps: float
    t_out: np.ndarray
    V: np.ndarray
    feedback_t: np.ndarray | None
    attrs: dict
    V_monotone: np.ndarray | None = None    # Richardson runs: the monotone V_{dt/2}; |V - V_monotone| estimates the error


def stored_values(result, eps_values=None, dt: float | None = None) -> dict:
    """{eps: :class:`StoredValue`} of the value groups of a loaded result file that store the feedback at
    every output time (``feedback_t``) at uniform times, for the eps in ``eps_values`` (default all); with
    ``dt`` given (a new value time step asked for) nothing is reused."""
    if dt is not None:
        return {}
    out = {}
    for name, g in result.extra_groups.items():
        if not name.startswith("eps_") or "feedback_t" not in g.variables or "eps" not in g.attrs:
            continue
        eps = float(g.attrs["eps"])
        if eps_values is not None and eps not in [float(e) for e in np.atleast_1d(eps_values)]:
            continue
        mono = g.variables.get("V_monotone")
        sv = StoredValue(eps, np.asarray(g.coords["t"].data, float), g.variables["V"].data,
                         g.variables["feedback_t"].data, dict(g.attrs), None if mono is None else mono.data)
        try:
            _time_table(sv)
        except ValueError:
            continue
        out[eps] = sv
    return out


def simulation_group_name(eps: float) -> str:
    """'simulation_eps_0.01'; 'simulation_eps_0' is the effective system."""
    return f"simulation_eps_{float(eps):g}"


def default_start(xgrid: Grid) -> np.ndarray:
    """Default x0: three quarters across the slow box, on every axis."""
    return np.asarray(xgrid.lo) + 0.75 * (np.asarray(xgrid.hi) - np.asarray(xgrid.lo))


def _check_start(name: str, z, grid, dim: int) -> None:
    """A start point must have the state's dimension and lie in the computational box (the feedback and the
    value are known there only)."""
    z = np.atleast_1d(np.asarray(z, float))
    if z.shape[-1] != dim:
        raise HJBError(f"--{name}: give {dim} number(s), one per component (got {z.shape[-1]})")
    lo, hi = np.asarray(grid.lo, float), np.asarray(grid.hi, float)
    if np.any(z < lo) or np.any(z > hi):
        box = ", ".join(f"[{a:g}, {b:g}]" for a, b in zip(lo, hi))
        raise HJBError(f"--{name} = {np.round(z, 6).tolist()} lies outside the computational box {box}: the "
                       "feedback and the value are only known inside it")


def simulate_case(case, eps_values=None, x0=None, y0=None, n_paths: int = 10000, ds: float | None = None,
                  seed: int = 0, feedback: str = "optimal", n_record: int = 101, n_keep: int = 20,
                  dt: float | None = None, cell=None, model: Model | None = None,
                  return_simulations: bool = False, fast_resolution: float = 10.0, values: dict | None = None) -> dict:
    """Simulate ``case`` for every eps (default: the case's ``run.eps``); returns ``{group name: store.Group}``
    (``{eps: Simulation}`` when ``return_simulations``).

    Group ``simulation_eps_<eps>``: coordinates ``s`` (time elapsed), ``path``, ``quantile``, ``slow``/``fast``/
    ``control``; variables ``X_paths(path, s, slow)``, ``Y_paths(path, s, fast)``, ``U_paths(path, s, control)``,
    ``X_mean(s, slow)``, ``X_mean_se``, ``X_cov(s, slow, slow_)``, ``X_quantiles(quantile, s, slow)``, ``Y_mean``,
    ``Y_cov``, ``running_cost_mean(s)``, ``running_cost_se(s)``; attributes eps, ds, N, seed, x0, y0,
    feedback_source, total_cost_mean/se/ci95_lo/ci95_hi, value_pde (V(T, x0, y0) from the value stage).
    ``values``: {eps: stored value} (:func:`stored_value`) whose feedback at the stored times is used instead
    of recomputing the value function.
    """
    from .models import build_model
    case = _load(case)
    model = model or build_model(case)
    eps_values = case.run["eps"] if eps_values is None else list(np.atleast_1d(eps_values))
    if model.m == 0:
        raise HJBError("simulate: plain HJB problems (m = 0, no fast variable) are not simulated; the value "
                       "function and its feedback are in the result file")
    xg, yg = case_grids(case, model, cell)
    x0 = default_start(xg) if x0 is None else np.asarray(x0, float)
    _check_start("x0", x0, xg, model.n)
    if y0 is not None and model.m:
        _check_start("y0", np.asarray(y0, float), yg, model.m)
    out = {}
    for eps in eps_values:
        eps = float(eps)
        t0 = time.perf_counter()
        dyn = prepare(case, eps, model, cell, feedback, dt, value=(values or {}).get(eps))
        t1 = time.perf_counter()
        sim = simulate(dyn, x0, y0, n_paths=n_paths, ds=ds, seed=seed, n_record=n_record, n_keep=n_keep,
                       fast_resolution=fast_resolution)
        sim.attrs["fast_resolution"] = float(resolution_for(dyn) if fast_resolution == "auto" else fast_resolution)
        sim.timings["feedback_tables"] = t1 - t0
        sim.attrs["case_name"] = case.name
        if return_simulations:
            out[eps] = sim
        else:
            out[simulation_group_name(eps)] = sim.to_group(n_keep)
    return out


def simulate_file(path, eps_values=None, n_paths: int = 10000, ds: float | None = None, seed: int = 0,
                  output=None, x0=None, y0=None, feedback: str = "optimal", n_record: int = 101,
                  n_keep: int = 20, dt: float | None = None, fast_resolution=10.0, overrides=None) -> dict:
    """Simulate the case stored in a result file (its resolved case, root attribute ``case_resolved``; see
    :func:`hjbsolve.provenance.stored_case`) for the eps of its value groups
    ``eps_<eps>`` (or ``eps_values``), recomputing the value functions with dense output times, and write the
    groups ``simulation_eps_<eps>`` into ``output`` (default: the file itself) with :func:`hjbsolve.store.update`
    (atomic). A case file (.toml) is accepted too (output default: the case's result file). ``overrides``:
    ``key=value`` strings applied to the case as by ``--set``. Returns ``{group name: store.Group}``."""
    from .result import Result
    p = str(path)
    cell = None
    if p.endswith(".toml"):
        from .case import load_case
        case = load_case(p, overrides)
        target = output or case.output
    else:
        from .provenance import stored_case
        case = stored_case(store.root_attrs(p), p, overrides)     # the resolved case, never the raw text
        res = Result.load(p)
        cell = res.cell if not overrides else None
        if eps_values is None:
            found = sorted({float(g.attrs["eps"]) for name, g in res.extra_groups.items()
                            if name.startswith("eps_") and "eps" in g.attrs}, reverse=True)
            eps_values = found or None
        target = output or p
    values = stored_values(res, eps_values, dt) if (not p.endswith(".toml") and not overrides) else None
    store.check_writable(target)          # before the work: a FIFO, a device or a folder is refused
    with store.output_lock(target, f"hjbsolve simulate on {target}"):
        groups = simulate_case(case, eps_values, x0, y0, n_paths, ds, seed, feedback, n_record, n_keep, dt, cell,
                               fast_resolution=fast_resolution, values=values)
        for name, grp in groups.items():
            store.update(target, name, grp)
    return groups


# ------------------------------------------------------------------------------------------------------------
# convergence in law


#: test functions phi for the convergence in law (applied to one slow component)
TEST_FUNCTIONS = {"x": lambda x: x, "x^2": lambda x: x * x, "tanh(x)": np.tanh, "cos(x)": np.cos}


def law_table(sims: dict, limit: Simulation, phis=("x", "x^2", "tanh(x)"), times=None,
              component: int = 0) -> list[dict]:
    """E phi(X^eps_s) against E phi(Xbar_s) with Monte Carlo standard errors, for every simulation in ``sims``
    ({eps: Simulation}) and every phi (names of :data:`TEST_FUNCTIONS` or (name, callable) pairs), at the
    record times nearest to ``times`` (default: the final time). The samples are independent, so the
    difference has the standard error ``sqrt(se_eps^2 + se_bar^2)``. Rows: dicts with keys eps, s, phi,
    mean_eps, se_eps, mean_bar, se_bar, diff, se_diff."""
    times = [limit.s[-1]] if times is None else list(np.atleast_1d(times))
    rows = []
    for name in phis:
        nm, f = (name, TEST_FUNCTIONS[name]) if isinstance(name, str) else name
        mb, sb = limit.expect(f, component)
        for eps, sim in sorted(sims.items(), key=lambda kv: -kv[0]):
            me, se = sim.expect(f, component)
            for t in times:
                i = int(np.argmin(np.abs(sim.s - t)))
                ib = int(np.argmin(np.abs(limit.s - sim.s[i])))
                rows.append({"eps": float(eps), "s": float(sim.s[i]), "phi": nm, "mean_eps": float(me[i]),
                             "se_eps": float(se[i]), "mean_bar": float(mb[ib]), "se_bar": float(sb[ib]),
                             "diff": float(me[i] - mb[ib]), "se_diff": float(math.hypot(se[i], sb[ib]))})
    return rows


def convergence_in_law(case, eps_values, x0=None, y0=None, phis=("x", "x^2", "tanh(x)"), times=None,
                       n_paths: int = 10000, ds: float | None = None, seed: int = 0, feedback: str = "optimal",
                       dt: float | None = None, fast_resolution: float = 10.0) -> list[dict]:
    """Simulate ``case`` at every eps > 0 of ``eps_values`` and its effective system (independent seeds), and
    tabulate E phi(X^eps) - E phi(Xbar) with standard errors (:func:`law_table`).

    The Euler chain's fast invariant law is biased by O(lambda ds / eps) (lambda: the fast drift rate), a bias
    that does not vanish as eps -> 0 at fixed ds/eps: raise ``fast_resolution`` (steps per unit eps) until
    the table no longer changes."""
    from .models import build_model
    case = _load(case)
    model = build_model(case)
    sims = simulate_case(case, [e for e in eps_values if e > 0], x0, y0, n_paths, ds, seed, feedback, dt=dt,
                         model=model, return_simulations=True, fast_resolution=fast_resolution)
    lim = simulate_case(case, [0.0], x0, None, n_paths, ds, seed + 1_000_003, feedback, dt=dt, model=model,
                        return_simulations=True)[0.0]
    return law_table(sims, lim, phis, times)


def format_table(rows: list[dict]) -> str:
    """Plain-text table of :func:`law_table` rows."""
    out = [f"{'eps':>8} {'s':>6} {'phi':>8} {'E phi(X^eps)':>14} {'E phi(Xbar)':>14} {'diff':>10} {'4 se':>9}"]
    for r in rows:
        out.append(f"{r['eps']:8.3g} {r['s']:6.3g} {r['phi']:>8} {r['mean_eps']:14.5f} {r['mean_bar']:14.5f} "
                   f"{r['diff']:10.5f} {4 * r['se_diff']:9.5f}")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------------------
# exact moments of linear systems


def linear_moments(A, Dm, m0, C0, times) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of ``dZ = A Z ds + sqrt(2 Dm) dW`` (Dm symmetric PSD): ``m' = A m``,
    ``C' = A C + C A^T + 2 Dm``. For Hurwitz A: ``C(s) = Cinf + e^{As} (C0 - Cinf) e^{A^T s}`` with the
    Lyapunov solution ``A Cinf + Cinf A^T + 2 Dm = 0`` (exact, and stable for stiff A); otherwise a Radau
    solve to rtol 1e-11. Returns m (len(times), d) and C (len(times), d, d)."""
    from scipy.linalg import expm, solve_continuous_lyapunov
    A = np.asarray(A, float)
    Q = 2.0 * np.asarray(Dm, float)
    m0 = np.asarray(m0, float)
    C0 = np.asarray(C0, float)
    times = np.atleast_1d(np.asarray(times, float))
    d = len(m0)
    if np.all(np.linalg.eigvals(A).real < 0):
        Cinf = solve_continuous_lyapunov(A, -Q)
        ms, Cs = [], []
        for t in times:
            E = expm(A * t)
            ms.append(E @ m0)
            Cs.append(Cinf + E @ (C0 - Cinf) @ E.T)
        return np.array(ms), np.array(Cs)
    from scipy.integrate import solve_ivp

    def rhs(_, w):
        m, C = w[:d], w[d:].reshape(d, d)
        return np.concatenate([A @ m, (A @ C + C @ A.T + Q).ravel()])

    sol = solve_ivp(rhs, (0.0, max(float(times.max()), 1e-300)), np.concatenate([m0, C0.ravel()]), t_eval=times,
                    method="Radau", rtol=1e-11, atol=1e-13)
    W = sol.y.T
    return W[:, :d], W[:, d:].reshape(-1, d, d)


def entropy_sgd_linear(a: float, gamma: float, beta: float, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(A, Dm) of Chaudhari's system on the quadratic loss f = a y^2/2 (docs/mathematics.md §1, d = 1, uncontrolled):
    ``dx = -(x - y)/gamma ds``, ``dy = -(1/eps)[a y + (y - x)/gamma] ds + sqrt(2/(beta eps)) dW``."""
    A = np.array([[-1.0 / gamma, 1.0 / gamma], [1.0 / (eps * gamma), -(a + 1.0 / gamma) / eps]])
    Dm = np.diag([0.0, 1.0 / (beta * eps)])
    return A, Dm
