"""The 2-D tabulated SL kernel against the plain NumPy version of the same step (``sl.reference``).

The kernel takes four controls per pass with a remainder loop, unsigned cell indices and fused
multiply-adds; these tests pin its output (minimum and first minimiser) for every remainder, both treatments
of feet outside the box, ties and the noise stencil.
"""

import numpy as np
import pytest

from hjbsolve.sl import kernels as K
from hjbsolve.sl import reference


def tables(nc, N1=23, N2=17, J=2, noise=False, seed=0):
    rng = np.random.default_rng(seed)
    Vf = rng.standard_normal((J, N1 * N2))
    C = rng.random((J, nc, N1, N2))
    # displacements of up to 3 cells: many feet leave the box near its edges
    disp = 3.0 * rng.uniform(-1, 1, (J, nc, N1, N2, 2))
    S = rng.uniform(-1.5, 1.5, (J, nc, N1, N2, 2, 2)) if noise else np.zeros((J, 1, N1, N2, 2, 2))
    return Vf, C, disp, S


def run_kernel(Vf, C, disp, S, mode, has_noise):
    J, nc, N1, N2, _ = disp.shape
    out = np.empty((J, N1, N2))
    arg = np.empty((J, N1, N2), np.int32)
    K.step_tab_2d(Vf, C, disp, S, mode, has_noise, out, arg)
    return out, arg


@pytest.mark.parametrize("nc", [1, 3, 4, 5, 8, 11])
@pytest.mark.parametrize("mode", [0, 1])
def test_step_tab_2d_matches_numpy(nc, mode):
    Vf, C, disp, S = tables(nc, seed=nc)
    out, arg = run_kernel(Vf, C, disp, S, mode, False)
    ref, ref_arg = reference.step_tab_2d(Vf, C, disp, S, mode, False)
    assert np.max(np.abs(out - ref)) < 1e-13
    np.testing.assert_array_equal(arg, ref_arg)


@pytest.mark.parametrize("mode", [0, 1])
def test_step_tab_2d_noise_matches_numpy(mode):
    Vf, C, disp, S = tables(6, noise=True)
    out, arg = run_kernel(Vf, C, disp, S, mode, True)
    ref, ref_arg = reference.step_tab_2d(Vf, C, disp, S, mode, True)
    assert np.max(np.abs(out - ref)) < 1e-13
    np.testing.assert_array_equal(arg, ref_arg)


def test_step_tab_2d_ties_pick_the_first_control():
    # controls 2, 5 and 9 are the same (and best) control: the minimiser reported is 2, in every pass layout
    Vf, C, disp, S = tables(10, seed=3)
    C[:, [2, 5, 9]] = C[:, 2:3] - 100.0
    disp[:, [5, 9]] = disp[:, 2:3]
    out, arg = run_kernel(Vf, C, disp, S, 0, False)
    assert np.all(arg == 2)
    ref, _ = reference.step_tab_2d(Vf, C, disp, S, 0, False)
    assert np.max(np.abs(out - ref)) < 1e-13


def test_step_tab_2d_reproduces_linear_data_outside_the_box():
    # linear extrapolation (mode 0) is exact for affine V, wherever the foot lands
    N1, N2 = 9, 12
    a, b = np.meshgrid(np.arange(N1, dtype=float), np.arange(N2, dtype=float), indexing="ij")
    Vf = (0.5 + 2.0 * a - 3.0 * b).reshape(1, -1)
    disp = np.zeros((1, 1, N1, N2, 2))
    disp[..., 0], disp[..., 1] = -7.25, 5.5
    out, _ = run_kernel(Vf, np.zeros((1, 1, N1, N2)), disp, np.zeros((1, 1, N1, N2, 2, 2)), 0, False)
    exact = 0.5 + 2.0 * (a - 7.25) - 3.0 * (b + 5.5)
    assert np.max(np.abs(out[0] - exact)) < 1e-12
