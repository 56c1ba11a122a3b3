"""Convergence-rate studies: sweeps over case keys, error norms, observed orders, executors.

A study runs one case many times, varying keys:

    eps=1,0.1,0.01           one eps per run (``run.eps``); abscissa eps; error |V^eps - V| unless an exact
                             V^eps exists (then the discretisation error of the difference is reported beside it)
    grid=1,2,4               refinement factor r: every grid (x, y) gets (n - 1) r + 1 nodes and dt -> dt / r;
                             abscissa dx (the slow spacing)
    dt=0.02,0.01             time step (``time.dt``); abscissa dt
    any.dotted.key=v1,v2     any other case key; abscissa its value

With several ``--vary`` keys the runs are the Cartesian product; the first key is the abscissa and each
combination of the others is a *series* with its own fitted order.

Errors are measured on V at the final time T on an interior window (``[study] window``), in the max
norm and the discrete L2 norm (cell-volume weights), against, in this order of preference:
``exact`` (the family has a closed form: lq), ``limit`` (eps sweeps: V_h of the eps -> 0 limit of the same
scheme on the same grid and dt, see :func:`_limit_run`), ``finest`` (the run of the series with the finest grid; coarser runs are compared at their own
nodes after multilinear interpolation of the finest solution, and the output says so).

Observed orders: pairwise ``log(e_i/e_{i+1}) / log(h_i/h_{i+1})`` and a least-squares fit of
``log e = k log h + c`` with the standard error of k as its spread.

Executors: in-process (``-j 1``), local processes (``-j N``, spawn context) or a dask.distributed
cluster (``--scheduler ADDRESS``). Each run writes its own HDF5 file in the study folder, so a crash loses
at most the runs in progress, and ``--resume`` skips the runs whose file is complete and holds the same
resolved case (its sha256, see :mod:`hjbsolve.provenance`) made by the same version; without ``--resume`` no
existing file is read.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import store
from .case import Case, validate
from .errors import CaseError, HJBError
from .progress import progress

log = logging.getLogger(__name__)

SHORTHANDS = {"eps": "run.eps", "dt": "time.dt", "grid": None}
#: in eps sweeps, a run enters the fitted order only if its error |V^eps_h - V_h| exceeds this multiple of the
#: discretisation error of that difference (known when the family has a closed form)
RESOLVED_RATIO = 10.0


@dataclass
class Run:
    index: int
    values: dict                    # vary key -> value
    case: dict                      # the validated case dict of this run
    eps: float
    path: str
    dx: float = 0.0
    dt: float = 0.0


@dataclass
class StudyResult:
    name: str
    parameter: str                  # abscissa name: eps | dx | dt | <key>
    reference: str                  # exact | limit | finest
    runs: list
    param: np.ndarray
    err_max: np.ndarray
    err_l2: np.ndarray
    series: np.ndarray
    disc_max: np.ndarray | None = None
    fits: dict = field(default_factory=dict)   # series -> {"max": (k, spread), "l2": (k, spread)}
    notes: list = field(default_factory=list)
    resolved: np.ndarray | None = None         # runs used in the fits (eps sweeps: error >> discretisation)
    succ_max: np.ndarray | None = None         # reference 'finest': (max, L2) of V_i - V_{i+1} (next finer run)

    def pairwise(self, err) -> np.ndarray:
        out = np.full(len(err), np.nan)
        for s in np.unique(self.series):
            idx = np.flatnonzero(self.series == s)
            for a, b in zip(idx[:-1], idx[1:]):
                if err[a] > 0 and err[b] > 0 and self.param[a] != self.param[b]:
                    out[b] = np.log(err[a] / err[b]) / np.log(self.param[a] / self.param[b])
        return out

    def series_labels(self) -> dict:
        """Series index -> 'key=value, ...' of the varied keys other than the abscissa."""
        keys = list(self.runs[0].values)[1:] if self.runs else []
        out = {}
        for r, s in zip(self.runs, self.series):
            out.setdefault(int(s), ", ".join(f"{k}={r.values[k]:g}" if isinstance(r.values[k], float)
                                             else f"{k}={r.values[k]}" for k in keys))
        return out

    # ------------------------------------------------------------------ output
    def table(self) -> str:
        keys = list(self.runs[0].values) if self.runs else []
        show_param = self.parameter not in keys
        head = ["run", *keys, *([self.parameter] if show_param else []), "err_max", "order", "err_l2", "order"]
        if self.disc_max is not None:
            head.append("disc_err_max")
        if self.succ_max is not None:
            head += ["succ_diff_max", "order"]
            osd = self.pairwise(self.succ_max[:, 0])
        om, ol = self.pairwise(self.err_max), self.pairwise(self.err_l2)
        rows = []
        for i, r in enumerate(self.runs):
            row = [str(r.index), *(f"{r.values[k]:g}" if isinstance(r.values[k], float) else str(r.values[k])
                                   for k in keys), *([f"{self.param[i]:.4g}"] if show_param else []),
                   f"{self.err_max[i]:.3e}",
                   "" if np.isnan(om[i]) else f"{om[i]:.2f}", f"{self.err_l2[i]:.3e}",
                   "" if np.isnan(ol[i]) else f"{ol[i]:.2f}"]
            if self.disc_max is not None:
                mark = "" if self.resolved is None or self.resolved[i] else " (not resolved)"
                row.append(f"{self.disc_max[i]:.2e}{mark}")
            if self.succ_max is not None:
                d = self.succ_max[i, 0]
                row += ["" if not np.isfinite(d) else f"{d:.3e}", "" if np.isnan(osd[i]) else f"{osd[i]:.2f}"]
            rows.append(row)
        w = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(head)]
        lines = ["  ".join(h.rjust(w[j]) for j, h in enumerate(head))]
        lines += ["  ".join(c.rjust(w[j]) for j, c in enumerate(r)) for r in rows]
        labels = self.series_labels()
        for s, f in self.fits.items():
            lab = f" (series {s}: {labels[s]})" if len(self.fits) > 1 else ""
            def pm(k, sd):
                return f"{k:.3f}" + (f" ± {sd:.3f}" if np.isfinite(sd) else " (2 points: no spread)")
            lines.append(f"fitted order{lab}: max norm {pm(*f['max'])}, L2 {pm(*f['l2'])}   "
                         f"(error ~ {self.parameter}^k)")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_group(self, case_text: str = "") -> store.Group:
        V = store.Variable
        n = len(self.runs)
        f0 = self.fits.get(int(self.series[0]) if n else 0, {"max": (np.nan, np.nan), "l2": (np.nan, np.nan)})
        attrs = {"study_name": self.name, "parameter": self.parameter, "reference": self.reference,
                 "fit_order_max": float(f0["max"][0]), "fit_order_max_spread": float(f0["max"][1]),
                 "fit_order_l2": float(f0["l2"][0]), "fit_order_l2_spread": float(f0["l2"][1]),
                 "varied": list(self.runs[0].values) if n else [], "notes": "; ".join(self.notes),
                 "case_text": case_text, "convention": "errors of V(T, .) on the interior window"}
        for s, f in self.fits.items():
            attrs[f"fit_series_{s}"] = np.array([f["max"][0], f["max"][1], f["l2"][0], f["l2"][1]])
        attrs["fit_layout"] = ("fit_order_* are those of series 0; fit_series_<s> = [order max, spread, order L2, "
                               "spread] for each series s (variable 'series' gives each run's)")
        g = store.Group(coords={"run": V(np.arange(n), ("run",), {"long_name": "run index"})}, attrs=attrs)
        g.variables["param"] = V(self.param, ("run",), {"long_name": f"abscissa {self.parameter}"})
        g.variables["err_max"] = V(self.err_max, ("run",), {"long_name": f"max-norm error against {self.reference}"})
        g.variables["err_l2"] = V(self.err_l2, ("run",), {"long_name": f"L2 error against {self.reference}"})
        g.variables["order_max"] = V(self.pairwise(self.err_max), ("run",), {"long_name": "pairwise order (max)"})
        g.variables["order_l2"] = V(self.pairwise(self.err_l2), ("run",), {"long_name": "pairwise order (L2)"})
        g.variables["series"] = V(self.series.astype(np.int64), ("run",), {"long_name": "series index"})
        if self.disc_max is not None:
            g.variables["disc_err_max"] = V(self.disc_max, ("run",),
                                            {"long_name": "discretisation error |V^eps_h - V^eps| (max)"})
        if self.succ_max is not None:
            g.variables["succ_diff_max"] = V(self.succ_max[:, 0], ("run",), {
                "long_name": "max |V_i - V_(i+1)| against the next finer run of the series (the fits use it)"})
            g.variables["succ_diff_l2"] = V(self.succ_max[:, 1], ("run",), {
                "long_name": "L2 |V_i - V_(i+1)| against the next finer run of the series (the fits use it)"})
        for k in (self.runs[0].values if n else []):
            vals = [r.values[k] for r in self.runs]
            if all(isinstance(v, (int, float)) for v in vals):
                g.variables[f"vary_{_safe(k)}"] = V(np.asarray(vals, float), ("run",), {"long_name": k})
        return g

    def write_csv(self, path) -> None:
        keys = list(self.runs[0].values) if self.runs else []
        om, ol = self.pairwise(self.err_max), self.pairwise(self.err_l2)
        fh = io.StringIO(newline="")
        w = csv.writer(fh)
        show_param = self.parameter not in keys
        w.writerow(["run", *keys, *([self.parameter] if show_param else []), "err_max", "order_max", "err_l2",
                    "order_l2", "series"]
                   + (["disc_err_max"] if self.disc_max is not None else []))
        for i, r in enumerate(self.runs):
            w.writerow([r.index, *(r.values[k] for k in keys), *([self.param[i]] if show_param else []),
                        self.err_max[i], om[i],
                        self.err_l2[i], ol[i], int(self.series[i])]
                       + ([self.disc_max[i]] if self.disc_max is not None else []))
        store.write_bytes(path, fh.getvalue().encode("utf-8"))      # atomic, regular files only


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", key)


# ---------------------------------------------------------------------------------------------------
# planning

def varyable_keys(case_dict: dict) -> list[str]:
    """Every key a study can vary: the shorthands and the case's leaf keys (dotted)."""
    out = list(SHORTHANDS)

    def walk(d, prefix):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict) and v:
                walk(v, key)
            elif key not in ("name", "description", "family", "run.output") and not key.startswith("study"):
                out.append(key)

    walk({k: v for k, v in case_dict.items() if k in ("model", "grid", "time", "run")}, "")
    return out


