"""Resource guards: what a case will cost before anything is allocated or started.

:func:`estimate` counts, from the case alone (grids, controls, eps values, T and dt), the memory each
stage holds at its peak and the work it does:

- cell stage: mu (x nodes x y nodes), the fast generator and, for m >= 2, the fill of its sparse LU
  factors, the Hbar and Lbar tables (x nodes x p nodes x P values), the stored feedback
  (x x p x P x y x control components, float32);
- value stage, per eps: the value arrays and the stored feedback (time levels kept x x nodes x y nodes
  [x control components]), the coefficient tables of the semi-Lagrangian step (per x node, y node and
  control node for a grid minimisation; per (x, y) for the closed-form and refined minimisations), the
  fast-step factors;
- simulate: the paths (paths x recorded times x components) and the value with dense output times.

Work is counted in *node-control updates* (one evaluation of the semi-Lagrangian objective at one node for
one control); at about :data:`NS_PER_UPDATE` ns each on one core this gives a rough time. The memory
estimates are meant to be conservative within a factor of about 2
(``tests/test_guards.py::test_memory_estimate_brackets_the_measured_peak`` compares them with the peak
that tracemalloc traces on small runs).

:func:`guard` refuses (an :class:`~hjbsolve.errors.HJBError` naming the keys to change) a case whose peak
would not fit in the memory limit (``--max-memory``, default: ``MemAvailable`` of ``/proc/meminfo``) or
whose estimated time exceeds :data:`REFUSE_SECONDS`; it warns above :data:`WARN_SECONDS` and when dt is many
orders of magnitude below the grid spacing. ``--yes`` proceeds past the refusals.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field

from .errors import HJBError

log = logging.getLogger(__name__)

#: rough cost of one node-control update on one core (ns): the kernels measure 1-5 ns
NS_PER_UPDATE = 3.0
#: estimated time above which a run is announced with a warning (s)
WARN_SECONDS = 600.0
#: estimated time above which a run is refused unless --yes (s)
REFUSE_SECONDS = 12 * 3600.0
#: dt below this fraction of the smallest slow grid spacing gets a warning (SL error ~ dx^2/dt)
DT_FRACTION = 1e-3


class ResourceError(HJBError):
    """A run would not fit in memory or would take too long (the message names the keys to change)."""


@dataclass
class Estimate:
    """Peak memory (bytes) per stage, the number of time steps and of node-control updates."""

    memory: dict = field(default_factory=dict)      # stage -> bytes (held at that stage's peak)
    keys: dict = field(default_factory=dict)        # stage -> the case keys that set its size
    steps: int = 0
    updates: float = 0.0
    notes: list = field(default_factory=list)

    @property
    def peak(self) -> float:
        return max(self.memory.values(), default=0.0)

    @property
    def peak_stage(self) -> str:
        return max(self.memory, key=self.memory.get) if self.memory else ""

    @property
    def seconds(self) -> float:
        return self.updates * NS_PER_UPDATE * 1e-9

    def describe(self) -> str:
        """One line: ``memory 1.2 GiB at its peak (value stage eps = 0.1), 80 steps, 3.1e9 node-control updates,
        about 9 s``."""
        return (f"estimate: memory {fmt_bytes(self.peak)} at its peak ({self.peak_stage}), {self.steps} time "
                f"steps, {self.updates:.2g} node-control updates, about {fmt_seconds(self.seconds)} on one core")


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover


def fmt_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.2g} s"
    if s < 7200:
        return f"{s / 60:.3g} min"
    if s < 3 * 86400:
        return f"{s / 3600:.3g} h"
    if s < 3 * 365 * 86400:
        return f"{s / 86400:.3g} days"
    return f"{s / (365 * 86400):.2g} years"


def parse_size(text: str) -> float:
    """``'8G'``, ``'500M'``, ``'1.5GiB'``, ``'1024'`` (bytes) -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMGTP]?)(i?B?)\s*", str(text), re.IGNORECASE)
    if not m:
        raise HJBError(f"--max-memory {text}: expected a size such as 8G, 500M or 2.5GiB")
    value = float(m.group(1)) * 1024 ** "BKMGTP".index(m.group(2).upper() or "B")
    if not math.isfinite(value) or value <= 0:
        raise HJBError(f"--max-memory {text}: expected a positive size such as 8G")
    return value


