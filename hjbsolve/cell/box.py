"""Truncation boxes for the unbounded fast variable, chosen from the data (Gibbs tails)."""

from __future__ import annotations

import itertools
from typing import Callable

import numpy as np

from ..errors import NumericalError

#: nodes where ``U - min U`` exceeds this carry relative density below exp(-45) ≈ 3e-20: cut them off.
TAIL_THRESHOLD = 45.0


def gibbs_box(potential: Callable[[np.ndarray, np.ndarray], np.ndarray], x_nodes: np.ndarray, m: int,
              guess: np.ndarray, threshold: float = TAIL_THRESHOLD, samples: int = 801) -> np.ndarray:
    """Smallest box (m, 2) holding ``{y : U(x, y) - min_y U(x, y) < threshold}`` for every x in ``x_nodes``.

    ``U`` is the potential of the invariant law ``mu_x ∝ exp(-U(x, .))``. The search runs on a sample grid
    of the ``guess`` box (m, 2), doubled until the region no longer touches its border. In 2-D and 3-D
    the sample grid is coarser and only the corners and centre of the x nodes' hull are used.
    """
    guess = np.array(guess, dtype=float).reshape(m, 2)
    x_nodes = np.asarray(x_nodes, float).reshape(-1, x_nodes.shape[-1])
    if m > 1:
        samples = {2: 201, 3: 61}.get(m, 31)
        lo, hi = x_nodes.min(axis=0), x_nodes.max(axis=0)
        corners = np.array(list(itertools.product(*zip(lo, hi))))
        x_nodes = np.concatenate([corners, [(lo + hi) / 2]])
    for _ in range(8):
        axes = [np.linspace(a, b, samples) for a, b in guess]
        y = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, m)
        keep = np.zeros(len(y), bool)
        for x in x_nodes:
            u = potential(np.broadcast_to(x, (len(y), x.size)), y)
            if not np.any(np.isfinite(u)):
                raise NumericalError(f"the potential of the fast law is not finite on the box at x = {x}")
            keep |= u - np.nanmin(u) < threshold
        inside = y[keep].reshape(-1, m)
        h = (guess[:, 1] - guess[:, 0]) / (samples - 1)
        lo, hi = inside.min(axis=0) - h, inside.max(axis=0) + h
        touches = (lo <= guess[:, 0]) | (hi >= guess[:, 1])
        if not touches.any():
            return np.stack([lo, hi], axis=-1)
        c, w = guess.mean(axis=1), guess[:, 1] - guess[:, 0]
        guess = np.stack([c - w, c + w], axis=-1)
    raise NumericalError("could not find a box holding the fast invariant law: the fast drift does not "
                         "confine y (give grid.y.box explicitly)")