def parse_vary(texts: list[str], case_dict: dict, source: str = "--vary") -> list[tuple[str, list]]:
    """``['eps=1,0.1', 'grid=1,2']`` -> [('eps', [1.0, 0.1]), ('grid', [1, 2])], checked against the case."""
    import tomllib
    allowed = varyable_keys(case_dict)
    out = []
    for t in texts:
        if "=" not in t:
            raise CaseError(f"{source} {t}: expected KEY=V1,V2,..., e.g. --vary eps=0.1,0.01")
        key, vals = t.split("=", 1)
        key = key.strip()
        if key not in allowed:
            import difflib
            hint = difflib.get_close_matches(key, allowed, n=1)
            raise CaseError(f"{source} {key}: the case has no such key"
                            + (f" (did you mean {hint[0]!r}?)" if hint else "")
                            + f"; keys that can vary: {', '.join(allowed)}")
        values = []
        for v in vals.split(","):
            v = v.strip()
            if not v:
                continue
            try:
                values.append(tomllib.loads(f"v = {v}")["v"])
            except tomllib.TOMLDecodeError:
                values.append(v)
        if not values:
            raise CaseError(f"{source} {key}: no values given")
        out.append((key, values))
    return out


def _set(d: dict, dotted: str, value) -> None:
    node = d
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def _refine(d: dict, r: float) -> None:
    for axis in ("x", "y"):
        spec = d["grid"].get(axis)
        if spec and spec.get("n") is not None:
            n = spec["n"]
            spec["n"] = [int(round((k - 1) * r)) + 1 for k in n] if isinstance(n, list) else int(round((n - 1) * r)) + 1
    d["time"]["dt"] = d["time"]["dt"] / r


