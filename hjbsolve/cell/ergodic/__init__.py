r"""Nonlinear ergodic cell problems on the torus (periodic homogenization).

Equation
--------
For a constant vector ``P`` in R^m (m = 1, 2, 3) find the ergodic constant ``Hbar(P)`` and a
periodic corrector ``chi`` on the unit torus T^m (period 1 in every axis) with

    -nu * Laplace(chi)(y) + G(y, P + D chi(y)) = Hbar(P),        nu >= 0,
    chi(node 0) = 0                                               (normalisation).

``G`` is convex in its second argument (a nonconvex G of the general or separable form is
solved by its own scheme and solver, ``nonconvex``). ``Hbar`` is the effective Hamiltonian of the
homogenized problem; it is convex in ``P`` and unique, ``chi`` is unique up to a constant when
``nu > 0`` (for ``nu = 0`` it may be non-unique: only ``Hbar`` is a reliable output then).

Grid
----
N nodes per axis, h = 1/N, y_i = offset + i h (offset default 0, e.g. h/2 for a shifted grid).
``chi`` is returned with shape (N,)*m, ``chi[i0, i1]`` being the value at (y[i0], y[i1]).

Parts
-----
``forms``: the Hamiltonian forms (``PeriodicHamiltonian``: quadratic, separable, general,
control) and their data checks (convexity, periodicity);
``fluxes``: the monotone numerical Hamiltonians (residual and Jacobian stencil of each form);
``nonconvex``: pseudo-transient solver for a G that is not convex in q;
``grid``: the per-grid context (tabulated data, kernel dispatch, linear solves);
``solvers``: Newton / policy iteration, nu-continuation, vanishing discount, long-time marching;
``tables``: Hbar(P) tables with warm starts.
"""

from .forms import NonConvexHamiltonianError, NonPeriodicHamiltonianError, PeriodicHamiltonian
from .solvers import ErgodicResult, check_hamiltonian, long_time_ergodic, solve_ergodic
from .tables import effective_hamiltonian_table

__all__ = [
    "PeriodicHamiltonian",
    "ErgodicResult",
    "solve_ergodic",
    "effective_hamiltonian_table",
    "long_time_ergodic",
    "check_hamiltonian",
    "NonConvexHamiltonianError",
    "NonPeriodicHamiltonianError",
]
