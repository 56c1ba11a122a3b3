"""Semi-Lagrangian steppers: coefficient tables prepared once per (problem, dt), one kernel call per step.

A stepper advances a batch of J slow problems on the same slow grid (n = 1 or 2):
``V^{k+1}[j] = min_u S_u[V^k[j]]`` (see :mod:`hjbsolve.sl.kernels` for the one-step operator).

Characteristics (``order``):

- ``order = 2`` (default): Taylor feet ``x + dt a + (dt²/2) (D_x a) a``, noise half-widths
  ``sqrt(2 n dt) (I + (dt/2) D_x a) sigma_col`` and the trapezoidal running cost
  (``dt l + dt²/2 (D_x l . a + tr(sigma sigma^T D²l))`` for tabulated coefficients). With the control frozen over
  the step the local error is O(dt³) in the drift and the variance, hence a global O(dt²) time error for
  smooth problems, plus the O(dx²/dt) of the multilinear interpolation. (Two-point noise has a wrong fourth
  moment: for diffusions with V'''' != 0 that leaves an O(dt) term of size sigma⁴ V''''/3.)
  D_x a comes from second-order central differences of the tabulated drift (one-sided at the box edges).
- ``order = 1``: Euler feet ``x + dt a ± sqrt(2 n dt) sigma_col`` (the plain Camilli-Falcone scheme).

Minimisation over u:

- :class:`TabStepper`: finite control set (any list of nodes), coefficients tabulated on
  (batch, control, slow node). Error O(du²) per unit time for a grid of spacing du.
- :class:`AffineStepper1D`: ``a = a0 + B u``, ``l = l0 + c (u - u_ref)²/2``, u in an interval, 1-D x: exact
  minimisation of the piecewise-quadratic SL objective (no control discretisation error).
- :class:`AffineStepper2D`: the same in 2-D x (any k), grid search then golden-section refinement.
"""

from __future__ import annotations

import numpy as np

from ..grid import Grid
from . import kernels as K


