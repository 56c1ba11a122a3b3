"""Finite control sets for the semi-Lagrangian min over u: tensor grids on boxes, balls, explicit lists.

Each constructor returns the nodes as an array (nc, k). The min over a finite set approximates the min
over its convex hull (the HJB of a control problem only sees the convexified set of (a, l) pairs), with an
error O(du²) per unit time for a set of spacing du when the optimal control is interior.
"""

from __future__ import annotations

import numpy as np


def box_controls(lo, hi, n) -> np.ndarray:
    """Tensor grid on the box [lo_1, hi_1] x ... (n nodes per axis, an int or one per axis)."""
    lo = np.atleast_1d(np.asarray(lo, float))
    hi = np.atleast_1d(np.asarray(hi, float))
    n = np.broadcast_to(np.asarray(n, int), lo.shape)
    if np.any(hi < lo):
        raise ValueError("control box: hi < lo")
    axes = [np.linspace(a, b, m) if m > 1 else np.array([0.5 * (a + b)]) for a, b, m in zip(lo, hi, n)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(lo))


def ball_controls(radius: float, k: int = 2, n_radii: int = 5, n_dirs: int = 32, centre=None) -> np.ndarray:
    """Nodes of the closed ball {|u - centre| <= radius} in R^k, k = 1 or 2.

    k = 1: the interval, 2 n_radii + 1 nodes. k = 2: the centre plus ``n_radii`` circles of radii
    radius * i / n_radii with ``n_dirs`` equally spaced directions each (the outer circle is on the sphere,
    so bang-bang controls of the ball are represented).

    The default (5 circles of 32 directions, 161 nodes) spaces the circles as the directions on the outer one
    (radius/5 against 2 pi radius/32), the best error for its cost measured with a strictly convex cost
    (a = u, l = |u|²/2, |u| <= 1, g = |x|²/2, 201² nodes, dt = 0.025, T = 0.25; L1 error on [-1, 1]²):
    5 x 32: 5.1e-3 for 161 nodes; 10 x 16 (161 nodes): 6.0e-3; 10 x 32 (321 nodes, the former default):
    3.7e-3 at twice the cost; 3 x 32: 8.8e-3; 1 x 32: 6.2e-2. When the cost does not depend on u and the drift
    is affine in u, the minimum sits on the sphere and one circle (``n_radii = 1``) is the efficient choice
    (the cone of scripts/bench_peers.py: 1.50e-2 with 1 x 25, 1.21e-2 with 4 x 25 at 2.2x the time).
    """
    centre = np.zeros(k) if centre is None else np.asarray(centre, float).reshape(k)
    if radius <= 0:
        raise ValueError("ball radius must be positive")
    if k == 1:
        return centre + np.linspace(-radius, radius, 2 * n_radii + 1)[:, None]
    if k != 2:
        raise ValueError("ball controls are implemented for k = 1 and 2")
    th = 2 * np.pi * np.arange(n_dirs) / n_dirs
    dirs = np.stack([np.cos(th), np.sin(th)], axis=-1)
    rings = [centre[None]] + [centre + radius * i / n_radii * dirs for i in range(1, n_radii + 1)]
    return np.concatenate(rings)


def list_controls(points) -> np.ndarray:
    """An explicit finite set of controls: points (nc,) for k = 1 or (nc, k)."""
    pts = np.asarray(points, float)
    if pts.ndim == 1:
        pts = pts[:, None]
    if pts.ndim != 2 or len(pts) == 0:
        raise ValueError("list controls: expected a non-empty array (nc,) or (nc, k)")
    return pts
