"""Semi-Lagrangian value-function solvers (kernels, steppers, fast implicit step, plain HJB problems).

The driver is :func:`hjbsolve.value.value_function`; see its module docstring for the schemes.
"""

from .controls import ball_controls, box_controls, list_controls
from .problem import AffineSpec, ControlProblem, solve_hjb

__all__ = ["AffineSpec", "ControlProblem", "ball_controls", "box_controls", "list_controls", "solve_hjb"]