def plan(case: Case, vary: list[tuple[str, list]], folder: str) -> list[Run]:
    """The runs of a study: the Cartesian product of the varied values, each a validated case."""
    base = case.as_dict()
    keys = [k for k, _ in vary]
    runs = []
    eps_varied = "eps" in keys or "run.eps" in keys
    for i, combo in enumerate(itertools.product(*[v for _, v in vary])):
        d = copy.deepcopy(base)
        values = dict(zip(keys, combo))
        for k, v in values.items():
            if k == "grid":
                if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                    raise CaseError(f"--vary grid: refinement factors must be positive numbers, got {v!r}")
                _refine(d, float(v))
            elif k in ("eps", "run.eps"):
                _set(d, "run.eps", [v] if not isinstance(v, list) else v)
            else:
                _set(d, SHORTHANDS.get(k) or k, v)
        if not eps_varied:
            d["run"]["eps"] = d["run"]["eps"][:1]
        d["run"]["output"] = None
        v = validate(d, f"{case.source} (study run {i}: {values})")
        label = "_".join(f"{_safe(k)}={val:g}" if isinstance(val, float) else f"{_safe(k)}={val}"
                         for k, val in values.items())
        path = str(Path(folder) / f"run_{i:03d}_{label}.h5")
        xb, xn = v["grid"]["x"]["box"], v["grid"]["x"]["n"]
        lo, hi = (xb[0] if isinstance(xb[0], list) else xb)
        n0 = xn[0] if isinstance(xn, list) else xn
        runs.append(Run(i, values, v, float(v["run"]["eps"][0]), path, dx=(hi - lo) / (n0 - 1), dt=v["time"]["dt"]))
    return runs