def available_memory() -> float | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is no /proc/meminfo)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _count(n, d: int) -> int:
    """Nodes of a grid given n (one size for every axis, or one per axis) on d axes."""
    if d == 0:
        return 1
    sizes = list(n) if isinstance(n, list) else [n]
    sizes = sizes * d if len(sizes) == 1 else sizes
    return math.prod(int(s) for s in sizes)


def _control_nodes(case, k: int) -> int:
    mod, u = case.model, case.grid.get("u", {})
    if k == 0:
        return 1
    if mod.get("u_list") is not None:
        return len(mod["u_list"])
    if mod.get("u_ball") is not None:
        r, dirs = u.get("radii", 10), u.get("directions", 32)
        return 1 + (2 * r if k == 1 else r * dirs)
    return _count(u.get("n", 21), k)


def dims(case) -> tuple[int, int, int]:
    """(n, m, k): slow, fast and control dimensions, from the case alone."""
    fam, mod = case.family, case.model
    if fam == "entropy_sgd":
        d = mod["dim"]
        return d, d, (0 if mod["control"] == "none" else (d if mod["control"] == "steering" else 1))
    if fam == "lq":
        return 1, 1, 1
    k = 0
    if mod.get("u_box") is not None:
        box = mod["u_box"]
        k = len(box) if isinstance(box[0], list) else 1
    elif mod.get("u_ball") is not None:
        k = len(mod["u_ball"]["centre"])
    elif mod.get("u_list") is not None:
        lst = mod["u_list"]
        k = len(lst[0]) if isinstance(lst[0], list) else 1
    return mod["n"], mod["m"], k


def estimate(case, simulate_paths: int | None = None, n_record: int = 101) -> Estimate:
    """The memory and work of every stage of ``case`` (see the module docstring). ``simulate_paths``:
    also the ``simulate`` stage with that many paths."""
    est = Estimate()
    if case.family == "periodic":
        return _estimate_periodic(case, est)
    n, m, k = dims(case)
    g = case.grid
    nx, ny = _count(g["x"]["n"], n), _count(g["y"]["n"], m) if m else 1
    npv = _count(g["p"]["n"], n) if g.get("p") else 0
    nP = len(g["P"]["values"]) if g.get("P") else 1
    nq = _count(g["q"]["n"], n) if g.get("q") else npv
    nu = _control_nodes(case, k)
    affine = k > 0 and (case.family in ("lq", "entropy_sgd") or _expr_is_affine(case))
    f8 = 8.0
    # cell stage
    gen = ny * (2 * m + 1) * 12.0 if m else 0.0
    lu = 0.0
    if m >= 2:
        lu = 16.0 * ny ** (1.5 if m == 2 else 5.0 / 3.0) * 2      # fill of two concurrent LU factorisations
    hb = nx * max(npv, 1) * nP * f8 * 2 + nx * nq * nP * f8
    # the stored feedback (float32) and, while it is computed, its float64 maximisers and int32 arguments
    fb = nx * npv * nP * ny * k * 16.0 if (case.run.get("feedback", True) and npv) else 0.0
    # the chunked coefficient tables of Hbar (per control node, or per (x, y) for the closed-form sup)
    chunk = min(64e6, nx * ny * (1 if affine else nu) * (n + 2) * f8) if npv else 0.0
    if m:
        est.memory["cell stage"] = nx * ny * f8 + gen + lu + hb + fb + chunk
        est.keys["cell stage"] = "grid.x.n, grid.y.n, grid.p.n, grid.P.values" + (", run.feedback" if fb else "")
        est.updates += nx * ny * max(npv, 1) * nP * nu
    # value stage
    T, dt = float(case.time["T"]), float(case.time["dt"])
    steps = max(1, int(round(T / dt))) if math.isfinite(T / dt) else 10 ** 18
    n_out = len(case.run["output_times"]) if case.run.get("output_times") else 5
    per_table = (3 * n + n * n + 2) * f8                        # A, Da, disp, L, C, DL (grid minimisation)
    for eps in (case.run["eps"] if case.run.get("values", True) else []):
        j = ny if (eps > 0 or m == 0) else max(ny, 1)
        controls = 4 if affine else nu                          # closed-form / refined min: a few per node
        tables = nx * j * (per_table * nu if not affine else (n * k + n * n + n + 1) * f8 * 2)
        values = nx * (ny if eps > 0 else 1) * (f8 * (n_out + 3) + 4.0 * k * n_out)   # V and feedback (float32)
        fast = nx * ny * (2 * m + 1) * f8 * 2 if (eps > 0 and m) else 0.0
        name = f"value stage eps = {eps:g}"
        est.memory[name] = values + tables + fast + (nx * ny * f8 if m else 0.0)
        est.keys[name] = "grid.x.n, grid.y.n, grid.u.n" + (", run.output_times" if n_out > 5 else "")
        est.steps += steps
        est.updates += float(steps) * nx * j * controls * (1 if eps > 0 else max(1, min(npv, 64)))
    if simulate_paths:
        rec = min(n_record, steps + 1)
        paths = simulate_paths * rec * (n + m + 1) * f8 + simulate_paths * (n + m) * f8 * 8
        dense = nx * (ny if m else 1) * f8 * min(steps + 1, 4096)
        est.memory["simulation"] = paths + dense
        est.keys["simulation"] = "--paths (-n), --record, grid.x.n, grid.y.n, time.dt"
        sim_steps = max(steps, 200)
        est.updates += float(simulate_paths) * sim_steps * (n + m + 1) * 4
    est.notes += _time_step_notes(case, n, dt)
    return est


