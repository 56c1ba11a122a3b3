"""hjbsolve: effective Hamiltonians, ergodic cell problems and semi-Lagrangian value
functions for two-scale stochastic control problems (conventions: see README, "Mathematics")."""

__version__ = "0.1.0"