# ---------------------------------------------------------------------------------------------------
# execution

def execute_run(case_dict: dict, path: str, source: str = "study") -> str:
    """Run one study point (cell + value stage for its eps) and write its file atomically.

    A top-level function so that process pools and dask workers can pickle it."""
    from .case import Case
    from .progress import set_quiet
    from .runner import run
    set_quiet(True)
    v = validate(case_dict, source)
    case = Case(name=v["name"], description=v["description"], family=v["family"], model=v["model"],
                grid=v["grid"], time=v["time"], run=v["run"], study=v["study"], source=source, text=store_text(v))
    result = run(case)
    result.attrs["complete"] = "yes"
    result.save(path)
    return path


def store_text(d: dict) -> str:
    from .provenance import resolved_text
    return resolved_text(d)


def unusable(path: str, case_dict: dict) -> str | None:
    """Why the run file ``path`` cannot stand for a run of ``case_dict`` (None when it can): it must exist,
    read back whole (:func:`result.check_file`: no damaged dataset or attribute), be complete, hold the same
    resolved case (hash) made by this package version, and have a value group for every eps of its case."""
    from .provenance import case_hash, check_reusable
    from .result import check_file
    if not os.path.exists(path):
        return f"{path} does not exist"
    try:
        root = check_file(path)
    except HJBError as e:
        return str(e)
    attrs = root.attrs
    if attrs.get("complete") != "yes":
        return f"{path} is not complete"
    why = check_reusable(path, attrs, case_hash(case_dict))
    if why:
        return why
    run = case_dict.get("run", {})
    want = [f"eps_{float(e):g}" for e in run.get("eps", [0.0])] \
        if run.get("values", True) and case_dict.get("family") != "periodic" else []
    missing = [g for g in want if g not in root.groups]
    return f"{path}: group {', '.join(missing)} missing" if missing else None


def execute(runs: list[Run], jobs: int = 1, scheduler: str | None = None, resume: bool = False,
            scheduler_timeout: float = 5.0) -> None:
    """Run every study point, on the chosen executor. With ``resume``, a run whose file holds the same
    resolved case (hash), complete and made by this version, is kept; any other file is recomputed, and
    the log says why. Without ``resume`` no existing file is read: every run is computed and its file
    replaced atomically."""
    todo = []
    for r in runs:
        why = unusable(r.path, r.case) if resume else "no --resume"
        if why is None:
            continue
        if resume and os.path.exists(r.path):
            log.warning("--resume: recomputing run %d: %s", r.index, why)
        todo.append(r)
    if len(todo) < len(runs):
        log.info("resume: %d of %d runs already finished", len(runs) - len(todo), len(runs))
    for r in runs:
        Path(r.path).parent.mkdir(parents=True, exist_ok=True)
    bar = progress(total=len(runs), desc="study runs", unit="run")
    bar.update(len(runs) - len(todo))
    try:
        if scheduler:
            _execute_dask(todo, scheduler, bar, timeout=scheduler_timeout)
        elif jobs > 1 and len(todo) > 1:
            _execute_pool(todo, jobs, bar)
        else:
            for r in todo:
                execute_run(r.case, r.path, f"study run {r.index}")
                bar.update(1)
    finally:
        bar.close()