def _expr_is_affine(case) -> bool:
    """An expr model that is control-affine with quadratic cost is minimised in closed form (no table per
    control node). False when the model does not build (the command reports why)."""
    from .models import build_model
    try:
        return build_model(case).affine is not None
    except Exception:
        return False


def _estimate_periodic(case, est: Estimate) -> Estimate:
    g, mod = case.grid, case.model
    m = mod["m"]
    N = _count(g["y"]["n"], m)
    nP = len(g["P"]["values"]) if g["P"].get("values") is not None else _count(g["P"]["n"], m)
    lu = 16.0 * N ** (1.5 if m == 2 else 1.0) * 4
    est.memory["periodic cell problems"] = nP * N * 8.0 * 3 + N * (2 * m + 1) * 12.0 * 4 + lu
    est.keys["periodic cell problems"] = "grid.y.n, grid.P (n or values)"
    iters = mod.get("maxiter", 100)
    na = _count(mod.get("a_n", 41), len(mod["a_box"]) if isinstance((mod.get("a_box") or [0])[0], list) else 1) \
        if mod.get("hamiltonian") == "control" else 1
    est.updates = float(nP) * N * min(iters, 20) * na * 50      # measured: 6100 P values, N = 400: ~7 s
    est.steps = 0
    return est


def _time_step_notes(case, n: int, dt: float) -> list[str]:
    box = case.grid["x"]["box"]
    rows = box if isinstance(box[0], list) else [box] * n
    sizes = case.grid["x"]["n"] if isinstance(case.grid["x"]["n"], list) else [case.grid["x"]["n"]] * n
    sizes = sizes * n if len(sizes) == 1 else sizes
    dx = min((hi - lo) / max(s - 1, 1) for (lo, hi), s in zip(rows, sizes))
    if dt < DT_FRACTION * dx:
        return [f"time.dt = {dt:g} is {dt / dx:.1g} times the slow grid spacing {dx:.3g}: the semi-Lagrangian "
                f"error O(dx^2/dt) grows as dt shrinks, and the run takes {round(case.time['T'] / dt):.3g} steps "
                "per eps; a dt of the order of the grid spacing is both faster and more accurate"]
    return []


