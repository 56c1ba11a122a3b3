"""The two-scale control model (docs/mathematics.md §2) as vectorised coefficient functions.

    dX = a(X, Y, u) ds + sqrt(2) sigma(X, Y, u) dW          (slow, controlled)
    dY = (1/eps) b(X, Y) ds + sqrt(2/eps) tau(X, Y) dW       (fast)
    cost  ∫ l(X, Y, u) ds + g(X_t, Y_t)

Every coefficient takes arrays with the component axis last, ``x: (..., n)``, ``y: (..., m)``,
``u: (..., k)``, broadcasting over the leading axes, and returns ``a: (..., n)``,
``sigma: (..., n, n)``, ``b: (..., m)``, ``tau: (..., m, m)``, ``l, g: (...)``.

Optional structure that the numerics exploit when a family knows it:

- ``potential(x, y)``: ``U`` with ``b = -(tau tau^T) grad_y U`` (gradient fast drift). Then the invariant
  law is the Gibbs law ``mu_x ∝ exp(-U(x, .))`` and the discrete generator reproduces it exactly.
- ``affine``: the control enters affinely with a quadratic cost,
  ``a = a0(x, y) + B(x, y) u``, ``l = l0(x, y) + c |u - u_ref|^2 / 2``, sigma independent of u. Then the
  sup in the Hamiltonian is attained at ``u* = clip(u_ref - B^T p / c, U)`` (U a box) and is computed
  exactly instead of over a control grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

Array = np.ndarray


@dataclass(frozen=True)
class ControlSet:
    """A box ``[lo_1, hi_1] x ... x [lo_k, hi_k]`` discretised by a tensor grid of ``n`` nodes per axis, or
    an explicit finite set of ``points`` (a ball's nodes, a list; lo/hi are then its bounding box)."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    n: tuple[int, ...]
    points: tuple | None = None       # ((u_1, ..., u_k), ...) for a non-box set
    kind: str = "box"                 # box | ball | list

    @property
    def k(self) -> int:
        return len(self.lo)

    @classmethod
    def from_points(cls, points, kind: str) -> "ControlSet":
        pts = np.asarray(points, float)
        pts = pts[:, None] if pts.ndim == 1 else pts
        return cls(tuple(pts.min(axis=0)), tuple(pts.max(axis=0)), (len(pts),) * pts.shape[1],
                   points=tuple(map(tuple, pts)), kind=kind)

    def nodes(self) -> Array:
        """Control nodes, shape ``(n_1 * ... * n_k, k)`` (``(1, 0)`` when there is no control)."""
        if self.k == 0:
            return np.zeros((1, 0))
        if self.points is not None:
            return np.array(self.points, float)
        axes = [np.linspace(a, b, m) if m > 1 else np.array([0.5 * (a + b)])
                for a, b, m in zip(self.lo, self.hi, self.n)]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, self.k)


@dataclass(frozen=True)
class AffineQuadratic:
    """``a = a0(x, y) + B(x, y) u``, ``l = l0(x, y) + c |u - u_ref|^2 / 2`` (see module docstring)."""

    a0: Callable[[Array, Array], Array]          # (..., n)
    B: Callable[[Array, Array], Array]           # (..., n, k)
    l0: Callable[[Array, Array], Array]          # (...)
    c: float
    u_ref: tuple[float, ...]


@dataclass
class Model:
    """A two-scale control model: dimensions, control set and coefficient functions."""

    family: str
    n: int
    m: int
    controls: ControlSet
    a: Callable[[Array, Array, Array], Array]
    sigma: Callable[[Array, Array, Array], Array]
    b: Callable[[Array, Array], Array]
    tau: Callable[[Array, Array], Array]
    l: Callable[[Array, Array, Array], Array]
    g: Callable[[Array, Array], Array]
    params: dict = field(default_factory=dict)
    potential: Callable[[Array, Array], Array] | None = None
    affine: AffineQuadratic | None = None
    u_ref: tuple | None = None        # reference control for abar (default: affine.u_ref or box centre)
    sigma_zero: bool = False          # slow noise identically zero (then Hbar does not depend on P)
    y_box_hint: Callable[[Array], Array] | None = None   # x nodes (N, n) -> y box (m, 2) from the data
    exact: dict = field(default_factory=dict)            # closed forms the family knows (for studies)

    @property
    def k(self) -> int:
        return self.controls.k

    def fast_diffusion(self, x: Array, y: Array) -> Array:
        """``tau tau^T`` at (x, y): shape (..., m, m)."""
        t = self.tau(x, y)
        return np.einsum("...ij,...kj->...ik", t, t)

    def slow_diffusion(self, x: Array, y: Array, u: Array) -> Array:
        """``sigma sigma^T`` at (x, y, u): shape (..., n, n)."""
        s = self.sigma(x, y, u)
        return np.einsum("...ij,...kj->...ik", s, s)


def constant_matrix(value, dim: int) -> Callable:
    """A coefficient returning the constant ``value * I`` (scalar) or the given (dim, dim) matrix."""
    mat = np.asarray(value, float)
    mat = mat * np.eye(dim) if mat.ndim == 0 else mat.reshape(dim, dim)

    def coefficient(x, *rest):
        lead = np.broadcast_shapes(*(r.shape[:-1] for r in (x, *rest)))
        return np.broadcast_to(mat, lead + (dim, dim))

    return coefficient
