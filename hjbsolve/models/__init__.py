"""Built-in model families. :func:`build_model` turns a validated case into a :class:`~hjbsolve.model.Model`."""

from __future__ import annotations

from ..model import Model


def build_model(case) -> Model:
    """The Model of a validated :class:`~hjbsolve.case.Case` (dispatch on ``case.family``)."""
    nu = case.grid["u"]["n"]
    if case.family == "entropy_sgd":
        from .entropy_sgd import build
    elif case.family == "lq":
        from .lq import build
    elif case.family == "expr":
        from .expr_family import build
        return build(case.model, u_nodes=nu, where=case.source, radii=case.grid["u"]["radii"],
                     directions=case.grid["u"]["directions"])
    else:  # pragma: no cover - validated earlier
        raise ValueError(case.family)
    return build(case.model, u_nodes=nu)