def guard(est: Estimate, source: str, max_memory: str | None = None, yes: bool = False) -> None:
    """Refuse (ResourceError) or warn before a run: memory against the limit, time against the thresholds."""
    for note in est.notes:
        log.warning("%s: %s", source, note)
    limit = parse_size(max_memory) if max_memory else available_memory()
    what = "--max-memory" if max_memory else "the available memory (MemAvailable)"
    if limit is not None and est.peak > limit:
        stage = est.peak_stage
        msg = (f"{source}: the {stage} needs about {fmt_bytes(est.peak)}, more than {what} "
               f"({fmt_bytes(limit)}): lower {est.keys.get(stage, 'the grid sizes')} "
               "(or give --max-memory SIZE, or --yes to try anyway)")
        if not yes:
            raise ResourceError(msg)
        log.warning("%s (proceeding: --yes)", msg)
    if est.seconds > REFUSE_SECONDS:
        msg = (f"{source}: {est.describe()}: lower time.T / raise time.dt, or lower the grid sizes "
               "(or give --yes to run it anyway)")
        if not yes:
            raise ResourceError(msg)
        log.warning("%s (proceeding: --yes)", msg)
    elif est.seconds > WARN_SECONDS:
        log.warning("%s: a long run: %s", source, est.describe())


def guard_command(args) -> Estimate | None:
    """The guard of one CLI command (run, cell, study, simulate) on its case. For a study, every planned
    run is estimated and the costliest is guarded; for simulate, the paths are counted too."""
    from .case import load_case
    cmd = args.command
    if cmd == "simulate":
        return _guard_simulate(args)
    from .cli import _load
    case = _load(args)
    if cmd == "cell":
        case.run["values"] = False
    cases = [case]
    if cmd == "study" and not getattr(args, "law", False):
        cases = _study_cases(case, args) or cases
    ests = [estimate(load_case(c) if isinstance(c, dict) else c) for c in cases]
    worst = max(ests, key=lambda e: (e.peak, e.seconds))
    if cmd == "study" and len(ests) > 1:
        worst.updates = sum(e.updates for e in ests)
        worst.steps = sum(e.steps for e in ests)
    guard(worst, f"{case.source} (the costliest of {len(ests)} study runs)" if len(ests) > 1 else case.source,
          args.max_memory, args.yes)
    return worst


def _study_cases(case, args) -> list:
    from .study import parse_vary, plan
    texts = list(args.vary) or [f"{k}={','.join(map(str, v if isinstance(v, list) else [v]))}"
                                for k, v in case.study["vary"].items()]
    if not texts:
        return []
    try:
        runs = plan(case, parse_vary(texts, case.as_dict()), "guard-plan-only")
    except HJBError:
        return []           # the command itself reports the mistake in --vary
    return [r.case for r in runs]


def _guard_simulate(args) -> Estimate | None:
    """simulate FILE|CASE: the case is the stored one (a result file) or the given one, with its --set."""
    from .case import load_case
    p = str(args.file)
    if p.endswith(".toml"):
        case = load_case(p, args.overrides)
    else:
        import warnings

        from . import store
        from .provenance import stored_case
        attrs = store.read(p).attrs
        if "case_resolved" not in attrs and "case_text" not in attrs:
            return None                     # simulate itself says that this is not a result file
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # simulate warns about old files itself
            case = stored_case(attrs, p, args.overrides)
    if case.family == "periodic":
        raise HJBError(f"{p}: a periodic cell-problem case has no controlled slow dynamics to simulate "
                       "(simulate takes a result or case of the entropy_sgd, lq or expr families)")
    if args.dt:
        case.time["dt"] = float(args.dt)
    est = estimate(case, simulate_paths=args.paths, n_record=args.record)
    guard(est, p, args.max_memory, args.yes)
    return est
