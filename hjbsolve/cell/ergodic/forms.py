r"""Hamiltonian forms of the ergodic cell problem and their data checks.

Hamiltonians (``PeriodicHamiltonian``)
--------------------------------------
(a) separable:  G(y, q) = sum_k K_k(q_k) + V(y), K_k convex  (``PeriodicHamiltonian.quadratic``
    is the built-in K_k(s) = s^2/2 with exact flux and derivatives; ``.separable`` takes user
    K_k as numba functions K(s) -> float, derivatives exact if given, else central differences:
    give dK, a subgradient, when K has kinks);
(b) general:    G(y, q) a numba function G(y, q) -> float of two 1-D float64 arrays
    (``PeriodicHamiltonian.general``; q-derivatives by central differences, so G should be C^1
    in q; write a G with kinks in the control form (c));
(c) control:    G(y, q) = max_{a in A} { -f(y, a) . q - l(y, a) }   (sup convention; A a finite
    set, ``PeriodicHamiltonian.control``). With the sup convention ``Hbar(P)`` is minus the
    optimal long-run average of ``l + f.P`` for the controlled diffusion
    dY = f(Y, a) dt + sqrt(2 nu) dW (i.e. Hbar = max over invariant pairs of average(-f.P - l)).

V, f, l (or nothing, for (b)) are tabulated on the grid once; the kernels work on arrays.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numba.extending import is_jitted

from hjbsolve.errors import HJBError

from .fluxes import _dKq, _Kq, _upper_envelope_at
from .grid import _Context, _fmt

class NonConvexHamiltonianError(HJBError):
    """G(y, .) is not convex: the message names the node y and the q where it fails."""


class NonPeriodicHamiltonianError(HJBError):
    """The data (V, G, f or l) differ at y_k = 0 and y_k = 1: not periodic on the unit box."""


@njit
def _gen_convexity(Gf, Y, qs, delta, info):
    """First (node, q-sample) where the q-Hessian of G has a negative eigenvalue (info[0:2]),
    or a non-finite value (info[3] = 1). info[2] = the eigenvalue estimate."""
    n, m = Y.shape
    y = np.empty(m)
    q = np.empty(m)
    d2 = delta * delta
    for i in range(n):
        for k in range(m):
            y[k] = Y[i, k]
        for j in range(qs.shape[0]):
            for k in range(m):
                q[k] = qs[j, k]
            g0 = Gf(y, q)
            if not math.isfinite(g0):
                info[0] = i
                info[1] = j
                info[2] = g0
                info[3] = 1.0
                return
            if m == 1:
                q[0] = qs[j, 0] + delta
                gp = Gf(y, q)
                q[0] = qs[j, 0] - delta
                gm = Gf(y, q)
                lam = (gp - 2.0 * g0 + gm) / d2
                sc = abs(gp) + 2.0 * abs(g0) + abs(gm)
            else:
                q[0] = qs[j, 0] + delta
                g10 = Gf(y, q)
                q[0] = qs[j, 0] - delta
                gm10 = Gf(y, q)
                q[0] = qs[j, 0]
                q[1] = qs[j, 1] + delta
                g01 = Gf(y, q)
                q[1] = qs[j, 1] - delta
                gm01 = Gf(y, q)
                q[0] = qs[j, 0] + delta
                q[1] = qs[j, 1] + delta
                gpp = Gf(y, q)
                q[1] = qs[j, 1] - delta
                gpm = Gf(y, q)
                q[0] = qs[j, 0] - delta
                gmm = Gf(y, q)
                q[1] = qs[j, 1] + delta
                gmp = Gf(y, q)
                h11 = (g10 - 2.0 * g0 + gm10) / d2
                h22 = (g01 - 2.0 * g0 + gm01) / d2
                h12 = (gpp - gpm - gmp + gmm) / (4.0 * d2)
                lam = 0.5 * (h11 + h22) - math.sqrt(0.25 * (h11 - h22) ** 2 + h12 * h12)
                sc = abs(g10) + abs(gm10) + abs(g01) + abs(gm01) + 4.0 * abs(g0)
                sc += abs(gpp) + abs(gpm) + abs(gmp) + abs(gmm)
            if not math.isfinite(lam):
                info[0] = i
                info[1] = j
                info[2] = lam
                info[3] = 1.0
                return
            if lam * d2 < -1e-9 * (1.0 + sc):
                info[0] = i
                info[1] = j
                info[2] = lam
                return


def _axis_function(funcs):
    """Wrap per-axis scalar numba functions K_k(s) into one numba function Kax(k, s)."""
    funcs = tuple(funcs)
    if len(funcs) == 1:
        f0 = funcs[0]

        @njit
        def kax1(k, s):
            return f0(s)

        return kax1
    if len(funcs) == 2:
        f0, f1 = funcs

        @njit
        def kax2(k, s):
            if k == 0:
                return f0(s)
            return f1(s)

        return kax2
    if len(funcs) == 3:
        f0, f1, f2 = funcs

        @njit
        def kax3(k, s):
            if k == 0:
                return f0(s)
            if k == 1:
                return f1(s)
            return f2(s)

        return kax3
    raise HJBError("separable Hamiltonian: give one K (all axes) or one K per axis (m <= 3)")


def _fd_axis_derivative(Kax):
    @njit
    def dkax(k, s):
        d = 1e-6 * (1.0 + abs(s))
        return (Kax(k, s + d) - Kax(k, s - d)) / (2.0 * d)

    return dkax


def _require_numba(fn, what):
    if not is_jitted(fn):
        raise HJBError(f"{what} must be a numba @njit function (got {fn!r})")


# ---------------------------------------------------------------------------------------------
# public description of G
# ---------------------------------------------------------------------------------------------


class PeriodicHamiltonian:
    """Description of a Hamiltonian G(y, q), 1-periodic in y, convex in q (a general or separable
    G that is not convex is accepted and solved by ``nonconvex``).

    Build with one of the constructors:

    * ``PeriodicHamiltonian.quadratic(V)``: G = |q|^2/2 + V(y) (exact Godunov flux / derivatives);
    * ``PeriodicHamiltonian.separable(K, V, dK=None, qstar=None)``: G = sum_k K_k(q_k) + V(y);
      ``K`` a numba function K(s) -> float used on every axis, or a list of one per axis;
      ``dK`` likewise (central differences if omitted; give it, a subgradient, when K has
      kinks); ``qstar`` the minimiser(s) of K_k (golden-section search if omitted);
    * ``PeriodicHamiltonian.general(G)``: G(y, q) -> float, numba, y and q 1-D float64 arrays;
      Godunov's flux built from the formula at nodes that are not centred (convex or not);
    * ``PeriodicHamiltonian.control(f, l, A)``: G = max_{a in A} {-f(y,a).q - l(y,a)} (sup
      convention), f(y, a) -> 1-D array of length m, l(y, a) -> float, A an array (nA,) or
      (nA, d) of control values; upwinding of f, centred per control and axis where
      h |f_k| <= 2 nu;
    * ``PeriodicHamiltonian.metric(c, norm='l2' | 'l1' | 'linf', B=None)``: G = c(y) |q| or
      c(y) max_{a in B} (-a.q) for a polytope B (vertices); c may be piecewise constant.

    ``V(y) -> float`` (y a 1-D float64 array of length m) should be a numba function; plain
    Python callables are accepted for V only (tabulated once with a Python loop).

    ``q_box`` (default 4): half-width of the box [-q_box, q_box]^m of q values where convexity
    is sampled (enlarged to cover |P| + 2 at solve time) and, for ``general``, on which the
    local Lax-Friedrichs bounds alpha_ik = 1.05 max_box |dG/dq_k(y_i, .)| are computed. The
    box does not depend on P, so the discrete Hbar(P) is convex in P; if the discrete gradients
    P + D0 chi of a solution leave the box, it is enlarged (1.5 x their extent) and the problem
    re-solved (then the scheme depends on P: use a q_box covering all P + D chi of a table).
    """

    def __init__(self, kind, *, V=None, K=None, dK=None, qstar=None, G=None, f=None, l=None,
                 A=None, q_box=4.0, name=None):
        self.kind = kind
        self.V = V
        self.K = K
        self.dK = dK
        self.qstar = qstar
        self.G = G
        self.f = f
        self.l = l
        self.A = A
        self.q_box = float(q_box)
        self.name = name or kind
        self.nonconvex = False  # set when a solve finds G not convex in q (see nonconvex.py)
        self._derived = {}  # numba functions built from this G once (shared by all grids)
        self._contexts = {}
        self._kax = None
        self._dkax = None

    # -- constructors --------------------------------------------------------------------------
    @classmethod
    def quadratic(cls, V, *, q_box=4.0):
        """G(y, q) = |q|^2 / 2 + V(y)."""
        return cls("quadratic", V=V, q_box=q_box, name="|q|^2/2 + V")

    @classmethod
    def separable(cls, K, V, *, dK=None, qstar=None, q_box=4.0):
        """G(y, q) = sum_k K_k(q_k) + V(y) with convex scalar numba functions K_k(s)."""
        Ks = list(K) if isinstance(K, (list, tuple)) else [K]
        for fn in Ks:
            _require_numba(fn, "K")
        dKs = None
        if dK is not None:
            dKs = list(dK) if isinstance(dK, (list, tuple)) else [dK]
            for fn in dKs:
                _require_numba(fn, "dK")
            if len(dKs) != len(Ks):
                raise HJBError("separable Hamiltonian: dK must match K (one, or one per axis)")
        return cls("separable", V=V, K=Ks, dK=dKs, qstar=qstar, q_box=q_box,
                   name="sum K_k(q_k) + V")

    @classmethod
    def general(cls, G, *, q_box=4.0):
        """A general convex-in-q numba function G(y, q) -> float."""
        _require_numba(G, "G")
        return cls("general", G=G, q_box=q_box, name="general G")

    @classmethod
    def control(cls, f, l, A):
        """G(y, q) = max_{a in A} { -f(y, a).q - l(y, a) } over a finite control set A."""
        _require_numba(f, "f")
        _require_numba(l, "l")
        A = np.asarray(A, dtype=float)
        if A.ndim == 1:
            A = A[:, None]
        if A.ndim != 2 or A.shape[0] == 0:
            raise HJBError("control Hamiltonian: A must be an array (nA,) or (nA, d), nA >= 1")
        return cls("control", f=f, l=l, A=np.ascontiguousarray(A), name="max_a {-f.q - l}")

    @classmethod
    def metric(cls, c, norm="l2", B=None):
        """G(y, q) = c(y) max_{a in B} (-a.q): the speed c(y) >= 0 (numba c(y) -> float, may be
        discontinuous: it is tabulated by its upper envelope at grid scale, see
        ``_Context``) times the support function of a control set B with 0 inside.
        ``norm`` names B by the norm of q it gives: 'l2' (B the Euclidean unit ball, G =
        c |q|_2), 'l1' (B the box [-1, 1]^m, G = c |q|_1), 'linf' (B the cross-polytope
        conv(+-e_k), G = c |q|_inf); or give ``B`` (nB, m), the vertices of a polytope
        (any norm with a polytope unit ball; B need not be symmetric). Godunov-type flux."""
        _require_numba(c, "c")
        if B is not None:
            B = np.ascontiguousarray(np.atleast_2d(np.asarray(B, dtype=float)))
            norm = "polytope"
        elif norm not in ("l2", "l1", "linf"):
            raise HJBError(f"metric Hamiltonian: norm must be 'l2', 'l1' or 'linf' (got {norm!r})")
        ham = cls("metric", q_box=4.0, name=f"c(y) |q|_{norm}" if B is None else
                  "c(y) max_(a in B) -a.q")
        ham.c = c
        ham.norm = norm
        ham.B = B
        return ham

    def control_set(self, m):
        """Metric form: the polytope B (nB, m) ('l1', 'linf' or given vertices), None for 'l2'.
        Refuses a B that does not contain 0 in its interior (G would not be coercive)."""
        if self.norm == "l2":
            return None
        if self.norm == "l1" or m == 1 and self.B is None:
            return np.array(np.meshgrid(*[[-1.0, 1.0]] * m, indexing="ij")).reshape(m, -1).T.copy()
        if self.norm == "linf":
            return np.concatenate([np.eye(m), -np.eye(m)])
        B = self.B
        if B.shape[1] != m:
            raise HJBError(f"metric Hamiltonian: control set vertices have {B.shape[1]} "
                           f"coordinates, expected m = {m}")
        if m == 1:
            inside = B.min() < 0.0 < B.max()
        else:
            from scipy.spatial import ConvexHull, QhullError
            try:
                inside = bool(np.all(ConvexHull(B).equations[:, -1] < -1e-12))
            except (QhullError, ValueError):
                inside = False
        if not inside:
            raise HJBError("metric Hamiltonian: the control set B must contain 0 in its "
                           f"interior (G = c max_B -a.q coercive); got vertices {B.tolist()}")
        return B

    def __repr__(self):
        return f"PeriodicHamiltonian({self.name})"

    # -- helpers -------------------------------------------------------------------------------
    def _axis_funcs(self, m):
        if self.kind == "quadratic":
            return _Kq, _dKq
        if self._kax is None or self._kax[0] != m:
            if len(self.K) not in (1, m):
                raise HJBError(f"separable Hamiltonian: {len(self.K)} functions K for m = {m}")
            kax = _axis_function(self.K)
            dkax = _axis_function(self.dK) if self.dK is not None else _fd_axis_derivative(kax)
            self._kax = (m, kax, dkax)
        return self._kax[1], self._kax[2]

    def _qstar(self, m):
        if self.kind == "quadratic":
            return np.zeros(m)
        if self.qstar is not None:
            qs = np.broadcast_to(np.asarray(self.qstar, dtype=float), (m,)).copy()
            return qs
        kax, _ = self._axis_funcs(m)
        out = np.empty(m)
        for k in range(m):
            out[k] = _golden_min(lambda s, k=k: kax(k, s), -1e3, 1e3)
        return out

    def _eval_V(self, y):
        if is_jitted(self.V) or callable(self.V):
            return float(self.V(np.ascontiguousarray(y, dtype=float)))
        raise HJBError("V must be a function V(y) -> float")

    def _context(self, m, N, offset):
        off = np.broadcast_to(np.asarray(offset, dtype=float), (m,)).copy()
        key = (m, N, tuple(off))
        ctx = self._contexts.get(key)
        if ctx is None:
            if len(self._contexts) > 16:
                self._contexts.clear()
            ctx = _Context(self, m, N, off)
            self._contexts[key] = ctx
        return ctx

    # -- checks ---------------------------------------------------------------------------------
    def check_periodic(self, m, tol=1e-9, dy=1e-7):
        """Compare the data at y_k = 0 and y_k = 1 (other coordinates at sample points).

        Values agree when |a - b| <= tol (1 + |a| + |b|). A pair that differs is accepted when
        the pairs shifted by +-dy along axis k agree: the data then jump exactly on the cell
        boundary and round-off decides the side (a checkerboard where(sin(2 pi y1) sin(2 pi y2)
        > 0, 1, 2) with sin(2 pi) = -2.4e-16). Raises NonPeriodicHamiltonianError naming the axis
        and the points."""
        ts = np.array([0.0, 0.137, 0.29, 0.5, 0.71, 0.93])
        pts = []
        for k in range(m):
            # the other coordinates: each sample value on every other axis, and a mixed point
            others = [np.full(m - 1, t) for t in ts] + ([ts[[1, 4]]] if m == 3 else [])
            for o in (others if m > 1 else [np.zeros(0)]):
                y0 = np.insert(o, k, 0.0)
                y1 = np.insert(o, k, 1.0)
                pts.append((k, y0, y1))

        def close(a, b):  # equal infinities count as equal (non-finite data are the grid check's)
            a = np.asarray(a, dtype=float)
            b = np.asarray(b, dtype=float)
            with np.errstate(invalid="ignore"):
                return np.all((a == b) | (np.abs(a - b) <= tol * (1.0 + np.abs(a) + np.abs(b))))

        if self.kind in ("quadratic", "separable"):
            def data(y):
                return self._eval_V(y)

            def describe(k, y0, y1):
                return (f"V is not 1-periodic along axis {k}: V(y={_fmt(y0)}) = {data(y0):.10g} "
                        f"but V(y={_fmt(y1)}) = {data(y1):.10g}")
        elif self.kind == "general":
            qs = [np.zeros(m)] + [s * np.eye(m)[j] for j in range(m) for s in (1.0, -1.7)]

            def data(y):
                return [float(self.G(y, q)) for q in qs]

            def describe(k, y0, y1):
                j = int(np.argmax(np.abs(np.subtract(data(y0), data(y1)))))
                return (f"G is not 1-periodic in y along axis {k}: G(y={_fmt(y0)}, q={_fmt(qs[j])}) = "
                        f"{data(y0)[j]:.10g} but G(y={_fmt(y1)}, q={_fmt(qs[j])}) = {data(y1)[j]:.10g}")
        elif self.kind == "metric":
            def data(y):
                return _upper_envelope_at(self.c, y, 1e-7)

            def describe(k, y0, y1):
                return (f"c is not 1-periodic along axis {k}: c(y={_fmt(y0)}) = {data(y0):.10g} but "
                        f"c(y={_fmt(y1)}) = {data(y1):.10g} (largest value within 1e-7 of y)")
        else:
            A = self.A
            sel = np.unique(np.linspace(0, A.shape[0] - 1, min(A.shape[0], 25)).astype(int))

            def one(y, j):
                a = A[j].copy()
                return np.asarray(self.f(y, a), dtype=float), float(self.l(y, a))

            def data(y):
                return np.concatenate([np.append(*one(y, j)) for j in sel])

            def describe(k, y0, y1):
                for j in sel:
                    (f0, l0), (f1, l1) = one(y0, j), one(y1, j)
                    if not close(f0, f1) or not close(l0, l1):
                        break
                return (f"f or l is not 1-periodic in y along axis {k} for control a={_fmt(A[j])}: "
                        f"at y={_fmt(y0)} f={_fmt(f0)}, l={l0:.10g}; at y={_fmt(y1)} f={_fmt(f1)}, "
                        f"l={l1:.10g}")

        for k, y0, y1 in pts:
            if close(data(y0), data(y1)):
                continue
            e = np.eye(m)[k] * dy
            if close(data(y0 + e), data(y1 + e)) and close(data(y0 - e), data(y1 - e)):
                continue  # a jump on the boundary, its side decided by round-off
            raise NonPeriodicHamiltonianError(describe(k, y0, y1))

    def check_convex(self, m, Y=None, radius=None):
        """Sample second differences of G in q; raise NonConvexHamiltonianError at a failure.

        Separable: K_k on 201 points of [-radius, radius] (the same at every node y);
        general: the q-Hessian (2-D: from second and cross differences) at every node of Y
        and at 21 (1-D) or 7 x 7 (2-D) sample q values. The control form is convex by
        construction (a max of affine functions of q)."""
        R = float(radius if radius is not None else self.q_box)
        if self.kind in ("control", "metric"):
            return
        if self.kind in ("quadratic", "separable"):
            kax, _ = self._axis_funcs(m)
            s = np.linspace(-R, R, 201)
            d = s[1] - s[0]
            for k in range(m if self.kind == "separable" and len(self.K) > 1 else 1):
                for sv in s:
                    kp, k0, km = kax(k, sv + d), kax(k, sv), kax(k, sv - d)
                    d2 = kp - 2.0 * k0 + km
                    if not np.isfinite(d2) or d2 < -1e-9 * (1.0 + abs(kp) + 2 * abs(k0) + abs(km)):
                        ystr = "every node y" if Y is None else f"every node y, e.g. y = {_fmt(Y[0])}"
                        raise NonConvexHamiltonianError(
                            f"G is not convex in q: K_{k} has second difference {d2:.4g} < 0 at "
                            f"q_{k} = {sv:.6g} (step {d:.3g}), at {ystr}")
            return
        nq = 21 if m == 1 else 7
        g1 = np.linspace(-R, R, nq)
        if m == 1:
            qs = g1[:, None].copy()
        else:
            a, b = np.meshgrid(g1, g1, indexing="ij")
            qs = np.ascontiguousarray(np.stack([a.ravel(), b.ravel()], axis=1))
        delta = 0.25 * (g1[1] - g1[0])
        info = np.array([-1.0, -1.0, 0.0, 0.0])
        _gen_convexity(self.G, np.ascontiguousarray(Y), qs, delta, info)
        if info[0] >= 0:
            i, j = int(info[0]), int(info[1])
            if info[3] > 0:
                raise NonConvexHamiltonianError(
                    f"G is not finite at node y = {_fmt(Y[i])}, q = {_fmt(qs[j])}: {info[2]}")
            raise NonConvexHamiltonianError(
                f"G is not convex in q at node y = {_fmt(Y[i])}, q = {_fmt(qs[j])}: smallest "
                f"eigenvalue of the sampled q-Hessian is {info[2]:.4g} (step {delta:.3g})")


def _golden_min(fun, a, b, tol=1e-13):
    g = (math.sqrt(5.0) - 1.0) / 2.0
    c = b - g * (b - a)
    d = a + g * (b - a)
    fc, fd = fun(c), fun(d)
    for _ in range(200):
        if abs(b - a) <= tol * (1.0 + abs(a) + abs(b)):
            break
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = fun(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = fun(d)
    return 0.5 * (a + b)