def _execute_pool(todo: list[Run], jobs: int, bar) -> None:
    """``-j N``: a pool of N spawned processes. On any exception in the parent (Ctrl-C, SIGTERM, a failed
    run) the workers are killed at once instead of finishing their runs."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    # Workers killed on an interrupt leave their semaphores to the stdlib's resource tracker, which would print
    # a "leaked semaphore" warning after our last line; it cleans them up either way. The tracker process
    # takes its warning filters from sys.warnoptions when it starts (with the first pool).
    quiet = "ignore:resource_tracker:UserWarning"
    if quiet not in sys.warnoptions:
        sys.warnoptions.append(quiet)
    ex = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        futs = [ex.submit(execute_run, r.case, r.path, f"study run {r.index}") for r in todo]
        for f in as_completed(futs):
            f.result()
            bar.update(1)
    except BaseException:
        for proc in list((getattr(ex, "_processes", None) or {}).values()):
            if proc.is_alive():
                proc.kill()
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown(wait=True)


SCHEMES = ("tcp", "tls", "inproc")     # inproc: a cluster inside this process (tests)


def connect(scheduler: str, timeout: float = 5.0):
    """A dask.distributed Client for ``scheduler`` (``tcp://HOST:PORT``, ``HOST:PORT``, or ``tls://`` with
    the certificates of the dask configuration, ``distributed.comm.tls.*``). A clear HJBError within about
    ``timeout`` seconds when the address is refused, unreachable, or accepts the connection but does not
    answer as a dask scheduler; other schemes are refused."""
    try:
        from distributed import Client
        from distributed.security import Security
    except ImportError:
        raise HJBError("--scheduler needs dask.distributed: pip install 'hjbsolve[dask]'") from None
    scheme = scheduler.split("://", 1)[0].lower() if "://" in scheduler else "tcp"
    if scheme not in SCHEMES:
        raise HJBError(f"--scheduler {scheduler}: scheme {scheme}:// is not supported; use tcp://HOST:PORT "
                       "(or tls://HOST:PORT with certificates in the dask configuration)")
    security = None
    if scheme == "tls":
        security = Security()
        if not (security.tls_ca_file and security.tls_client_cert):
            raise HJBError(f"--scheduler {scheduler}: tls:// needs certificates: set distributed.comm.tls."
                           "ca-file, .client.cert and .client.key in the dask configuration (or the "
                           "DASK_DISTRIBUTED__COMM__TLS__* variables), or use tcp://")
    _probe_scheduler(scheduler, timeout, security)
    try:
        return Client(scheduler, timeout=timeout, security=security)
    except (OSError, TimeoutError, ValueError, TypeError) as e:
        raise HJBError(f"cannot reach the dask scheduler at {scheduler!r} within {timeout:g} s: "
                       f"{type(e).__name__}: {e}") from None


def _probe_scheduler(address: str, timeout: float, security) -> None:
    """Connect and ask the scheduler for its identity, all within ``timeout`` seconds (a socket that
    accepts the connection but never answers would otherwise hang the Client for minutes)."""
    import asyncio

    from distributed.comm import connect as comm_connect

    async def probe():
        kw = security.get_connection_args("client") if security is not None else {}
        comm = await comm_connect(address, timeout=timeout, **kw)
        try:
            await comm.write({"op": "identity", "reply": True})
            reply = await comm.read()
        finally:
            comm.abort()
        if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
            raise ValueError(f"the peer answered but is not a dask scheduler ({str(reply)[:80]})")

    _refused(address, timeout)
    try:
        asyncio.run(asyncio.wait_for(probe(), timeout))
    except (asyncio.TimeoutError, TimeoutError):
        raise HJBError(f"the dask scheduler at {address!r} did not answer within {timeout:g} s "
                       "(--scheduler-timeout SECONDS to wait longer)") from None
    except Exception as e:
        raise HJBError(f"cannot reach the dask scheduler at {address!r} within {timeout:g} s: "
                       f"{type(e).__name__}: {' '.join(str(e).split())}") from None


def _refused(address: str, timeout: float) -> None:
    """A refused or unreachable host:port is said as such at once (dask's own connect retries a refused
    address until its timeout, which would be reported as a scheduler that does not answer)."""
    import socket
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(address if "://" in address else f"tcp://{address}")
        host, port = parts.hostname, parts.port
    except ValueError as e:
        raise HJBError(f"--scheduler {address}: not an address of the form tcp://HOST:PORT ({e})") from None
    if not host or port is None:
        raise HJBError(f"--scheduler {address}: not an address of the form tcp://HOST:PORT")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except (socket.timeout, TimeoutError):
        return                      # said by the probe, with the timeout option
    except OSError as e:
        raise HJBError(f"cannot reach the dask scheduler at {address!r}: {e.strerror or e}") from None


def _execute_dask(todo: list[Run], scheduler, bar, timeout: float = 5.0) -> None:
    """Submit the runs to a dask cluster (an address, or a Client). On Ctrl-C, SIGTERM or a failed run the
    pending and running tasks are cancelled on the cluster before the error goes up."""
    from distributed import as_completed
    client = scheduler if not isinstance(scheduler, str) else connect(scheduler, timeout)
    futs = []
    try:
        futs = [client.submit(execute_run, r.case, r.path, f"study run {r.index}", pure=False) for r in todo]
        for f in as_completed(futs):
            f.result()
            bar.update(1)
    except BaseException:
        try:
            client.cancel(futs, force=True)
        except Exception:        # the cluster may be gone: nothing left to cancel
            pass
        raise
    finally:
        if isinstance(scheduler, str):
            client.close()


# ---------------------------------------------------------------------------------------------------
# analysis

def _final_value(path: str, eps: float):
    """(V(T) array, x axes, y axes or None) of the eps group of a run file."""
    from .runner import eps_group_name
    g = store.read(path).groups[eps_group_name(eps)]
    V = g.variables["V"]
    dims = V.dims[1:]
    axes = [g.coords[d].data for d in dims]
    nx = sum(1 for d in dims if d.startswith("x"))
    return V.data[-1], axes[:nx], (axes[nx:] or None), float(g.coords["t"].data[-1])


def _window_mask(axes: list, window: list) -> list:
    return [(a >= w[0] - 1e-12) & (a <= w[1] + 1e-12) for a, w in zip(axes, window)]


def _norms(diff: np.ndarray, axes: list) -> tuple[float, float]:
    vol = np.prod([a[1] - a[0] if len(a) > 1 else 1.0 for a in axes])
    return float(np.abs(diff).max()), float(np.sqrt((diff**2).sum() * vol))


def _interpolate(values, axes, target_axes):
    from scipy.interpolate import RegularGridInterpolator
    f = RegularGridInterpolator(axes, values, method="linear", bounds_error=False, fill_value=None)
    pts = np.stack(np.meshgrid(*target_axes, indexing="ij"), -1)
    return f(pts)


def fit_order(param, err) -> tuple[float, float]:
    """Least-squares slope of log err against log param and its standard error."""
    param, err = np.asarray(param, float), np.asarray(err, float)
    ok = (param > 0) & (err > 0)
    if ok.sum() < 2:
        return float("nan"), float("nan")
    xl, yl = np.log(param[ok]), np.log(err[ok])
    if ok.sum() == 2:
        return float((yl[1] - yl[0]) / (xl[1] - xl[0])), float("nan")
    A = np.vstack([xl, np.ones_like(xl)]).T
    coef, res, *_ = np.linalg.lstsq(A, yl, rcond=None)
    resid = yl - A @ coef
    s2 = resid @ resid / (len(xl) - 2)
    cov = s2 * np.linalg.inv(A.T @ A)
    return float(coef[0]), float(np.sqrt(cov[0, 0]))


def analyse(case: Case, runs: list[Run], vary: list[tuple[str, list]], window: dict,
            reference: str = "auto", resume: bool = False) -> StudyResult:
    """Errors, pairwise orders and fitted orders of the finished runs (see module docstring). ``resume``:
    an eps = 0 run the sweep lacks may be taken from its file (same hash, see :func:`execute`)."""
    from .exact import exact_value, has_exact_value
    keys = [k for k, _ in vary]
    first = keys[0]
    eps_sweep = first in ("eps", "run.eps")
    parameter = "eps" if eps_sweep else ("dx" if first == "grid" else ("dt" if first in ("dt", "time.dt") else first))
    has_exact = has_exact_value(case.family)
    if reference == "auto":
        reference = "limit" if eps_sweep else ("exact" if has_exact else "finest")
    notes = []
    others = keys[1:]
    series_of = {}
    series = np.array([series_of.setdefault(tuple(r.values[k] for k in others), len(series_of)) for r in runs])
    param = np.empty(len(runs))
    err_max = np.empty(len(runs))
    err_l2 = np.empty(len(runs))
    disc = np.full(len(runs), np.nan) if (eps_sweep and has_exact) else None
    limit_cache: dict = {}
    for i, r in enumerate(runs):
        v = r.values[first]
        param[i] = float(r.eps if eps_sweep else (r.dx if first == "grid" else (r.dt if parameter == "dt" else v)))
        V, xa, ya, T = _final_value(r.path, r.eps)
        win = [window["x"]] * len(xa) + ([window["y"]] * len(ya) if ya else [])
        axes = xa + (ya or [])
        masks = _window_mask(axes, win)
        sl = np.ix_(*masks)
        if reference == "exact":
            if not has_exact:
                raise HJBError(f"reference 'exact': family {case.family!r} has no closed form "
                               "(use reference = 'finest' or 'limit')")
            ref = exact_value(case.family, r.case["model"], r.eps, T, xa, ya)
        elif reference == "limit":
            key = tuple(r.values[k] for k in others)
            if key not in limit_cache:
                limit_cache[key] = _limit_run(case, r, runs, others, notes, resume)
            Vl, xl, _, _ = limit_cache[key]
            ref_x = Vl if all(np.array_equal(a, b) for a, b in zip(xl, xa)) else _interpolate(Vl, xl, xa)
            ref = ref_x.reshape(ref_x.shape + (1,) * (len(ya) if ya else 0))
            ref = np.broadcast_to(ref, V.shape)
            if disc is not None:
                # the error of the measured difference: (V^eps_h - V_h) - (V^eps - V), both from closed forms
                ex = exact_value(case.family, r.case["model"], r.eps, T, xa, ya)
                ex0 = exact_value(case.family, r.case["model"], 0.0, T, xa, None)
                ex0 = np.broadcast_to(ex0.reshape(ex0.shape + (1,) * (len(ya) if ya else 0)), V.shape)
                disc[i] = float(np.abs(((V - ref) - (ex - ex0))[sl]).max())
        elif reference == "finest":
            idx = [j for j in range(len(runs)) if series[j] == series[i]]
            fin = min(idx, key=lambda j: runs[j].dx)
            Vf, xf, yf, _ = _final_value(runs[fin].path, runs[fin].eps)
            fa = xf + (yf or [])
            same = all(len(a) == len(b) and np.allclose(a, b) for a, b in zip(fa, axes))
            if not same and "interpolated" not in " ".join(notes):
                notes.append("runs on different grids: the finest run is interpolated (multilinear) onto each "
                             "coarser grid before the errors are taken")
            ref = Vf if same else _interpolate(Vf, fa, axes)
        else:
            raise HJBError(f"unknown reference {reference!r}: use exact, limit or finest")
        diff = (V - ref)[sl]
        err_max[i], err_l2[i] = _norms(diff, [a[m] for a, m in zip(axes, masks)])
    succ = None
    if reference == "finest":
        # errors against the finest run are biased (e_i = C h_i^k (1 - (h_f/h_i)^k) steepens the slope); the
        # differences of successive runs d_i = |V_i - V_{i+1}| ~ C h_i^k (1 - r^-k) have the true slope k
        notes.append("the finest run of each series is the reference (error 0); the fitted orders use the "
                     "differences of successive runs (succ_diff_max), which are not biased by the reference")
        succ = _successive_differences(runs, series, window)
    res = StudyResult(case.name, parameter, reference, runs, param, err_max, err_l2, series, disc, notes=notes)
    res.succ_max = succ
    resolved = np.ones(len(runs), bool)
    if disc is not None:
        # |V^eps_h - V_h| measures the eps-rate only where it is well above its own discretisation error
        resolved = ~(err_max <= RESOLVED_RATIO * disc)
        notes.append("disc_err_max: the discretisation error of the measured difference, "
                     "|(V^eps_h - V_h) - (V^eps - V)| from the closed forms")
    for s in np.unique(series):
        if succ is not None:
            idx = np.flatnonzero((series == s) & np.isfinite(succ[:, 0]) & (succ[:, 0] > 0))
            res.fits[int(s)] = {"max": fit_order(param[idx], succ[idx, 0]), "l2": fit_order(param[idx], succ[idx, 1])}
            continue
        idx = np.flatnonzero((series == s) & (err_max > 0))
        use = idx[resolved[idx]]
        dropped = idx[~resolved[idx]]
        if len(dropped) and len(use) >= 2:
            notes.append(f"{'runs' if len(dropped) > 1 else 'run'} {', '.join(str(runs[j].index) for j in dropped)} "
                         "left out of the fit"
                         f"{' of series ' + str(int(s)) if len(np.unique(series)) > 1 else ''}: their error is "
                         f"within {RESOLVED_RATIO:g}x the discretisation error (disc_err_max), so it does not "
                         "measure the eps-rate; refine the grid to use them")
            idx = use
        elif len(dropped):
            notes.append(f"{'runs' if len(dropped) > 1 else 'run'} {', '.join(str(runs[j].index) for j in dropped)}: "
                         f"error within {RESOLVED_RATIO:g}x "
                         "the discretisation error; the fitted order is not reliable: refine the grid")
        res.fits[int(s)] = {"max": fit_order(param[idx], err_max[idx]), "l2": fit_order(param[idx], err_l2[idx])}
    res.resolved = resolved
    if eps_sweep and disc is None:
        notes.append("the discretisation error of each run is not known here (no closed form): check with a "
                     "grid series (--vary grid=1,2) that |V^eps - V| is well above it, mainly at the smallest eps")
    return res


def _successive_differences(runs: list[Run], series: np.ndarray, window: dict) -> np.ndarray:
    """(len(runs), 2): max and L2 norms of V_i - V_{i+1} on the window at the nodes of run i, where i + 1 is
    the next finer run of the same series (the finer solution interpolated); NaN for the finest."""
    out = np.full((len(runs), 2), np.nan)
    for s in np.unique(series):
        idx = sorted(np.flatnonzero(series == s), key=lambda j: -runs[j].dx)
        for a, b in zip(idx[:-1], idx[1:]):
            Va, xa, ya, _ = _final_value(runs[a].path, runs[a].eps)
            Vb, xb, yb, _ = _final_value(runs[b].path, runs[b].eps)
            axes_a, axes_b = xa + (ya or []), xb + (yb or [])
            same = all(len(p) == len(q) and np.allclose(p, q) for p, q in zip(axes_a, axes_b))
            ref = Vb if same else _interpolate(Vb, axes_b, axes_a)
            win = [window["x"]] * len(xa) + ([window["y"]] * len(ya) if ya else [])
            masks = _window_mask(axes_a, win)
            out[a] = _norms((Va - ref)[np.ix_(*masks)], [p[m] for p, m in zip(axes_a, masks)])
    return out


def _limit_run(case: Case, r: Run, runs: list[Run], others: list, notes: list, resume: bool = False):
    """V_h(T, x): the eps -> 0 limit of the scheme that computed the V^eps_h of the sweep, on the same grids
    and time step: the per-y effective scheme (``effective_scheme = "per_y"``, the exact limit of the Lie
    splitting), Richardson-extrapolated when the runs are (``run.richardson``). Measuring V^eps_h - V_h with
    V_h from another scheme (the second-order ``averaged`` one) would add the difference of the two schemes'
    discretisation errors to every point and bias the fitted eps-rate. An eps = 0 run of the sweep with the
    same other values is used when it ran that scheme; otherwise the limit run is computed now."""
    for q in runs:
        if (q.eps == 0.0 and all(q.values[k] == r.values[k] for k in others)
                and q.case["run"].get("effective_scheme") == "per_y"):
            return _final_value(q.path, 0.0)
    d = copy.deepcopy(r.case)
    d["run"]["eps"] = [0.0]
    d["run"]["effective_scheme"] = "per_y"
    d["run"]["blind"] = False
    path = str(Path(r.path).with_name(Path(r.path).stem + "_limit.h5"))
    if not resume or unusable(path, d) is not None:
        execute_run(d, path, f"study limit run for {r.values}")
    if "limit" not in " ".join(notes):
        rich = ", Richardson-extrapolated" if d["run"].get("richardson") else ""
        notes.append(f"reference 'limit': V_h of the eps -> 0 limit of the same scheme (the per-y effective scheme"
                     f"{rich}) on the same grids and dt")
    return _final_value(path, 0.0)


def run_study(case: Case, vary_texts: list[str], folder: str, jobs: int = 1, scheduler=None,
              resume: bool = False, window: dict | None = None, reference: str = "auto") -> StudyResult:
    """Plan, execute and analyse a study (the ``hjbsolve study`` command without the printing)."""
    vary = parse_vary(vary_texts, case.as_dict())
    runs = plan(case, vary, folder)
    execute(runs, jobs=jobs, scheduler=scheduler, resume=resume)
    w = window or {"x": [-1.0, 1.0], "y": [-1.0, 1.0]}
    return analyse(case, runs, vary, w, reference, resume)
