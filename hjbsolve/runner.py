"""Run a case: case -> model -> grids -> stages -> :class:`~hjbsolve.result.Result`. No file I/O here."""

from __future__ import annotations

import logging
import time

import numpy as np

from .case import Case
from .effective import cell_stage
from .grid import Grid
from .legendre import default_q_axes, effective_lagrangian
from .model import Model
from .models import build_model
from .result import Result

log = logging.getLogger(__name__)


def slow_grid(case: Case, model: Model) -> Grid:
    return Grid.from_box(case.grid["x"]["box"], case.grid["x"]["n"]) if model.n else None


def fast_grid(case: Case, model: Model, xgrid: Grid) -> Grid:
    """The y grid: the case's box, or one chosen from the Gibbs tails of mu_x over all x nodes."""
    spec = case.grid["y"]
    box = spec.get("box")
    if box is None:
        if model.y_box_hint is None:
            from .errors import CaseError
            raise CaseError(f"{case.source}: grid.y.box: required for this model (the box cannot be derived "
                            "from the data: give [lo, hi] per fast axis)")
        box = model.y_box_hint(xgrid.flat_points())
        log.info("y box from the Gibbs tails: %s", np.round(box, 4).tolist())
    return Grid.from_box(box, spec["n"])


def p_axes(case: Case, model: Model):
    spec = case.grid.get("p")
    if not spec:
        return None
    g = Grid.from_box(spec["box"], spec["n"])
    if g.ndim == 1 and model.n > 1:
        g = Grid.from_box([spec["box"]] * model.n, spec["n"])
    return g.axes


def add_effective_lagrangian(case: Case, cell) -> None:
    """Lbar(x, q) = sup_p {-q.p - Hbar(x, p)} from the Hbar table (linear-time discrete transform)."""
    d = len(cell.p_axes)
    hb = cell.hbar if cell.P.size == 0 else np.moveaxis(cell.hbar, -1, 0)   # P axis first
    spec = case.grid.get("q")
    if spec:
        g = Grid.from_box(spec["box"] if not (d > 1 and not isinstance(spec["box"][0], list))
                          else [spec["box"]] * d, spec["n"])
        q_axes = g.axes
    else:
        q_axes = default_q_axes(cell.p_axes, hb.reshape((-1,) + hb.shape[hb.ndim - d:]))
    lb = effective_lagrangian(cell.p_axes, hb, q_axes)
    cell.q_axes = q_axes
    cell.lbar = lb if cell.P.size == 0 else np.moveaxis(lb, 0, -1)


def run_cell(case: Case, model: Model | None = None) -> Result:
    """The cell stage of ``case``: invariant laws, ybar, abar, gbar and Hbar tables."""
    t0 = time.perf_counter()
    model = model or build_model(case)
    xg = slow_grid(case, model)
    yg = fast_grid(case, model, xg)
    P = case.grid["P"]["values"] if case.grid.get("P") else None
    cell = cell_stage(model, xg, yg, p_axes(case, model), P_values=P, exact_sup=case.grid["u"]["exact"],
                      keep_feedback=case.run["feedback"])
    if cell.hbar is not None:
        t1 = time.perf_counter()
        add_effective_lagrangian(case, cell)
        cell.timings["legendre"] = time.perf_counter() - t1
    timings = dict(cell.timings)
    timings["total"] = time.perf_counter() - t0
    return Result(case_name=case.name, case_text=case.text, family=case.family, cell=cell, timings=timings)


def run(case: Case) -> Result:
    """Run every stage that the case asks for and return the result (not yet saved)."""
    return run_cell(case)
