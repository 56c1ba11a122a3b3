"""hjbsolve: effective Hamiltonians, ergodic cell problems and semi-Lagrangian value functions for
two-scale stochastic control problems (conventions: README, "Mathematics").

Python API (what ``hjbsolve run`` does)::

    import hjbsolve
    case = hjbsolve.load_case("cases/entropy_sgd_double_well.toml")   # or a dict
    result = hjbsolve.run(case)
    result.save("out.h5");  again = hjbsolve.Result.load("out.h5")
"""

__version__ = "0.1.0"


def __getattr__(name):
    # lazy, so that `python -m hjbsolve --help` does not pay for numba imports
    if name == "load_case":
        from .case import load_case
        return load_case
    if name == "run":
        from .runner import run
        return run
    if name == "Result":
        from .result import Result
        return Result
    if name == "build_model":
        from .models import build_model
        return build_model
    raise AttributeError(f"module 'hjbsolve' has no attribute {name!r}")


__all__ = ["load_case", "run", "Result", "build_model", "__version__"]
