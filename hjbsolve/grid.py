"""Tensor grids on truncated boxes.

A :class:`Grid` is a tensor product of uniform axes ``lo + i h, i = 0..n-1`` (``h = (hi - lo)/(n - 1)``,
both end points are nodes). Arrays on a grid are stored in C order with the grid axes first, so a field
on a 2-D grid has shape ``(n1, n2)`` and a flattened index is ``i1 * n2 + i2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """Uniform tensor grid on the box ``[lo_1, hi_1] x ... x [lo_d, hi_d]``."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    n: tuple[int, ...]

    def __post_init__(self):
        if not (len(self.lo) == len(self.hi) == len(self.n)):
            raise ValueError("lo, hi and n must have one entry per dimension")
        for a, b, k in zip(self.lo, self.hi, self.n):
            if not a < b:
                raise ValueError(f"box [{a}, {b}] has lo >= hi")
            if k < 3:
                raise ValueError(f"grid size {k} < 3")

    @classmethod
    def from_box(cls, box, n) -> "Grid":
        """``box``: [lo, hi] (1-D) or [[lo1, hi1], ...]; ``n``: int or list of ints."""
        box = np.asarray(box, dtype=float)
        if box.ndim == 1:
            box = box[None, :]
        d = box.shape[0]
        n = np.broadcast_to(np.asarray(n, dtype=int), (d,))
        return cls(tuple(map(float, box[:, 0])), tuple(map(float, box[:, 1])), tuple(map(int, n)))

    @property
    def ndim(self) -> int:
        return len(self.n)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.n

    @property
    def size(self) -> int:
        return int(np.prod(self.n))

    @property
    def h(self) -> np.ndarray:
        return (np.asarray(self.hi) - np.asarray(self.lo)) / (np.asarray(self.n) - 1)

    @property
    def axes(self) -> list[np.ndarray]:
        return [np.linspace(a, b, k) for a, b, k in zip(self.lo, self.hi, self.n)]

    @property
    def cell_volume(self) -> float:
        return float(np.prod(self.h))

    def points(self) -> np.ndarray:
        """Nodes as an array of shape ``(*shape, ndim)``."""
        mesh = np.meshgrid(*self.axes, indexing="ij")
        return np.stack(mesh, axis=-1)

    def flat_points(self) -> np.ndarray:
        """Nodes as an array of shape ``(size, ndim)`` in C order."""
        return self.points().reshape(self.size, self.ndim)

    def refined(self, factor: float) -> "Grid":
        """Same box, ``(n - 1) * factor + 1`` nodes per axis."""
        return Grid(self.lo, self.hi, tuple(int(round((k - 1) * factor)) + 1 for k in self.n))

    def enlarged(self, factor: float) -> "Grid":
        """Box widened by ``factor`` about its centre, same spacing (so nodes are added)."""
        lo, hi, h = np.asarray(self.lo), np.asarray(self.hi), self.h
        c, w = (lo + hi) / 2, (hi - lo) / 2 * factor
        k = np.ceil(w / h).astype(int)
        return Grid(tuple(c - k * h), tuple(c + k * h), tuple(2 * k + 1))

    def interior_mask(self, window) -> np.ndarray:
        """Boolean mask of the nodes inside ``window`` ([lo, hi] or per-axis list)."""
        window = np.broadcast_to(np.asarray(window, dtype=float).reshape(-1, 2), (self.ndim, 2))
        pts = self.points()
        return np.all((pts >= window[:, 0] - 1e-12) & (pts <= window[:, 1] + 1e-12), axis=-1)

    def describe(self) -> str:
        return " x ".join(f"[{a:g}, {b:g}]/{k}" for a, b, k in zip(self.lo, self.hi, self.n))
