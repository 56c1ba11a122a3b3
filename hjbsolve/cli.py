"""The ``hjbsolve`` command. Bad input: one line on stderr, exit code 2, no traceback, no output file."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
import warnings
from importlib import resources
from pathlib import Path

from . import __version__
from .errors import HJBError

log = logging.getLogger("hjbsolve")

DEFAULT_CASE = "entropy_sgd_double_well.toml"


def default_case_path() -> Path:
    """The packaged default case (also at cases/ in the source tree)."""
    return Path(str(resources.files("hjbsolve") / "cases" / DEFAULT_CASE))


def packaged_cases() -> dict[str, Path]:
    """The cases shipped with the package (hjbsolve/cases/*.toml), name -> path, sorted by name."""
    folder = Path(str(resources.files("hjbsolve") / "cases"))
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def case_summary(path: Path) -> str:
    """One line about a case file: its ``description`` key, else its first comment line."""
    import tomllib
    text = path.read_text(encoding="utf-8")
    try:
        desc = str(tomllib.loads(text).get("description", "")).strip()
    except tomllib.TOMLDecodeError:
        desc = ""
    if not desc:
        desc = next((ln.lstrip("#").strip() for ln in text.splitlines() if ln.startswith("#")), "")
    return desc


def find_case(text: str | None) -> Path:
    """The case file meant by ``text``: the default case for None, an existing path, or else the packaged case
    of that name (``lq``, ``lq.toml`` or ``cases/lq.toml``), so that every verb works from any folder."""
    if text is None:
        return default_case_path()
    path = Path(text)
    if path.exists():
        return path
    name = path.name[:-5] if path.name.endswith(".toml") else path.name
    cases = packaged_cases()
    if name in cases and path.parent in (Path("."), Path("cases")):
        if text not in _DESCRIBED:
            _DESCRIBED.add(text)
            log.info("%s: not in this folder; using the packaged case %s", text, cases[name])
        return cases[name]
    raise HJBError(f"{text}: case file not found (packaged cases, usable by name: {', '.join(cases)}; "
                   f"'hjbsolve cases' describes them)")


def _case_help_epilog() -> str:
    from .case import FAMILIES, RUN
    return (f"CASE is a TOML file or the name of a packaged case ('hjbsolve cases' lists them). Families: "
            f"{', '.join(FAMILIES)}. Schemes: run.effective_scheme = "
            f"{' | '.join(RUN['effective_scheme'].choices)}, run.order = {' | '.join(map(str, RUN['order'].choices))}, "
            f"run.extrapolation = {' | '.join(RUN['extrapolation'].choices)} (--set KEY=VALUE). "
            f"'hjbsolve check --schema' lists every key.")


def _common(p: argparse.ArgumentParser, case: bool = True, optional_case: bool = False, output: bool = True,
            output_help: str = "output file (default: run.output or results/<case-name>.h5)"):
    if case:
        p.add_argument("case", nargs="?" if optional_case else None,
                       help="case file (TOML) or packaged case name" + (f"; default: the packaged {DEFAULT_CASE}"
                                                                         if optional_case else ""))
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a case key, dotted for tables (e.g. --set model.gamma=0.3); repeatable")
    if output:
        p.add_argument("-o", "--output", help=output_help)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings and errors only")
    p.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)


VERBOSE_HELP = "the package's progress and decisions (grids, boxes, stages, timings); -vv: debugging detail"
PLOT_KINDS = ("hbar", "hbar_map", "mu", "drift", "lbar", "feedback", "chi", "value", "value_eps", "value_feedback",
              "blind", "convergence", "table", "simulation", "law")     # hjbsolve.plot.KINDS (a test keeps them equal)


def _guard_flags(p: argparse.ArgumentParser) -> None:
    """The resource-guard options of the commands that compute (see hjbsolve.resources)."""
    p.add_argument("--max-memory", metavar="SIZE", help="memory the run may use, e.g. 8G or 500M "
                   "(default: MemAvailable of /proc/meminfo); a run estimated above it is refused")
    p.add_argument("--yes", action="store_true", help="proceed past the cost guards (estimated time or "
                   "memory above the limits) instead of refusing")


def build_parser() -> argparse.ArgumentParser:
    epilog = _case_help_epilog()
    ap = argparse.ArgumentParser(prog="hjbsolve", description="Effective Hamiltonians, cell problems and value "
                                 "functions of two-scale stochastic control problems.", epilog=epilog)
    ap.add_argument("--version", action="version", version=f"hjbsolve {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("run", help="run a case and write its HDF5 result", epilog=epilog)
    _common(p, optional_case=True)
    p.add_argument("--resume", action="store_true", help="keep the stages of an interrupted run (<output>."
                   "partial.h5) when they were made from the same resolved case; compute the rest")
    _guard_flags(p)
    p = sub.add_parser("cell", help="run the cell stage only (invariant laws, Hbar tables)", epilog=epilog)
    _common(p, output_help="output file (default: run.output or results/<case-name>.h5 with .cell before the "
                           "suffix, so that a full run's file is not replaced; periodic cases: the case's output)")
    _guard_flags(p)
    p.add_argument("--tol", type=float, metavar="TOL",
                   help="periodic cases: double N until every Hbar(P) error estimate is <= TOL (sets grid.y.tol)")
    p = sub.add_parser("check", help="validate a case without running it", epilog=epilog)
    p.add_argument("case", nargs="?", help=f"case file (TOML) or packaged case name; default: the packaged {DEFAULT_CASE}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a case key, dotted for tables (e.g. --set model.gamma=0.3); repeatable")
    p.add_argument("--schema", action="store_true", help="print every case key (type, default, allowed values) and exit")
    _guard_flags(p)
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    p.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    p = sub.add_parser("cases", help="list the packaged cases, or copy one out to edit it")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    p.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    cs = p.add_subparsers(dest="cases_command", metavar="copy", required=False)
    c = cs.add_parser("copy", help="copy a packaged case to DIR/NAME.toml")
    c.add_argument("name", help="a packaged case name (as 'hjbsolve cases' lists them)")
    c.add_argument("dir", nargs="?", default=".", metavar="DIR",
                   help="destination folder (default: the current folder; created), or a file name ending in .toml")
    c.add_argument("--force", action="store_true", help="overwrite an existing file")
    c.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    c.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    p = sub.add_parser("study", help="convergence study: vary keys, measure errors and observed orders", epilog=epilog)
    _common(p)
    p.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="vary a key (eps, grid, dt or any dotted case key); repeatable; default: [study] vary")
    p.add_argument("-j", "--jobs", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run on a dask.distributed cluster at ADDRESS "
                   "(tcp://HOST:PORT; tls:// with certificates in the dask configuration)")
    p.add_argument("--scheduler-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="seconds to wait for the scheduler to answer (default 5)")
    _guard_flags(p)
    p.add_argument("--resume", action="store_true", help="skip runs whose file is already complete")
    p.add_argument("--reference", choices=("auto", "exact", "limit", "finest"), default=None,
                   help="what errors are measured against (default: [study] reference, else auto)")
    p.add_argument("--law", action="store_true",
                   help="convergence in law instead of value errors: E phi(X^eps_T) - E phi(Xbar_T) by Monte Carlo "
                        "under the computed feedback, for phi = x, x^2, tanh(x) (needs --vary eps=...)")
    p.add_argument("--paths", type=int, default=10000, help="--law: Monte Carlo paths per eps (default 10000)")
    p.add_argument("--x0", type=float, nargs="+", help="--law: start of the slow state (default: three quarters "
                   "across the box on every axis)")
    p = sub.add_parser("plot", help="plot a stored result, study or cell-problem file")
    p.add_argument("file", help="an HDF5 file written by run, cell, study or simulate")
    p.add_argument("--what", metavar="KIND",
                   help=f"what to plot: one of {', '.join(PLOT_KINDS)} (default: the file's main quantity; "
                        "--list shows the kinds this file supports)")
    p.add_argument("--list", action="store_true", help="list the kinds this file supports and exit")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="plot option, e.g. --opt eps=0.01 --opt x=0.5 --opt n_curves=3; repeatable")
    p.add_argument("-o", "--output", help="image file (.png, .pdf or .svg); default FILE-stem.KIND.png")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    p.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    p = sub.add_parser("simulate", help="Monte Carlo paths under the computed optimal feedback")
    p.add_argument("file", help="a result file (.h5, uses its case and eps groups), a case file (.toml) or a "
                                "packaged case name")
    p.add_argument("--eps", type=float, nargs="+", help="eps values (default: the file's value groups)")
    p.add_argument("-n", "--paths", type=int, default=10000, help="number of paths (default 10000)")
    p.add_argument("--ds", type=float, help="time step (default min(T/200, eps/10))")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0): same seed, same paths")
    p.add_argument("--x0", type=float, nargs="+", help="start of the slow state (default: three quarters across "
                   "the box on every axis)")
    p.add_argument("--y0", type=float, nargs="+", help="start of the fast state (default: <y>_x0)")
    p.add_argument("--feedback", choices=("optimal", "reference"), default="optimal",
                   help="optimal feedback from V, or the reference control u_ref")
    p.add_argument("--fast-resolution", default="10", metavar="N|auto",
                   help="time steps per unit eps (default 10), or 'auto' (fast-law bias bounded by 1%%)")
    p.add_argument("--record", type=int, default=101, metavar="N",
                   help="number of equally spaced times in [0, T] at which the statistics are stored (default 101)")
    p.add_argument("--keep", type=int, default=20, metavar="N", help="number of sample paths stored in the file (default 20)")
    p.add_argument("--dt", type=float, help="time step of the value recomputation (default: the case's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the stored case (e.g. --set grid.x.n=101); repeatable")
    p.add_argument("-o", "--output", help="file to write the simulation groups to (default: FILE itself)")
    _guard_flags(p)
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    p.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    p = sub.add_parser("info", help="describe what an HDF5 result file holds")
    p.add_argument("file", help="an HDF5 file written by hjbsolve")
    p.add_argument("--case", action="store_true", help="print the resolved case the file was made from (TOML; "
                   "hjbsolve run on it reproduces the file)")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    p.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    return ap


THIRD_PARTY_LOGGERS = ("h5py", "numba", "matplotlib", "PIL", "distributed", "dask", "asyncio", "fsspec", "urllib3",
                       "tornado", "sphinx")


def _setup_logging(args) -> None:
    """-q: warnings and errors; default: also hjbsolve's warnings; -v: the package's INFO messages (progress
    and decisions); -vv: its DEBUG messages. Other libraries' loggers stay at WARNING whatever the flags."""
    if args.quiet or args.verbose == 0:
        level = logging.WARNING
    else:
        level = logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=logging.WARNING, format="hjbsolve: %(levelname)s: %(message)s", stream=sys.stderr,
                        force=True)
    logging.getLogger("hjbsolve").setLevel(level)
    _DESCRIBED.clear()                       # a new command: describe its case again
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Python warnings (BoxWarning, TimeStepWarning, ...) become one log line each: category and message,
    # without the source line Python's default format adds
    warn_log = logging.getLogger("hjbsolve.warnings")

    def showwarning(message, category, filename, lineno, file=None, line=None):
        warn_log.warning("%s: %s", category.__name__, message)

    warnings.showwarning = showwarning
    from .progress import set_quiet
    set_quiet(args.quiet)


def _load(args):
    from .case import load_case
    path = find_case(args.case)
    overrides = list(args.overrides)
    tol = getattr(args, "tol", None)
    if tol is not None:
        if not (tol > 0.0 and math.isfinite(tol)):
            raise HJBError(f"--tol: must be a positive number (got {tol})")
        overrides.append(f"grid.y.tol={tol!r}")
    case = load_case(path, overrides)
    if tol is not None and case.family != "periodic":
        raise HJBError(f"{case.source}: --tol: only for family = \"periodic\" (this case is {case.family!r})")
    _describe(case)
    return case


_DESCRIBED: set = set()


def _describe(case) -> None:
    """-v: what the case asks for (the grids and boxes as given; the run logs the boxes it derives), once per
    case and process (the resource guard loads the case before the command does)."""
    key = (case.source, tuple(case.overrides))
    if not log.isEnabledFor(logging.INFO) or key in _DESCRIBED:
        return
    _DESCRIBED.add(key)
    log.info("case %r (family %s) from %s%s", case.name, case.family, case.source,
             f", overrides {case.overrides}" if case.overrides else "")
    for axis, spec in case.grid.items():
        if isinstance(spec, dict) and spec:
            log.info("grid.%s: %s", axis, ", ".join(f"{k} = {v}" for k, v in spec.items() if v is not None))
    if case.family != "periodic":
        log.info("time: T = %g, dt = %g; run.eps = %s; effective scheme %s, order %s, extrapolation %s",
                 case.time["T"], case.time["dt"], case.run["eps"], case.run["effective_scheme"],
                 case.run["order"], case.run["extrapolation"])


def cmd_check(args) -> int:
    from .case import schema_text
    if args.schema:
        print(schema_text())
        return 0
    case = _load(args)
    from . import resources
    est = resources.estimate(case)
    print(f"{case.source}: {est.describe()}")
    resources.guard(est, case.source, args.max_memory, args.yes)
    from .models import build_model
    from .runner import fast_grid, slow_grid
    from .runner import probe_coefficients
    if case.family == "periodic":
        import numpy as np

        from .cell.ergodic import check_hamiltonian
        from .models.periodic import P_values
        from .models.periodic import build as build_periodic
        ham = build_periodic(case.model, where=case.source)
        P, _ = P_values(case.grid, case.model["m"])
        try:  # periodicity (with a tolerance) and convexity on the case's grid, as the solver does
            N = case.grid["y"]["n"]
            N = N[0] if isinstance(N, list) else N
            check_hamiltonian(ham, case.model["m"], N, case.grid["y"]["offset"] / N,
                              float(np.max(np.abs(P))) if len(P) else 0.0)
        except HJBError as e:
            raise type(e)(f"{case.source}: model: {e}") from None
        print(f"{case.source}: ok: case {case.name!r}, family periodic, m = {case.model['m']}, "
              f"hamiltonian {case.model['hamiltonian']}, nu = {case.model['nu']}, {len(P)} P values; "
              f"output {case.output}")
        return 0
    model = build_model(case)
    xg = slow_grid(case, model)
    yg = fast_grid(case, model, xg)
    probe_coefficients(case, model, xg, yg)
    fast = f"y grid {yg.describe()}; eps = {case.run['eps']}" if yg is not None else "no fast variable (plain HJB)"
    print(f"{case.source}: ok: case {case.name!r}, family {case.family}, n = {model.n}, m = {model.m}, "
          f"k = {model.k}; x grid {xg.describe()}; {fast}; coefficients finite on the grids; "
          f"output {case.output}")
    return 0


def partial_path(out: str) -> str:
    """Where a run keeps its finished stages until it is complete: results/x.h5 -> results/x.partial.h5."""
    p = Path(out)
    return str(p.with_name(p.stem + ".partial" + (p.suffix or ".h5")))


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with the one line that says what was kept."""


def _mark_stopped(partial: str, how: str) -> bool:
    """Say in the .partial.h5 file that the run stopped (its 'complete' attribute said 'still running'):
    rewrite it atomically from its last saved state. False when there is no partial file to mark."""
    from . import store
    if not os.path.exists(partial):
        return False
    try:
        with store.FileImage(partial) as image:
            image.set_attrs({"complete": f"no: the run {how}; this .partial.h5 file holds the stages finished "
                                         "before (hjbsolve run CASE --resume computes the rest)"})
            image.save(partial)
    except HJBError as e:
        log.warning("could not mark %s as stopped: %s", partial, e)
    return True


def _say_what_ran(name: str, attrs: dict) -> str:
    """One line per value group: its time scheme and the minimisation over the controls that ran."""
    ts = "Richardson-extrapolated" if "time_scheme" in attrs else "monotone"
    return (f"{name}: order in time {str(attrs.get('order_time', '?')).split(' ')[0]} ({ts}); minimisation: "
            f"{attrs.get('minimisation', '?')}")


def cmd_run(args, cell_only: bool = False) -> int:
    """Run the stages; each finished stage goes to <output>.partial.h5, saved as <output> at the end.

    The output is locked for the whole run (a second run on it stops at once with a clear error). An
    existing <output> is untouched until the whole run has succeeded; a run that fails or is interrupted
    leaves its finished stages in the .partial.h5 file (and says so); ``--resume`` keeps them when the
    file's case hash matches. The file is built in memory, so each array is encoded once."""
    from . import store
    case = _load(args)
    out = args.output or case.output
    if cell_only and not args.output and case.family != "periodic":
        # the cell stage alone must not replace a full run's file: results/x.h5 -> results/x.cell.h5
        p = Path(out)
        out = str(p.with_name(p.stem + ".cell" + (p.suffix or ".h5")))
    target = store.check_writable(out)
    if target != os.path.abspath(out):
        log.info("%s is a symbolic link: writing its target %s", out, target)
    partial = partial_path(target)
    store.check_writable(partial)
    with store.output_lock(target, f"hjbsolve {'cell' if cell_only else 'run'} on {out}"):
        return _run_locked(args, case, out, partial, cell_only)


def _resumed(case, partial: str):
    """(image, Result) of the partial file when its case hash matches ``case``; (None, None) otherwise, with
    a warning saying why everything is computed again."""
    from . import store
    from .provenance import case_hash, check_reusable
    from .result import Result
    if not os.path.exists(partial):
        log.warning("--resume: no partial file %s: computing every stage", partial)
        return None, None
    try:
        image = store.FileImage(partial)
    except HJBError as e:
        log.warning("--resume: %s: computing every stage", e)
        return None, None
    why = check_reusable(partial, image.attrs, case_hash(case))
    try:
        resumed = Result.load(partial) if why is None else None
    except (HJBError, KeyError, ValueError, TypeError, IndexError) as e:
        why = f"{partial}: unreadable ({type(e).__name__}: {e})"
    if why is not None:
        image.close()
        log.warning("--resume: %s: computing every stage", why)
        return None, None
    kept = ["cell stage"] * (resumed.cell is not None) + [g for g in resumed.extra_groups if g.startswith("eps_")]
    log.warning("--resume: keeping %s from %s", ", ".join(kept) or "nothing", partial)
    return image, resumed


def _run_locked(args, case, out: str, partial: str, cell_only: bool) -> int:
    from . import store
    from .runner import run, run_cell
    t0 = time.perf_counter()
    image, resumed = _resumed(case, partial) if getattr(args, "resume", False) else (None, None)
    image = image or store.FileImage()
    saved = []

    def save_partial():
        image.save(partial)
        saved.append(True)

    def on_cell(result):
        result.attrs["complete"] = "no: stages still running (this is the .partial.h5 file)"
        image.merge(result.to_group())
        save_partial()

    def on_result(name, group):
        image.add_group(name, group)
        save_partial()
        log.info("wrote %s to %s", name, partial)
        if not args.quiet:
            print(_say_what_ran(name, group.attrs))

    try:
        with image:
            if cell_only:
                result = run_cell(case)
            else:
                result = run(case, on_cell=on_cell, on_result=on_result, resumed=resumed)
            result.attrs["complete"] = "yes"
            result.timings["wall"] = time.perf_counter() - t0
            image.merge(result.to_group())
            image.save(out)
    except (HJBError, KeyboardInterrupt) as e:
        stopped = isinstance(e, KeyboardInterrupt)
        how = "was terminated (SIGTERM)" if isinstance(e, Terminated) else "was interrupted" if stopped else "failed"
        if (saved or resumed is not None) and _mark_stopped(partial, how):
            if not stopped:
                raise type(e)(f"{e} (finished stages kept in {partial})") from None
            if not isinstance(e, Terminated):
                raise Interrupted(f"interrupted; finished stages kept in {partial} (the output file was not "
                                  "written or changed)") from None
        raise
    if os.path.exists(partial):
        os.remove(partial)
    if not args.quiet:
        print(f"wrote {out} ({time.perf_counter() - t0:.2f} s)")
    return 0


def cmd_study(args) -> int:
    """Plan, run and analyse a study; print the table; write <output>.h5, .csv and the run files."""
    from . import store
    from .provenance import case_attrs
    from .study import analyse, execute, parse_vary, plan
    case = _load(args)
    vary_texts = list(args.vary)
    if not vary_texts:
        vary_texts = [f"{k}={','.join(map(str, v if isinstance(v, list) else [v]))}"
                      for k, v in case.study["vary"].items()]
    if not vary_texts:
        raise HJBError(f"{case.source}: nothing to vary: give --vary KEY=V1,V2 or a [study] vary table")
    out = args.output or f"results/{case.name}.study.h5"
    if not Path(out).suffix:           # -o name -> name.h5 (beside name.csv and name_runs/)
        out += ".h5"
    store.check_writable(out)
    csv_path = str(Path(out).with_suffix(".csv"))
    store.check_writable(csv_path)
    folder = str(Path(out).with_suffix("")) + "_runs"
    vary = parse_vary(vary_texts, case.as_dict())
    if args.jobs < 1:
        raise HJBError(f"-j {args.jobs}: give at least one job")
    # one study at a time on an output: its run files, table and csv are one result
    with store.output_lock(out, f"hjbsolve study on {out}"):
        if args.law:
            return _law_study(case, vary, out, args)
        runs = plan(case, vary, folder)
        if runs:
            store.check_writable(runs[0].path)
        log.info("%d runs in %s", len(runs), folder)
        execute(runs, jobs=args.jobs, scheduler=args.scheduler, resume=args.resume,
                scheduler_timeout=args.scheduler_timeout)
        res = analyse(case, runs, vary, case.study["window"], args.reference or case.study["reference"],
                      resume=args.resume)
        group = res.to_group(case.text)
        group.attrs.update(case_attrs(case))
        store.write(out, group)
        res.write_csv(csv_path)
    print(res.table())
    if not args.quiet:
        print(f"wrote {out}, {csv_path} and {len(runs)} run files in {folder}")
    return 0


def cmd_plot(args) -> int:
    import tomllib

    from .plot import KINDS, available_kinds, plot_file
    if args.list:
        for k in available_kinds(args.file):
            print(f"{k:16s} {KINDS[k]}")
        return 0
    opts = {}
    for text in args.opt:
        if "=" not in text:
            raise HJBError(f"--opt {text}: expected KEY=VALUE")
        k, v = text.split("=", 1)
        try:
            opts[k.strip()] = tomllib.loads(f"v = {v.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            opts[k.strip()] = v.strip()
    kinds = available_kinds(args.file)
    what = args.what
    if what is None and not kinds:
        raise HJBError(f"{args.file}: nothing this file holds can be plotted")
    out = args.output or str(Path(args.file).with_suffix("")) + f".{what or kinds[0]}.png"
    from . import store
    store.check_writable(out)          # a FIFO, a device or a folder is refused before the figure is drawn
    plot_file(args.file, what, out, **opts)
    if not args.quiet:
        print(f"wrote {out}")
    return 0


def cmd_simulate(args) -> int:
    from .simulate import simulate_file
    if args.paths < 1:
        raise HJBError(f"--paths {args.paths}: give at least one path")
    if args.fast_resolution == "auto":
        fr = "auto"
    else:
        try:
            fr = float(args.fast_resolution)
        except ValueError:
            raise HJBError(f"--fast-resolution {args.fast_resolution!r}: a number or 'auto'") from None
    if not Path(args.file).exists():
        if args.file.endswith(".h5"):
            raise HJBError(f"{args.file}: file not found")
        args.file = str(find_case(args.file))          # a packaged case by name
    groups = simulate_file(args.file, eps_values=args.eps, n_paths=args.paths, ds=args.ds, seed=args.seed,
                           output=args.output, x0=args.x0, y0=args.y0, feedback=args.feedback,
                           n_record=args.record, n_keep=args.keep, dt=args.dt, fast_resolution=fr,
                           overrides=args.overrides)
    for name, g in groups.items():
        a = g.attrs
        half = a.get("total_cost_ci95_hi", float("nan")) - a.get("total_cost_mean", float("nan"))
        print(f"{name}: eps = {a.get('eps', float('nan')):g}, cost of the feedback "
              f"{a.get('total_cost_mean', float('nan')):.5g} ± {half:.2g} (95%), "
              f"V from the PDE {a.get('value_pde', float('nan')):.5g}")
    if not args.quiet:
        print(f"wrote {', '.join(groups)} to {args.output or args.file}")
    return 0


def _law_study(case, vary, out, args) -> int:
    """``hjbsolve study --law``: convergence in law as eps -> 0, with Monte Carlo standard errors."""
    import numpy as np

    from . import store
    from .simulate import convergence_in_law, format_table
    from .study import fit_order
    if [k for k, _ in vary] not in (["eps"], ["run.eps"]):
        raise HJBError("--law varies eps only: give --vary eps=V1,V2,...")
    eps_values = [float(e) for e in vary[0][1]]
    if any(e <= 0 for e in eps_values):
        raise HJBError("--law: the eps values must be > 0 (the limit eps = 0 is simulated as the reference)")
    # "auto": steps per unit eps chosen so that the Euler bias of the fast law stays small (with a fixed
    # ds = eps/10 that bias is a constant that does not vanish as eps -> 0 and would fake a plateau)
    rows = convergence_in_law(case, eps_values, x0=args.x0, n_paths=args.paths, fast_resolution="auto")
    print(format_table(rows))
    V = store.Variable
    from .provenance import case_attrs
    g = store.Group(coords={"row": V(np.arange(len(rows)), ("row",))},
                    attrs={"study_name": f"{case.name} (convergence in law)", **case_attrs(case),
                           "convention": "E phi(X^eps_s) - E phi(Xbar_s), Monte Carlo, independent samples"})
    for key in ("eps", "s", "mean_eps", "se_eps", "mean_bar", "se_bar", "diff", "se_diff"):
        g.variables[key] = V(np.array([r[key] for r in rows], float), ("row",))
    g.attrs["phi"] = [r["phi"] for r in rows]
    for phi in dict.fromkeys(r["phi"] for r in rows):
        sel = [r for r in rows if r["phi"] == phi]
        k, spread = fit_order([r["eps"] for r in sel], [abs(r["diff"]) for r in sel])
        g.attrs[f"fit_rate_{phi}"] = np.array([k, spread])
        resolved = all(abs(r["diff"]) > 4 * r["se_diff"] for r in sel)
        print(f"fitted rate for phi = {phi}: |E phi(X^eps) - E phi(Xbar)| ~ eps^{k:.2f} ± {spread:.2f}"
              + ("" if resolved else "  (some gaps are within 4 standard errors: use more paths)"))
    store.write(out, g)
    if not args.quiet:
        print(f"wrote {out}")
    return 0


def cmd_cases(args) -> int:
    """``hjbsolve cases``: the packaged cases with one line each; ``hjbsolve cases copy NAME [DIR]``: copy one out."""
    cases = packaged_cases()
    if args.cases_command is None:
        width = max(map(len, cases))
        for name, path in cases.items():
            print(f"{name:{width}s}  {case_summary(path)}")
        if not args.quiet:
            print(f"\n{len(cases)} cases; run one by name from any folder (hjbsolve run lq), or copy it out to edit "
                  f"it: hjbsolve cases copy NAME [DIR]")
        return 0
    name = args.name[:-5] if args.name.endswith(".toml") else args.name
    if name not in cases:
        raise HJBError(f"cases copy {args.name}: no packaged case of that name; one of {', '.join(cases)}")
    target = Path(args.dir)
    if target.suffix == ".toml":                  # cases copy lq mine.toml: the file itself
        folder, dest = target.parent, target
    else:
        folder, dest = target, target / f"{name}.toml"
    if folder.exists() and not folder.is_dir():
        raise HJBError(f"cases copy: {folder} is a file, not a folder")
    if dest.exists() and not args.force:
        raise HJBError(f"{dest}: exists; not overwritten (give --force to replace it)")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(cases[name].read_bytes())
        os.replace(tmp, dest)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise HJBError(f"{dest}: cannot write: {e.strerror or e}") from None
    if not args.quiet:
        print(f"wrote {dest}")
    return 0


def cmd_info(args) -> int:
    from . import store
    if args.case:
        from .provenance import resolved_text, stored_case
        attrs = store.root_attrs(args.file)
        text = attrs.get("case_resolved")
        if not isinstance(text, str) or not text:
            text = resolved_text(stored_case(attrs, args.file))
        sys.stdout.write(text)
        return 0
    print(store.describe(args.file))
    return 0


def _on_sigint(signum, frame):
    """Ctrl-C: a KeyboardInterrupt the first time; later ones are ignored while the first is handled (the
    partial file is being marked, temporary files removed)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that the same clean-up as for Ctrl-C runs (partial files
    marked, local workers killed)."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _dispatch(args) -> int:
    commands = {"cases": cmd_cases, "check": cmd_check, "run": cmd_run, "cell": lambda a: cmd_run(a, cell_only=True),
                "study": cmd_study, "plot": cmd_plot, "simulate": cmd_simulate, "info": cmd_info}
    _guard_inputs(args)
    return commands[args.command](args)


def _guard_inputs(args) -> None:
    """Before a command starts: a stored file it reads must be a readable hjbsolve file (corrupt or
    foreign files give one line naming the dataset), and a case it runs must fit in memory and time
    (:mod:`hjbsolve.resources`)."""
    path = getattr(args, "file", None)
    if path is not None and not (args.command == "simulate" and str(path).endswith(".toml")):
        from .result import check_file
        check_file(path)
    if args.command in ("run", "cell", "simulate", "study"):
        from . import resources
        resources.guard_command(args)


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr)
    except (OSError, ValueError):     # stderr closed: nothing more we can do
        pass


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args)
    started = time.perf_counter()
    try:
        code = _dispatch(args)
        log.info("%s took %.2f s", args.command, time.perf_counter() - started)
        return code
    except HJBError as e:
        for line in getattr(e, "lines", None) or [str(e)]:   # CaseErrors: one line per mistake
            _say(f"hjbsolve: error: {' '.join(str(line).split())}")
        return 2
    except Terminated:
        _say("hjbsolve: terminated (SIGTERM); the output file was not written or changed")
        return 143
    except KeyboardInterrupt as e:
        said = str(e) if isinstance(e, Interrupted) and str(e) else \
            "interrupted (the output file was not written or changed)"
        _say(f"hjbsolve: {said}")
        return 130
    except BrokenPipeError:        # output piped into `head` and closed: not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except MemoryError as e:
        _say(f"hjbsolve: error: out of memory ({e or 'MemoryError'}); `hjbsolve check CASE` prints the "
             "memory estimate: lower the grid sizes (grid.*.n), the P or p values, or the number of paths")
        return 2
    except Exception as e:   # the last-resort net: one line, the traceback only with -v
        if getattr(args, "verbose", 0):
            import traceback
            traceback.print_exc()
        _say(f"hjbsolve: internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]} "
             "(please report; rerun with -v for the traceback)")
        return 1


def main(argv: list[str] | None = None, exiting: bool = False) -> int:
    """The ``hjbsolve`` command: exit 0 (done), 2 (bad input, one line on stderr), 130 (Ctrl-C, also a
    second Ctrl-C during the clean-up), 143 (SIGTERM), 1 (internal error: one line, traceback with -v).
    The signal handlers are restored on return, except that with ``exiting`` (the process ends right
    after: :func:`entry`) SIGINT stays ignored after a Ctrl-C, so that a second one cannot turn the exit
    code 130 into a death by signal."""
    import signal
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:              # not the main thread (e.g. called from a thread in tests)
        previous = None
    previous_int = signal.getsignal(signal.SIGINT)
    if previous is not None:
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        return _main(argv)
    except KeyboardInterrupt as e:  # a second Ctrl-C inside a handler or clean-up
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:
            pass
        _say("hjbsolve: terminated" if isinstance(e, Terminated) else "hjbsolve: interrupted")
        return 143 if isinstance(e, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
            # after a real Ctrl-C, SIGINT stays ignored until the process has exited: a second one must not
            # turn the exit code 130 into a death by signal
            if not exiting or signal.getsignal(signal.SIGINT) is _on_sigint:
                signal.signal(signal.SIGINT, previous_int)


def entry() -> int:
    """The console script ``hjbsolve`` and ``python -m hjbsolve``: :func:`main` for a process that exits."""
    return main(exiting=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(entry())