def _c(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def jacobian(field: np.ndarray, grid: Grid, first_axis: int) -> np.ndarray:
    """``D_x field``: field (..., N1[, N2], n) with the grid axes starting at ``first_axis``.

    Returns (..., N1[, N2], n, n) with ``J[..., d, e] = d field_d / d x_e`` (second-order differences).
    """
    n = grid.ndim
    out = np.empty(field.shape + (n,))
    for e in range(n):
        if grid.shape[e] < 3:
            out[..., e] = 0.0
        else:
            out[..., e] = np.gradient(field, grid.h[e], axis=first_axis + e, edge_order=2)
    return out


def wide_gradient(f: np.ndarray, h: float, k: int, axis: int) -> np.ndarray:
    """``d f / dx`` along ``axis`` by differences over ±k nodes, ``(f[i+k] - f[i-k]) / (2 k h)``, the stencil
    shrinking to one side near the ends. With k ~ (noise half-width)/h the difference does not amplify the
    O(dx²) grid-scale ripples of a computed V the way nearest-neighbour differences do (by 1/dx per
    derivative), and its own error O((k h)²) = O(dt) is what the uses below can afford."""
    N = f.shape[axis]
    k = int(max(1, min(k, N - 1)))
    i = np.arange(N)
    hi = np.minimum(i + k, N - 1)
    lo = np.maximum(i - k, 0)
    shape = [1] * f.ndim
    shape[axis] = N
    return (np.take(f, hi, axis=axis) - np.take(f, lo, axis=axis)) / ((hi - lo) * h).reshape(shape)


def _near(mask: np.ndarray, k: int, axes) -> np.ndarray:
    """True within k nodes (along each of ``axes``) of a True entry of mask."""
    from scipy.ndimage import maximum_filter1d
    out = mask.astype(np.uint8)
    for ax in axes:
        out = maximum_filter1d(out, size=2 * k + 1, axis=ax, mode="nearest")
    return out > 0


def interior_window(grid: Grid, frac: float = 0.5) -> np.ndarray:
    lo, hi = np.asarray(grid.lo), np.asarray(grid.hi)
    c, w = (lo + hi) / 2, (hi - lo) / 2 * frac
    return grid.interior_mask(np.stack([c - w, c + w], axis=-1))


class TabStepper:
    """SL step with coefficients tabulated on a finite control set.

    A (J, nc, *xshape, n) drift, S (J, ncs, *xshape, n, n) or None diffusion factor sigma (ncs = 1 when it
    does not depend on the control), L (J, nc, *xshape) running cost.
    """

    kind = "grid"

    def __init__(self, grid: Grid, A, S, L, dt: float, order: int = 2, mode: int = 0):
        self.grid, self.dt, self.order, self.mode = grid, float(dt), int(order), int(mode)
        n = grid.ndim
        A = np.asarray(A, float)
        self.J, self.nc = A.shape[:2]
        L = np.asarray(L, float)
        self.has_noise = S is not None and bool(np.any(np.asarray(S) != 0.0))
        if n == 2 and not self.has_noise:
            # deterministic 2-D feet and costs in one pass (no gradient / einsum temporaries)
            disp, C = np.empty(A.shape), np.empty(A.shape[:-1])
            K.taylor_tables_2d(A, np.broadcast_to(L, A.shape[:-1]), float(grid.h[0]), float(grid.h[1]), self.dt,
                               self.order, disp, C)
            self._deterministic_2d(disp, C)
            return
        Da = jacobian(A, grid, 2) if order == 2 else np.zeros(A.shape + (n,))
        disp = dt * A + 0.5 * dt * dt * np.einsum("...de,...e->...d", Da, A)
        # step cost: trapezoidal rule dt/2 (l(x) + E l(xi)) expanded to second order
        C = dt * L
        if order == 2:
            DL = jacobian(L[..., None], grid, 2)[..., 0, :]                     # (J, nc, *xs, n)
            C = C + 0.5 * dt * dt * np.einsum("...e,...e->...", DL, A)
            if self.has_noise:
                D2L = jacobian(DL, grid, 2)                                       # (J, nc, *xs, n, n)
                SS = np.einsum("...dr,...er->...de", np.asarray(S, float), np.asarray(S, float))
                C = C + 0.5 * dt * dt * np.einsum("...de,...de->...", np.broadcast_to(SS, D2L.shape), D2L)
        self.C = _c(C)
        if self.has_noise:
            S = np.asarray(S, float)
            ncs = self.nc if (order == 2 or S.shape[1] > 1) else 1
            S = np.broadcast_to(S, (self.J, ncs) + S.shape[2:])
            I = np.eye(n)
            M = I + 0.5 * dt * Da if order == 2 else np.broadcast_to(I, Da.shape)
            M = M if ncs == self.nc else M[:, :1]
            noise = np.sqrt(2 * n * dt) * np.einsum("...de,...er->...dr", M, S)
        else:
            noise = np.zeros((self.J, 1) + grid.shape + (n, n))
        # the kernels work in index space: displacements and noise widths in cells
        hh = grid.h
        if n == 1:
            self.disp = _c(disp[..., 0] / hh[0])
            self.noise = _c(np.abs(noise[..., 0, 0]) / hh[0])
        else:
            self.disp = _c(disp / hh)
            self.noise = _c(noise / hh[:, None])
        self.arg = np.zeros((self.J,) + grid.shape, np.int32)
        self.x0 = float(grid.lo[0]) if n == 1 else _c(grid.lo)
        self.h = float(grid.h[0]) if n == 1 else _c(grid.h)

    @classmethod
    def from_tables_2d(cls, grid: Grid, disp, C, dt: float, order: int = 2, mode: int = 0) -> "TabStepper":
        """A deterministic (sigma = 0) 2-D stepper from its step tables: disp (J, nc, N1, N2, 2) in cells and
        C (J, nc, N1, N2), as :func:`hjbsolve.sl.kernels.taylor_tables_2d` writes them."""
        st = cls.__new__(cls)
        st.grid, st.dt, st.order, st.mode = grid, float(dt), int(order), int(mode)
        st.J, st.nc = C.shape[:2]
        st.has_noise = False
        st._deterministic_2d(disp, C)
        return st

    def _deterministic_2d(self, disp, C) -> None:
        self.disp, self.C = disp, C
        self.noise = np.zeros((self.J, 1) + self.grid.shape + (2, 2))
        self.arg = np.zeros((self.J,) + self.grid.shape, np.int32)
        self.x0, self.h = _c(self.grid.lo), _c(self.grid.h)

    def step(self, V: np.ndarray, out: np.ndarray) -> np.ndarray:
        if self.grid.ndim == 1:
            K.step_tab_1d(V, self.C, self.disp, self.noise, self.mode, self.has_noise, out, self.arg)
        else:
            K.step_tab_2d(V.reshape(V.shape[0], -1), self.C, self.disp, self.noise, self.mode, self.has_noise, out,
                          self.arg)
        return out

    def displacement_cells(self, rows=None) -> float:
        """Largest displacement (in cells) of the optimal foot on the central half of the box (batch rows
        ``rows``, a boolean mask over J; default all)."""
        n = self.grid.ndim
        # the optimal control's displacement only (already in cells)
        sel = np.take_along_axis(self.disp, self.arg.reshape(self.arg.shape[:1] + (1,) + self.arg.shape[1:]
                                                             + (1,) * (self.disp.ndim - self.arg.ndim - 1)), axis=1)[:, 0]
        sel = np.abs(sel) if n == 1 else np.linalg.norm(sel, axis=-1)
        sel = sel if rows is None else sel[rows]
        return float(sel[:, interior_window(self.grid)].max())


class AffineStepper1D:
    """1-D control-affine stepper with exact minimisation (k = 1).

    a0, B, l0, sig, c, uref, ulo, uhi: arrays (J, N) (or broadcastable): ``a = a0 + B u``,
    ``sigma = sig`` (independent of u), ``l = l0 + c (u - uref)^2 / 2``, ``u in [ulo, uhi]``.
    For order 2 the Taylor foot uses ``D_x a = a0' + B' u``; its u-quadratic part ``(dt²/2) B' B u²`` is
    left out to keep the foot affine in u, so the scheme is second order in time when B does not depend
    on x (B' = 0) and first order otherwise (use the grid stepper there).
    """

    kind = "exact"

    def __init__(self, grid: Grid, a0, B, l0, sig, c, uref, ulo, uhi, dt: float, order: int = 2, mode: int = 0):
        self.grid, self.dt, self.order, self.mode = grid, float(dt), int(order), int(mode)
        N = grid.shape[0]
        h = float(grid.h[0])
        a0 = np.asarray(a0, float)
        J = a0.shape[0]
        shape = (J, N)
        bc = lambda v: np.ascontiguousarray(np.broadcast_to(np.asarray(v, float), shape))
        a0, B, l0 = bc(a0), bc(B), bc(l0)
        sig = bc(sig) if sig is not None else np.zeros(shape)
        if order == 2:
            da0 = np.gradient(a0, h, axis=1, edge_order=2)
            dB = np.gradient(B, h, axis=1, edge_order=2)
        else:
            da0 = dB = np.zeros(shape)
        self.alpha = _c(dt * a0 + 0.5 * dt * dt * da0 * a0)
        self.beta = _c(dt * B + 0.5 * dt * dt * (da0 * B + dB * a0))
        self.da0, self.B, self.sig = da0, B, sig
        self.has_noise = bool(np.any(sig != 0.0))
        self.eta = _c(np.sqrt(2 * dt) * np.abs((1 + 0.5 * dt * da0) * sig))
        self.half_l0 = _c(0.5 * dt * l0)
        self.c0 = self.half_l0.copy()
        self.dtc = bc(dt * np.asarray(c, float))
        self.uref, self.ulo, self.uhi = bc(uref), bc(ulo), bc(uhi)
        self.x0, self.h = float(grid.lo[0]), h
        self.J = J
        self.ustar = np.zeros(shape)
        self.closed_loop = True
        self.B_varies = bool(np.abs(dB).max() > 1e-12 * max(1.0, np.abs(B).max())) if order == 2 else False

    def _closed_loop(self, V: np.ndarray) -> None:
        """Noise half-width and running cost of the affine feedback ``u + K (xi - x)`` within the step.

        The gain is that of the feedback ``u*(x) = clip(u_ref - B D_xV / c)`` of the current data,
        ``K = D_x u*`` (central differences over the noise half-width, :func:`wide_gradient`: over one cell
        they amplify the grid-scale ripples of V by 1/dx² and made fine grids unstable; no gain where the
        feedback is clipped within that width). Without it (control
        frozen over the step) the scheme misses the feedback's damping of the noise and its control cost: an
        O(dt) error ``c K² sigma² T / 2`` (``sigma² b² P² T / (2 r)`` in LQ problems). The feet then depend on
        V through K: each step is a min of monotone operators whose geometry is fixed from the data.
        """
        h = self.h
        # differences over the noise half-width (not over one cell: see wide_gradient)
        k = int(np.ceil(np.sqrt(2 * self.dt) * np.abs(self.sig).max() / h))
        p = wide_gradient(V, h, k, axis=1)
        c = np.where(self.dtc > 0, self.dtc / self.dt, np.inf)
        raw = self.uref - self.B * p / c
        us = np.clip(raw, self.ulo, self.uhi)
        Kg = wide_gradient(us, h, k, axis=1)
        # no gain where the feedback is clipped nearby; cap it so that |dt B K / 2| <= 1/2
        near = _near(raw != us, k, axes=(1,))
        cap = 1.0 / (self.dt * np.maximum(np.abs(self.B), 1e-300))
        Kg = np.where(near, 0.0, np.clip(Kg, -cap, cap))
        self.eta = _c(np.sqrt(2 * self.dt) * np.abs((1 + 0.5 * self.dt * (self.da0 + self.B * Kg)) * self.sig))
        self.c0 = _c(self.half_l0 + 0.25 * self.dtc * (Kg * self.eta) ** 2)

    def step(self, V: np.ndarray, out: np.ndarray) -> np.ndarray:
        if self.order == 2 and self.has_noise and self.closed_loop:
            self._closed_loop(V)
        F = V + self.half_l0
        if not hasattr(self, "_slopes"):
            L = K.slope_levels(F.shape[1])
            self._slopes = (np.empty((F.shape[0], L, F.shape[1] + 1)), np.empty((F.shape[0], L, F.shape[1] + 1)))
        K.step_aff_1d(F, self.c0, self.alpha, self.beta, self.eta, self.dtc, self.uref, self.ulo, self.uhi,
                      self.x0, self.h, self.mode, out, self.ustar, *self._slopes)
        return out

    def displacement_cells(self, rows=None) -> float:
        d = np.abs(self.alpha + self.beta * self.ustar) / self.h
        d = d if rows is None else d[rows]
        return float(d[:, interior_window(self.grid)].max())


class AffineStepper2D:
    """2-D control-affine stepper: grid search over ``unodes`` then golden-section refinement.

    a0 (J, N1, N2, 2), B (J, N1, N2, 2, k), l0 (J, N1, N2), sig (J, N1, N2, 2, 2) or None, c > 0 scalar,
    Cm (J, N1, N2, k, k) or None (identity): cost ``l0 + c/2 (u - uref)^T Cm (u - uref)``; uref
    (J, N1, N2, k); the box [lo, hi] (k,) with the tensor control grid ``unodes`` (nc, k) of spacing du.
    Order 2 uses ``D_x a = D a0 + sum_q u_q D B_q`` in the foot without its u-quadratic part (second order
    when B does not depend on x).
    """

    kind = "grid+golden"

    def __init__(self, grid: Grid, a0, B, l0, sig, c, Cm, uref, lo, hi, unodes, dt: float, order: int = 2,
                 mode: int = 0, refine: int = 2):
        self.grid, self.dt, self.order, self.mode = grid, float(dt), int(order), int(mode)
        a0 = np.asarray(a0, float)
        J = a0.shape[0]
        k = np.asarray(B).shape[-1]
        sh = (J,) + grid.shape
        a0 = np.broadcast_to(a0, sh + (2,))
        B = np.broadcast_to(np.asarray(B, float), sh + (2, k))
        if order == 2:
            Da0 = jacobian(a0, grid, 1)                               # (..., 2, 2)
            DB = jacobian(np.moveaxis(B, -1, -2), grid, 1)            # (..., k, 2, 2): d B[:, q] / dx
        else:
            Da0 = np.zeros(sh + (2, 2))
            DB = np.zeros(sh + (k, 2, 2))
        pts = grid.points()
        self.base = _c(pts + dt * a0 + 0.5 * dt * dt * np.einsum("...de,...e->...d", Da0, a0))
        corr = np.einsum("...de,...eq->...dq", Da0, B) + np.einsum("...qde,...e->...dq", DB, a0)
        self.bet = _c(dt * B + 0.5 * dt * dt * corr)
        self.has_noise = sig is not None and bool(np.any(np.asarray(sig) != 0.0))
        self.Da0, self.B = Da0, B
        self.sig = np.broadcast_to(np.asarray(sig if sig is not None else 0.0, float), sh + (2, 2))
        if self.has_noise:
            M = np.eye(2) + 0.5 * dt * Da0
            self.noise = _c(np.sqrt(4 * dt) * np.einsum("...de,...er->...dr", M, self.sig))
        else:
            self.noise = np.zeros(sh + (2, 2))
        self.half_l0 = _c(np.broadcast_to(0.5 * dt * np.asarray(l0, float), sh))
        self.c0 = self.half_l0.copy()
        self.closed_loop = True
        self.dtc = float(dt * c)
        self.Cm = _c(np.broadcast_to(np.eye(k) if Cm is None else np.asarray(Cm, float), sh + (k, k)))
        self.uref = _c(np.broadcast_to(np.asarray(uref, float), sh + (k,)))
        self.lo, self.hi = _c(np.reshape(lo, k)), _c(np.reshape(hi, k))
        self.unodes = _c(np.reshape(unodes, (-1, k)))
        du = []
        for q in range(k):
            vals = np.unique(self.unodes[:, q])
            du.append(np.diff(vals).max() if len(vals) > 1 else 0.0)
        self.du = _c(du)
        self.refine = int(refine)
        self.x0, self.h = _c(grid.lo), _c(grid.h)
        self.J, self.k = J, k
        self.ustar = np.zeros(sh + (k,))

    def _closed_loop(self, V: np.ndarray) -> None:
        """Closed-loop noise widths and cost within the step (see :meth:`AffineStepper1D._closed_loop`).

        Gain ``K = D_x u*`` of ``u* = clip(u_ref - Cm^{-1} B^T D_xV / c)`` (central differences over the noise
        half-width; zero where clipped within it; capped so that ``|dt/2 B K| <= 1/2``)."""
        h = self.grid.h
        # differences over the noise half-width (not over one cell: see wide_gradient)
        width = np.sqrt(4 * self.dt) * np.abs(self.sig).max()
        ks = [int(np.ceil(width / h[d])) for d in range(2)]
        p = np.stack([wide_gradient(V, h[d], ks[d], axis=1 + d) for d in range(2)], axis=-1)   # (J, N1, N2, 2)
        c = self.dtc / self.dt
        btp = np.einsum("...dq,...d->...q", self.B, p)
        raw = self.uref - np.linalg.solve(self.Cm, btp[..., None])[..., 0] / c
        us = np.clip(raw, self.lo, self.hi)
        Kg = np.stack([wide_gradient(us, h[d], ks[d], axis=1 + d) for d in range(2)], axis=-1)  # (J, N1, N2, k, 2)
        near = _near(np.any(raw != us, axis=-1), max(ks), axes=(1, 2))
        BK = np.einsum("...dq,...qe->...de", self.B, Kg)
        nrm = np.abs(BK).sum(axis=-1).max(axis=-1)
        scale = np.minimum(1.0, 1.0 / np.maximum(self.dt * nrm, 1e-300))
        scale = np.where(near, 0.0, scale)
        Kg = Kg * scale[..., None, None]
        BK = BK * scale[..., None, None]
        M = np.eye(2) + 0.5 * self.dt * (self.Da0 + BK)
        self.noise = _c(np.sqrt(4 * self.dt) * np.einsum("...de,...er->...dr", M, self.sig))
        Kn = np.einsum("...qd,...dr->...qr", Kg, self.noise)                            # K eta_r
        quad = np.einsum("...qr,...qs,...sr->...", Kn, self.Cm, Kn)
        self.c0 = _c(self.half_l0 + 0.25 * self.dtc * 0.5 * quad)

    def step(self, V: np.ndarray, out: np.ndarray) -> np.ndarray:
        if self.order == 2 and self.has_noise and self.closed_loop:
            self._closed_loop(V)
        F = V + self.half_l0
        K.step_aff_2d(F, self.c0, self.base, self.bet, self.noise, self.has_noise, self.Cm, self.dtc, self.uref,
                      self.unodes, self.du, self.lo, self.hi, self.x0, self.h, self.mode, self.refine, out,
                      self.ustar)
        return out

    def displacement_cells(self, rows=None) -> float:
        foot = self.base + np.einsum("...dq,...q->...d", self.bet, self.ustar)
        d = np.linalg.norm((foot - self.grid.points()) / self.grid.h, axis=-1)
        d = d if rows is None else d[rows]
        return float(d[:, interior_window(self.grid)].max())


class LinearControlStepper:
    """Deterministic 2-D SL step for ``a = a0(x) + B u`` (B constant) and ``l = l0(x) + q(u)`` over a finite
    control set: the step of :class:`TabStepper` (same Taylor feet and trapezoidal cost, order 1 or 2) with the
    tables factored, ``disp = base + M u``, ``C = c0 + q_u + c1 . u`` (kernel
    :func:`hjbsolve.sl.kernels.step_lin_2d`): memory proportional to the nodes.

    a0 (J, N1, N2, 2), B (2, k), l0 (J, N1, N2), q (nc,) with q_u = l(x, u) - l0(x), unodes (nc, k).
    """

    kind = "grid"

    def __init__(self, grid: Grid, a0, B, l0, q, unodes, dt: float, order: int = 2, mode: int = 0):
        self.grid, self.dt, self.order, self.mode = grid, float(dt), int(order), int(mode)
        a0 = np.asarray(a0, float)
        B = np.asarray(B, float)
        l0 = np.asarray(l0, float)
        self.J = a0.shape[0]
        self.u_nodes = _c(unodes)
        self.nc, k = self.u_nodes.shape
        if order == 2:
            Da0 = jacobian(a0, grid, 1)                                                 # (J, N1, N2, 2, 2)
            Dl0 = jacobian(l0[..., None], grid, 1)[..., 0, :]                          # (J, N1, N2, 2)
        else:
            Da0 = np.zeros(a0.shape + (2,))
            Dl0 = np.zeros(a0.shape)
        q2 = 0.5 * dt * dt
        hh = grid.h
        base = dt * a0 + q2 * np.einsum("...de,...e->...d", Da0, a0)
        M = dt * B + q2 * np.einsum("...de,eq->...dq", Da0, B)
        self.base = _c(base / hh)
        self.M = _c(M / hh[:, None])
        self.c0 = _c(dt * l0 + q2 * np.einsum("...e,...e->...", Dl0, a0))
        self.c1 = _c(q2 * np.einsum("eq,...e->...q", B, Dl0))
        self.q = _c(dt * np.asarray(q, float))
        self.has_noise = False
        self.arg = np.zeros((self.J,) + grid.shape, np.int32)

    def step(self, V: np.ndarray, out: np.ndarray) -> np.ndarray:
        K.step_lin_2d(V.reshape(V.shape[0], -1), self.base, self.M, self.c0, self.c1, self.q, self.u_nodes,
                      self.mode, out, self.arg)
        return out

    def displacement_cells(self, rows=None) -> float:
        u = self.u_nodes[self.arg]                                                        # (J, N1, N2, k)
        d = np.linalg.norm(self.base + np.einsum("...dq,...q->...d", self.M, u), axis=-1)
        d = d if rows is None else d[rows]
        return float(d[:, interior_window(self.grid)].max())
