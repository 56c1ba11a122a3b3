"""Semi-Lagrangian value-function solvers: kernels, steppers, the implicit fast step, plain HJB problems.

The driver is :func:`hjbsolve.value.value_function` (its module docstring states the equations, the
schemes and their orders). Layout:

- :mod:`.kernels`   numba kernels: one SL step on a *batch* of slow problems (interpolation at the feet and
                    min over the controls; tabulated coefficients, control-affine exact 1-D min, 2-D grid +
                    golden section), the y-blind per-y step, the pi-average.
- :mod:`.steppers`  coefficient tables prepared once per (problem, dt): feet (Taylor second-order
                    characteristics), noise widths, step costs; the closed-loop correction of affine models.
- :mod:`.build`     Model -> steppers: per-y batches (slow half of V^eps), averaged effective problems
                    (y-blind, and extended controls through the maximiser family alpha_p), fast generators,
                    a slow box from the data.
- :mod:`.fast`      ``(I - (dt/eps) Q_x)^{-1}`` for every slow node (tridiagonal GTH elimination, sparse LU).
- :mod:`.controls`  finite control sets: box grids, balls, lists.
- :mod:`.problem`   plain (m = 0) control problems: :class:`ControlProblem`, :func:`solve_hjb`.

Design notes:

- One kernel shape for everything: a batch of J slow problems on one slow grid. The slow half of V^eps is the
  batch of the J fast nodes (y frozen), the effective and plain problems are batches of one.
- The eps -> 0 limit of any "slow step at frozen y, then fast step" splitting is the per-y effective scheme,
  whose fan of per-y feet costs an O(dt) error. The default effective scheme therefore does not average over
  per-y feet but over coefficients: an ordinary control problem whose controls are the Hamiltonian's
  y-dependent maximisers alpha_p (parametrised by p), which realises Hbar exactly and is second order.
- Control frozen over a step cannot react to the slow noise: an O(dt) error in stochastic problems. For
  control-affine models the feet and costs use the affine feedback u + K (xi - x), K = D_x u*, within the step.
- Second order for V^eps: not a Strang splitting (its eps -> 0 limit would still be the per-y fan, first
  order whatever the fast propagator) but Richardson extrapolation in dt of the monotone Lie scheme
  (``value_function(..., richardson=True)``), whose O(dt) error constant is bounded uniformly in eps; the
  extrapolated per-y scheme is its eps -> 0 limit.
- The fast step is implicit Euler in the GTH form (pivots built from sums of positive terms): exact limit
  1 pi^T for eps -> 0 in floating point, cost and stability independent of eps.
"""

from .controls import ball_controls, box_controls, list_controls
from .problem import AffineSpec, ControlProblem, solve_hjb

__all__ = ["AffineSpec", "ControlProblem", "ball_controls", "box_controls", "list_controls", "solve_hjb"]
