"""Plain vectorised NumPy versions of SL kernels: the yardstick of the benchmarks and the oracle of the tests.

They compute the same step as the numba kernels of :mod:`hjbsolve.sl.kernels`, with the same arguments and
outputs, vectorised over the slow nodes with a Python loop over the batch and the controls (the way a NumPy
user writes it). They are slow (25-35 ns per node x control update against 3 ns); never used by the solver.
"""

from __future__ import annotations

import numpy as np


def _bilinear(F, pa, pb, mode):
    """Bilinear interpolant of F (N1, N2) at index-space points (pa, pb), extended linearly outside
    (mode 0) or with the points clamped onto the box first (mode 1), as ``kernels.celli``."""
    N1, N2 = F.shape
    if mode == 1:
        pa = np.clip(pa, 0.0, N1 - 1.0)
        pb = np.clip(pb, 0.0, N2 - 1.0)
    ma = np.clip(np.floor(pa).astype(np.int64), 0, N1 - 2)
    mb = np.clip(np.floor(pb).astype(np.int64), 0, N2 - 2)
    ta = pa - ma
    tb = pb - mb
    f00, f01, f10, f11 = F[ma, mb], F[ma, mb + 1], F[ma + 1, mb], F[ma + 1, mb + 1]
    a = f00 + tb * (f01 - f00)
    b = f10 + tb * (f11 - f10)
    return a + ta * (b - a)


def step_tab_2d(Vf, C, disp, noise, mode, has_noise):
    """NumPy version of :func:`hjbsolve.sl.kernels.step_tab_2d` (same arguments, index space).

    Returns (out, arg): the minimum over the controls of ``C + E V(feet)`` and the index of the first
    minimising control, each (J, N1, N2).
    """
    J, nc, N1, N2, _ = disp.shape
    ia = np.arange(N1, dtype=float)[:, None]
    ib = np.arange(N2, dtype=float)[None, :]
    out = np.full((J, N1, N2), np.inf)
    arg = np.zeros((J, N1, N2), np.int32)
    for j in range(J):
        F = Vf[j].reshape(N1, N2)
        for c in range(nc):
            pa = ia + disp[j, c, :, :, 0]
            pb = ib + disp[j, c, :, :, 1]
            if has_noise:
                S = noise[j, c if noise.shape[1] > 1 else 0]
                ev = 0.0
                for r in range(2):
                    for sign in (-1.0, 1.0):
                        ev = ev + _bilinear(F, pa + sign * S[..., 0, r], pb + sign * S[..., 1, r], mode)
                val = C[j, c] + 0.25 * ev
            else:
                val = C[j, c] + _bilinear(F, pa, pb, mode)
            better = val < out[j]
            out[j][better] = val[better]
            arg[j][better] = c
    return out, arg
